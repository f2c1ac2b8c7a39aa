"""jobs.compute: the job's compute block; workers: every worker that has registered

A job's ``compute`` holds what it asked for (``{"gpus", "processes", "deepspeed"}``), then what
its worker allocated and what the engine reported. Jobs stored earlier asked only for ``gpus``
and ran one process per GPU (one on CPU) without DeepSpeed, so they get
``{"gpus": gpus, "processes": max(1, gpus), "deepspeed": null}``.

``workers`` is the registry of workers (their GPUs, CPU slots and queues, first and last seen),
which job creation reads to refuse a job no worker could ever run.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("compute", sa.JSON(), nullable=True))

    connection = op.get_bind()
    jobs = sa.table("jobs", sa.column("gpus", sa.Integer), sa.column("compute", sa.JSON))
    # one UPDATE per distinct GPU count: the backfill depends on nothing else
    for (gpus,) in connection.execute(sa.select(jobs.c.gpus).distinct()).all():
        compute = {"gpus": gpus, "processes": max(1, gpus), "deepspeed": None}
        connection.execute(jobs.update().where(jobs.c.gpus == gpus).values(compute=compute))

    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("cpu_slots", sa.Integer(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    # In place (SQLite 3.35+): batch mode's copy would drop ``jobs``, and with it, through
    # ON DELETE CASCADE, every job's events, checkpoints and metrics.
    op.drop_column("jobs", "compute")
