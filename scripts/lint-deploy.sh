#!/usr/bin/env bash
# The deployment linters, run by `make lint-deploy` (and so by `make test`): hadolint on every
# Dockerfile, actionlint on the GitHub workflows (shellcheck on their run: steps), shellcheck
# on the deploy scripts, and scripts/lint-chart.py (helm lint, kubernetes-validate, checkov)
# on every rendering of the chart in scripts/chart-scenarios.yaml. The pinned tools come from
# scripts/install-deploy-tools.sh (`make deploy-tools`); PYTHON is one with PyYAML (the
# project's venv, as `make lint-deploy` passes it).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SFMLOPS_TOOLS_DIR:-$HOME/.cache/sfmlops-tools}/bin"
for tool in hadolint actionlint shellcheck; do
  if [[ ! -x "$bin/$tool" ]]; then
    echo "lint-deploy: $bin/$tool missing: run make deploy-tools" >&2
    exit 1
  fi
done

# Every shell script of the repository (the Compose ones are checked by tests/deploy too).
deploy_scripts=(install-helm.sh scripts/*.sh images/bases/airflow/entrypoint.sh sfmlops-helm/files/*.sh)

echo "hadolint: images/*/Dockerfile"
"$bin/hadolint" --no-color --config images/hadolint.yaml images/*/Dockerfile
echo "actionlint: .github/workflows"
"$bin/actionlint" -no-color -oneline -shellcheck "$bin/shellcheck"
echo "shellcheck: ${deploy_scripts[*]}"
"$bin/shellcheck" -x "${deploy_scripts[@]}"
echo "lint-chart: sfmlops-helm"
"${PYTHON:-python3}" scripts/lint-chart.py
echo "lint-deploy: no findings"
