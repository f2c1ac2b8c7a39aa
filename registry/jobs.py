"""Jobs: creation, the one status-changing function, leases with fencing tokens, and the
reconciler's requeues and re-sends. (The job's event log is :mod:`registry.job_events`, its
functions importable from here too; what a running job reports, its metrics and checkpoints, is
:mod:`registry.progress`.)"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.errors import InvalidJobStatus, LeaseLost, NotFound
from registry.ids import new_id
from registry.job_events import add_event, events_since, list_events
from registry.models import Job
from registry.states import (
    PAUSABLE,
    TERMINAL,
    UNLEASED,
    InvalidTransition,
    JobStatus,
    check_transition,
)

REQUEUED_MESSAGE = (
    "The worker stopped responding; the job was requeued and resumes from its last checkpoint"
)
PAUSED_LOST_MESSAGE = (
    "The worker stopped responding before the job paused; once resumed, it continues from its "
    "last checkpoint"
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
    if new in UNLEASED:
        job.lease_owner = None
        job.lease_expires_at = None
        job.estimated_finish = None
    if new in TERMINAL or new == JobStatus.PAUSED:
        job.pause_requested = False  # done, or moot
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
        JobStatus.PAUSED: "The job was paused",
    }.get(status, f"Job {status.value}")


def request_cancel(session: Session, job: Job) -> Job:
    """Queued and paused jobs are cancelled at once; running ones when their worker sees the
    flag. The row is locked and read again first: a worker finishing the job at this moment (its
    success is written under the same lock) either sees the flag or has already ended the job,
    and then the cancel is refused rather than acknowledged for a job that succeeds."""
    session.refresh(job, with_for_update=True)
    if job.status in TERMINAL:
        raise InvalidJobStatus(
            job.id, job.status, f"job {job.id} is already {job.status} and cannot be cancelled"
        )
    job.cancel_requested = True
    if job.status == JobStatus.RUNNING:
        add_event(session, job.id, "Cancellation requested")
    else:
        set_status(session, job, JobStatus.CANCELLED)
    return job


def request_pause(session: Session, job: Job) -> Job:
    """A queued job is paused at once (a worker that takes its message finds it unclaimable); a
    running one is flagged, and its worker stops it at the next step boundary after saving a
    checkpoint (:func:`pause_stopped`). Asking again while the pause is pending changes
    nothing. The row is locked and read again first, as for a cancel."""
    session.refresh(job, with_for_update=True)
    if job.status not in PAUSABLE:
        raise InvalidJobStatus(
            job.id,
            job.status,
            f"job {job.id} is {job.status} and cannot be paused: only queued or running jobs can",
        )
    if job.cancel_requested:  # running, its cancel on the way
        raise InvalidJobStatus(
            job.id, job.status, f"job {job.id} is being cancelled and cannot be paused"
        )
    if job.status == JobStatus.QUEUED:
        set_status(session, job, JobStatus.PAUSED)
    elif not job.pause_requested:
        job.pause_requested = True
        add_event(session, job.id, "Pause requested")
    return job


def resume_job(session: Session, job: Job) -> Job:
    """A paused job goes back to the queue, to continue from its last checkpoint; the caller
    sends its message after the commit (the job is marked sent now: a failed send is for
    :func:`mark_unsent`)."""
    session.refresh(job, with_for_update=True)
    if job.status != JobStatus.PAUSED:
        raise InvalidJobStatus(
            job.id,
            job.status,
            f"job {job.id} is {job.status} and cannot be resumed: only a paused job can",
        )
    set_status(session, job, JobStatus.QUEUED, message="The job was resumed")
    mark_sent([job])
    return job


def pause_stopped(session: Session, job: Job) -> JobStatus:
    """The worker's record of a run that stopped for a pause, having saved its checkpoint: the
    job is paused and its lease released, unless a cancel came meanwhile (it wins). The run
    ended cleanly, so it does not count against the attempts a job's workers may lose: one more
    is allowed."""
    if job.cancel_requested:
        set_status(session, job, JobStatus.CANCELLED)
        return JobStatus.CANCELLED
    set_status(session, job, JobStatus.PAUSED)
    job.max_attempts += 1
    return JobStatus.PAUSED


def claim_job(session: Session, job_id: str, owner: str, lease_seconds: float) -> int | None:
    """Atomically take the job's lease; return the new fencing token, or None if not claimable.

    Claimable: queued, or running with an expired lease (its worker died) and asked neither to
    cancel nor to pause (the reconciler ends those). A redelivered or duplicated message for a
    job someone holds, or that is paused, finds it unclaimable and does nothing. The
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
            Job.pause_requested.is_(False),
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
    """A renewed lease: until when it runs, and whether the job's cancellation or pause was
    requested (the holder's cue to stop the work, or to checkpoint and stop)."""

    expires_at: datetime
    cancel_requested: bool
    pause_requested: bool = False


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
    flags = session.execute(
        select(Job.cancel_requested, Job.pause_requested).where(Job.id == job_id)
    ).one()
    return LeaseRenewal(
        expires_at=expires_at,
        cancel_requested=bool(flags.cancel_requested),
        pause_requested=bool(flags.pause_requested),
    )


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


def pause_expired(session: Session, job: Job) -> None:
    """A job asked to pause whose worker died first: paused where its last checkpoint left it
    (nothing runs it until it is resumed)."""
    set_status(session, job, JobStatus.PAUSED)
    add_event(session, job.id, PAUSED_LOST_MESSAGE)


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


__all__ = [
    "PAUSED_LOST_MESSAGE",
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
    "pause_expired",
    "pause_stopped",
    "renew_lease",
    "request_cancel",
    "request_pause",
    "requeue_expired",
    "resume_job",
    "set_status",
    "stale_queued_jobs",
]
