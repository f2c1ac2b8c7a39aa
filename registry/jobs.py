"""Jobs: creation, the one status-changing function, leases with fencing tokens, progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from registry.errors import Conflict, LeaseLost, NotFound
from registry.ids import new_id
from registry.models import Checkpoint, Job, JobEvent, Metric
from registry.states import TERMINAL, InvalidTransition, JobStatus, check_transition


def _now() -> datetime:
    return datetime.now(UTC)


def create_job(session: Session, *, tenant_id: str, **fields: Any) -> Job:
    job = Job(id=new_id("ftjob"), tenant_id=tenant_id, status=JobStatus.QUEUED.value, **fields)
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job: {job.id}")
    return job


def get_job(session: Session, job_id: str, tenant_id: str | None = None) -> Job:
    job = session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound("fine-tuning job", job_id)
    return job


def list_jobs(
    session: Session, tenant_id: str, *, after: str | None, limit: int
) -> tuple[list[Job], bool]:
    """Newest first; ``after`` is the id of the last job of the previous page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if after is not None:
        anchor = get_job(session, after, tenant_id)
        query = query.where(
            or_(
                Job.created_at < anchor.created_at,
                (Job.created_at == anchor.created_at) & (Job.id < anchor.id),
            )
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    return rows[:limit], len(rows) > limit


def set_status(
    session: Session, job: Job, new: JobStatus, *, error: dict[str, Any] | None = None
) -> None:
    """The one place a job's status changes: checked against the state machine, timestamped."""
    check_transition(job.status, new.value)
    job.status = new.value
    now = _now()
    if new == JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    if new in TERMINAL or new == JobStatus.QUEUED:
        job.lease_owner = None
        job.lease_expires_at = None
        job.estimated_finish = None
    if new in TERMINAL:
        job.finished_at = now
    if error is not None:
        job.error = error
    add_event(
        session,
        job.id,
        _status_message(job, new),
        level="error" if error else "info",
        data={"status": new.value},
    )


def _status_message(job: Job, status: JobStatus) -> str:
    return {
        JobStatus.QUEUED: "Job queued",
        JobStatus.RUNNING: f"Job started (attempt {job.attempts})",
        JobStatus.SUCCEEDED: "The job has successfully completed",
        JobStatus.FAILED: "The job failed"
        + (f": {job.error.get('message')}" if job.error and job.error.get("message") else ""),
        JobStatus.CANCELLED: "The job was cancelled",
    }.get(status, f"Job {status.value}")


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs are cancelled at once; running ones when their worker sees the flag."""
    if job.status in TERMINAL:
        raise Conflict(f"job {job.id} is already {job.status} and cannot be cancelled")
    job.cancel_requested = True
    if job.status in (JobStatus.QUEUED, JobStatus.VALIDATING_FILES):
        set_status(session, job, JobStatus.CANCELLED)
    else:
        add_event(session, job.id, "Cancellation requested")
    return job


def claim_job(session: Session, job_id: str, owner: str, lease_seconds: float) -> int | None:
    """Atomically take the job's lease; return the new fencing token, or None if not claimable.

    Claimable: queued, or running with an expired lease (its worker died). A redelivered or
    duplicated message for a job someone holds finds it unclaimable and does nothing.
    """
    now = _now()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == JobStatus.QUEUED.value,
                (Job.status == JobStatus.RUNNING.value) & (Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING.value,
            lease_owner=owner,
            lease_token=Job.lease_token + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    job = session.get(Job, job_id)
    session.refresh(job)
    if job.started_at is None:
        job.started_at = now
    add_event(
        session,
        job_id,
        f"Job started on {owner} (attempt {job.attempts})",
        data={"status": "running", "attempt": job.attempts},
    )
    return job.lease_token


def fenced_job(session: Session, job_id: str, token: int) -> Job:
    """The job, if this worker still holds lease ``token``; else :class:`LeaseLost`."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.lease_token != token or job.status != JobStatus.RUNNING.value:
        raise LeaseLost(f"lease {token} on job {job_id} is no longer held")
    return job


def renew_lease(session: Session, job_id: str, token: int, lease_seconds: float) -> bool:
    """Extend the lease; returns whether cancellation was requested. LeaseLost if taken over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=_now() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise LeaseLost(f"lease {token} on job {job_id} is no longer held")
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def expired_running_jobs(session: Session) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < _now())
        )
    )


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        id=new_id("ftevent"),
        job_id=job_id,
        message=message,
        level=level,
        type=type,
        data=data,
        created_at=_now(),
    )
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session, job_id: str, *, after: str | None, limit: int, newest_first: bool = True
) -> tuple[list[JobEvent], bool]:
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        anchor = session.scalar(
            select(JobEvent).where(JobEvent.id == after, JobEvent.job_id == job_id)
        )
        if anchor is None:
            raise NotFound("event", after)
        query = query.where(
            JobEvent.seq < anchor.seq if newest_first else JobEvent.seq > anchor.seq
        )
    order = JobEvent.seq.desc() if newest_first else JobEvent.seq.asc()
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_since(session: Session, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq.asc())
            .limit(limit)
        )
    )


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
    session: Session, job: Job, *, step: int, path: str, metrics: dict[str, Any] | None
) -> Checkpoint:
    existing = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step)
    )
    if existing is not None:  # a resumed run re-saving the same step
        existing.storage_path, existing.metrics = path, metrics
        return existing
    checkpoint = Checkpoint(
        id=new_id("ftckpt"), job_id=job.id, step=step, storage_path=path, metrics=metrics
    )
    session.add(checkpoint)
    return checkpoint


def list_checkpoints(session: Session, job_id: str, *, after: str | None, limit: int):
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


__all__ = [
    "InvalidTransition",
    "add_checkpoint",
    "add_event",
    "claim_job",
    "create_job",
    "events_since",
    "expired_running_jobs",
    "fenced_job",
    "get_job",
    "list_checkpoints",
    "list_events",
    "list_jobs",
    "metrics_of",
    "record_progress",
    "renew_lease",
    "request_cancel",
    "set_status",
]
