"""Jobs whose worker died or whose message was lost: requeue them, or fail them after N tries
(or end them as their owner asked: cancelled, or paused). A paused job holds no lease and no
message: nothing here touches it until it is resumed.

Safe to run anywhere and often: a duplicate message is harmless because only the lease decides
who runs a job. The queries and updates are the registry's (``registry.jobs``); this module
decides what each job needs and sends the messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from registry import jobs as jobs_repo
from registry.db import session_scope
from registry.housekeeping import purge_expired_idempotency_keys
from registry.models import Job
from registry.settings import Settings
from registry.states import JobStatus

log = logging.getLogger("steer.reconciler")


def reconcile_once(
    settings: Settings,
    enqueue: Callable[[str, str], object],
    waiting: Callable[[list[tuple[str, str]]], set[str]] | None = None,
) -> dict[str, list[str]]:
    """One round. ``waiting`` answers which of the stale queued jobs ((id, queue) pairs) still
    have a message in the broker (``worker.broker_messages.waiting_job_ids``): those are not
    sent again, so a job that nothing consumes (no worker for its queue) keeps one message, not
    one more per round."""
    requeued: list[str] = []
    failed: list[str] = []  # failed or, when cancel was requested, cancelled
    paused: list[str] = []  # asked to pause: paused, not sent (a paused job holds no message)
    with session_scope(settings.resolved_database_url) as session:
        purge_expired_idempotency_keys(session)
        to_send = _repair_expired(session, requeued, failed, paused)  # requeued, then re-sent
        stale = _lost_messages(session, settings, requeued, waiting)
        resent = [job.id for job in stale]
        to_send += stale
        jobs_repo.mark_sent(to_send)
        queues = {job.id: job.queue for job in to_send}
    unsent = _send(settings, enqueue, [*requeued, *resent], queues)
    if requeued or failed or paused or unsent:
        log.info(
            "reconciler: requeued %s, failed %s, paused %s, unsent %s",
            requeued,
            failed,
            paused,
            unsent,
        )
    return {
        "requeued": requeued,
        "failed": failed,
        "paused": paused,
        "resent": resent,
        "unsent": unsent,
    }


def _repair_expired(
    session: Session, requeued: list[str], failed: list[str], paused: list[str]
) -> list[Job]:
    """End or requeue the running jobs whose lease expired (their worker died), appending each
    one's id to the list of what became of it; the requeued jobs, to send again."""
    to_send: list[Job] = []
    for job in jobs_repo.expired_running_jobs(session):
        if job.cancel_requested:  # its worker died before it could stop the job
            jobs_repo.set_status(session, job, JobStatus.CANCELLED)
            failed.append(job.id)
        elif job.attempts >= job.max_attempts:
            jobs_repo.fail_worker_lost(session, job)
            failed.append(job.id)
        elif job.pause_requested:  # its worker died before it could pause the job
            jobs_repo.pause_expired(session, job)
            paused.append(job.id)
        else:
            jobs_repo.requeue_expired(session, job)
            requeued.append(job.id)
            to_send.append(job)
    return to_send


def _lost_messages(
    session: Session,
    settings: Settings,
    requeued: list[str],
    waiting: Callable[[list[tuple[str, str]]], set[str]] | None,
) -> list[Job]:
    """The queued jobs whose message the broker may have lost, to send again."""
    # Queued, and its message sent long enough ago that it should have been taken: the
    # broker may have lost it (a restart without persistence). Re-sending is harmless.
    # (A job requeued just now may be among them: it is sent once, as requeued.)
    stale_before = datetime.now(UTC) - timedelta(seconds=settings.requeue_stale_after_seconds)
    stale = [
        job for job in jobs_repo.stale_queued_jobs(session, stale_before) if job.id not in requeued
    ]
    still_waiting = waiting([(job.id, job.queue) for job in stale]) if waiting else set()
    jobs_repo.mark_sent([job for job in stale if job.id in still_waiting])  # seen: not lost
    return [job for job in stale if job.id not in still_waiting]


def _send(
    settings: Settings,
    enqueue: Callable[[str, str], object],
    job_ids: list[str],
    queues: dict[str, str],
) -> list[str]:
    """Send each job's message; the ids that could not be sent (made stale at once)."""
    unsent: list[str] = []
    for job_id in job_ids:
        try:
            enqueue(job_id, queues[job_id])
        except Exception as exc:  # the broker is down: the next round sends it again
            log.warning("reconciler: could not send job %s: %s", job_id, exc)
            unsent.append(job_id)
    if unsent:  # not sent after all: make them stale at once, for the next round
        with session_scope(settings.resolved_database_url) as session:
            jobs_repo.mark_unsent(session, unsent)
    return unsent
