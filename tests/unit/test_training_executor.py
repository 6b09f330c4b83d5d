"""`sfmlops train --executor auto`: a cluster only where it can help."""

from __future__ import annotations

import pytest

from sfmlops.adapters.ray_cluster import RAY_JOB_MARKER, cluster_address
from sfmlops.services.model_training import TrainingRequest
from sfmlops.services.training_executors import auto_executor
from sfmlops.settings import Settings


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("SFMLOPS_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(RAY_JOB_MARKER, raising=False)
    return Settings(_env_file=None)


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        # Local processes: gbm's shards side by side; a single fit stays in process.
        (["gbm"], "processes"),
        (["gbm", "seasonal_naive"], "processes"),
        (["gbm", "prophet"], "ray"),  # Prophet's per-store chunks fan out
    ],
)
def test_without_a_cluster_ray_is_started_only_for_fan_out(
    no_cluster: Settings, models: list[str], expected: str
) -> None:
    assert auto_executor(no_cluster, TrainingRequest(models=models)) == expected


def test_a_configured_cluster_runs_full_jobs(no_cluster: Settings) -> None:
    settings = no_cluster.model_copy(update={"ray_address": "ray://127.0.0.1:10001"})
    assert auto_executor(settings, TrainingRequest(models=["gbm"])) == "ray"


def test_inside_a_ray_job_the_job_s_cluster_is_used(
    no_cluster: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert auto_executor(no_cluster, TrainingRequest(models=["gbm"])) == "ray"


def test_store_retrains_stay_in_process(no_cluster: Settings) -> None:
    settings = no_cluster.model_copy(update={"ray_address": "ray://127.0.0.1:10001"})
    request = TrainingRequest(models=["gbm", "prophet"], store_ids=[4])
    assert auto_executor(settings, request) == "sequential"


def test_inside_a_ray_job_the_job_s_cluster_wins_over_a_client_address(
    no_cluster: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ray pod of the chart may carry SFMLOPS_RAY_ADDRESS=ray://head:10001 (Ray Client, for
    # commands outside the cluster); the job's driver must use the job's own cluster.
    settings = no_cluster.model_copy(update={"ray_address": "ray://head-svc:10001"})
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    monkeypatch.setenv(RAY_JOB_MARKER, "{}")
    assert cluster_address(settings) == "10.0.0.7:6379"


def test_outside_a_ray_job_the_configured_address_wins(
    no_cluster: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = no_cluster.model_copy(update={"ray_address": "ray://head-svc:10001"})
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert cluster_address(settings) == "ray://head-svc:10001"
    assert cluster_address(no_cluster) == "10.0.0.7:6379"
