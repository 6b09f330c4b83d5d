"""Alert rules and their routing: valid for Prometheus and Alertmanager, tested, shipped once.

promtool and amtool come from Debian's `prometheus` and `prometheus-alertmanager` packages
(scripts/install-system-deps.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import CHART, ROOT, Rendered, load_yaml
from tests.support.metric_names import api_metrics, queried_metrics, stream_metric_names

RULES = CHART / "rules" / "sfmlops.rules.yaml"
RULE_TESTS = ROOT / "tests" / "deploy" / "data" / "sfmlops.rules.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/sfmlops/sfmlops/blob/main/docs/runbooks.md#"


def debian_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: run scripts/install-system-deps.sh")
    return path


def run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = run([debian_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_rule_passes_its_promtool_tests() -> None:
    result = run([debian_tool("promtool"), "test", "rules", RULE_TESTS.name], RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests can fail: the first firing case, expected silent, is reported."""
    tests = load_yaml(RULE_TESTS)
    tests["rule_files"] = [str(RULES)]
    case = next(case for case in tests["tests"] if "exp_alerts" in str(case))
    for check in case["alert_rule_test"]:
        check.pop("exp_alerts", None)
    tests["tests"] = [case]
    path = tmp_path / "wrong.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = run([debian_tool("promtool"), "test", "rules", str(path)])
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_rule_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names
    assert silent == names


def test_every_rule_links_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), rule["alert"]
        assert url.removeprefix(RUNBOOK_URL) in anchors, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_chart_ships_the_same_rules(rendered: Rendered) -> None:
    (rule,) = rendered.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == load_yaml(RULES)
    chart = load_yaml(CHART / "values.yaml")
    assert chart["monitoring"]["selectorLabels"].items() <= rule["metadata"]["labels"].items()


def test_alertmanager_routes_the_sfmlops_alerts(tmp_path: Path) -> None:
    config = load_yaml(ROOT / "values-kube-prometheus.yaml")["alertmanager"]["config"]
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    amtool = debian_tool("amtool")
    checked = run([amtool, "check-config", str(path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receiver(alertname: str) -> str:
        routed = run([amtool, "config", "routes", "test", f"--config.file={path}", alertname])
        assert routed.returncode == 0, routed.stderr
        return routed.stdout.strip()

    for rule in alert_rules():
        assert receiver(f"alertname={rule['alert']}") == "sfmlops"
    assert receiver("alertname=KubePodCrashLooping") == "null"


def test_every_metric_a_rule_reads_is_exported() -> None:
    """By the API (its /metrics captured from a real app), the stream job, or Prometheus itself
    (`up` of every scrape target)."""
    queried = queried_metrics(
        {"panels": [{"targets": [{"expr": r["expr"]} for r in alert_rules()]}]}
    )
    exported = api_metrics() | stream_metric_names() | {"up"}
    assert queried
    assert queried <= exported, sorted(queried - exported)
