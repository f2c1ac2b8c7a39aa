"""jobs.pause_requested (a running job asked to pause), checkpoints.files and .sha256 (the
checkpoint's adapter artifact, hashed when recorded, so it is downloaded and served verified)

Existing jobs were never asked to pause; existing checkpoints were recorded without hashes (they
are listed as before, and not downloadable). A downgrade has no ``paused`` status to keep: paused
jobs go back to ``queued`` (the reconciler sends them again, and they resume from their last
checkpoint), the nearest status the older code knows that loses nothing.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, never batch mode's "move and copy": on SQLite that drops the old ``jobs``
# table, and with foreign keys on, dropping it deletes every job's events, checkpoints and
# metrics (ON DELETE CASCADE). SQLite adds a column with a constant default, and drops one
# (3.35+), in place.


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("checkpoints", sa.Column("files", sa.JSON(), nullable=True))
    op.add_column("checkpoints", sa.Column("sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    jobs = sa.table("jobs", sa.column("status", sa.String))
    op.execute(jobs.update().where(jobs.c.status == "paused").values(status="queued"))
    op.drop_column("checkpoints", "sha256")
    op.drop_column("checkpoints", "files")
    op.drop_column("jobs", "pause_requested")
