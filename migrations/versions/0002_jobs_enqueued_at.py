"""jobs.enqueued_at: when the job's message was last sent, so the reconciler re-sends a queued
job's message once per staleness period instead of every round

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35+): batch mode's copy would drop ``jobs``, and with it, through
    # ON DELETE CASCADE, every job's events, checkpoints and metrics.
    op.drop_column("jobs", "enqueued_at")
