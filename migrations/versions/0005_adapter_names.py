"""adapter_names: the last version ever given to each adapter name

A version is given once, ever: after ``name@1`` is deleted, the next adapter under ``name`` is
``name@2``, so a pinned reference never points at other weights. Names already registered start
from their highest stored version (a version deleted before this table existed cannot be known).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_names",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
    )
    adapters = sa.table(
        "adapters",
        sa.column("tenant_id", sa.String),
        sa.column("name", sa.String),
        sa.column("version", sa.Integer),
    )
    names = sa.table(
        "adapter_names",
        sa.column("tenant_id", sa.String),
        sa.column("name", sa.String),
        sa.column("last_version", sa.Integer),
    )
    op.execute(
        names.insert().from_select(
            ["tenant_id", "name", "last_version"],
            sa.select(adapters.c.tenant_id, adapters.c.name, sa.func.max(adapters.c.version))
            .group_by(adapters.c.tenant_id, adapters.c.name),
        )
    )


def downgrade() -> None:
    op.drop_table("adapter_names")
