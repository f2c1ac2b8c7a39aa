"""/v1/files"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile
from fastapi.responses import FileResponse

from api.deps import get_app_settings, get_tenant, threaded, threaded_slow
from api.schemas import FileObject, ListObject
from api.serializers import file_object
from api.services import files as service
from api.services import idempotency
from registry import files as repo
from registry import quotas
from registry.db import session_scope
from registry.settings import Settings

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject)
@threaded_slow
def upload(
    file: UploadFile = File(...),
    purpose: str = Form(...),
    idempotency_key: str | None = Header(default=None),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    # Starlette has spooled the body (to disk past 1 MiB) before the route runs; ``file.file``
    # is that spool, read here with blocking calls on the route's worker thread.
    key = idempotency.check_key(idempotency_key)
    request = None
    if key is not None:
        digest = hashlib.sha256()
        while chunk := file.file.read(service.CHUNK):
            digest.update(chunk)
        file.file.seek(0)
        request = idempotency.request_hash(
            "files", purpose, file.filename or "", digest.hexdigest()
        )
    service.check_purpose(purpose)
    # Three steps, so that no transaction stays open while the file is copied and validated.
    with session_scope(settings.resolved_database_url) as session:
        if (
            key is not None
            and request is not None
            and (replayed := idempotency.replay(session, tenant, key, request)) is not None
        ):
            return replayed
        limit, quota = quotas.file_size_limit(session, settings, tenant)
    stored = service.store_upload(settings, file.file, file.filename, purpose, limit, quota)
    try:
        with session_scope(settings.resolved_database_url) as session:
            body = file_object(service.record_upload(session, settings, tenant, stored))
            if key is not None and request is not None:
                idempotency.remember(session, tenant, key, request, body.model_dump(mode="json"))
    finally:
        stored.discard()
    return body


@router.get("", response_model=ListObject)
@threaded
def list_files(
    purpose: str | None = None,
    after: str | None = None,
    limit: int = Query(default=100, ge=1, le=10000),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    with session_scope(settings.resolved_database_url) as session:
        rows, more = repo.list_files(session, tenant, purpose=purpose, after=after, limit=limit)
        return ListObject.page([file_object(r) for r in rows], more)


@router.get("/{file_id}", response_model=FileObject)
@threaded
def get_file(
    file_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> FileObject:
    with session_scope(settings.resolved_database_url) as session:
        return file_object(repo.get_file(session, file_id, tenant))


@router.get("/{file_id}/content")
@threaded
def file_content(
    file_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> FileResponse:
    with session_scope(settings.resolved_database_url) as session:
        row = repo.get_file(session, file_id, tenant)
    media_type = "text/csv" if row.purpose == repo.RESULTS_PURPOSE else "application/jsonl"
    return FileResponse(
        service.stored_content(settings, row), media_type=media_type, filename=row.filename
    )


@router.delete("/{file_id}")
@threaded
def delete(
    file_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    with session_scope(settings.resolved_database_url) as session:
        service.delete_file(session, settings, repo.get_file(session, file_id, tenant))
    return {"id": file_id, "object": "file", "deleted": True}
