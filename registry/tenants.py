"""Tenants and their API keys. Keys are random 256-bit tokens, so a plain sha256 is the right
hash: nothing to brute-force, and lookups stay an indexed equality."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import NotFound
from registry.ids import new_id
from registry.models import ApiKey, Tenant

KEY_PREFIX = "sk-steer-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> Tenant:
    tenant = Tenant(id=new_id("tenant"), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant", tenant_id)
    return tenant


QUOTA_FIELDS = ("max_concurrent_jobs", "max_file_bytes", "max_training_tokens")


def set_quotas(session: Session, tenant_id: str, **limits: int | None) -> Tenant:
    """Set some of the tenant's quotas (None: back to the service-wide default)."""
    tenant = get_tenant(session, tenant_id)
    for name, value in limits.items():
        if name not in QUOTA_FIELDS:
            raise ValueError(f"unknown quota {name!r}; known: {QUOTA_FIELDS}")
        if value is not None and value < 1:
            raise ValueError(f"quota {name} must be a positive integer or unset, got {value}")
        setattr(tenant, name, value)
    session.flush()
    return tenant


def create_api_key(
    session: Session, tenant_id: str, name: str = "", is_admin: bool = False
) -> tuple[ApiKey, str]:
    """A new key for the tenant; the plaintext is returned once and never stored."""
    get_tenant(session, tenant_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"), tenant_id=tenant_id, key_hash=hash_key(key), name=name, is_admin=is_admin
    )
    session.add(row)
    session.flush()
    return row, key


def resolve_api_key(session: Session, key: str) -> ApiKey | None:
    """The live key row for a presented key, or None."""
    return session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


def revoke_api_key(session: Session, key_id: str) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("api key", key_id)
    row.revoked_at = datetime.now(UTC)
