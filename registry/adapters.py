"""Trained adapters: versioned by name (``name@version``), with their files' sha256."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import Conflict, NotFound
from registry.ids import new_id
from registry.models import Adapter, AdapterName

MAX_VERSION_RETRIES = 5
MAX_VERSION = 2**31 - 1  # adapters.version is a 32-bit INTEGER on PostgreSQL


def take_version(session: Session, tenant_id: str, name: str) -> int:
    """The next version of ``name``, counted in ``adapter_names`` (locked until the transaction
    ends), so a version is given once, ever: deleting ``name@1`` never frees ``1`` again."""
    counter = session.get(AdapterName, (tenant_id, name), with_for_update=True)
    if counter is None:
        current = session.scalar(  # names registered before the counter existed
            select(func.max(Adapter.version)).where(
                Adapter.tenant_id == tenant_id, Adapter.name == name
            )
        )
        counter = AdapterName(tenant_id=tenant_id, name=name, last_version=current or 0)
        session.add(counter)
    counter.last_version += 1
    return counter.last_version


def create_adapter(session: Session, *, tenant_id: str, name: str, **fields: Any) -> Adapter:
    """Register the next version of ``name``. Two jobs finishing together under a new name race
    to create its counter: the loser retries inside a savepoint (an existing counter is locked,
    so the second waits for the first's commit)."""
    for _ in range(MAX_VERSION_RETRIES):
        try:
            with session.begin_nested():
                adapter = Adapter(
                    id=new_id("adapter"),
                    tenant_id=tenant_id,
                    name=name,
                    version=take_version(session, tenant_id, name),
                    **fields,
                )
                session.add(adapter)
                session.flush()
            return adapter
        except IntegrityError:  # the savepoint rolled back; try again
            continue
    raise Conflict(f"could not allocate a version of adapter {name!r}; retry")


def get_adapter(session: Session, reference: str, tenant_id: str | None = None) -> Adapter:
    """By id (``adapter-…``) or by ``name@version`` (``name`` alone: the latest version).

    A reference no adapter can have (a NUL, which PostgreSQL text cannot hold; a version beyond
    the 32-bit column) is not found without asking the database."""
    if "\x00" in reference:
        raise NotFound("adapter", reference)
    if reference.startswith("adapter-"):
        adapter = session.get(Adapter, reference)
    else:
        name, _, version = reference.partition("@")
        query = select(Adapter).where(Adapter.name == name)
        if tenant_id is not None:
            query = query.where(Adapter.tenant_id == tenant_id)
        if version:
            digits = version.isascii() and version.isdigit() and len(version) <= 10
            if not digits or int(version) > MAX_VERSION:
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
