"""When the API's poller checks the registry for a new champion (`champion_check_due`)."""

from __future__ import annotations

import pytest

from sfmlops.services.api.model_cache import TrainingActivity, champion_check_due

POLL = 30.0
IDLE = TrainingActivity(active_jobs=0, succeeded_jobs=4)


def test_idle_training_waits_for_the_poll_interval() -> None:
    assert not champion_check_due(IDLE, IDLE, 2.0, POLL)
    assert not champion_check_due(IDLE, IDLE, 29.9, POLL)
    assert champion_check_due(IDLE, IDLE, 30.0, POLL)


@pytest.mark.parametrize("active", [1, 3])
def test_an_active_job_makes_every_tick_a_check(active: int) -> None:
    running = TrainingActivity(active_jobs=active, succeeded_jobs=4)

    assert champion_check_due(running, IDLE, 0.0, POLL)
    assert champion_check_due(running, running, 2.0, POLL)


def test_a_job_that_succeeded_since_the_last_check_is_checked_for_once() -> None:
    finished = TrainingActivity(active_jobs=0, succeeded_jobs=5)

    assert champion_check_due(finished, IDLE, 2.0, POLL)
    # The next tick compares with what the check saw.
    assert not champion_check_due(finished, finished, 2.0, POLL)


def test_unreadable_jobs_fall_back_to_the_poll_interval() -> None:
    assert not champion_check_due(None, IDLE, 2.0, POLL)
    assert not champion_check_due(IDLE, None, 2.0, POLL)
    assert champion_check_due(None, None, POLL, POLL)
