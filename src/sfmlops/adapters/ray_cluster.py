"""Ray: connecting to a cluster (or starting a local one) and running training tasks on it.

Only this module imports ray. Nothing starts on import: `ray_session` is entered by the
command that needs Ray and shuts it down on exit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sfmlops.settings import Settings

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

LOOPBACK = "127.0.0.1"
# Ray puts unix sockets under its temp dir; their paths must stay under 107 bytes.
_MAX_TEMP_DIR_LENGTH = 40


def local_temp_dir(home: Path) -> Path:
    """Ray's temp dir for a local cluster: under HOME, or a short stand-in when HOME is deep."""
    preferred = home / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_LENGTH:
        return preferred
    digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"sfmlops-ray-{digest}"


# Set by Ray's job supervisor for the driver of a submitted job (with RAY_ADDRESS, the GCS
# address of the cluster the job runs on).
RAY_JOB_MARKER = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def cluster_address(settings: Settings) -> str | None:
    """The Ray cluster to use.

    Inside a Ray job: the job's own cluster (Ray's RAY_ADDRESS), reached directly. A
    SFMLOPS_RAY_ADDRESS the pod also carries (a ray:// Ray Client address, for commands run
    outside the cluster) must not win there: it would route the job's driver through Ray Client
    back into the cluster it already runs on. Elsewhere: SFMLOPS_RAY_ADDRESS, then RAY_ADDRESS.
    None means no cluster is configured (commands start a local Ray when they need one).
    """
    ray_address = os.environ.get("RAY_ADDRESS")
    if ray_address and RAY_JOB_MARKER in os.environ:
        return ray_address
    return settings.ray_address or ray_address or None


@contextmanager
def ray_session(settings: Settings, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to the cluster of `cluster_address`, else start a local Ray.

    A local Ray listens on 127.0.0.1 only, has no dashboard and sends no usage stats. When
    Ray is already initialised in this process (e.g. inside a Ray job), it is reused as is.
    """
    address = cluster_address(settings)
    if address and address.split("://")[-1].rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        # Ray rewrites a loopback address to this machine's network address before
        # connecting, where a head bound to 127.0.0.1 does not listen; with this switch
        # (read when ray is imported) it keeps loopback as this node's address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray  # noqa: PLC0415 - heavy; imported by the commands that use Ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address:
        options["address"] = address
    else:
        temp_dir = local_temp_dir(settings.home)
        temp_dir.mkdir(parents=True, exist_ok=True)
        options |= {
            "num_cpus": num_cpus or os.cpu_count() or 1,
            "include_dashboard": False,
            "_node_ip_address": LOOPBACK,
            "_temp_dir": str(temp_dir),
        }
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()


class RayExecutor:
    """Runs each task as a Ray task (the `Executor` protocol of the forecasting core).

    Args:
        cpus_per_task: CPUs Ray reserves for each task; a global model fitting with its own
            threads asks for more.
    """

    def __init__(self, cpus_per_task: float = 1.0) -> None:
        self.cpus_per_task = cpus_per_task

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
        """Apply `function` to every item on the cluster; results in the items' order."""
        import ray  # noqa: PLC0415

        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=0)(function)
        references = [remote.remote(item) for item in items]
        return list(ray.get(references))
