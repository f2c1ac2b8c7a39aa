"""/v1/admin: tenants and API keys (admin keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.deps import Principal, get_session, require_admin
from api.serializers import unix
from registry import tenants as repo

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    admin: bool = False


@router.post("/tenants")
def create_tenant(
    body: TenantCreate,
    session: Session = Depends(get_session, scope="function"),
    _admin: Principal = Depends(require_admin),
) -> dict:
    tenant = repo.create_tenant(session, body.name)
    return {
        "object": "tenant",
        "id": tenant.id,
        "name": tenant.name,
        "created_at": unix(tenant.created_at),
    }


@router.post("/tenants/{tenant_id}/api_keys")
def create_api_key(
    tenant_id: str,
    body: ApiKeyCreate,
    session: Session = Depends(get_session, scope="function"),
    _admin: Principal = Depends(require_admin),
) -> dict:
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
def revoke_api_key(
    key_id: str,
    session: Session = Depends(get_session, scope="function"),
    _admin: Principal = Depends(require_admin),
) -> dict:
    repo.revoke_api_key(session, key_id)
    return {"object": "api_key", "id": key_id, "revoked": True}
