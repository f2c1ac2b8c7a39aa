"""Creating jobs: the OpenAI method block -> the core's method config, checked against the
model before anything is stored; sending a (resumed) job's message."""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.broker import enqueue_job
from api.errors import ApiError, error_param
from api.schemas import JobCreate
from api.services.compute import check_compute, compute_request
from api.services.integrations import checked_integrations
from registry import adapters as adapters_repo
from registry import files as files_repo
from registry import jobs as jobs_repo
from registry import quotas, workers
from registry.db import session_scope
from registry.errors import NotFound
from registry.models import Job
from registry.queueing import queue_for
from registry.settings import Settings
from steering_core.errors import SteeringUserError
from steering_core.methods.definition import MethodSizeError
from steering_core.methods.registry import method_definition, method_names, parse_method
from steering_core.model.catalogue import model_dimensions
from steering_core.spec.training_spec import (
    Hyperparameters,
    MethodHyperparameterError,
    check_method_hyperparameters,
)


def _first_error(exc: ValidationError, prefix: str) -> ApiError:
    errors = exc.errors()
    loc = error_param(errors[0])
    param = f"{prefix}.{loc}" if loc else prefix
    detail = "; ".join(f"{error_param(e) or prefix}: {e['msg']}" for e in errors[:5])
    return ApiError(400, f"Invalid {prefix}: {detail}", param=param)


def translate_method(block: Any) -> tuple[Any, dict[str, Any]]:
    """``{"type": t, t: {"hyperparameters": {...}, **fields}}`` -> (method config, hp dict).

    The request model (``api.schemas.MethodBlock``) has already typed every block; here the
    chosen block becomes the method's own config (its validators run again, on the real class).
    """
    for other in method_names():
        if other != block.type and getattr(block, other) is not None:
            raise ApiError(
                400,
                f"method.{other} given but method.type is {block.type!r}",
                param=f"method.{other}",
            )
    inner_block = getattr(block, block.type)
    inner = inner_block.model_dump(exclude_unset=True) if inner_block is not None else {}
    hyperparameters = inner.pop("hyperparameters", None) or {}
    prefix = f"method.{block.type}"
    try:
        method = parse_method({"type": block.type, **inner})
    except ValidationError as exc:
        errors = exc.errors()
        # skip ("method", "<type>"); a rule of the whole config names its field in its message
        loc = error_param({**errors[0], "loc": errors[0]["loc"][2:]})
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][2:]) or block.type}: {e['msg']}"
            for e in errors[:5]
        )
        raise ApiError(
            400, f"Invalid {prefix}: {message}", param=f"{prefix}.{loc}" if loc else prefix
        ) from exc
    return method, hyperparameters


def _check_against_model(method: Any, model: str, prefix: str) -> None:
    try:
        n_layers, hidden = model_dimensions(model)
    except SteeringUserError as exc:
        raise ApiError(400, str(exc), param="model") from exc
    try:
        method_definition(method.type).check_sizes(method, n_layers, hidden, model=model)
    except MethodSizeError as exc:
        raise ApiError(400, str(exc), param=f"{prefix}.{exc.field}") from exc


def _with_source_resolved(
    session: Session, tenant: str, method: Any, model: str, prefix: str
) -> Any:
    """A method that learns from another adapter (distill's ``source``: an adapter id,
    name@version, or a job id standing for its trained adapter) gets that adapter's id, once
    it is found among the tenant's and was trained on the job's base model."""
    source = getattr(method, "source", None)
    if not isinstance(source, str):
        return method
    param = f"{prefix}.source"
    reference = source
    if source.startswith("ftjob-"):
        try:
            job = jobs_repo.get_job(session, source, tenant)
        except NotFound:
            raise ApiError(400, f"{param}: no fine-tuning job {source!r}", param=param) from None
        if job.fine_tuned_model is None:
            raise ApiError(
                400,
                f"{param}: job {source!r} has no trained adapter yet (it is {job.status})",
                param=param,
            )
        reference = job.fine_tuned_model
    try:
        adapter = adapters_repo.get_adapter(session, reference, tenant)
    except NotFound:
        raise ApiError(400, f"{param}: no adapter {reference!r}", param=param) from None
    if adapter.base_model != model:
        raise ApiError(
            400,
            f"{param}: adapter {adapter.id} was trained on {adapter.base_model!r}, not "
            f"{model!r}: the student trains on its source's base model",
            param=param,
        )
    return method.model_copy(update={"source": adapter.id})


def _training_data(session: Session, tenant: str, file_id: str, param: str, method: Any) -> str:
    """The id of a processed file in a data format the method trains on."""
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
    try:
        method_definition(method.type).check_data_format(row.format, f"{param} {file_id!r}")
    except SteeringUserError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_file") from exc
    return row.id


def _hyperparameters(
    body: JobCreate, method: Any, block_hp: dict[str, Any], prefix: str
) -> Hyperparameters:
    """The top-level hyperparameters overlaid with the method block's, checked against the
    method and against the request's validation file."""
    top = body.hyperparameters.model_dump(exclude_unset=True) if body.hyperparameters else {}
    try:
        hyperparameters = Hyperparameters.model_validate({**top, **block_hp})
    except ValidationError as exc:
        raise _first_error(exc, f"{prefix}.hyperparameters") from exc
    try:
        check_method_hyperparameters(method.type, hyperparameters)
    except MethodHyperparameterError as exc:
        raise ApiError(400, str(exc), param=f"{prefix}.hyperparameters.{exc.field}") from exc
    if body.validation_file is None and (needing := hyperparameters.fields_needing_validation()):
        raise ApiError(
            400,
            f"{prefix}.hyperparameters.{needing[0]} needs a validation_file: without one "
            "nothing is validated; give a validation_file or leave it out",
            param=f"{prefix}.hyperparameters.{needing[0]}",
        )
    return hyperparameters


def create_job(session: Session, settings: Settings, tenant: str, body: JobCreate) -> Job:
    """A checked job row (not yet sent): the model, method, hyperparameters, compute, data
    files, quota, integrations and worker capacity are refused here with the field to fix."""
    if body.model not in settings.models:
        raise ApiError(
            400,
            f"model {body.model!r} is not available; choose one of {settings.models}",
            param="model",
            code="model_not_found",
        )
    method, block_hp = translate_method(body.method)
    prefix = f"method.{method.type}"
    hyperparameters = _hyperparameters(body, method, block_hp, prefix)
    compute = compute_request(body)
    check_compute(method, hyperparameters, compute)
    _check_against_model(method, body.model, prefix)
    method = _with_source_resolved(session, tenant, method, body.model, prefix)
    training = _training_data(session, tenant, body.training_file, "training_file", method)
    quotas.check_new_job(session, settings, tenant)
    validation = None
    if body.validation_file is not None:
        validation = _training_data(
            session, tenant, body.validation_file, "validation_file", method
        )
    integrations = checked_integrations(settings, body.integrations)
    stored_compute = compute.normalised()
    admitted = workers.admission(
        session, stored_compute, recent_seconds=settings.worker_seen_seconds
    )
    if admitted.verdict == "refuse":
        raise ApiError(400, admitted.message, param=admitted.param, code="exceeds_worker_capacity")
    job = jobs_repo.create_job(
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
        queue=queue_for(compute.gpus),
        gpus=compute.gpus,
        compute=stored_compute,
        integrations=integrations,
        max_attempts=settings.max_attempts,
    )
    if admitted.verdict == "warn":
        jobs_repo.add_event(session, job.id, admitted.message, level="warning")
    return job


def send_job(settings: Settings, job_id: str, queue: str) -> None:
    """Send the committed job's message; if the broker cannot take it, mark the job unsent so
    the reconciler's next round sends it."""
    if not enqueue_job(settings, job_id, queue):
        with session_scope(settings.resolved_database_url) as session:
            jobs_repo.mark_unsent(session, [job_id])
