"""MLflow: one run per training job, one registered model whose versions are bundles.

Only this module imports mlflow. The registered model `sfmlops-forecaster` holds, per
version, the bundle of every series' champion as a pyfunc model, so any MLflow client with
sfmlops installed can do
`mlflow.pyfunc.load_model("models:/sfmlops-forecaster@champion").predict(future)`.
Aliases (`champion`, `challenger`), not the deprecated stages, say which version serves.

The pyfunc is logged as code (a three-line file importing `ForecastBundleModel`), not as a
pickle, and the bundle inside is signed when a signing key is configured: loading a version
unpickles nothing before the bundle's signature has been checked (`bundle_signature`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.store.model_registry.sqlalchemy_store import (
    SqlAlchemyStore as SqlAlchemyRegistryStore,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as SqlAlchemyTrackingStore

from sfmlops.core.forecasting.bundle_signature import sign_bundle
from sfmlops.settings import Settings

MODEL_NAME = "sfmlops-forecaster"
EXPERIMENT_NAME = "sfmlops-training"
CHAMPION = "champion"
CHALLENGER = "challenger"
BUNDLE_ARTIFACT = "bundle"
RMSPE_METRIC = "rmspe"  # the overall backtest RMSPE of the bundle's champions


class ForecastBundleModel(PythonModel):
    """The pyfunc face of a forecast bundle: future covariates in, forecasts out."""

    def load_context(self, context: PythonModelContext) -> None:
        from sfmlops.core.forecasting.bundle import ForecastBundle  # noqa: PLC0415 - at load time

        # Any MLflow client may load this model: the key comes from that process's environment
        # (SFMLOPS_MODEL_SIGNING_KEY), as for every other sfmlops entry point.
        self.bundle = ForecastBundle.load(
            Path(context.artifacts[BUNDLE_ARTIFACT]), signing_key=Settings().signing_key
        )

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.bundle.predict(model_input).frame


def connect(settings: Settings) -> MlflowClient:
    """Point mlflow at the configured tracking store and return a client.

    The embedded store (SQLite in HOME) keeps artifacts in HOME/mlartifacts; a tracking
    server decides for itself.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Job logs and the CLI have their own progress; tqdm bars per upload only add noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.effective_mlflow_tracking_uri
    if uri.startswith("sqlite:"):
        initialise_embedded_store(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_initialised: set[str] = set()  # embedded stores this process has created or checked


def initialise_embedded_store(settings: Settings) -> None:
    """Create the embedded MLflow store's tables once, whoever asks first.

    MLflow creates its tables on first use without a lock: two processes starting on a fresh
    HOME at once (a training job and the API, say) both try, and one fails with "table ...
    already exists". Here the first one creates them under a file lock beside the database and
    the others wait, then find them. A tracking server needs none of this.
    """
    uri = settings.effective_mlflow_tracking_uri
    if not uri.startswith("sqlite:") or uri in _initialised:
        return
    settings.ensure_home()
    lock_path = settings.home / "mlflow.db.init.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Constructing the stores creates (or upgrades) every table of the database.
            SqlAlchemyTrackingStore(uri, settings.mlflow_artifacts_dir.as_uri())  # type: ignore[no-untyped-call]
            SqlAlchemyRegistryStore(uri)  # type: ignore[no-untyped-call]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _initialised.add(uri)


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    """The training experiment, created on first use."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if settings.effective_mlflow_tracking_uri.startswith("sqlite:"):
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifacts_dir.as_uri()
    try:
        return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=location))
    except MlflowException as error:
        # Another process created it between the look-up and here: use theirs.
        raced = client.get_experiment_by_name(EXPERIMENT_NAME)
        if raced is None:
            raise
        del error
        return str(raced.experiment_id)


@dataclass(frozen=True)
class RegisteredVersion:
    version: str
    run_id: str
    rmspe: float | None


# The pyfunc's code: MLflow runs this file to build the model, so loading a version unpickles
# nothing of its own (a pickled PythonModel would be unpickled before any check could run).
_PYFUNC_CODE = """\
import mlflow
from sfmlops.adapters.mlflow_registry import ForecastBundleModel
mlflow.models.set_model(ForecastBundleModel())
"""


def register_bundle(
    bundle_dir: Path,
    *,
    run_id: str,
    signing_key: bytes | None,
    description: str = "",
) -> RegisteredVersion:
    """Sign the bundle folder (with a key), log it as a pyfunc model in the active run and
    register a new version."""
    if signing_key is not None:
        sign_bundle(bundle_dir, signing_key)
    code = bundle_dir.parent / "forecast_bundle_model.py"
    code.write_text(_PYFUNC_CODE)
    info = mlflow.pyfunc.log_model(
        name=BUNDLE_ARTIFACT,
        python_model=str(code),
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        registered_model_name=MODEL_NAME,
        pip_requirements=[f"sfmlops=={_version()}"],
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    if description:
        client.update_model_version(MODEL_NAME, version, description=description)
    rmspe = client.get_run(run_id).data.metrics.get(RMSPE_METRIC)
    return RegisteredVersion(version=version, run_id=run_id, rmspe=rmspe)


class RegistryUnavailableError(RuntimeError):
    """The tracking server or store could not be reached or failed."""


def version_with_alias(client: MlflowClient, alias: str) -> RegisteredVersion | None:
    """The version an alias points at, with its run's RMSPE, or None when there is none.

    Raises:
        RegistryUnavailableError: The registry did not answer (never taken for "no alias").
    """
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, alias)
        rmspe = (
            client.get_run(version.run_id).data.metrics.get(RMSPE_METRIC)
            if version.run_id
            else None
        )
    except MlflowException as error:
        if error.error_code in _ABSENT or (
            error.error_code == _PERMISSION_DENIED and not _model_registered(client)
        ):
            return None
        raise RegistryUnavailableError(f"MLflow registry: {error.message}") from error
    return RegisteredVersion(version=str(version.version), run_id=str(version.run_id), rmspe=rmspe)


# What MLflow answers for an unknown model or alias (as opposed to a failure to answer).
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# MLflow's basic-auth app answers 403, not 404, to a user other than the admin who asks for an
# alias of a model that does not exist yet (it cannot resolve a permission for it): before the
# first training, the API's reader and the writer's first training job get it.
_PERMISSION_DENIED = "PERMISSION_DENIED"


def _model_registered(client: MlflowClient) -> bool:
    """Whether the registered model exists (a search answers with what the user may read)."""
    try:
        return bool(client.search_registered_models(filter_string=f"name = '{MODEL_NAME}'"))
    except MlflowException as error:
        raise RegistryUnavailableError(f"MLflow registry: {error.message}") from error


@dataclass(frozen=True)
class Promotion:
    alias: str  # the alias the new version received
    reason: str
    previous_champion: str | None


def promote(
    client: MlflowClient,
    candidate: RegisteredVersion,
    *,
    tolerance: float = 0.02,
    force: bool = False,
) -> Promotion:
    """Give `champion` to the candidate unless it is worse than the champion by more than `tolerance`.

    Args:
        tolerance: Relative RMSPE a new version may lose and still take over (0.02 = 2 %):
            retrains on newer data are preferred unless clearly worse.
        force: Make it the champion regardless.
    """
    current = version_with_alias(client, CHAMPION)
    if current is None or force:
        reason = "forced" if force and current else "no champion yet"
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, candidate.version)
        return Promotion(CHAMPION, reason, current.version if current else None)
    if (
        candidate.rmspe is not None
        and current.rmspe is not None
        and candidate.rmspe > current.rmspe * (1 + tolerance)
    ):
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, candidate.version)
        reason = (
            f"backtest RMSPE {candidate.rmspe:.4f} is worse than the champion's {current.rmspe:.4f} "
            f"by more than {tolerance:.0%}"
        )
        return Promotion(CHALLENGER, reason, current.version)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, candidate.version)
    return Promotion(CHAMPION, "not worse than the champion beyond the tolerance", current.version)


def set_alias(client: MlflowClient, alias: str, version: str) -> None:
    """Point `alias` at `version`."""
    client.set_registered_model_alias(MODEL_NAME, alias, version)


def download_bundle(client: MlflowClient, version: str, destination: Path) -> Path:
    """Fetch a version's bundle folder; returns the folder to load it from.

    Raises:
        LookupError: No such version.
    """
    # MLflow 3 keeps a version's files with its logged model; `models:/name/version`
    # resolves there for file stores, SQL stores and tracking servers alike.
    try:
        client.get_model_version(MODEL_NAME, version)
    except MlflowException as error:
        raise LookupError(f"{MODEL_NAME} has no version {version!r}") from error
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{MODEL_NAME}/{version}",
        dst_path=str(destination),
        tracking_uri=client.tracking_uri,
    )
    return Path(local) / "artifacts" / BUNDLE_ARTIFACT


@contextmanager
def training_run(
    client: MlflowClient, settings: Settings, run_name: str, tags: Mapping[str, str]
) -> Iterator[str]:
    """An active MLflow run for one training job; yields its id.

    The run ends FINISHED, or FAILED when the block raises.
    """
    with mlflow.start_run(
        experiment_id=experiment_id(client, settings), run_name=run_name, tags=dict(tags)
    ) as run:
        yield str(run.info.run_id)


def registered_at(client: MlflowClient, version: str) -> dt.datetime:
    """When a version was registered (UTC)."""
    created = client.get_model_version(MODEL_NAME, version).creation_timestamp
    return dt.datetime.fromtimestamp(created / 1000, dt.UTC)


def log_params(params: Mapping[str, Any]) -> None:
    """Log run parameters (values longer than MLflow's limit are cut with a note)."""
    mlflow.log_params({key: _short(value) for key, value in params.items()})


def log_metrics(metrics: Mapping[str, float]) -> None:
    """Log run metrics (NaN values are left out: MLflow cannot compare them)."""
    mlflow.log_metrics(
        {key: float(value) for key, value in metrics.items() if not math.isnan(float(value))}
    )


def log_artifacts(folder: Path, artifact_path: str) -> None:
    """Upload a folder's files under `artifact_path` of the active run."""
    mlflow.log_artifacts(str(folder), artifact_path)


def set_tags(tags: Mapping[str, str]) -> None:
    """Tag the active run."""
    mlflow.set_tags(dict(tags))


def list_versions(client: MlflowClient) -> list[Any]:
    """Every registered version of the model, newest first."""
    versions = client.search_model_versions(
        f"name = '{MODEL_NAME}'", order_by=["version_number DESC"]
    )
    return list(versions)


def _short(value: Any, limit: int = 6000) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 20] + "... (truncated)"


def _version() -> str:
    from sfmlops import __version__  # noqa: PLC0415

    return __version__


def scratch_dir(settings: Settings) -> Path:
    """A folder under HOME for bundles on their way to or from MLflow."""
    folder = settings.home / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=folder))
