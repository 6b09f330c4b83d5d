"""forecasts kept as issued, and their scores against actuals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 16:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_VALUES = ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_95", "yhat_upper_95")


def upgrade() -> None:
    op.create_table(
        "issued_forecasts",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("target_date", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("horizon_days", sa.SmallInteger(), nullable=False),
        *[sa.Column(name, sa.Float(), nullable=False) for name in _VALUES],
        sa.Column("covariate_source", sa.String(length=16), nullable=False),
        sa.Column("backtest_rmspe", sa.Float(), nullable=True),
        sa.Column("issued_by", sa.String(length=16), nullable=False),
        sa.Column(
            "issued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "store_id",
            "product_id",
            "target_date",
            "model_version",
            "issue_date",
            name=op.f("pk_issued_forecasts"),
        ),
    )
    op.create_index("ix_issued_forecasts_target_date", "issued_forecasts", ["target_date"])
    op.create_table(
        "forecast_scores",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("sales_date", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("horizon_days", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("actual", sa.Float(), nullable=False),
        *[sa.Column(name, sa.Float(), nullable=False) for name in _VALUES],
        sa.Column("backtest_rmspe", sa.Float(), nullable=True),
        sa.Column(
            "scored_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "store_id",
            "product_id",
            "sales_date",
            "model_version",
            "horizon_days",
            name=op.f("pk_forecast_scores"),
        ),
    )
    op.create_index("ix_forecast_scores_sales_date", "forecast_scores", ["sales_date"])


def downgrade() -> None:
    op.drop_index("ix_forecast_scores_sales_date", table_name="forecast_scores")
    op.drop_table("forecast_scores")
    op.drop_index("ix_issued_forecasts_target_date", table_name="issued_forecasts")
    op.drop_table("issued_forecasts")
