"""A retrain as the store page words it: its steps, and the series before and after."""

from __future__ import annotations

import datetime as dt

import pytest

from sfmlops.ui import responses
from sfmlops.ui.retrain_feedback import SeriesSnapshot, comparison_table, retrain_steps

MONDAY = dt.date(2015, 6, 15)
BEFORE = SeriesSnapshot("4", "seasonal_naive", 0.123, MONDAY, 40_000.0)
AFTER = SeriesSnapshot("5", "gbm", 0.101, MONDAY, 41_000.0)


def job(
    status: str, version: str | None = None, done: int = 0, total: int = 0
) -> responses.TrainingJob:
    return responses.TrainingJob.model_validate(
        {
            "id": "0123456789abcdef",
            "status": status,
            "stores": [3],
            "progress_done": done,
            "progress_total": total,
            "created_at": "2026-01-01T00:00:00Z",
            "finished_at": None,
            "model_version": version,
            "error": None,
        }
    )


@pytest.mark.parametrize(
    ("reported", "serving", "states"),
    [
        (job("queued"), "4", ["done", "current", "pending", "pending"]),
        (job("running", done=0, total=1), "4", ["done", "current", "pending", "pending"]),
        (job("failed"), "4", ["done", "failed", "pending", "pending"]),
        (job("succeeded", "5", 1, 1), "4", ["done", "done", "done", "current"]),
        (job("succeeded", "5", 1, 1), "5", ["done", "done", "done", "done"]),
    ],
)
def test_the_steps_follow_the_job_until_its_version_is_served(
    reported: responses.TrainingJob, serving: str, states: list[str]
) -> None:
    steps = retrain_steps(reported, serving, store_id=3)

    assert [step.state for step in steps] == states
    assert steps[0].label == "Job 0123456789ab submitted"


def test_the_steps_say_how_far_training_is_and_which_version_it_made() -> None:
    running = retrain_steps(job("running", done=0, total=1), "4", store_id=3)
    finished = retrain_steps(job("succeeded", "5", 1, 1), "4", store_id=3)

    assert running[1].label == "Training store 3: 0 of 1 series done"
    assert [step.label for step in finished[2:]] == [
        "Version 5 registered",
        "Version 5 served by the API",
    ]


def test_the_comparison_gives_rmspe_in_points_and_the_week_in_percent() -> None:
    table = comparison_table(BEFORE, AFTER).set_index("")

    assert table.loc["Model version"].tolist() == ["4", "5", ""]
    assert table.loc["Model for this series"].tolist() == ["seasonal_naive", "gbm", ""]
    assert table.loc["Backtest RMSPE"].tolist() == ["12.3%", "10.1%", "-2.2 pp"]
    assert table.loc["Forecast, next 7 days from 2015-06-15"].tolist() == [
        "40,000",
        "41,000",
        "+2.5%",
    ]


def test_the_comparison_says_what_it_cannot_compare() -> None:
    first = SeriesSnapshot(version=None)
    moved = SeriesSnapshot("5", "gbm", 0.101, MONDAY + dt.timedelta(days=1), 41_000.0)

    from_nothing = comparison_table(first, AFTER).set_index("")
    other_days = comparison_table(BEFORE, moved).set_index("")

    assert from_nothing.loc["Model version"].tolist() == ["none", "5", ""]
    assert from_nothing.loc["Backtest RMSPE"].tolist() == ["n/a", "10.1%", ""]
    assert other_days.loc["Forecast, next 7 days from 2015-06-16", "change"] == (
        "other days (before from 2015-06-15)"
    )
