"""The one schema definition: SQLAlchemy Core tables for SQLite and PostgreSQL alike.

Alembic migrations create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from sfmlops.core import columns

# Stable constraint names make migrations reproducible on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

stores = Table(
    "stores",
    metadata,
    Column(columns.STORE_ID, Integer, primary_key=True, autoincrement=False),
    Column(columns.STORE_TYPE, String(16)),
    Column(columns.ASSORTMENT, String(16)),
    Column(columns.COMPETITION_DISTANCE, Float),
    Column(columns.COMPETITION_OPEN_SINCE_MONTH, SmallInteger),
    Column(columns.COMPETITION_OPEN_SINCE_YEAR, SmallInteger),
    Column(columns.PROMO2, SmallInteger, nullable=False),
    Column(columns.PROMO2_SINCE_WEEK, SmallInteger),
    Column(columns.PROMO2_SINCE_YEAR, SmallInteger),
    Column(columns.PROMO_INTERVAL, String(64)),
    Column(columns.STATE, String(16)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# No foreign key to stores: sales is the fact table written at stream rates, and a per-row
# referential check doubles the cost of a bulk merge on PostgreSQL. Every way in (file load,
# API, stream job) validates store_id against `stores` before writing.
sales = Table(
    "sales",
    metadata,
    Column(columns.STORE_ID, Integer, primary_key=True, autoincrement=False),
    Column(columns.PRODUCT_ID, String(64), primary_key=True),
    Column(columns.SALES_DATE, Date, primary_key=True),
    Column(columns.SALES, Float, nullable=False),
    Column(columns.CUSTOMERS, Integer),
    Column(columns.OPEN, SmallInteger, nullable=False),
    Column(columns.PROMO, SmallInteger, nullable=False),
    Column(columns.STATE_HOLIDAY, String(1), nullable=False),
    Column(columns.SCHOOL_HOLIDAY, SmallInteger, nullable=False),
    # When the row last changed: freshness checks and "ingested in the last day" read it.
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Rows are written in ingestion order, so on PostgreSQL a BRIN index (a summary per range of
    # pages) serves those range queries; a B-tree cost a third of a stream batch's insert CPU
    # and WAL (benchmarks/postgres_upsert.py). SQLite has no BRIN and keeps a B-tree.
    Index("ix_sales_ingested_at", "ingested_at", postgresql_using="brin"),
)

# How many sales rows there are and the latest sales date: one row (`id` 1), changed in the
# transaction of every write to `sales` (sales_records), so freshness checks read two figures
# instead of scanning the fact table (on PostgreSQL a count or max of `sales` reads every row:
# seconds at 100k series).
sales_extent = Table(
    "sales_extent",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("sales_rows", BigInteger, nullable=False),
    Column("latest_sales_date", Date),
)

forecasts = Table(
    "forecasts",
    metadata,
    Column(
        columns.STORE_ID,
        Integer,
        ForeignKey("stores.store_id"),
        primary_key=True,
        autoincrement=False,
    ),
    Column(columns.PRODUCT_ID, String(64), primary_key=True),
    Column("forecast_date", Date, primary_key=True),
    Column("model_version", String(64), primary_key=True),
    Column("yhat", Float, nullable=False),
    Column("yhat_lower", Float, nullable=False),
    Column("yhat_upper", Float, nullable=False),
    Column("yhat_lower_95", Float, nullable=False),
    Column("yhat_upper_95", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

ingest_dead_letters = Table(
    "ingest_dead_letters",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("source", String(256), nullable=False),  # e.g. "api", "kafka", "file:train.csv"
    Column("payload", Text, nullable=False),  # the record exactly as received
    Column("reason", Text, nullable=False),
    Column("kafka_topic", String(256)),
    Column("kafka_partition", Integer),
    Column("kafka_offset", BigInteger),
    Column(
        "received_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        index=True,
    ),
    # A Kafka record is dead-lettered once however often it is re-delivered; rows from other
    # sources leave these NULL, and NULLs never collide.
    UniqueConstraint("kafka_topic", "kafka_partition", "kafka_offset"),
)

# Where the stream job resumes: per Kafka partition, the offset after the last record whose
# effect is in this database. Written in the same transaction as that record's batch, so the
# database, not Spark's checkpoint, says what has been applied (Kafka's "offsets stored outside
# Kafka" pattern); a restored backup resumes from its own offsets.
stream_offsets = Table(
    "stream_offsets",
    metadata,
    Column("kafka_topic", String(256), primary_key=True),
    Column("kafka_partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False, index=True),  # queued, running, succeeded, failed
    Column("runner", String(32), nullable=False),  # local, ray-jobs
    Column("runner_job_id", String(128)),
    Column("stores", Text),  # JSON list of store ids; NULL means all stores
    Column("progress_done", Integer, nullable=False, server_default="0"),
    Column("progress_total", Integer, nullable=False, server_default="0"),
    Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    ),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("mlflow_run_id", String(64)),
    Column("model_version", String(64)),
    Column("error", Text),
    Column("reason", Text),  # why it was started (a caller's words, the trigger's figures)
)

# Who changed what through the API or the command line, and when: one row per write (a sales
# batch, a training job, a data load). Retrain rate limits count these rows.
audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(256), nullable=False),  # e.g. "alice via api-token", "cli:alice"
    Column("action", String(64), nullable=False),  # e.g. "sales.ingest", "training_job.submit"
    Column("client", String(128)),  # the client address, for API calls
    Column("detail", Text),  # JSON: counts, ids, stores
    Index("ix_audit_events_actor_action_occurred_at", "actor", "action", "occurred_at"),
)

# Every forecast issued for a future day, as issued: the pipeline's batch and the default
# horizon the API serves, once per (series, target day, version, issue date), so it can be
# scored when that day's actuals land. `issue_date` is the day the system took as "today"
# (the as-of date + 1); `horizon_days` 1 is a forecast for that day itself.
issued_forecasts = Table(
    "issued_forecasts",
    metadata,
    Column(columns.STORE_ID, Integer, primary_key=True, autoincrement=False),
    Column(columns.PRODUCT_ID, String(64), primary_key=True),
    Column("target_date", Date, primary_key=True),
    Column("model_version", String(64), primary_key=True),
    Column("issue_date", Date, primary_key=True),
    Column(columns.HORIZON_DAYS, SmallInteger, nullable=False),
    Column(columns.YHAT, Float, nullable=False),
    Column(columns.YHAT_LOWER, Float, nullable=False),
    Column(columns.YHAT_UPPER, Float, nullable=False),
    Column(columns.YHAT_LOWER_95, Float, nullable=False),
    Column(columns.YHAT_UPPER_95, Float, nullable=False),
    # Where the forecast's covariates came from: "plan", "default" (assumed) or "caller".
    Column("covariate_source", String(16), nullable=False),
    # The series' backtest RMSPE in the issuing version: what its realized error is held to.
    Column("backtest_rmspe", Float),
    Column("issued_by", String(16), nullable=False),  # pipeline, api
    Column("issued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Scoring reads the forecasts of the days whose actuals just landed.
    Index("ix_issued_forecasts_target_date", "target_date"),
)

# Realized accuracy: each issued forecast against the actual of its day, written after the
# actual's ingest transaction committed (a corrected actual rescores its row). The metrics
# (RMSPE, MAPE, bias, coverage) are aggregates of these rows (core.forecasting.metrics).
forecast_scores = Table(
    "forecast_scores",
    metadata,
    Column(columns.STORE_ID, Integer, primary_key=True, autoincrement=False),
    Column(columns.PRODUCT_ID, String(64), primary_key=True),
    Column(columns.SALES_DATE, Date, primary_key=True),
    Column("model_version", String(64), primary_key=True),
    Column(columns.HORIZON_DAYS, SmallInteger, primary_key=True, autoincrement=False),
    Column("issue_date", Date, nullable=False),
    Column("actual", Float, nullable=False),
    Column(columns.YHAT, Float, nullable=False),
    Column(columns.YHAT_LOWER, Float, nullable=False),
    Column(columns.YHAT_UPPER, Float, nullable=False),
    Column(columns.YHAT_LOWER_95, Float, nullable=False),
    Column(columns.YHAT_UPPER_95, Float, nullable=False),
    Column("backtest_rmspe", Float),
    Column("scored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_forecast_scores_sales_date", columns.SALES_DATE),
)

# The plan: covariates known ahead for a store's future days (promotions, openings,
# holidays), loaded from a file or the API. Forecasts use a day's row where the caller
# gives nothing; each row keeps who last set it and when.
covariate_plan = Table(
    "covariate_plan",
    metadata,
    Column(columns.STORE_ID, Integer, primary_key=True, autoincrement=False),
    Column(columns.SALES_DATE, Date, primary_key=True),
    Column(columns.OPEN, SmallInteger, nullable=False),
    Column(columns.PROMO, SmallInteger, nullable=False),
    Column(columns.STATE_HOLIDAY, String(1), nullable=False),
    Column(columns.SCHOOL_HOLIDAY, SmallInteger, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Serving reads the plan from its first forecast day on.
    Index("ix_covariate_plan_sales_date", columns.SALES_DATE),
)
