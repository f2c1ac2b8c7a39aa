"""Rows that outlive their use: expired idempotency keys.

An ``Idempotency-Key`` answers retries for 24 hours (as the hosted APIs keep theirs); after
that the key is forgotten (``api.services.idempotency`` ignores an expired row, and the
reconciler's rounds delete them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from registry.models import IdempotencyKey

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)


def idempotency_key_expired(created_at: datetime, now: datetime | None = None) -> bool:
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)  # SQLite
    return created < (now or datetime.now(UTC)) - IDEMPOTENCY_KEY_TTL


def purge_expired_idempotency_keys(session: Session, now: datetime | None = None) -> int:
    """Delete the keys older than the TTL; returns how many."""
    cutoff = (now or datetime.now(UTC)) - IDEMPOTENCY_KEY_TTL
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(result.rowcount or 0)
