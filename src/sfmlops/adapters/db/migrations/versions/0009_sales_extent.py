"""sales_extent: the sales row count and latest sales date, kept on write

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 08:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sales_extent",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("sales_rows", sa.BigInteger(), nullable=False),
        sa.Column("latest_sales_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_extent")),
    )
    # The one scan of the sales already stored; every write keeps the row current from here.
    op.execute(
        "INSERT INTO sales_extent (id, sales_rows, latest_sales_date) "
        "SELECT 1, count(*), max(sales_date) FROM sales"
    )


def downgrade() -> None:
    op.drop_table("sales_extent")
