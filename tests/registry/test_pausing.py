"""Pausing and resuming, in the registry: a queued job pauses at once, a running one is flagged
for its worker (which reports the stop with ``pause_stopped``); only a paused job resumes; what
a job's status refuses names that status."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from registry.db import session_scope
from registry.errors import InvalidJobStatus
from registry.jobs import (
    claim_job,
    get_job,
    list_events,
    pause_stopped,
    renew_lease,
    request_cancel,
    request_pause,
    resume_job,
    set_status,
)
from registry.states import TERMINAL, JobStatus
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant, utc


def _queued_job(url: str) -> str:
    tenant = new_tenant()
    with session_scope(url) as session:
        return add_job(session, tenant, add_file(session, tenant).id).id


def _running_job(url: str, lease_seconds: float = 60.0) -> str:
    job_id = _queued_job(url)
    with session_scope(url) as session:
        assert claim_job(session, job_id, "worker-a", lease_seconds) == 1
    return job_id


def _messages(url: str, job_id: str) -> list[str]:
    with session_scope(url) as session:
        events, _ = list_events(session, job_id, after=None, limit=100, newest_first=False)
        return [e.message for e in events]


def _pause(url: str, job_id: str) -> None:
    with session_scope(url) as session:
        request_pause(session, get_job(session, job_id))


def test_a_queued_job_pauses_at_once_and_no_worker_can_claim_it(db_url: str) -> None:
    job_id = _queued_job(db_url)
    _pause(db_url, job_id)
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.pause_requested, job.finished_at) == ("paused", False, None)
        assert claim_job(session, job_id, "worker-a", 60.0) is None  # its message, taken
    assert _messages(db_url, job_id)[-1] == "The job was paused"


def test_a_running_job_is_flagged_once_and_its_lease_renewal_tells_its_worker(
    db_url: str,
) -> None:
    job_id = _running_job(db_url)
    _pause(db_url, job_id)
    _pause(db_url, job_id)  # asked again while pending: nothing more
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.pause_requested) == ("running", True)
        renewal = renew_lease(session, job_id, 1, 60.0)
        assert (renewal.pause_requested, renewal.cancel_requested) == (True, False)
    assert _messages(db_url, job_id).count("Pause requested") == 1


def test_a_dead_workers_job_asked_to_pause_is_not_taken_over(db_url: str) -> None:
    job_id = _running_job(db_url, lease_seconds=0.05)
    _pause(db_url, job_id)
    time.sleep(0.2)
    with session_scope(db_url) as session:
        assert claim_job(session, job_id, "worker-b", 60.0) is None  # the reconciler's


def test_the_worker_records_the_pause_and_the_job_gets_its_attempt_back(db_url: str) -> None:
    job_id = _running_job(db_url)
    _pause(db_url, job_id)
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        attempts, max_attempts = job.attempts, job.max_attempts
        assert pause_stopped(session, job) == JobStatus.PAUSED
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.pause_requested) == ("paused", False)
        assert (job.lease_owner, job.lease_expires_at, job.estimated_finish) == (None, None, None)
        assert (job.attempts, job.max_attempts) == (attempts, max_attempts + 1)
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert (latest.message, latest.data) == ("The job was paused", {"status": "paused"})


def test_a_cancel_that_came_while_pausing_wins(db_url: str) -> None:
    job_id = _running_job(db_url)
    _pause(db_url, job_id)
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    with session_scope(db_url) as session:
        assert pause_stopped(session, get_job(session, job_id)) == JobStatus.CANCELLED
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.pause_requested) == ("cancelled", False)


def test_resume_queues_a_paused_job_marked_sent_and_claimable_again(db_url: str) -> None:
    job_id = _running_job(db_url)
    _pause(db_url, job_id)
    with session_scope(db_url) as session:
        pause_stopped(session, get_job(session, job_id))
    before = datetime.now(UTC)
    with session_scope(db_url) as session:
        resume_job(session, get_job(session, job_id))
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == "queued" and utc(job.enqueued_at) >= before
        assert claim_job(session, job_id, "worker-b", 60.0) == 2
    assert _messages(db_url, job_id)[-2:] == [
        "The job was resumed",
        "Job started on worker-b (attempt 2)",
    ]


def test_a_paused_job_can_be_cancelled_at_once(db_url: str) -> None:
    job_id = _queued_job(db_url)
    _pause(db_url, job_id)
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == "cancelled" and job.finished_at is not None


@pytest.mark.parametrize("status", [*sorted(TERMINAL), JobStatus.PAUSED], ids=str)
def test_pausing_a_finished_or_paused_job_is_refused_naming_its_status(
    db_url: str, status: JobStatus
) -> None:
    job_id = _running_job(db_url) if status == JobStatus.SUCCEEDED else _queued_job(db_url)
    with session_scope(db_url) as session:
        set_status(session, get_job(session, job_id), status)
    with session_scope(db_url) as session, pytest.raises(InvalidJobStatus) as refused:
        request_pause(session, get_job(session, job_id))
    assert refused.value.status == status.value
    assert f"is {status.value} and cannot be paused" in str(refused.value)


def test_pausing_a_job_being_cancelled_is_refused(db_url: str) -> None:
    job_id = _running_job(db_url)
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    with session_scope(db_url) as session, pytest.raises(InvalidJobStatus, match="cancelled"):
        request_pause(session, get_job(session, job_id))


@pytest.mark.parametrize(
    "status", [JobStatus.QUEUED, JobStatus.RUNNING, *sorted(TERMINAL)], ids=str
)
def test_resuming_a_job_that_is_not_paused_is_refused_naming_its_status(
    db_url: str, status: JobStatus
) -> None:
    job_id = _running_job(db_url) if status != JobStatus.QUEUED else _queued_job(db_url)
    if status in TERMINAL:
        with session_scope(db_url) as session:
            set_status(session, get_job(session, job_id), status)
    with session_scope(db_url) as session, pytest.raises(InvalidJobStatus) as refused:
        resume_job(session, get_job(session, job_id))
    assert refused.value.status == status.value
    assert f"is {status.value} and cannot be resumed" in str(refused.value)
    with session_scope(db_url) as session:
        assert get_job(session, job_id).status == status.value
