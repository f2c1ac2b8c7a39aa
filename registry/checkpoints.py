"""A job's checkpoints as things to read: their metrics, their adapter artifact, and the model id
that names one (``ftjob-…:ckpt-step-50``, OpenAI's ``fine_tuned_model_checkpoint``).

The engine writes each checkpoint as a directory ``…/run/checkpoints/step-N/`` (its row's
``storage_path``). For the steering methods (every method whose definition does not train the
base weights) it holds ``adapter/``: the adapter artifact at that step, as the end of training
saves it (``steering_config.json`` plus ``adapter_model.safetensors`` and/or ``lora/``), which
``steering_core.artifact.store.load_artifact`` and
``steering_core.serving.forms.read_serving_adapter``
read as they read a stored adapter. Its files are hashed when the checkpoint is recorded
(``files``, ``sha256``). A method that trains the base weights (``full``) has no artifact in
its checkpoints (``trainable.safetensors`` holds every weight, without a config): nothing to
download or serve. After a success the job's directory keeps each listed checkpoint's artifact
(``worker/job_files.py``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import NotFound
from registry.jobs import get_job
from registry.models import Checkpoint, Job, Metric
from registry.storage import StoredArtifact, artifact_digest

ARTIFACT_DIR = "adapter"  # in a checkpoint's directory (steering_core.engine.train.ARTIFACT_DIR)
# The metrics of a checkpoint: OpenAI's names, from the job's metric rows at its step.
CHECKPOINT_METRICS = (
    "train_loss",
    "valid_loss",
    "train_mean_token_accuracy",
    "valid_mean_token_accuracy",
)
NOT_MEASURED = ("full_valid_loss", "full_valid_mean_token_accuracy")
_MODEL_ID = re.compile(r"^(?P<job>.+):ckpt-step-(?P<step>[0-9]{1,9})$")


def checkpoint_model_id(job_id: str, step: int) -> str:
    """The id that names a checkpoint as a model (OpenAI's ``fine_tuned_model_checkpoint``)."""
    return f"{job_id}:ckpt-step-{step}"


def parse_checkpoint_model_id(model_id: str) -> tuple[str, int] | None:
    """(job id, step) of ``ftjob-…:ckpt-step-N``; None for any other string."""
    match = _MODEL_ID.match(model_id)
    return None if match is None else (match["job"], int(match["step"]))


def digest_artifact(checkpoint_path: str | Path) -> StoredArtifact | None:
    """The hashes of a checkpoint's adapter artifact; None when it has none (``full``), or when
    the engine already pruned the checkpoint (a recorder running behind it)."""
    directory = Path(checkpoint_path) / ARTIFACT_DIR
    try:
        return artifact_digest(directory) if directory.is_dir() else None
    except OSError:
        return None


def metrics_at_steps(
    session: Session, job_id: str, steps: Collection[int]
) -> dict[int, dict[str, Any]]:
    """Each step's checkpoint metrics: ``step``, ``train_loss``, ``valid_loss`` and the mean
    token accuracies as the job's metric rows hold them at that step (None where none was
    measured: a step without a validation has no ``valid_*``), and OpenAI's ``full_valid_*``,
    which are not measured (every validation here runs on the whole validation file, so it
    would repeat ``valid_*``)."""
    found: dict[int, dict[str, Any]] = {
        step: {"step": step, **dict.fromkeys(CHECKPOINT_METRICS), **dict.fromkeys(NOT_MEASURED)}
        for step in steps
    }
    if not found:
        return found
    rows = session.execute(
        select(Metric.step, Metric.name, Metric.value)
        .where(
            Metric.job_id == job_id,
            Metric.step.in_(list(found)),
            Metric.name.in_(CHECKPOINT_METRICS),
        )
        .order_by(Metric.id)
    )
    for step, name, value in rows:
        found[step][name] = value  # the newest row of a (step, name) wins
    return found


def get_checkpoint(session: Session, job: Job, reference: str) -> Checkpoint:
    """One of the job's checkpoints, by its id (``ftckpt-…``) or its model id
    (``<job id>:ckpt-step-N``)."""
    parsed = parse_checkpoint_model_id(reference)
    if parsed is not None:
        job_id, step = parsed
        row = session.scalar(
            select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
        )
    else:
        row = session.get(Checkpoint, reference)
    if row is None or row.job_id != job.id:
        raise NotFound("checkpoint", reference, f"job {job.id} has no such checkpoint")
    return row


@dataclass(frozen=True)
class CheckpointArtifact:
    """A checkpoint's adapter artifact, as serving and downloads need it."""

    id: str  # the checkpoint's id, ftckpt-…
    model_id: str  # ftjob-…:ckpt-step-N
    job_id: str
    step: int
    directory: Path  # steering_config.json + adapter_model.safetensors and/or lora/
    files: dict[str, str]  # path relative to ``directory`` -> sha256, recorded with the row
    sha256: str  # over the sorted "path:sha256" lines, as an adapter's
    base_model: str  # the job's model id (a catalogue name)
    method: str  # the method's type name ("post_block", "lora", ...)
    method_config: dict[str, Any]  # the job's whole method config


def checkpoint_artifact(job: Job, row: Checkpoint) -> CheckpointArtifact:
    """The artifact of ``row``; NotFound when the checkpoint has none recorded."""
    model_id = checkpoint_model_id(job.id, row.step)
    if row.files is None or row.sha256 is None:
        raise NotFound(
            "checkpoint artifact",
            model_id,
            "the checkpoint was recorded without the hashes of its files"
            if (Path(row.storage_path) / ARTIFACT_DIR).is_dir()
            else f"a {job.method.get('type')!r} checkpoint holds no adapter artifact",
        )
    return CheckpointArtifact(
        id=row.id,
        model_id=model_id,
        job_id=job.id,
        step=row.step,
        directory=Path(row.storage_path) / ARTIFACT_DIR,
        files=dict(row.files),
        sha256=row.sha256,
        base_model=job.model,
        method=str(job.method.get("type", "")),
        method_config=dict(job.method),
    )


def resolve_checkpoint_model(session: Session, model_id: str, tenant_id: str) -> CheckpointArtifact:
    """What serving needs to load checkpoint ``model_id`` (``ftjob-…:ckpt-step-N``) of tenant
    ``tenant_id``: its artifact directory (readable by ``load_artifact`` and
    ``read_serving_adapter``), the sha256 of each file and of the whole (as an adapter's), the
    base model id and the method.

    Raises :class:`~registry.errors.NotFound` when ``model_id`` is not a checkpoint model id,
    names another tenant's job or an unknown one, a step without a checkpoint (never saved, or
    pruned: the engine keeps the last ``keep_checkpoints``), or a checkpoint without an adapter
    artifact (a ``full`` job's). The files are not read here: check them against ``files``
    before use (``api.services.adapters.check_stored_files``, as for adapters), since the
    engine of a running job may prune the checkpoint at any time.
    """
    parsed = parse_checkpoint_model_id(model_id)
    if parsed is None:
        raise NotFound("checkpoint", model_id, "a checkpoint is named <job id>:ckpt-step-<step>")
    job = get_job(session, parsed[0], tenant_id)
    return checkpoint_artifact(job, get_checkpoint(session, job, model_id))


__all__ = [
    "ARTIFACT_DIR",
    "CheckpointArtifact",
    "checkpoint_artifact",
    "checkpoint_model_id",
    "digest_artifact",
    "get_checkpoint",
    "metrics_at_steps",
    "parse_checkpoint_model_id",
    "resolve_checkpoint_model",
]
