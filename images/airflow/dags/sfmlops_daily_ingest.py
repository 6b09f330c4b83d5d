"""
# sfmlops daily ingest

Every day: run the stream job once (`sfmlops stream --once`: Kafka → Spark → the sales
table, rejected records into `ingest_dead_letters`; skipped with
`SFMLOPS_DAILY_STREAM_TASK=false`, where a continuous stream job or a CronJob owns it), then
check what landed for the day
(`sfmlops check ingest`): rows per store, stores missing the day's record, dead letters
since the last successful run. The check fails the run, naming every breach, past the
thresholds in the run's params. Then score the forecasts issued for the last days against
the actuals that landed (`sfmlops accuracy --rescore`; ingestion scores as it writes, this
catches up on any scoring that failed), and retrain the stale stores
(`sfmlops pipeline retrain-stale`: stores whose last week's realized RMSPE exceeded
`stale_margin` times their baseline, their backtest RMSPE times the fleet's median
realized/backtest ratio, on `stale_days` evenings in a row, at most `max_retrain_stores` of them, in
one single-store retrain job, never while a full training job runs; the job's MLflow run
records why in its `sfmlops.reason` tag).

The day checked is the `sales_date` param, else the day before the run. For a replay of
the bundled 2015 data, trigger with `{"sales_date": "2015-06-14"}`.

How commands run (a local `sfmlops` or pods) is set by `SFMLOPS_COMMAND_RUNNER`; see
`docs/orchestration.md`. A task that fails after its retries records itself in the
`sfmlops_last_failure` Variable.
"""

from __future__ import annotations

from airflow.sdk import Param, dag
from sfmlops_orchestration.commands import sfmlops_command
from sfmlops_orchestration.dag_config import DagConfig
from sfmlops_orchestration.defaults import dag_arguments

config = DagConfig.from_environment()

# Templates, rendered when the task runs: the run's own dates, never the parse time.
SALES_DATE = (
    "{{ params.sales_date or (dag_run.run_after - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"
)
DEAD_LETTERS_SINCE = (
    "{{ (prev_end_date_success or (dag_run.run_after - macros.timedelta(days=1))).isoformat() }}"
)


@dag(
    dag_id="sfmlops_daily_ingest",
    schedule="@daily",
    doc_md=__doc__,
    params={
        "sales_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="The sales day to check (YYYY-MM-DD); empty means the day before the run.",
        ),
        "min_rows": Param(1, type="integer", minimum=0, description="Fail below this many rows."),
        "max_missing_stores": Param(
            0,
            type="integer",
            minimum=0,
            description="Fail above this many stores without a record.",
        ),
        "max_dead_letters": Param(
            0, type="integer", minimum=0, description="Fail above this many dead letters."
        ),
        "stale_margin": Param(
            2.0,
            type="number",
            minimum=1,
            description="A store is stale above this many times its baseline RMSPE ...",
        ),
        "stale_days": Param(
            2, type="integer", minimum=1, description="... on this many evenings in a row."
        ),
        "max_retrain_stores": Param(
            20, type="integer", minimum=1, description="Most stale stores retrained per run."
        ),
    },
    **dag_arguments(config, "ingest", "data-quality"),
)
def sfmlops_daily_ingest() -> None:
    check = sfmlops_command(
        "check_ingest",
        [
            "check",
            "ingest",
            "--sales-date",
            SALES_DATE,
            "--dead-letters-since",
            DEAD_LETTERS_SINCE,
            "--min-rows",
            "{{ params.min_rows }}",
            "--max-missing-stores",
            "{{ params.max_missing_stores }}",
            "--max-dead-letters",
            "{{ params.max_dead_letters }}",
        ],
        config,
        doc_md="Rows landed per store, stores missing the day, dead letters since the last run.",
    )
    score = sfmlops_command(
        "score_forecasts",
        ["accuracy", "--rescore", "--prune", "--days", "7"],
        config,
        doc_md="Score the forecasts issued for the last 7 days against their actuals; delete "
        "issued forecasts and scores older than SFMLOPS_MONITORING_RETENTION_DAYS.",
    )
    retrain = sfmlops_command(
        "retrain_stale_stores",
        [
            "pipeline",
            "retrain-stale",
            "--margin",
            "{{ params.stale_margin }}",
            "--days",
            "{{ params.stale_days }}",
            "--max-stores",
            "{{ params.max_retrain_stores }}",
        ],
        config,
        doc_md="Retrain the stores whose realized error left their backtest behind.",
    )
    check >> score >> retrain
    # One runner per checkpoint: a second Spark query beside the chart's would race it.
    if config.daily_stream_task:
        stream = sfmlops_command(
            "stream_once",
            ["stream", "--once"],
            config,
            doc_md="Consume what the sales topic holds now into the sales table, then stop.",
            keeps_state=True,  # Spark's checkpoints: where the last run stopped reading
        )
        stream >> check


sfmlops_daily_ingest()
