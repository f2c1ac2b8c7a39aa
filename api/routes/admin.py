"""/v1/admin: tenants and API keys (admin keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import Field

from api.deps import Principal, get_app_settings, require_admin, threaded
from api.schemas import StoredText, Strict
from api.serializers import unix
from registry import tenants as repo
from registry.db import session_scope
from registry.settings import Settings

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class TenantQuotas(Strict):
    """Per-tenant limits; null: the service-wide default (STEER_QUOTA_*) applies."""

    max_concurrent_jobs: int | None = Field(default=None, ge=1, le=1_000_000)
    max_file_bytes: int | None = Field(default=None, ge=1, le=2**62)
    max_training_tokens: int | None = Field(default=None, ge=1, le=2**62)


class TenantCreate(TenantQuotas):
    name: StoredText = Field(min_length=1, max_length=200)


def tenant_object(tenant) -> dict:
    return {
        "object": "tenant",
        "id": tenant.id,
        "name": tenant.name,
        "quotas": {name: getattr(tenant, name) for name in TenantQuotas.model_fields},
        "created_at": unix(tenant.created_at),
    }


class ApiKeyCreate(Strict):
    name: StoredText = Field(default="", max_length=200)
    admin: bool = False


@router.post("/tenants")
@threaded
def create_tenant(
    body: TenantCreate,
    settings: Settings = Depends(get_app_settings),
    _admin: Principal = Depends(require_admin),
) -> dict:
    with session_scope(settings.resolved_database_url) as session:
        tenant = repo.create_tenant(session, body.name)
        repo.set_quotas(session, tenant.id, **body.model_dump(exclude={"name"}))
        return tenant_object(tenant)


@router.get("/tenants/{tenant_id}")
@threaded
def get_tenant(
    tenant_id: str,
    settings: Settings = Depends(get_app_settings),
    _admin: Principal = Depends(require_admin),
) -> dict:
    with session_scope(settings.resolved_database_url) as session:
        return tenant_object(repo.get_tenant(session, tenant_id))


@router.patch("/tenants/{tenant_id}")
@threaded
def update_quotas(
    tenant_id: str,
    body: TenantQuotas,
    settings: Settings = Depends(get_app_settings),
    _admin: Principal = Depends(require_admin),
) -> dict:
    """Set the fields given (null clears a limit back to the default); others stay."""
    with session_scope(settings.resolved_database_url) as session:
        return tenant_object(
            repo.set_quotas(session, tenant_id, **body.model_dump(exclude_unset=True))
        )


@router.post("/tenants/{tenant_id}/api_keys")
@threaded
def create_api_key(
    tenant_id: str,
    body: ApiKeyCreate,
    settings: Settings = Depends(get_app_settings),
    _admin: Principal = Depends(require_admin),
) -> dict:
    with session_scope(settings.resolved_database_url) as session:
        row, key = repo.create_api_key(session, tenant_id, body.name, is_admin=body.admin)
        return {
            "object": "api_key",
            "id": row.id,
            "tenant_id": tenant_id,
            "name": row.name,
            "admin": row.is_admin,
            "key": key,
        }


@router.delete("/api_keys/{key_id}")
@threaded
def revoke_api_key(
    key_id: str,
    settings: Settings = Depends(get_app_settings),
    _admin: Principal = Depends(require_admin),
) -> dict:
    with session_scope(settings.resolved_database_url) as session:
        repo.revoke_api_key(session, key_id)
        return {"object": "api_key", "id": key_id, "revoked": True}
