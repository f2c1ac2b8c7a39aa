"""Registry rows -> API objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.schemas import (
    AdapterObject,
    CheckpointMetrics,
    CheckpointObject,
    EventObject,
    FileObject,
    JobError,
    JobObject,
)
from registry.checkpoints import checkpoint_model_id
from registry.models import Adapter, Checkpoint, File, Job, JobEvent
from steering_core.spec.training_spec import Hyperparameters, shown_hyperparameters


def unix(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def file_object(row: File) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=unix(row.created_at) or 0,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        status_details=row.status_details,
        format=row.format,
        n_examples=row.n_examples,
    )


def job_object(row: Job) -> JobObject:
    hp = Hyperparameters.model_validate(row.hyperparameters or {})
    resolved = shown_hyperparameters(row.method["type"], hp)
    percent = None
    if row.total_steps:
        percent = round(100.0 * (row.current_step or 0) / row.total_steps, 1)
    if row.status == "succeeded":
        percent = 100.0
    return JobObject(
        id=row.id,
        model=row.model,
        created_at=unix(row.created_at) or 0,
        finished_at=unix(row.finished_at),
        fine_tuned_model=row.fine_tuned_model,
        organization_id=row.tenant_id,
        result_files=list(row.result_files or []),
        status=row.status,
        validation_file=row.validation_file,
        training_file=row.training_file,
        hyperparameters=resolved,
        trained_tokens=row.trained_tokens,
        error=JobError(**row.error) if row.error else None,
        seed=row.seed,
        estimated_finish=unix(row.estimated_finish),
        integrations=list(row.integrations or []),
        metadata=row.metadata_,
        method=_method_block(row),
        user_provided_suffix=row.suffix,
        progress={
            "step": row.current_step,
            "total_steps": row.total_steps,
            "percent": percent,
            "attempts": row.attempts,
        },
        compute=dict(row.compute) if row.compute is not None else None,
    )


def _method_block(row: Job) -> dict[str, Any]:
    method = dict(row.method)
    kind = method.pop("type")
    return {"type": kind, kind: {**method, "hyperparameters": row.hyperparameters or {}}}


def event_object(row: JobEvent) -> EventObject:
    return EventObject(
        id=row.id,
        created_at=unix(row.created_at) or 0,
        level=row.level,
        message=row.message,
        data=row.data,
        type=row.type,
    )


def checkpoint_object(row: Checkpoint, metrics: dict[str, Any]) -> CheckpointObject:
    """``metrics``: the checkpoint's, read from the job's metric rows at its step
    (``registry.checkpoints.metrics_at_steps``)."""
    return CheckpointObject(
        id=row.id,
        created_at=unix(row.created_at) or 0,
        fine_tuned_model_checkpoint=checkpoint_model_id(row.job_id, row.step),
        fine_tuning_job_id=row.job_id,
        metrics=CheckpointMetrics.model_validate(metrics),
        step_number=row.step,
    )


def adapter_object(row: Adapter) -> AdapterObject:
    return AdapterObject(
        id=row.id,
        name=row.name,
        version=row.version,
        reference=f"{row.name}@{row.version}",
        created_at=unix(row.created_at) or 0,
        base_model=row.base_model,
        method=row.method,
        job_id=row.job_id,
        sha256=row.sha256,
        bytes=row.bytes,
        files=row.files,
        trainable_parameters=row.trainable_parameters,
        # the training result's figures; its strength report and provenance have fields of
        # their own
        metrics={k: v for k, v in row.metrics.items() if k not in LIFTED_METRICS}
        if row.metrics is not None
        else None,
        strength_report=(row.metrics or {}).get("strength_report"),
        trained_by=(row.metrics or {}).get("trained_by"),
    )


LIFTED_METRICS = ("strength_report", "trained_by")
