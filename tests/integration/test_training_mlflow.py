"""Training jobs on a real local Ray, tracked and registered in a real MLflow server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, update

from sfmlops.adapters import mlflow_registry as registry
from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.adapters.db.tables import sales
from sfmlops.adapters.ray_cluster import RayExecutor, ray_session
from sfmlops.core import columns
from sfmlops.core.forecasting.bundle import future_days
from sfmlops.core.forecasting.executors import SequentialExecutor
from sfmlops.core.forecasting.gbm import GlobalGBMForecaster
from sfmlops.services import batch_forecast, loading
from sfmlops.services.model_training import (
    TrainingFailedError,
    TrainingRequest,
    champion_bundle,
    run_training,
)
from sfmlops.settings import Settings

pytestmark = pytest.mark.integration
FIRST_DAY = pd.Timestamp("2015-06-14")  # the day after the slice ends


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path, mlflow_server: str
) -> Iterator[tuple[Settings, Engine]]:
    """The slice (20 stores, 90 days) in SQLite, a tracking server and a local Ray (2 CPUs)."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(_env_file=None, home=home, mlflow_tracking_uri=mlflow_server)
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    loading.load_folder(engine, rossmann_slice)
    with ray_session(settings, num_cpus=2):
        yield settings, engine
    engine.dispose()


def champion(settings: Settings) -> registry.RegisteredVersion:
    found = registry.version_with_alias(registry.connect(settings), registry.CHAMPION)
    assert found is not None
    return found


def forecast_all(settings: Settings) -> pd.DataFrame:
    _, bundle = champion_bundle(settings)
    return bundle.predict(future_days(bundle.series, FIRST_DAY, 7)).frame


def test_a_job_on_ray_registers_a_champion_that_plain_pyfunc_serves(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system

    outcome = run_training(
        settings,
        engine,
        TrainingRequest(models=["gbm", "seasonal_naive"], windows=1),
        RayExecutor(),
    )

    assert (outcome.mode, outcome.alias, outcome.series) == ("full", "champion", 20)
    assert champion(settings).version == outcome.version
    run = registry.connect(settings).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data_fingerprint"]
    assert run.data.params["series"] == "20"
    assert run.data.metrics["rmspe"] == pytest.approx(run.data.metrics["champion_rmspe"])
    # Every backtest window's metrics, named by number and kind (90 days: no season window).
    assert run.data.metrics["w1_rolling_gbm_rmspe"] == pytest.approx(run.data.metrics["gbm_rmspe"])
    # The window's fit sees 42 days, too few to calibrate intervals on: it has no intervals,
    # so no coverage is logged (not a coverage of 0).
    assert "w1_rolling_gbm_coverage_80" not in run.data.metrics
    assert "gbm_coverage_80" not in run.data.metrics
    assert run.data.tags["sfmlops.window.1"] == "rolling 2015-04-27..2015-06-13"
    # The gbm's metrics are its backtest stand-in's: the run names it (MLflow metrics have no
    # description); seasonal_naive's are its own.
    assert run.data.tags["sfmlops.backtest_stand_in.gbm"] == (
        GlobalGBMForecaster().stand_in_description()
    )
    assert "sfmlops.backtest_stand_in.seasonal_naive" not in run.data.tags
    assert outcome.stand_ins == {"gbm": run.data.tags["sfmlops.backtest_stand_in.gbm"]}
    artifacts = {
        item.path for item in registry.connect(settings).list_artifacts(outcome.run_id, "report")
    }
    assert {"report/series_metrics.csv", "report/error_distribution.png"} <= artifacts
    # Any MLflow client with sfmlops installed loads the champion as a plain pyfunc model.
    future = future_days({(store, "total") for store in (1, 2, 3)}, FIRST_DAY, 7)
    # Both URIs: `models:/` names resolve in the registry, which earlier tests in this
    # process may have pointed elsewhere.
    mlflow.set_tracking_uri(settings.effective_mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.effective_mlflow_tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}@champion").predict(future)
    _, bundle = champion_bundle(settings)
    pd.testing.assert_frame_equal(served, bundle.predict(future).frame)


def test_a_single_store_retrain_changes_only_that_store(system: tuple[Settings, Engine]) -> None:
    settings, engine = system
    before_version = champion(settings).version
    before = forecast_all(settings)
    # Store 4's last weeks doubled: its own models must follow, no other store may move.
    with engine.begin() as connection:
        connection.execute(
            update(sales)
            .where(sales.c.store_id == 4, sales.c.sales_date >= pd.Timestamp("2015-05-01").date())
            .values(sales=sales.c.sales * 2)
        )

    outcome = run_training(settings, engine, TrainingRequest(store_ids=[4]), SequentialExecutor())

    assert outcome.mode == "retrain"
    assert int(outcome.version) == int(before_version) + 1
    after = forecast_all(settings)
    others = before[columns.STORE_ID] != 4
    pd.testing.assert_frame_equal(before[others], after[others])
    _, bundle = champion_bundle(settings)
    store_4 = bundle.champions[bundle.champions[columns.STORE_ID] == 4].iloc[0]
    if store_4[columns.MODEL] == "seasonal_naive":
        assert (
            after.loc[~others, columns.YHAT].sum() > 1.5 * before.loc[~others, columns.YHAT].sum()
        )
    assert bundle.metadata["parent_version"] == before_version


def test_a_store_retrain_with_prophet_adds_it_for_that_store_only(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system
    before = forecast_all(settings)

    outcome = run_training(
        settings,
        engine,
        TrainingRequest(models=["prophet", "seasonal_naive"], store_ids=[5], force=True),
        SequentialExecutor(),
    )

    assert outcome.mode == "retrain"
    _, bundle = champion_bundle(settings)
    assert bundle.models["prophet"].series_ == {(5, "total")}
    store_5 = bundle.champions[bundle.champions[columns.STORE_ID] == 5].iloc[0]
    assert store_5[columns.MODEL] in {"prophet", "seasonal_naive"}  # gbm was not named
    assert np.isfinite(store_5["rmspe_prophet"])
    after = forecast_all(settings)
    others = before[columns.STORE_ID] != 5
    pd.testing.assert_frame_equal(before[others], after[others])
    run = registry.connect(settings).get_run(outcome.run_id)
    assert run.data.params["models"] == "prophet,seasonal_naive"


def test_a_clearly_worse_version_becomes_challenger_unless_forced(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system
    current = champion(settings)

    worse = run_training(
        settings, engine, TrainingRequest(models=["seasonal_naive"], windows=1), RayExecutor()
    )

    assert worse.alias == "challenger"
    assert "worse than the champion" in worse.reason
    assert champion(settings).version == current.version
    forced = run_training(
        settings,
        engine,
        TrainingRequest(models=["seasonal_naive"], windows=1, force=True),
        RayExecutor(),
    )
    assert forced.alias == "champion"
    assert champion(settings).version == forced.version


def test_the_batch_forecast_writes_every_series_with_the_champion_version(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system

    result = batch_forecast.forecast_next_days(settings, engine, days=7)

    assert (result.series, result.rows, result.start) == (20, 140, FIRST_DAY.date())
    assert result.model_version == champion(settings).version


def test_a_store_whose_fit_fails_keeps_a_model_and_too_many_fail_the_job(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system
    # Store 2 opened on one day only: Prophet cannot fit a series of one point.
    with engine.begin() as connection:
        connection.execute(
            update(sales)
            .where(sales.c.store_id == 2, sales.c.sales_date < pd.Timestamp("2015-06-13").date())
            .values(open=0, sales=0, customers=0)
        )
    current = champion(settings).version
    # One store of 20 is 5 %, the default limit: a stricter limit fails the job.
    request = TrainingRequest(
        models=["prophet", "seasonal_naive"], windows=1, max_failed_share=0.04
    )

    with pytest.raises(TrainingFailedError, match="1 of 20 series failed"):
        run_training(settings, engine, request, RayExecutor())
    assert champion(settings).version == current

    tolerant = TrainingRequest(models=["prophet", "seasonal_naive"], windows=1, force=True)
    outcome = run_training(settings, engine, tolerant, RayExecutor())

    assert outcome.alias == "champion"
    assert outcome.warnings == ["store 2 product total: fit failed, kept its previous model"]
    _, bundle = champion_bundle(settings)
    store_2 = bundle.champions[bundle.champions[columns.STORE_ID] == 2].iloc[0]
    assert store_2[columns.MODEL] == "seasonal_naive"
    assert np.isfinite(forecast_all(settings)[columns.YHAT]).all()


def test_a_full_job_fits_the_gbm_in_shards_of_the_configured_size(
    system: tuple[Settings, Engine],
) -> None:
    settings, engine = system
    sharded = settings.model_copy(update={"gbm_shard_series": 8})

    outcome = run_training(
        sharded,
        engine,
        TrainingRequest(models=["gbm"], windows=1, force=True),
        SequentialExecutor(),
    )

    _, bundle = champion_bundle(settings)
    assert champion(settings).version == outcome.version
    model = bundle.models["gbm"]
    assert isinstance(model, GlobalGBMForecaster)
    # 20 stores of one series each, whole stores per shard: 8 + 8 + 4.
    assert model.shards_ is not None
    assert len(model.shards_) == 3
    stores_per_shard = Counter(model.shard_of_store_.values())
    assert [stores_per_shard[shard] for shard in range(3)] == [8, 8, 4]
    run = registry.connect(settings).get_run(outcome.run_id)
    assert run.data.params["gbm_shard_series"] == "8"
    assert np.isfinite(forecast_all(settings)[columns.YHAT]).all()
