"""Jobs: creation, the one status-changing function, leases with fencing tokens, the
reconciler's requeues and re-sends, and the job's event log. (What a running job reports, its
metrics and checkpoints, is :mod:`registry.progress`.)"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.errors import Conflict, LeaseLost, NotFound
from registry.ids import new_id
from registry.models import Job, JobEvent
from registry.states import TERMINAL, InvalidTransition, JobStatus, check_transition

REQUEUED_MESSAGE = (
    "The worker stopped responding; the job was requeued and resumes from its last checkpoint"
)


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
    session: Session,
    job: Job,
    new: JobStatus,
    *,
    error: dict[str, Any] | None = None,
    message: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """The one place a job's status changes: checked against the state machine, timestamped,
    and told by an event (``message`` instead of the standard one; ``details`` added to its
    ``{"status": ...}`` data)."""
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
        message or _status_message(job, new),
        level="error" if error else "info",
        data={"status": new.value, **(details or {})},
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
    """Queued jobs are cancelled at once; running ones when their worker sees the flag. The row
    is locked and read again first: a worker finishing the job at this moment (its success is
    written under the same lock) either sees the flag or has already ended the job, and then the
    cancel is refused rather than acknowledged for a job that succeeds."""
    session.refresh(job, with_for_update=True)
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
    duplicated message for a job someone holds finds it unclaimable and does nothing. The
    conditional UPDATE takes the lease; the status changes through :func:`set_status` in the
    same transaction, so a concurrent claim (blocked on the row until this one commits) finds
    the job running under a live lease.
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
            lease_owner=owner,
            lease_token=Job.lease_token + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    job = session.get_one(Job, job_id, populate_existing=True)
    message = f"Job started on {owner} (attempt {job.attempts})"
    details = {"attempt": job.attempts}
    if job.status == JobStatus.QUEUED.value:
        set_status(session, job, JobStatus.RUNNING, message=message, details=details)
    else:  # a dead worker's job, taken over: it stays running, only the attempt is new
        add_event(session, job_id, message, data={"status": JobStatus.RUNNING.value, **details})
    return job.lease_token


def fenced_job(session: Session, job_id: str, token: int, *, lock: bool = False) -> Job:
    """The job, if this worker still holds lease ``token``; else :class:`LeaseLost`. ``lock``
    holds the row until the transaction ends (a worker's writes: a concurrent cancel waits)."""
    job = session.get(Job, job_id, populate_existing=True, with_for_update=lock)
    if job is None or job.lease_token != token or job.status != JobStatus.RUNNING.value:
        raise LeaseLost(f"lease {token} on job {job_id} is no longer held")
    return job


@dataclass(frozen=True)
class LeaseRenewal:
    """A renewed lease: until when it runs, and whether the job's cancellation was requested
    (the holder's cue to stop the work)."""

    expires_at: datetime
    cancel_requested: bool


def renew_lease(session: Session, job_id: str, token: int, lease_seconds: float) -> LeaseRenewal:
    """Extend the lease held under ``token``; LeaseLost if another worker took it over or the
    job finished."""
    expires_at = _now() + timedelta(seconds=lease_seconds)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise LeaseLost(f"lease {token} on job {job_id} is no longer held")
    cancel_requested = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return LeaseRenewal(expires_at=expires_at, cancel_requested=bool(cancel_requested))


def expired_running_jobs(session: Session) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < _now())
        )
    )


# -- the reconciler's repairs: dead workers' jobs, lost messages ----------------------------


def requeue_expired(session: Session, job: Job) -> None:
    """Put a job whose worker died (its lease expired) back in the queue, for another attempt
    that resumes from its last checkpoint; the lease is cleared with the status."""
    set_status(session, job, JobStatus.QUEUED)
    add_event(session, job.id, REQUEUED_MESSAGE)


def fail_worker_lost(session: Session, job: Job) -> None:
    """Give up on a job whose workers died on every one of its attempts."""
    set_status(
        session,
        job,
        JobStatus.FAILED,
        error={
            "code": "worker_lost",
            "message": f"the job's worker stopped responding {job.attempts} times; "
            f"giving up after {job.max_attempts} attempts",
            "param": None,
        },
    )


def stale_queued_jobs(session: Session, sent_before: datetime) -> list[Job]:
    """Queued jobs whose message was last sent (or, never sent, that were created) before
    ``sent_before``: the broker may have lost the message (a restart without persistence)."""
    last_sent = func.coalesce(Job.enqueued_at, Job.created_at)
    return list(
        session.scalars(
            select(Job).where(Job.status == JobStatus.QUEUED.value, last_sent < sent_before)
        )
    )


def mark_sent(jobs: Iterable[Job]) -> None:
    """Record that the jobs' messages are sent now: not stale again until the threshold."""
    sent_at = _now()
    for job in jobs:
        job.enqueued_at = sent_at


def mark_unsent(session: Session, job_ids: Collection[str]) -> None:
    """The send failed after all: make the jobs stale at once, for the reconciler's next round."""
    if job_ids:
        session.execute(update(Job).where(Job.id.in_(list(job_ids))).values(enqueued_at=None))


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


__all__ = [
    "REQUEUED_MESSAGE",
    "InvalidTransition",
    "LeaseRenewal",
    "add_event",
    "claim_job",
    "create_job",
    "events_since",
    "expired_running_jobs",
    "fail_worker_lost",
    "fenced_job",
    "get_job",
    "list_events",
    "list_jobs",
    "mark_sent",
    "mark_unsent",
    "renew_lease",
    "request_cancel",
    "requeue_expired",
    "set_status",
    "stale_queued_jobs",
]
