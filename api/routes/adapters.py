"""/v1/adapters and /v1/models"""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from api.deps import get_app_settings, get_session, get_tenant
from api.errors import ApiError
from api.schemas import AdapterObject, ListObject, ModelObject
from api.serializers import adapter_object, unix
from api.services import adapters as service
from registry import adapters as repo
from registry.settings import Settings

router = APIRouter(tags=["adapters"])


@router.get("/v1/adapters", response_model=ListObject)
def list_adapters(
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    session: Session = Depends(get_session, scope="function"),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    rows, more = repo.list_adapters(session, tenant, after=after, limit=limit)
    return ListObject(data=[adapter_object(r) for r in rows], has_more=more)


@router.get("/v1/adapters/{reference}", response_model=AdapterObject)
def get_adapter(
    reference: str,
    session: Session = Depends(get_session, scope="function"),
    tenant: str = Depends(get_tenant),
) -> AdapterObject:
    return adapter_object(repo.get_adapter(session, reference, tenant))


@router.get("/v1/adapters/{reference}/content")
def adapter_content(
    reference: str,
    file: str | None = None,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """The artifact as one ``.tar.gz``, or one file of it with ``?file=NAME``."""
    row = repo.get_adapter(session, reference, tenant)
    if file is None:
        return Response(
            service.archive(settings, row),
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{row.name}-v{row.version}.tar.gz"',
                "X-Content-SHA256": row.sha256,
            },
        )
    if file not in row.files:
        raise ApiError(
            404,
            f"adapter {row.id} has no file {file!r}; files: {sorted(row.files)}",
            param="file",
            code="not_found",
        )
    path = service.verified_files(settings, row)[file]
    return FileResponse(
        path, filename=file.replace("/", "_"), headers={"X-Content-SHA256": row.files[file]}
    )


@router.delete("/v1/adapters/{reference}")
def delete_adapter(
    reference: str,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    row = repo.get_adapter(session, reference, tenant)
    directory = service.adapter_dir(settings, row)
    session.delete(row)
    session.flush()
    shutil.rmtree(directory, ignore_errors=True)
    return {"id": row.id, "object": "adapter", "deleted": True}


@router.get("/v1/models", response_model=ListObject)
def list_models(
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    data = [
        ModelObject(id=name, created=0, owned_by="system", kind="base") for name in settings.models
    ]
    rows, _ = repo.list_adapters(session, tenant, after=None, limit=1000)
    data += [
        ModelObject(id=r.id, created=unix(r.created_at) or 0, owned_by=tenant, kind="adapter")
        for r in rows
    ]
    return ListObject(data=data)
