"""/v1/adapters and /v1/models"""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.deps import get_app_settings, get_tenant, threaded, threaded_slow
from api.errors import ApiError
from api.schemas import AdapterObject, ListObject, ModelObject
from api.serializers import adapter_object, unix
from api.services import adapter_exports as export_service
from api.services import adapters as service
from api.services.adapter_layers import adapter_layers as describe
from registry import adapters as repo
from registry import checkpoints as checkpoints_repo
from registry.db import session_scope
from registry.errors import NotFound
from registry.models import Adapter, Checkpoint
from registry.settings import Settings

router = APIRouter(tags=["adapters"])


def _adapter(settings: Settings, reference: str, tenant: str) -> Adapter:
    """The tenant's adapter by id or ``name:version``, read in a session of its own (closed
    before any artifact file is read)."""
    with session_scope(settings.resolved_database_url) as session:
        return repo.get_adapter(session, reference, tenant)


@router.get("/v1/adapters", response_model=ListObject)
@threaded
def list_adapters(
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    with session_scope(settings.resolved_database_url) as session:
        rows, more = repo.list_adapters(session, tenant, after=after, limit=limit)
        return ListObject(data=[adapter_object(r) for r in rows], has_more=more)


@router.get("/v1/adapters/{reference}", response_model=AdapterObject)
@threaded
def get_adapter(
    reference: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> AdapterObject:
    return adapter_object(_adapter(settings, reference, tenant))


@router.get("/v1/adapters/{reference}/content")
@threaded
def adapter_content(
    reference: str,
    file: str | None = None,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """The artifact as one ``.tar.gz``, or one file of it with ``?file=NAME``."""
    return service.stored_adapter(settings, _adapter(settings, reference, tenant)).response(file)


@router.get("/v1/adapters/{reference}/export")
@threaded_slow
def export_adapter(
    reference: str,
    export_format: str = Query(alias="format"),
    drop_layer_0: bool = False,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> Response:
    """The adapter in another tool's format (``steering_core.artifact.exports``): ``layer_tensors``
    and
    ``peft_lora`` as a ``.tar.gz`` of their directory, ``control_vector_gguf`` as the llama.cpp
    ``.gguf`` file (``drop_layer_0=true`` exports a vector that steers layer 0 without it)."""
    export_service.check_format(export_format)
    row = _adapter(settings, reference, tenant)
    return export_service.exported_adapter(settings, row, export_format, drop_layer_0=drop_layer_0)


def _delete(settings: Settings, reference: str, tenant: str) -> Adapter:
    with session_scope(settings.resolved_database_url) as session:
        row = repo.get_adapter(session, reference, tenant)
        session.delete(row)
    # after the commit: a delete that failed leaves the files of a row that still exists
    shutil.rmtree(service.adapter_dir(settings, row), ignore_errors=True)
    return row


@router.delete("/v1/adapters/{reference}")
@threaded
def delete_adapter(
    reference: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    row = _delete(settings, reference, tenant)
    return {"id": row.id, "object": "adapter", "deleted": True}


def _base_model(name: str) -> ModelObject:
    return ModelObject(id=name, created=0, owned_by="system", kind="base")


def _adapter_model(row: Adapter) -> ModelObject:
    return ModelObject(
        id=row.id,
        created=unix(row.created_at) or 0,
        owned_by=row.tenant_id,
        kind="adapter",
        name=f"{row.name}@{row.version}",
        base_model=row.base_model,
        method=(row.method or {}).get("type"),
    )


def _model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"no model {model!r}: not a base model of this server nor one of your adapters (by id "
        "or name@version)",
        param="model",
        code="model_not_found",
    )


@router.get("/v1/models", response_model=ListObject)
@threaded
def list_models(
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    data = [_base_model(name) for name in settings.models]
    with session_scope(settings.resolved_database_url) as session:
        rows, _ = repo.list_adapters(session, tenant, after=None, limit=1000)
    return ListObject(data=data + [_adapter_model(r) for r in rows])


@router.get("/v1/models/{model:path}", response_model=ModelObject)
@threaded
def retrieve_model(
    model: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ModelObject:
    """A base model, one of the caller's adapters by id or ``name@version``, or a checkpoint
    of one of the caller's jobs (``ftjob-…:ckpt-step-N``)."""
    if model in settings.models:
        return _base_model(model)
    try:
        if checkpoints_repo.parse_checkpoint_model_id(model) is not None:
            with session_scope(settings.resolved_database_url) as session:
                found = checkpoints_repo.resolve_checkpoint_model(session, model, tenant)
                checkpoint = session.get(Checkpoint, found.id)
                created = unix(checkpoint.created_at) if checkpoint is not None else None
            return ModelObject(
                id=found.model_id,
                created=created or 0,
                owned_by=tenant,
                kind="checkpoint",
                base_model=found.base_model,
                method=found.method,
            )
        return _adapter_model(_adapter(settings, model, tenant))
    except NotFound as exc:
        raise _model_not_found(model) from exc


@router.delete("/v1/models/{model:path}")
@threaded
def delete_model(
    model: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    """Delete one of the caller's adapters (as ``DELETE /v1/adapters/{ref}``); a base model of
    the catalogue cannot be deleted."""
    if model in settings.models:
        raise ApiError(
            400,
            f"{model!r} is a base model of this server's catalogue: only adapters can be "
            "deleted (the catalogue is the STEER_MODELS setting)",
            param="model",
        )
    try:
        row = _delete(settings, model, tenant)
    except NotFound as exc:
        raise _model_not_found(model) from exc
    return {"id": row.id, "object": "model", "deleted": True}


@router.get("/v1/adapters/{reference}/layers")
@threaded
def adapter_layers(
    reference: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    """Per steered layer: the adapter's parameter norm, and the trained shift's norm relative to
    the residual stream's (measured at the end of training); for layers the engine chose
    (``site.layers: "auto"``), every layer's score and the choice."""
    row = _adapter(settings, reference, tenant)
    return describe(row.id, service.verified_files(settings, row))
