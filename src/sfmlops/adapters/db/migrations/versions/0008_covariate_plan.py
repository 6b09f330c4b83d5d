"""the plan of known future covariates

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 23:55:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "covariate_plan",
        sa.Column("store_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sales_date", sa.Date(), nullable=False),
        sa.Column("open", sa.SmallInteger(), nullable=False),
        sa.Column("promo", sa.SmallInteger(), nullable=False),
        sa.Column("state_holiday", sa.String(length=1), nullable=False),
        sa.Column("school_holiday", sa.SmallInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("store_id", "sales_date", name=op.f("pk_covariate_plan")),
    )
    op.create_index("ix_covariate_plan_sales_date", "covariate_plan", ["sales_date"])


def downgrade() -> None:
    op.drop_index("ix_covariate_plan_sales_date", table_name="covariate_plan")
    op.drop_table("covariate_plan")
