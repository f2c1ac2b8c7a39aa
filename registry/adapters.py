"""Trained adapters: versioned by name (``name@version``), with their files' sha256."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.errors import NotFound
from registry.ids import new_id
from registry.models import Adapter


def next_version(session: Session, tenant_id: str, name: str) -> int:
    current = session.scalar(
        select(func.max(Adapter.version)).where(
            Adapter.tenant_id == tenant_id, Adapter.name == name
        )
    )
    return (current or 0) + 1


def create_adapter(session: Session, *, tenant_id: str, name: str, **fields) -> Adapter:
    adapter = Adapter(
        id=new_id("adapter"),
        tenant_id=tenant_id,
        name=name,
        version=next_version(session, tenant_id, name),
        **fields,
    )
    session.add(adapter)
    session.flush()
    return adapter


def get_adapter(session: Session, reference: str, tenant_id: str | None = None) -> Adapter:
    """By id (``adapter-…``) or by ``name@version`` (``name`` alone: the latest version)."""
    if reference.startswith("adapter-"):
        adapter = session.get(Adapter, reference)
    else:
        name, _, version = reference.partition("@")
        query = select(Adapter).where(Adapter.name == name)
        if tenant_id is not None:
            query = query.where(Adapter.tenant_id == tenant_id)
        if version:
            if not version.isdigit():
                raise NotFound("adapter", reference)
            query = query.where(Adapter.version == int(version))
        adapter = session.scalar(query.order_by(Adapter.version.desc()).limit(1))
    if adapter is None or (tenant_id is not None and adapter.tenant_id != tenant_id):
        raise NotFound("adapter", reference)
    return adapter


def list_adapters(
    session: Session, tenant_id: str, *, after: str | None, limit: int
) -> tuple[list[Adapter], bool]:
    query = select(Adapter).where(Adapter.tenant_id == tenant_id)
    if after is not None:
        anchor = get_adapter(session, after, tenant_id)
        query = query.where(
            (Adapter.created_at < anchor.created_at)
            | ((Adapter.created_at == anchor.created_at) & (Adapter.id < anchor.id))
        )
    rows = list(
        session.scalars(
            query.order_by(Adapter.created_at.desc(), Adapter.id.desc()).limit(limit + 1)
        )
    )
    return rows[:limit], len(rows) > limit
