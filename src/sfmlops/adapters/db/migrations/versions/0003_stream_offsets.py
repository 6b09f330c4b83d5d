"""stream offsets kept with the data they produced

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 16:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_offsets",
        sa.Column("kafka_topic", sa.String(length=256), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("kafka_topic", "kafka_partition", name=op.f("pk_stream_offsets")),
    )


def downgrade() -> None:
    op.drop_table("stream_offsets")
