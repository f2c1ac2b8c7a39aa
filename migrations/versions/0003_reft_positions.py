"""ReFT methods stored before intervention positions existed steered every token: say so

ReFT now intervenes at the first and last prompt tokens by default (``positions="f7+l7"``, as
pyreft). A ReFT method stored earlier (a job's or an adapter's ``method``) has no
``positions`` and was trained at every token; it gets ``positions: "all"`` so that it keeps
meaning what it meant (a requeued old job trains as it would have, an old adapter loads as the
all-token variant). Its ``site`` was always stored explicitly.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("jobs", "adapters")


def _method(value: Any) -> dict[str, Any] | None:
    method = json.loads(value) if isinstance(value, str) else value
    return method if isinstance(method, dict) else None


def upgrade() -> None:
    connection = op.get_bind()
    for name in TABLES:
        table = sa.table(name, sa.column("id", sa.String), sa.column("method", sa.JSON))
        for row in connection.execute(sa.select(table.c.id, table.c.method)).all():
            method = _method(row.method)
            if method is None or method.get("type") != "reft" or "positions" in method:
                continue
            connection.execute(
                table.update()
                .where(table.c.id == row.id)
                .values(method={**method, "positions": "all"})
            )


def downgrade() -> None:
    pass  # "all" is what such a method meant before; nothing to undo
