"""A running job's progress: metrics, checkpoints, and the engine's events recorded as rows.

The training subprocess reports ``start``, ``step``, ``eval``, ``checkpoint`` and ``end``
events; each kind is recorded by one function here (``record_*``; the worker's recorder maps
kinds to them), inside the worker's transaction fenced by its lease. Their messages are what
users read in the job's events and the dashboard plots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.checkpoints import digest_artifact
from registry.errors import NotFound
from registry.ids import new_id
from registry.jobs import add_event
from registry.models import Checkpoint, Job, Metric
from registry.storage import StoredArtifact
from registry.training_events import (
    TrainingCheckpoint,
    TrainingEnded,
    TrainingEvaluation,
    TrainingLayerSelection,
    TrainingStarted,
    TrainingStep,
)

# Hyperparameters the engine chooses from the data when a job leaves them "auto".
DATA_SIZED = ("n_epochs", "batch_size")


def _now() -> datetime:
    return datetime.now(UTC)


def record_progress(
    session: Session,
    job: Job,
    *,
    step: int,
    total: int,
    trained_tokens: int,
    eta_seconds: float | None,
    metrics: dict[str, float],
) -> None:
    job.current_step, job.total_steps, job.trained_tokens = step, total, trained_tokens
    job.estimated_finish = None if eta_seconds is None else _now() + timedelta(seconds=eta_seconds)
    # A resumed run repeats the steps after its last checkpoint, and a retried write repeats
    # one step: either way the newest value of a (step, metric) replaces the old one.
    # (Every step, not only steps <= current_step: a resumed run moves current_step back.)
    session.execute(
        delete(Metric).where(
            Metric.job_id == job.id, Metric.step == step, Metric.name.in_(list(metrics))
        )
    )
    for name, value in metrics.items():
        session.add(Metric(job_id=job.id, step=step, name=name, value=float(value)))


def add_checkpoint(
    session: Session,
    job: Job,
    *,
    step: int,
    path: str,
    metrics: dict[str, Any] | None,
    artifact: StoredArtifact | None = None,
) -> Checkpoint:
    """The checkpoint's row, with the hashes of its adapter artifact when it has one."""
    files = None if artifact is None else artifact.files
    sha256 = None if artifact is None else artifact.sha256
    existing = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step)
    )
    if existing is not None:  # a resumed run re-saving the same step
        existing.storage_path, existing.metrics = path, metrics
        existing.files, existing.sha256 = files, sha256
        return existing
    checkpoint = Checkpoint(
        id=new_id("ftckpt"),
        job_id=job.id,
        step=step,
        storage_path=path,
        metrics=metrics,
        files=files,
        sha256=sha256,
    )
    session.add(checkpoint)
    return checkpoint


# -- the job's compute block -------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _merge_compute(job: Job, **keys: Any) -> None:
    """Add ``keys`` to ``job.compute`` (a new dict: SQLAlchemy does not see in-place changes to
    a JSON value). A row without one (stored by hand) gets what it could have asked for: one
    process per GPU, or one on CPU, without DeepSpeed."""
    stored = job.compute or {
        "gpus": job.gpus,
        "processes": max(1, job.gpus or 0),
        "deepspeed": None,
    }
    job.compute = {**stored, **keys}


def record_allocation(
    session: Session, job: Job, *, worker: str, devices: list[int], cpu_slots: list[int]
) -> None:
    """What the worker gave the job: its name, the GPU ids and the CPU slots of its ranks."""
    _merge_compute(job, worker=worker, devices=list(devices), cpu_slots=list(cpu_slots))
    ranks = int((job.compute or {}).get("processes") or max(len(devices), len(cpu_slots), 1))
    where = [_plural(ranks, "rank")]
    if devices:
        where.append(f"GPUs {','.join(str(d) for d in devices)}")
    if cpu_slots:
        where.append(f"CPU slots {','.join(str(s) for s in cpu_slots)}")
    add_event(
        session,
        job.id,
        f"Running on worker {worker}: {', '.join(where)}",
        data={"worker": worker, "devices": list(devices), "cpu_slots": list(cpu_slots)},
    )


# -- the engine's progress events, one function per kind (worker/recorder.py's table) -------


def record_start(session: Session, job: Job, event: TrainingStarted) -> None:
    """The plan, and what the run really is: its ranks, backend and ZeRO stage join the job's
    ``compute`` block, and the epochs and batch size the engine chose for ``"auto"`` replace
    it in the job's hyperparameters (so a later attempt runs with the same numbers)."""
    job.total_steps = event.total_steps
    asked = dict(job.hyperparameters or {})
    chosen = {
        name: getattr(event, name) for name in DATA_SIZED if asked.get(name, "auto") == "auto"
    }
    if chosen:
        job.hyperparameters = {**asked, **chosen}  # a new dict: SQLAlchemy sees the change
    _merge_compute(
        job, world_size=event.world_size, backend=event.backend, zero_stage=event.zero_stage
    )
    ranks = _plural(event.world_size, "rank")
    zero = f", ZeRO {event.zero_stage}" if event.zero_stage is not None else ""
    resumed = f", resumed from step {event.resumed_from_step}" if event.resumed_from_step else ""
    add_event(
        session,
        job.id,
        f"Training {event.n_examples} examples for {event.total_steps} steps "
        f"({event.trainable_parameters:,} trainable parameters, "
        f"{event.trainable_percent:.3f}%) on {ranks} ({event.backend}{zero}){resumed}",
        data=event.model_dump(mode="json"),
    )
    if chosen:
        add_event(
            session,
            job.id,
            f"Chosen for {event.n_examples} training examples (auto): "
            + ", ".join(f"{name}={value}" for name, value in chosen.items()),
            data={"n_examples": event.n_examples, **chosen},
        )


def _accuracy_text(accuracy: float | None) -> str:
    return "" if accuracy is None else f", token accuracy={accuracy:.4f}"


def record_step(session: Session, job: Job, event: TrainingStep) -> None:
    metrics = {"train_loss": event.loss}
    if event.mean_token_accuracy is not None:
        metrics["train_mean_token_accuracy"] = event.mean_token_accuracy
    metrics |= {"learning_rate": event.learning_rate, "tokens_per_second": event.tokens_per_second}
    record_progress(
        session,
        job,
        step=event.step,
        total=event.total_steps,
        trained_tokens=event.trained_tokens,
        eta_seconds=event.eta_seconds,
        metrics=metrics,
    )
    add_event(
        session,
        job.id,
        f"Step {event.step}/{event.total_steps}: training loss={event.loss:.4f}"
        + _accuracy_text(event.mean_token_accuracy),
        type="metrics",
        data={"step": event.step, **metrics, "total_steps": event.total_steps},
    )


def record_evaluation(session: Session, job: Job, event: TrainingEvaluation) -> None:
    metrics: dict[str, float] = {}
    if event.validation_loss is not None:
        metrics["valid_loss"] = event.validation_loss
    if event.validation_mean_token_accuracy is not None:
        metrics["valid_mean_token_accuracy"] = event.validation_mean_token_accuracy
    if metrics:
        record_progress(
            session,
            job,
            step=event.step,
            total=job.total_steps or event.step,
            trained_tokens=job.trained_tokens or 0,
            eta_seconds=None,
            metrics=metrics,
        )
    add_event(
        session,
        job.id,
        f"Step {event.step}: validation loss={event.validation_loss}"
        + _accuracy_text(event.validation_mean_token_accuracy),
        type="metrics",
        data={"step": event.step, "valid_loss": event.validation_loss, **metrics},
    )


def record_checkpoint(session: Session, job: Job, event: TrainingCheckpoint) -> None:
    """The new checkpoint's row, with the hashes of its adapter artifact (its files are a few
    hundred KB; a method that trains the base weights has none); the rows of checkpoints the
    engine has pruned since (it keeps the last ``keep_checkpoints``) go, so no row names a
    directory that is gone."""
    add_checkpoint(
        session,
        job,
        step=event.step,
        path=event.path,
        metrics={"step": event.step},
        artifact=digest_artifact(event.path),
    )
    for row in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id)):
        if row.step != event.step and not Path(row.storage_path).exists():
            session.delete(row)
    add_event(session, job.id, f"Checkpoint saved at step {event.step}")


def record_end(session: Session, job: Job, event: TrainingEnded) -> None:
    """An early stop is told; the other outcomes need no row here (the exit code and the
    artifact tell the finisher)."""
    if event.status != "early_stopped":
        return
    kept = (
        ""
        if event.restored_step is None
        else f"; the adapter of step {event.restored_step}, the lowest validation loss, is kept"
    )
    add_event(
        session,
        job.id,
        f"Early stopping at step {event.step} of {job.total_steps}: the validation loss "
        f"stopped improving{kept}",
        data={
            "step": event.step,
            "total_steps": job.total_steps,
            "restored_step": event.restored_step,
        },
    )


def record_layer_selection(session: Session, job: Job, event: TrainingLayerSelection) -> None:
    """``site.layers: "auto"``: which layers the engine chose, with every layer's score."""
    chosen = ", ".join(str(layer) for layer in event.chosen)
    add_event(
        session,
        job.id,
        f"Layer selection: steering layer{'' if len(event.chosen) == 1 else 's'} {chosen} of "
        f"{len(event.scores)} (the highest first-order scores at {event.site}, measured on "
        f"{event.probe_batches} training batches, {event.probe_tokens} tokens)",
        data=event.model_dump(mode="json"),
    )


def list_checkpoints(
    session: Session, job_id: str, *, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        anchor = session.get(Checkpoint, after)
        if anchor is None or anchor.job_id != job_id:
            raise NotFound("checkpoint", after)
        query = query.where(Checkpoint.step < anchor.step)
    rows = list(session.scalars(query.order_by(Checkpoint.step.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def metrics_of(session: Session, job_id: str) -> list[Metric]:
    return list(
        session.scalars(
            select(Metric).where(Metric.job_id == job_id).order_by(Metric.step, Metric.id)
        )
    )
