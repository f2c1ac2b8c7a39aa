"""``Idempotency-Key`` on POST: a retried request gets the first answer, not a second object.

The key is scoped to the tenant; the stored answer is replayed only for the same request
(same body hash), and a different request under a used key is a 409. The answer is stored in
the transaction that creates the object, so both exist or neither does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from registry.errors import Conflict
from registry.housekeeping import idempotency_key_expired
from registry.models import IdempotencyKey

MAX_KEY_LENGTH = 256


def request_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def check_key(key: str | None) -> str | None:
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            param="Idempotency-Key",
        )
    return key


def replay(session: Session, tenant: str, key: str, digest: str) -> JSONResponse | None:
    """The stored answer for this key, if it was used within the last 24 hours
    (``registry.housekeeping``); an older key is forgotten and may be used again."""
    row = session.get(IdempotencyKey, (tenant, key))
    if row is not None and idempotency_key_expired(row.created_at):
        session.delete(row)
        session.flush()
        return None
    if row is None:
        return None
    if row.request_hash != digest:
        raise ApiError(
            409,
            "this Idempotency-Key was already used for a different request",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return JSONResponse(
        row.response, status_code=row.status_code, headers={"Idempotent-Replayed": "true"}
    )


def remember(session: Session, tenant: str, key: str, digest: str, body: dict[str, Any]) -> None:
    try:
        with session.begin_nested():
            session.add(
                IdempotencyKey(
                    tenant_id=tenant, key=key, request_hash=digest, status_code=200, response=body
                )
            )
            session.flush()
    except IntegrityError:  # the same key raced us: nothing of this request is kept
        raise Conflict(
            "a request with this Idempotency-Key is already being processed; retry it"
        ) from None
