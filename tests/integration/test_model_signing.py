"""Signed bundles in a real MLflow registry: a tampered artifact is refused on every load path."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core.forecasting.bundle_signature import BundleSignatureError
from sfmlops.services import loading
from sfmlops.services.api import create_app
from sfmlops.services.model_training import champion_bundle
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH, TOKEN
from tests.support.model_registry import train_champion

pytestmark = pytest.mark.integration

KEY = "k" * 20 + "signing-key-for-tests"  # 41 characters
OTHER_KEY = "o" * 40


class _Planted:
    """Unpickling this writes a file: proof that a refused bundle was never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "unpickled"))  # type: ignore[return-value]


@pytest.fixture
def system(tmp_path: Path, rossmann_slice: Path) -> Iterator[tuple[Settings, Engine]]:
    """Champion version 1 (stores 1-3) trained and signed into the embedded MLflow store."""
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        model_signing_key=SecretStr(KEY),
        api_token=SecretStr(TOKEN),
        model_poll_seconds=3600,
    )
    engine = make_engine(settings.effective_database_url)
    settings.ensure_home()
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    train_champion(settings, engine, [1, 2, 3])
    yield settings, engine
    engine.dispose()


def _version_files(settings: Settings, version: str) -> Path:
    """The bundle folder of `version` inside the MLflow artifact store (not a cached copy)."""
    source = registry.connect(settings).get_model_version(registry.MODEL_NAME, version).source
    model_id = source.removeprefix("models:/")  # MLflow 3: the logged model's id
    [bundle] = [
        path.parent
        for path in settings.mlflow_artifacts_dir.rglob("bundle.json")
        if model_id in path.parts and path.parent.name == registry.BUNDLE_ARTIFACT
    ]
    return bundle


def _tamper(settings: Settings, version: str, marker: Path) -> None:
    """Replace one model pickle of `version` in the artifact store with a planted one."""
    bundle = _version_files(settings, version)
    [target] = list(bundle.rglob("forecaster.pkl"))[:1]
    target.write_bytes(pickle.dumps(_Planted(marker)))


def test_a_tampered_champion_is_refused_and_the_api_keeps_serving_the_signed_one(
    system: tuple[Settings, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = system
    marker = tmp_path / "planted-code-ran"
    assert (_version_files(settings, "1") / "signature.json").is_file()
    with TestClient(
        create_app(settings, engine=engine), raise_server_exceptions=False, headers=AUTH
    ) as client:
        assert client.get("/ready").json()["status"] == "ready"
        version_2 = train_champion(settings, engine, [1, 2, 3])
        _tamper(settings, version_2, marker)

        client.app.state.model_cache.refresh()  # type: ignore[attr-defined]

        ready = client.get("/ready").json()
        status = client.get("/v1/status").json()
    assert (ready["status"], ready["model_version"]) == ("degraded", "1"), ready
    assert "signature check" in ready["reason"]
    assert "altered: models/" in ready["reason"]
    assert "serving the loaded version 1" in ready["reason"]
    assert status["champion_version"] == "1"
    # Every other load path refuses it too, before unpickling anything.
    with pytest.raises(BundleSignatureError, match="altered: models/"):
        champion_bundle(settings)
    monkeypatch.setenv("SFMLOPS_MODEL_SIGNING_KEY", KEY)
    mlflow.set_tracking_uri(settings.effective_mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.effective_mlflow_tracking_uri)
    with pytest.raises(BundleSignatureError, match="altered: models/"):
        mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}@champion")
    assert not marker.exists()


def test_a_bundle_signed_with_another_key_or_unsigned_is_refused(
    system: tuple[Settings, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = system
    other = settings.model_copy(update={"model_signing_key": SecretStr(OTHER_KEY)})
    with pytest.raises(BundleSignatureError, match="another key"):
        champion_bundle(other)

    unsigned = settings.model_copy(update={"model_signing_key": None})
    train_champion(unsigned, engine, [1, 2, 3])
    with pytest.raises(BundleSignatureError, match="unsigned bundle"):
        champion_bundle(settings)
    # The signed version 1 still loads with the right key, also as a plain pyfunc model.
    monkeypatch.setenv("SFMLOPS_MODEL_SIGNING_KEY", KEY)
    mlflow.set_tracking_uri(settings.effective_mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.effective_mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}/1")
    assert model.unwrap_python_model().bundle.series == {(1, "total"), (2, "total"), (3, "total")}
