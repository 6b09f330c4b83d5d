"""
# sfmlops weekly retrain and batch forecast

Every week:

1. `submit_training_job`: `POST /v1/training-jobs` (the `stores` param, or every store;
   the `models` param, default `SFMLOPS_TRAINING_MODELS`, or the API's default model set);
   notes the champion before training.
2. `wait_for_training_job`: a sensor in reschedule mode (no worker slot held between
   pokes) asks `GET /v1/training-jobs/{id}` until the job succeeds; a failed job fails it
   at once with the job's error; it gives up after `SFMLOPS_TRAINING_TIMEOUT_SECONDS`.
3. `check_champion`: `GET /v1/models/champion` until the API serves the new version (it
   polls the registry; bounded by `SFMLOPS_CHAMPION_WAIT_SECONDS`); records whether the
   champion moved and, if not, why (the job's warnings, or the new version lost to it).
4. `write_forecasts`: `sfmlops pipeline forecast` writes the next `horizon_days` days for
   every series with the champion the API serves (batch and online forecasts agree).
5. `verify_forecasts`: `sfmlops check forecasts` fails unless every series has
   `horizon_days` rows for the champion's version.

API calls use the `sfmlops_api` connection (host = URL, password = token) or
SFMLOPS_API_URL / SFMLOPS_API_TOKEN; commands run as set by `SFMLOPS_COMMAND_RUNNER`
(see `docs/orchestration.md`). A task that fails after its retries records itself in the
`sfmlops_last_failure` Variable.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, PokeReturnValue, dag, task
from sfmlops_orchestration.commands import sfmlops_command
from sfmlops_orchestration.dag_config import DagConfig
from sfmlops_orchestration.defaults import dag_arguments

log = logging.getLogger(__name__)
config = DagConfig.from_environment()


@dag(
    dag_id="sfmlops_weekly_train_forecast",
    schedule="@weekly",
    doc_md=__doc__,
    params={
        "stores": Param(
            None,
            type=["null", "array"],
            items={"type": "integer"},
            description="Store ids to retrain; empty means every store.",
        ),
        "models": Param(
            list(config.training_models) or None,
            type=["null", "array"],
            items={"type": "string", "minLength": 1},
            description="Models to train and pick each series' champion among (e.g. gbm, "
            "seasonal_naive, prophet); empty means the API's default set.",
        ),
        "horizon_days": Param(
            7, type="integer", minimum=1, description="Forecast days each series must get."
        ),
        "max_incomplete_series": Param(
            0, type="integer", minimum=0, description="Series allowed to lack forecast days."
        ),
    },
    **dag_arguments(config, "training", "forecast"),
)
def sfmlops_weekly_train_forecast() -> None:
    @task(doc_md="Submit a training job through the API; note the champion before it.")
    def submit_training_job(params: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        from sfmlops_orchestration.api import SfmlopsApi  # noqa: PLC0415 - run time only

        api = SfmlopsApi.from_airflow()
        before = api.champion()
        models = params.get("models") or None
        job = api.submit_training_job(
            params.get("stores") or None,
            f"weekly training (sfmlops_weekly_train_forecast {run_id})",
            models,
        )
        log.info(
            "submitted training job %s (stores: %s, models: %s)",
            job["id"],
            job["stores"] or "all",
            ",".join(models) if models else "the API's default",
        )
        return {"job_id": job["id"], "champion_before": before["version"] if before else None}

    @task.sensor(
        mode="reschedule",
        poke_interval=config.training_poke_interval.total_seconds(),
        timeout=config.training_timeout.total_seconds(),
        exponential_backoff=False,
        doc_md="Wait for the training job; fail at once with its error if it fails.",
    )
    def wait_for_training_job(submitted: dict[str, Any]) -> PokeReturnValue:
        from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415
        from sfmlops_orchestration.api import SfmlopsApi  # noqa: PLC0415

        job = SfmlopsApi.from_airflow().training_job(submitted["job_id"])
        log.info(
            "training job %s: %s, %s/%s stores",
            job["id"],
            job["status"],
            job["progress_done"],
            job["progress_total"],
        )
        if job["status"] == "failed":
            # Not retried: the job itself failed, a new poke would read the same record.
            raise AirflowFailException(f"training job {job['id']} failed: {job['error']}")
        return PokeReturnValue(is_done=job["status"] == "succeeded", xcom_value=job)

    @task(doc_md="Did the champion the API serves move to the new version? If not, record why.")
    def check_champion(submitted: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        import time  # noqa: PLC0415

        from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415
        from sfmlops_orchestration.api import SfmlopsApi  # noqa: PLC0415

        api = SfmlopsApi.from_airflow()
        # The API picks a new champion up on its next registry poll: give it that long. A
        # version that became challenger never shows, and the wait ends at the bound.
        deadline = time.monotonic() + config.champion_wait.total_seconds()
        champion = api.champion()
        while (
            champion is None or champion["version"] != job["model_version"]
        ) and time.monotonic() < deadline:
            time.sleep(5)
            champion = api.champion()
        if champion is None:
            raise AirflowFailException(
                f"training job {job['id']} succeeded (model version {job['model_version']}) "
                "but the API serves no champion: nothing to forecast with"
            )
        moved = champion["version"] != submitted["champion_before"]
        reason = None
        if champion["version"] != job["model_version"]:
            reason = job["error"] or (
                f"the new model version {job['model_version']} did not replace champion "
                f"{champion['version']} within {config.champion_wait.total_seconds():.0f} s "
                "(challenger: worse backtest RMSPE than the champion's beyond the tolerance)"
            )
            log.warning("champion stays at version %s: %s", champion["version"], reason)
        else:
            log.info(
                "champion moved from %s to %s", submitted["champion_before"], champion["version"]
            )
        return {
            "champion_version": champion["version"],
            "champion_before": submitted["champion_before"],
            "trained_version": job["model_version"],
            "moved": moved,
            "reason": reason,
        }

    submitted = submit_training_job()
    job = wait_for_training_job(submitted)
    champion = check_champion(submitted, job)
    forecast = sfmlops_command(
        "write_forecasts",
        [
            "pipeline",
            "forecast",
            "--days",
            "{{ params.horizon_days }}",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='check_champion')['champion_version'] }}",
        ],
        config,
        doc_md="Write the next days' forecasts for every series with the champion the API serves.",
    )
    verify = sfmlops_command(
        "verify_forecasts",
        [
            "check",
            "forecasts",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='check_champion')['champion_version'] }}",
            "--horizon-days",
            "{{ params.horizon_days }}",
            "--max-incomplete-series",
            "{{ params.max_incomplete_series }}",
        ],
        config,
        doc_md="Every series has horizon_days forecast rows for the champion's version.",
    )
    champion >> forecast >> verify


sfmlops_weekly_train_forecast()
