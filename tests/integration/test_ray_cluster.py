"""Training tasks on a real local Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfmlops.adapters.ray_cluster import RayExecutor, local_temp_dir, ray_session
from sfmlops.settings import Settings

pytestmark = pytest.mark.integration


def worker_pid_and_square(value: int) -> tuple[int, int]:
    return os.getpid(), value * value


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    settings = Settings(_env_file=None, home=tmp_path_factory.mktemp("home"))
    with ray_session(settings, num_cpus=2):
        yield


@pytest.mark.usefixtures("local_ray")
def test_tasks_run_in_ray_workers_in_order() -> None:
    results = RayExecutor().map(worker_pid_and_square, range(12))

    assert [square for _, square in results] == [value * value for value in range(12)]
    assert os.getpid() not in {pid for pid, _ in results}


@pytest.mark.usefixtures("local_ray")
def test_a_failing_task_raises_in_the_caller() -> None:
    with pytest.raises(Exception, match="ZeroDivisionError"):
        RayExecutor().map(lambda value: 1 // value, [1, 0])


def test_deep_homes_get_a_short_temp_dir(tmp_path: Path) -> None:
    assert local_temp_dir(Path("/srv/h")) == Path("/srv/h/ray")
    deep = local_temp_dir(tmp_path / ("x" * 80))
    assert len(str(deep)) <= 40
    assert deep == local_temp_dir(tmp_path / ("x" * 80))
