"""Per-store gauges over replayed days, evaluated by Prometheus' own rule engine (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import yaml

RULES = Path(__file__).resolve().parents[2] / "sfmlops-helm" / "rules" / "sfmlops.rules.yaml"
ALERT = "SfmlopsStoreForecastDegraded"
MARGIN = 2.0  # the rule's literals
EVENINGS = 2
SAMPLES_PER_DAY = 288  # one sample every 5 minutes


def degraded_by_day(gauges: pd.DataFrame, days: list[pd.Timestamp]) -> dict[int, set[int]]:
    """For each day's index, the stores whose exported realized RMSPE was above 2x their
    baseline on that evening and the one before (what the rule's `for: 1d` needs)."""
    above = {
        (pd.Timestamp(row["as_of"]), int(row["store_id"]))
        for row in gauges.to_dict("records")
        if row["realized_rmspe"] > MARGIN * row["baseline_rmspe"]
    }
    stores = {int(store) for store in gauges["store_id"].unique()}
    return {
        index: {
            store
            for store in stores
            if index >= EVENINGS - 1
            and all((days[index - k], store) in above for k in range(EVENINGS))
        }
        for index in range(len(days))
    }


def assert_rule_agrees(gauges: pd.DataFrame, days: list[pd.Timestamp], folder: Path) -> None:
    """Replay the gauges (one value per evening `as_of`, absent when /metrics did not export
    the store) through the alert rules with `promtool test rules`, and check that at noon of
    each day SfmlopsStoreForecastDegraded fires for exactly the stores `degraded_by_day` names."""
    series = []
    for store_id, rows in gauges.groupby("store_id"):
        by_day = rows.set_index(pd.to_datetime(rows["as_of"]))
        for name, column in (
            ("sfmlops_store_realized_rmspe", "realized_rmspe"),
            ("sfmlops_store_baseline_rmspe", "baseline_rmspe"),
        ):
            values = " ".join(
                f"{by_day.loc[day, column]:.6f}x{SAMPLES_PER_DAY - 1}"
                if day in by_day.index
                else f"_x{SAMPLES_PER_DAY - 1}"
                for day in days
            )
            series.append({"series": f'{name}{{store_id="{store_id}"}}', "values": values})
    expected = degraded_by_day(gauges, days)
    checks = []
    for index, day in enumerate(days):
        evening = gauges[pd.to_datetime(gauges["as_of"]) == day].set_index("store_id")
        checks.append(
            {
                "eval_time": f"{index}d12h",
                "alertname": ALERT,
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "store_id": str(store)},
                        "exp_annotations": _annotations(
                            store, float(evening.loc[store, "realized_rmspe"])
                        ),
                    }
                    for store in sorted(expected[index])
                ],
            }
        )
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "5m",
        "tests": [{"interval": "5m", "input_series": series, "alert_rule_test": checks}],
    }
    path = folder / "replayed.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-system-deps.sh"
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _annotations(store: int, realized: float) -> dict[str, str]:
    return {
        "summary": f"Store {store}: realized RMSPE {realized:.3f} above 2x its baseline "
        "on 2 evenings",
        "description": f"Store {store}'s forecasts over the last week missed by more than "
        "twice what its backtest and the other stores' misses lead to expect, on two evenings "
        "in a row. The daily DAG retrains stale stores; check the store's sales for a real "
        "change.",
        "runbook_url": "https://github.com/sfmlops/sfmlops/blob/main/docs/runbooks.md"
        "#sfmlopsstoreforecastdegraded",
    }
