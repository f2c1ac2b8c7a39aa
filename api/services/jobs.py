"""Creating jobs: the OpenAI method block -> the core's method config, checked against the
model before anything is stored."""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import ApiError, field_path
from api.schemas import JobCreate, MethodBlock
from registry import files as files_repo
from registry import jobs as jobs_repo
from registry import quotas
from registry.errors import NotFound
from registry.models import Job
from registry.queueing import queue_for
from registry.settings import Settings
from steering_core.catalogue import model_dimensions
from steering_core.config import MethodConfig, parse_method
from steering_core.errors import SteeringUserError
from steering_core.spec import Hyperparameters


def _first_error(exc: ValidationError, prefix: str) -> ApiError:
    errors = exc.errors()
    loc = field_path(errors[0]["loc"])
    param = f"{prefix}.{loc}" if loc else prefix
    detail = "; ".join(f"{field_path(e['loc']) or prefix}: {e['msg']}" for e in errors[:5])
    return ApiError(400, f"Invalid {prefix}: {detail}", param=param)


def translate_method(block: MethodBlock) -> tuple[MethodConfig, dict[str, Any]]:
    """``{"type": t, t: {"hyperparameters": {...}, **fields}}`` -> (method config, hp dict)."""
    for other in ("post_block", "joint", "lora", "reft", "full"):
        if other != block.type and getattr(block, other) is not None:
            raise ApiError(
                400,
                f"method.{other} given but method.type is {block.type!r}",
                param=f"method.{other}",
            )
    inner = dict(getattr(block, block.type) or {})
    prefix = f"method.{block.type}"
    if "type" in inner:
        raise ApiError(
            400,
            f"{prefix} must not contain 'type': the method is method.type ({block.type!r})",
            param=f"{prefix}.type",
        )
    hyperparameters = inner.pop("hyperparameters", None)
    if hyperparameters is None:
        hyperparameters = {}
    if not isinstance(hyperparameters, dict):
        raise ApiError(
            400,
            f"{prefix}.hyperparameters must be an object, got {type(hyperparameters).__name__}",
            param=f"{prefix}.hyperparameters",
        )
    try:
        method = parse_method({"type": block.type, **inner})
    except ValidationError as exc:
        errors = exc.errors()
        loc = [str(p) for p in errors[0]["loc"][2:]]  # skip ("method", "<type>")
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][2:]) or block.type}: {e['msg']}"
            for e in errors[:5]
        )
        raise ApiError(400, f"Invalid {prefix}: {message}", param=".".join([prefix, *loc])) from exc
    return method, hyperparameters


def _check_against_model(method: MethodConfig, model: str, prefix: str) -> None:
    try:
        n_layers, hidden = model_dimensions(model)
    except SteeringUserError as exc:
        raise ApiError(400, str(exc), param="model") from exc
    site = getattr(method, "site", None)
    if site is not None and site.layers and max(site.layers) >= n_layers:
        bad = [i for i in site.layers if i >= n_layers]
        raise ApiError(
            400,
            f"site.layers {bad} out of range: {model} has {n_layers} decoder "
            f"layers (valid indices 0..{n_layers - 1})",
            param=f"{prefix}.site.layers",
        )
    ranks = {
        "adapter.rank": getattr(getattr(method, "adapter", None), "rank", None)
        if getattr(getattr(method, "adapter", None), "kind", "vector") != "vector"
        else None,
        "lora.rank": getattr(getattr(method, "lora", None), "rank", None),
        "rank": getattr(method, "rank", None),
    }
    for field, rank in ranks.items():
        if rank is not None and rank > hidden:
            raise ApiError(
                400,
                f"{field}={rank} exceeds {model}'s hidden size {hidden}; use 1..{hidden}",
                param=f"{prefix}.{field}",
            )


def _processed_file(session: Session, tenant: str, file_id: str, param: str) -> str:
    try:
        row = files_repo.get_file(session, file_id, tenant)
    except NotFound:
        raise ApiError(
            400, f"{param} {file_id!r}: no such file", param=param, code="invalid_file"
        ) from None
    if row.status != "processed":
        raise ApiError(
            400,
            f"{param} {file_id!r} failed validation: {row.status_details}",
            param=param,
            code="invalid_file",
        )
    return row.id


def create_job(session: Session, settings: Settings, tenant: str, body: JobCreate) -> Job:
    if body.model not in settings.models:
        raise ApiError(
            400,
            f"model {body.model!r} is not available; choose one of {settings.models}",
            param="model",
            code="model_not_found",
        )
    method, block_hp = translate_method(body.method)
    prefix = f"method.{method.type}"
    top = body.hyperparameters.model_dump(exclude_unset=True) if body.hyperparameters else {}
    try:
        hyperparameters = Hyperparameters.model_validate({**top, **block_hp})
    except ValidationError as exc:
        raise _first_error(exc, f"{prefix}.hyperparameters") from exc
    _check_against_model(method, body.model, prefix)
    training = _processed_file(session, tenant, body.training_file, "training_file")
    quotas.check_new_job(session, settings, tenant)
    validation = None
    if body.validation_file is not None:
        validation = _processed_file(session, tenant, body.validation_file, "validation_file")
    return jobs_repo.create_job(
        session,
        tenant_id=tenant,
        model=body.model,
        training_file=training,
        validation_file=validation,
        method=method.model_dump(mode="json"),
        hyperparameters=hyperparameters.model_dump(mode="json", exclude_unset=True),
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        suffix=body.suffix,
        metadata_=body.metadata,
        queue=queue_for(body.gpus),
        gpus=body.gpus,
        max_attempts=settings.max_attempts,
    )
