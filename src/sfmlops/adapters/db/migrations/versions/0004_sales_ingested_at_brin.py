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
    _replace_index(postgresql_using="brin")


def downgrade() -> None:
    _replace_index()


def _replace_index(**kind: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite ignores postgresql_using and rebuilds the same B-tree.
        op.drop_index("ix_sales_ingested_at", table_name="sales")
        op.create_index("ix_sales_ingested_at", "sales", ["ingested_at"], **kind)
        return
    # CONCURRENTLY: the stream job and the API keep writing sales while the index is rebuilt
    # (a plain CREATE INDEX locks the table against writes for the whole build). It cannot run
    # in a transaction, hence the autocommit block; IF [NOT] EXISTS lets a build interrupted
    # half-way be resumed by running the migration again.
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_sales_ingested_at",
            table_name="sales",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_sales_ingested_at",
            "sales",
            ["ingested_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
            **kind,
        )
