"""a BRIN index on sales.ingested_at (PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 17:10:00.000000
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite ignores postgresql_using and rebuilds the same B-tree.
    op.drop_index("ix_sales_ingested_at", table_name="sales")
    op.create_index("ix_sales_ingested_at", "sales", ["ingested_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_sales_ingested_at", table_name="sales")
    op.create_index("ix_sales_ingested_at", "sales", ["ingested_at"])
