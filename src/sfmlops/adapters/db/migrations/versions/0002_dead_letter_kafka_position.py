"""one dead letter per Kafka record

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:30:00.000000
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_dead_letters", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_ingest_dead_letters_kafka_topic"),
            ["kafka_topic", "kafka_partition", "kafka_offset"],
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_dead_letters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_ingest_dead_letters_kafka_topic"), type_="unique")
