"""jobs.integrations: the experiment trackers (W&B, MLflow) a job logs to, as its request gave
them

Existing jobs have none (NULL reads as none). A downgrade drops them: the older code neither
logs to trackers nor shows them.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# In place (SQLite 3.35+ drops a column in place): batch mode's copy would drop ``jobs``, and
# with it, through ON DELETE CASCADE, every job's events, checkpoints and metrics.


def upgrade() -> None:
    op.add_column("jobs", sa.Column("integrations", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "integrations")
