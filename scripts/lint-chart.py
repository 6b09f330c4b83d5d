"""The chart's linters, run by `make lint-deploy`: `helm lint --strict`, kubernetes-validate and
checkov on every rendering of sfmlops-helm named in scripts/chart-scenarios.yaml.

    lint-chart.py                      lint every scenario
    lint-chart.py --manifests F [F..]  only validate and scan these manifest files

Exit 0 with "lint-chart: no findings", or 1 with each finding. The tools come pinned from
scripts/install-deploy-tools.sh (`make deploy-tools`) in SFMLOPS_TOOLS_DIR/bin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "sfmlops-helm"
SCENARIOS = yaml.safe_load((ROOT / "scripts" / "chart-scenarios.yaml").read_text())
SKIPS_FILE = CHART / "checkov-skips.yaml"
# The Kubernetes versions the manifests must be valid for: the newest schemas
# kubernetes-validate ships, and the version Helm renders for (HELM_KUBE_MINOR, install-helm.sh).
KUBERNETES_VERSIONS = ("1.36.0", "1.37.0")
# The Helms users run: Helm 3 and Helm 4, both pinned in install-helm.sh.
HELMS = ("helm", "helm4")
# Only the CRD kinds have no built-in schema; tests/deploy checks them structurally.
NO_SCHEMA = "Couldn't find schema for kind"
MIN_PASSED_CHECKS = 100  # a scan that checks far less than this did not read the manifests


def tool(name: str) -> str:
    base = os.environ.get("SFMLOPS_TOOLS_DIR") or str(Path.home() / ".cache" / "sfmlops-tools")
    path = Path(base) / "bin" / name
    if not path.exists():
        sys.exit(f"lint-chart: {path} missing: run make deploy-tools")
    return str(path)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def helm_args(name: str, extra: list[str]) -> list[str]:
    scenario = SCENARIOS["scenarios"][name]
    args = ["-f", str(CHART / "values.yaml")]
    for file in scenario["files"]:
        args += ["-f", str(ROOT / file)]
    for override in [*scenario["set"], *extra]:
        args += ["--set", override]
    return args


def helm_lint(name: str) -> list[str]:
    # `helm lint` takes no --api-versions, so the chart's CRD check is off here
    # (tests/deploy/test_install.py covers it).
    findings = []
    for helm in HELMS:
        result = run(
            [tool(helm), "lint", "--strict", str(CHART), *helm_args(name, ["checkCRDs=false"])]
        )
        if result.returncode != 0 or "0 chart(s) failed" not in result.stdout:
            findings.append(f"{helm} lint [{name}]: {result.stdout}{result.stderr}")
    return findings


def render(name: str, folder: Path) -> Path:
    command = [tool("helm"), "template", "sfmlops", str(CHART), "--namespace", "sfmlops"]
    for api in SCENARIOS["cluster_apis"]:
        command += ["--api-versions", api]
    result = run(command + helm_args(name, []))
    if result.returncode != 0:
        sys.exit(f"lint-chart: helm template [{name}] failed:\n{result.stderr}")
    path = folder / name / "manifests.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(result.stdout)
    return path


def kubernetes_validate(files: list[Path]) -> list[str]:
    findings = []
    for version in KUBERNETES_VERSIONS:
        result = run(
            [tool("kubernetes-validate"), "--strict", "-k", version, "--quiet"]
            + [str(f) for f in files]
        )
        found = [
            f"kubernetes-validate {version}: {line}"
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and NO_SCHEMA not in line
        ]
        if result.returncode != 0 and not found:
            found = [f"kubernetes-validate {version}: exit {result.returncode} without a message"]
        findings += found
    return findings


def checkov(folder: Path, *, expect_many: bool) -> list[str]:
    skips: dict[str, str] = yaml.safe_load(SKIPS_FILE.read_text())
    result = run(
        [
            tool("checkov"),
            "--directory", str(folder),
            "--framework", "kubernetes",
            "--skip-check", ",".join(skips),
            "--output", "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ]
    )  # fmt: skip
    try:
        parsed: Any = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [f"checkov [{folder.name}]: no report: {result.stdout[:500]}{result.stderr[:500]}"]
    # checkov prints a list when several frameworks ran and a dict for one.
    reports = parsed if isinstance(parsed, list) else [parsed]
    findings = []
    for report in reports:
        summary = report.get("summary", {})
        if summary.get("parsing_errors", 0):
            findings.append(f"checkov [{folder.name}]: {summary['parsing_errors']} parsing errors")
        if expect_many and summary.get("passed", 0) < MIN_PASSED_CHECKS:
            findings.append(f"checkov [{folder.name}]: only {summary.get('passed')} checks ran")
        findings += [
            f"checkov [{folder.name}]: {f['check_id']} {f['resource']}: {f['check_name']}"
            for f in report.get("results", {}).get("failed_checks", [])
        ]
    return findings


def lint_scenarios() -> list[str]:
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lint-chart-") as temp:
        folder = Path(temp)
        rendered = {}
        for name in SCENARIOS["scenarios"]:
            print(f"lint-chart: {name}", flush=True)
            findings += helm_lint(name)
            rendered[name] = render(name, folder)
        findings += kubernetes_validate(list(rendered.values()))
        for name in SCENARIOS["checkov_scenarios"]:
            findings += checkov(rendered[name].parent, expect_many=True)
    return findings


def lint_files(files: list[Path]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="lint-chart-") as temp:
        folder = Path(temp) / "manifests"
        folder.mkdir()
        for file in files:
            (folder / file.name).write_text(file.read_text())
        return kubernetes_validate(files) + checkov(folder, expect_many=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", nargs="+", type=Path, help="only these manifest files")
    args = parser.parse_args()
    findings = lint_files(args.manifests) if args.manifests else lint_scenarios()
    for finding in findings:
        print(finding)
    if findings:
        print(f"lint-chart: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("lint-chart: no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
