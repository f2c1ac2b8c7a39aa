"""Jobs whose worker died or whose message was lost: requeue them, or fail them after N tries.

Safe to run anywhere and often: a duplicate message is harmless because only the lease decides
who runs a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from registry import jobs as jobs_repo
from registry.db import session_scope
from registry.models import Job
from registry.settings import Settings
from registry.states import JobStatus

log = logging.getLogger("steer.reconciler")


def reconcile_once(
    settings: Settings, enqueue: Callable[[str, str], object]
) -> dict[str, list[str]]:
    requeued: list[str] = []
    failed: list[str] = []  # failed or, when cancel was requested, cancelled
    with session_scope(settings.resolved_database_url) as session:
        for job in jobs_repo.expired_running_jobs(session):
            if job.cancel_requested:  # its worker died before it could stop the job
                jobs_repo.set_status(session, job, JobStatus.CANCELLED)
                failed.append(job.id)
            elif job.attempts >= job.max_attempts:
                jobs_repo.set_status(
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
                failed.append(job.id)
            else:
                jobs_repo.set_status(session, job, JobStatus.QUEUED)
                jobs_repo.add_event(
                    session,
                    job.id,
                    "The worker stopped responding; the job "
                    "was requeued and resumes from its last checkpoint",
                )
                job.lease_owner = None
                requeued.append(job.id)
        stale_before = datetime.now(UTC) - timedelta(seconds=settings.requeue_stale_after_seconds)
        # queued, and its message sent long enough ago that it should have been taken: the
        # broker may have lost it (a restart without persistence). Re-sending is harmless.
        last_sent = func.coalesce(Job.enqueued_at, Job.created_at)
        stale = session.scalars(
            select(Job).where(Job.status == JobStatus.QUEUED.value, last_sent < stale_before)
        ).all()
        resent = [job.id for job in stale if job.id not in requeued]
        now = datetime.now(UTC)
        for job in stale:
            job.enqueued_at = now
        queues = {job.id: job.queue for job in stale}
        for job_id in requeued:
            job = session.get(Job, job_id)
            job.enqueued_at, queues[job_id] = now, job.queue
    unsent: list[str] = []
    for job_id in [*requeued, *resent]:
        try:
            enqueue(job_id, queues[job_id])
        except Exception as exc:  # the broker is down: the next round sends it again
            log.warning("reconciler: could not send job %s: %s", job_id, exc)
            unsent.append(job_id)
    if unsent:  # not sent after all: make them stale at once, for the next round
        with session_scope(settings.resolved_database_url) as session:
            session.execute(update(Job).where(Job.id.in_(unsent)).values(enqueued_at=None))
    if requeued or failed or unsent:
        log.info("reconciler: requeued %s, failed %s, unsent %s", requeued, failed, unsent)
    return {"requeued": requeued, "failed": failed, "resent": resent, "unsent": unsent}
