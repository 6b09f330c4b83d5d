"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 07:05:15.162272
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "ingest_dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("kafka_topic", sa.String(length=256), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_dead_letters")),
    )
    with op.batch_alter_table("ingest_dead_letters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingest_dead_letters_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "stores",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("store_type", sa.String(length=16), nullable=True),
        sa.Column("assortment", sa.String(length=16), nullable=True),
        sa.Column("competition_distance", sa.Float(), nullable=True),
        sa.Column("competition_open_since_month", sa.SmallInteger(), nullable=True),
        sa.Column("competition_open_since_year", sa.SmallInteger(), nullable=True),
        sa.Column("promo2", sa.SmallInteger(), nullable=False),
        sa.Column("promo2_since_week", sa.SmallInteger(), nullable=True),
        sa.Column("promo2_since_year", sa.SmallInteger(), nullable=True),
        sa.Column("promo_interval", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_stores")),
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("runner", sa.String(length=32), nullable=False),
        sa.Column("runner_job_id", sa.String(length=128), nullable=True),
        sa.Column("stores", sa.Text(), nullable=True),
        sa.Column("progress_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("progress_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
    )
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_training_jobs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_training_jobs_status"), ["status"], unique=False)

    op.create_table(
        "forecasts",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("forecast_date", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("yhat", sa.Float(), nullable=False),
        sa.Column("yhat_lower", sa.Float(), nullable=False),
        sa.Column("yhat_upper", sa.Float(), nullable=False),
        sa.Column("yhat_lower_95", sa.Float(), nullable=False),
        sa.Column("yhat_upper_95", sa.Float(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.store_id"], name=op.f("fk_forecasts_store_id_stores")
        ),
        sa.PrimaryKeyConstraint(
            "store_id", "product_id", "forecast_date", "model_version", name=op.f("pk_forecasts")
        ),
    )
    op.create_table(
        "sales",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("sales_date", sa.Date(), nullable=False),
        sa.Column("sales", sa.Float(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=True),
        sa.Column("open", sa.SmallInteger(), nullable=False),
        sa.Column("promo", sa.SmallInteger(), nullable=False),
        sa.Column("state_holiday", sa.String(length=1), nullable=False),
        sa.Column("school_holiday", sa.SmallInteger(), nullable=False),
        sa.Column(
            "ingested_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("store_id", "product_id", "sales_date", name=op.f("pk_sales")),
    )
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sales_ingested_at"), ["ingested_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sales_ingested_at"))

    op.drop_table("sales")
    op.drop_table("forecasts")
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_training_jobs_created_at"))

    op.drop_table("training_jobs")
    op.drop_table("stores")
    with op.batch_alter_table("ingest_dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_dead_letters_received_at"))

    op.drop_table("ingest_dead_letters")
