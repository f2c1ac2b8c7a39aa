"""Claims, leases and fencing tokens: a job runs on one worker at a time, even after failover."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from registry.db import session_scope
from registry.errors import InvalidJobStatus, LeaseLost
from registry.jobs import (
    claim_job,
    expired_running_jobs,
    fenced_job,
    get_job,
    list_events,
    renew_lease,
    request_cancel,
    set_status,
)
from registry.states import TERMINAL, JobStatus
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant, utc

SHORT_LEASE = 0.05  # seconds; the tests sleep past it to simulate a dead worker
PAST_SHORT_LEASE = 0.2


def _queued_job(url: str) -> str:
    tenant = new_tenant()
    with session_scope(url) as session:
        return add_job(session, tenant, add_file(session, tenant).id).id


def _claim(url: str, job_id: str, owner: str, lease_seconds: float = 60.0) -> int | None:
    with session_scope(url) as session:
        return claim_job(session, job_id, owner, lease_seconds)


def test_claiming_a_queued_job_takes_its_lease(db_url: str) -> None:
    job_id = _queued_job(db_url)
    before = datetime.now(UTC)
    assert _claim(db_url, job_id, "worker-a") == 1
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.RUNNING.value
        assert job.lease_owner == "worker-a"
        assert job.lease_token == 1
        assert job.attempts == 1
        assert utc(job.lease_expires_at) > before
        assert utc(job.started_at) >= before
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert latest.data == {"status": "running", "attempt": 1}
        assert "worker-a" in latest.message


def test_a_duplicate_message_does_not_claim_a_held_job(db_url: str) -> None:
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a") == 1
    assert _claim(db_url, job_id, "worker-b") is None
    assert _claim(db_url, job_id, "worker-a") is None  # even the same worker, redelivered
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.lease_owner, job.lease_token, job.attempts) == ("worker-a", 1, 1)
        assert fenced_job(session, job_id, 1) is job


def test_an_expired_lease_passes_to_another_worker_and_fences_the_first(db_url: str) -> None:
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a", lease_seconds=SHORT_LEASE) == 1
    with session_scope(db_url) as session:
        assert expired_running_jobs(session) == []
    time.sleep(PAST_SHORT_LEASE)
    with session_scope(db_url) as session:
        assert [job.id for job in expired_running_jobs(session)] == [job_id]

    assert _claim(db_url, job_id, "worker-b") == 2
    with session_scope(db_url) as session:
        with pytest.raises(LeaseLost):
            renew_lease(session, job_id, 1, 60.0)
        with pytest.raises(LeaseLost):
            fenced_job(session, job_id, 1)
        job = fenced_job(session, job_id, 2)
        assert (job.lease_owner, job.lease_token, job.attempts) == ("worker-b", 2, 2)
        assert renew_lease(session, job_id, 2, 60.0).cancel_requested is False
        assert expired_running_jobs(session) == []


def test_renewing_extends_the_lease(db_url: str) -> None:
    job_id = _queued_job(db_url)
    token = _claim(db_url, job_id, "worker-a", lease_seconds=SHORT_LEASE)
    assert token == 1
    with session_scope(db_url) as session:
        assert renew_lease(session, job_id, token, 60.0).cancel_requested is False
    time.sleep(PAST_SHORT_LEASE)
    assert _claim(db_url, job_id, "worker-b") is None
    with session_scope(db_url) as session:
        assert expired_running_jobs(session) == []
        assert fenced_job(session, job_id, token).lease_owner == "worker-a"


def test_a_lease_is_lost_once_the_job_finishes(db_url: str) -> None:
    job_id = _queued_job(db_url)
    token = _claim(db_url, job_id, "worker-a")
    assert token == 1
    with session_scope(db_url) as session:
        set_status(session, fenced_job(session, job_id, token), JobStatus.SUCCEEDED)
    with session_scope(db_url) as session:
        with pytest.raises(LeaseLost):
            renew_lease(session, job_id, token, 60.0)
        with pytest.raises(LeaseLost):
            fenced_job(session, job_id, token)
    assert _claim(db_url, job_id, "worker-b") is None


def test_a_requeued_job_is_claimed_with_the_next_token(db_url: str) -> None:
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a") == 1
    with session_scope(db_url) as session:
        set_status(session, get_job(session, job_id), JobStatus.QUEUED)
    assert _claim(db_url, job_id, "worker-b") == 2
    with session_scope(db_url) as session:
        with pytest.raises(LeaseLost):
            fenced_job(session, job_id, 1)
        assert get_job(session, job_id).attempts == 2


def test_unknown_jobs_are_not_claimable(db_url: str) -> None:
    assert _claim(db_url, "ftjob-doesnotexist", "worker-a") is None
    with session_scope(db_url) as session:
        with pytest.raises(LeaseLost):
            fenced_job(session, "ftjob-doesnotexist", 1)
        with pytest.raises(LeaseLost):
            renew_lease(session, "ftjob-doesnotexist", 1, 60.0)


def test_cancelling_a_queued_job_cancels_it_at_once(db_url: str) -> None:
    job_id = _queued_job(db_url)
    with session_scope(db_url) as session:
        job = request_cancel(session, get_job(session, job_id))
        assert job.status == JobStatus.CANCELLED.value
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.CANCELLED.value
        assert job.cancel_requested is True
        assert job.finished_at is not None
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert latest.data == {"status": "cancelled"}
    assert _claim(db_url, job_id, "worker-a") is None


def test_cancelling_a_running_job_only_raises_the_flag(db_url: str) -> None:
    job_id = _queued_job(db_url)
    token = _claim(db_url, job_id, "worker-a")
    assert token == 1
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.RUNNING.value
        assert job.cancel_requested is True
        assert job.finished_at is None
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert latest.message == "Cancellation requested"
        assert renew_lease(session, job_id, token, 60.0).cancel_requested is True
    with session_scope(db_url) as session:  # the worker sees the flag and stops
        set_status(session, fenced_job(session, job_id, token), JobStatus.CANCELLED)
    with session_scope(db_url) as session:
        assert get_job(session, job_id).status == JobStatus.CANCELLED.value


def test_a_cancel_requested_job_cannot_be_claimed(db_url: str) -> None:
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a", lease_seconds=SHORT_LEASE) == 1
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    time.sleep(PAST_SHORT_LEASE)  # the worker died before it saw the flag
    assert _claim(db_url, job_id, "worker-b") is None
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.lease_token) == (JobStatus.RUNNING.value, 1)
        # It stays running with an expired lease: whatever reaps dead workers must find it.
        assert [j.id for j in expired_running_jobs(session)] == [job_id]


@pytest.mark.parametrize("terminal", sorted(TERMINAL), ids=str)
def test_cancelling_a_finished_job_is_refused_naming_its_status(
    db_url: str, terminal: JobStatus
) -> None:
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a") == 1
    with session_scope(db_url) as session:
        set_status(session, get_job(session, job_id), terminal)
    with session_scope(db_url) as session, pytest.raises(InvalidJobStatus) as refused:
        request_cancel(session, get_job(session, job_id))
    assert refused.value.status == terminal.value and terminal.value in str(refused.value)
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == terminal.value
        assert job.cancel_requested is False


def test_a_claim_starts_the_job_once_and_a_takeover_tells_the_new_attempt(db_url: str) -> None:
    """The first claim changes the status (through ``set_status``: one status event); taking
    over a dead worker's job changes no status (running stays running), it adds the attempt."""
    job_id = _queued_job(db_url)
    assert _claim(db_url, job_id, "worker-a", lease_seconds=SHORT_LEASE) == 1
    with session_scope(db_url) as session:
        started_at = get_job(session, job_id).started_at
    time.sleep(PAST_SHORT_LEASE)
    assert _claim(db_url, job_id, "worker-b") == 2
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.started_at) == (JobStatus.RUNNING.value, started_at)
        events, _ = list_events(session, job_id, after=None, limit=10, newest_first=False)
    assert [(e.message, e.data) for e in events[1:]] == [
        ("Job started on worker-a (attempt 1)", {"status": "running", "attempt": 1}),
        ("Job started on worker-b (attempt 2)", {"status": "running", "attempt": 2}),
    ]
