"""why a training job was started

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 23:55:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("training_jobs", "reason")
