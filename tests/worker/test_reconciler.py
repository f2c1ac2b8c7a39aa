"""The reconciler against real databases (SQLite and PostgreSQL): dead workers, lost messages.

Each test gets its own freshly migrated database, so ``reconcile_once`` sees only that test's
jobs and its return value and the messages it sends can be asserted exactly. "Expired" leases
and "stale" messages are made by moving timestamps into the past, not by sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.db import session_scope
from registry.jobs import (
    PAUSED_LOST_MESSAGE,
    claim_job,
    get_job,
    pause_stopped,
    request_cancel,
    request_pause,
    set_status,
)
from registry.settings import Settings
from registry.states import JobStatus
from tests.registry.helpers import aware, utc
from tests.worker.helpers import events_of as _events
from tests.worker.helpers import expire_lease as _expire_lease
from tests.worker.helpers import job_row as _job
from tests.worker.helpers import queued_job as _queued_job
from worker.reconciler import reconcile_once

STALE_AFTER = 60.0  # settings.requeue_stale_after_seconds in these tests
LONG_AGO = timedelta(hours=2)  # well past STALE_AFTER
REQUEUED_MESSAGE = (
    "The worker stopped responding; the job was requeued and resumes from its last checkpoint"
)
NOTHING: dict[str, list[str]] = {
    "requeued": [],
    "failed": [],
    "paused": [],
    "resent": [],
    "unsent": [],
}

Sent = list[tuple[str, str]]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, requeue_stale_after_seconds=STALE_AFTER)


@pytest.fixture
def sent() -> Sent:
    """What the reconciler sent to the broker, in order: (job id, queue)."""
    return []


@pytest.fixture
def enqueue(sent: Sent) -> Callable[[str, str], object]:
    def record(job_id: str, queue: str) -> None:
        sent.append((job_id, queue))

    return record


# --- helpers ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _claim(url: str, job_id: str, owner: str, lease_seconds: float = 60.0) -> int:
    with session_scope(url) as session:
        token = claim_job(session, job_id, owner, lease_seconds)
    assert token is not None, f"{owner} could not claim {job_id}"
    return token


def _age(url: str, job_id: str, *, created: timedelta, enqueued: timedelta | None = None) -> None:
    """Move the job's creation (and, if given, its last send) into the past."""
    with session_scope(url) as session:
        job = get_job(session, job_id)
        job.created_at = _now() - created
        if enqueued is not None:
            job.enqueued_at = _now() - enqueued


def _dead_worker_job(url: str, *, attempts: int = 1, **overrides: object) -> str:
    """A running job whose lease has expired after ``attempts`` claims (each worker died)."""
    job_id = _queued_job(url, **overrides)
    _age(url, job_id, created=LONG_AGO)
    for attempt in range(1, attempts + 1):
        assert _claim(url, job_id, f"worker-{attempt}") == attempt
        _expire_lease(url, job_id)
    return job_id


def _finished_job(url: str, status: JobStatus) -> str:
    """A job that ran (or was cancelled) and finished, created and last sent long ago."""
    job_id = _queued_job(url)
    _age(url, job_id, created=LONG_AGO, enqueued=LONG_AGO)
    if status == JobStatus.CANCELLED:
        with session_scope(url) as session:
            request_cancel(session, get_job(session, job_id))
    else:
        _claim(url, job_id, "worker-a")
        with session_scope(url) as session:
            set_status(session, get_job(session, job_id), status)
    return job_id


def _resent(url: str, job_id: str) -> None:
    """Make the job's last send older than the stale threshold again."""
    with session_scope(url) as session:
        get_job(session, job_id).enqueued_at = _now() - timedelta(seconds=STALE_AFTER + 1)


# --- dead workers: expired leases -----------------------------------------------------------


@pytest.mark.parametrize("created_long_ago", [True, False], ids=["old-job", "new-job"])
def test_an_expired_lease_with_attempts_left_is_requeued_and_sent_once(
    settings: Settings,
    db_url: str,
    enqueue: Callable[[str, str], object],
    sent: Sent,
    created_long_ago: bool,
) -> None:
    job_id = _queued_job(db_url, queue="gpu1", max_attempts=3)
    if created_long_ago:  # then it is also an old queued job once requeued: still one message
        _age(db_url, job_id, created=LONG_AGO)
    assert _claim(db_url, job_id, "worker-a") == 1
    _expire_lease(db_url, job_id)
    events_before = len(_events(db_url, job_id))

    before = _now()
    assert reconcile_once(settings, enqueue) == {
        "requeued": [job_id],
        "failed": [],
        "paused": [],
        "resent": [],
        "unsent": [],
    }
    after = _now()

    assert sent == [(job_id, "gpu1")]
    job = _job(db_url, job_id)
    assert job.status == JobStatus.QUEUED.value
    assert job.error is None
    assert job.attempts == 1  # only a claim counts an attempt
    assert job.lease_owner is None
    assert job.lease_expires_at is None
    assert job.lease_token == 1  # the next claim fences the dead worker out
    assert job.finished_at is None
    assert job.cancel_requested is False
    assert before <= utc(job.enqueued_at) <= after
    new_events = _events(db_url, job_id)[events_before:]
    assert [(e.message, e.level, e.data) for e in new_events] == [
        ("Job queued", "info", {"status": "queued"}),
        (REQUEUED_MESSAGE, "info", None),
    ]

    # The message was just sent: an immediate second round leaves the job alone.
    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == [(job_id, "gpu1")]
    assert len(_events(db_url, job_id)) == events_before + 2

    # And a new worker can take it, as the next attempt under a new fencing token.
    assert _claim(db_url, job_id, "worker-b") == 2
    assert _job(db_url, job_id).attempts == 2


def test_an_expired_lease_on_the_last_attempt_fails_the_job_as_worker_lost(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _dead_worker_job(db_url, attempts=2, max_attempts=2)
    events_before = len(_events(db_url, job_id))

    before = _now()
    assert reconcile_once(settings, enqueue) == {
        "requeued": [],
        "failed": [job_id],
        "paused": [],
        "resent": [],
        "unsent": [],
    }
    after = _now()

    assert sent == []
    job = _job(db_url, job_id)
    assert job.status == JobStatus.FAILED.value
    message = "the job's worker stopped responding 2 times; giving up after 2 attempts"
    assert job.error == {"code": "worker_lost", "message": message, "param": None}
    assert "2 times" in job.error["message"]
    assert job.attempts == 2
    assert job.lease_owner is None
    assert job.lease_expires_at is None
    assert before <= utc(job.finished_at) <= after
    assert job.enqueued_at is None  # never re-sent
    new_events = _events(db_url, job_id)[events_before:]
    assert [(e.message, e.level, e.data) for e in new_events] == [
        (f"The job failed: {message}", "error", {"status": "failed"}),
    ]

    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == []
    assert _job(db_url, job_id).status == JobStatus.FAILED.value
    with session_scope(db_url) as session:
        assert claim_job(session, job_id, "worker-z", 60.0) is None


def test_an_expired_lease_on_a_job_being_cancelled_cancels_it(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _queued_job(db_url, max_attempts=3)
    _age(db_url, job_id, created=LONG_AGO)
    assert _claim(db_url, job_id, "worker-a") == 1
    with session_scope(db_url) as session:
        request_cancel(session, get_job(session, job_id))
    _expire_lease(db_url, job_id)  # the worker died before it saw the flag
    events_before = len(_events(db_url, job_id))

    assert reconcile_once(settings, enqueue) == {
        "requeued": [],
        "failed": [job_id],
        "paused": [],
        "resent": [],
        "unsent": [],
    }

    assert sent == []
    job = _job(db_url, job_id)
    assert job.status == JobStatus.CANCELLED.value
    assert job.error is None
    assert job.cancel_requested is True
    assert job.attempts == 1
    assert job.lease_owner is None
    assert job.lease_expires_at is None
    assert job.finished_at is not None
    assert job.enqueued_at is None
    new_events = _events(db_url, job_id)[events_before:]
    assert [(e.message, e.level, e.data) for e in new_events] == [
        ("The job was cancelled", "info", {"status": "cancelled"}),
    ]

    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == []


def test_an_expired_lease_on_a_job_being_paused_pauses_it_without_a_message(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _queued_job(db_url, max_attempts=3)
    _age(db_url, job_id, created=LONG_AGO)
    assert _claim(db_url, job_id, "worker-a") == 1
    with session_scope(db_url) as session:
        request_pause(session, get_job(session, job_id))
    _expire_lease(db_url, job_id)  # the worker died before it saw the flag
    events_before = len(_events(db_url, job_id))

    assert reconcile_once(settings, enqueue) == {**NOTHING, "paused": [job_id]}

    assert sent == []
    job = _job(db_url, job_id)
    assert (job.status, job.pause_requested, job.attempts) == ("paused", False, 1)
    assert (job.lease_owner, job.lease_expires_at, job.finished_at) == (None, None, None)
    new_events = _events(db_url, job_id)[events_before:]
    assert [(e.message, e.data) for e in new_events] == [
        ("The job was paused", {"status": "paused"}),
        (PAUSED_LOST_MESSAGE, None),
    ]


def test_a_paused_job_is_neither_lost_nor_sent_again(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    """Paused long ago (queued, or by its worker): no lease, no message, nothing to repair."""
    paused_queued = _queued_job(db_url)
    paused_running = _queued_job(db_url)
    for job_id in (paused_queued, paused_running):
        _age(db_url, job_id, created=LONG_AGO, enqueued=LONG_AGO)
    assert _claim(db_url, paused_running, "worker-a", lease_seconds=0.01) == 1
    with session_scope(db_url) as session:
        request_pause(session, get_job(session, paused_queued))
        request_pause(session, get_job(session, paused_running))
        pause_stopped(session, get_job(session, paused_running))

    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == []
    assert {_job(db_url, j).status for j in (paused_queued, paused_running)} == {"paused"}


def test_a_job_being_paused_on_its_last_attempt_fails_as_worker_lost(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _dead_worker_job(db_url, attempts=2, max_attempts=2)
    with session_scope(db_url) as session:
        get_job(session, job_id).pause_requested = True
    assert reconcile_once(settings, enqueue) == {**NOTHING, "failed": [job_id]}
    assert _job(db_url, job_id).status == "failed"


def test_a_running_job_with_a_valid_lease_is_left_alone(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _queued_job(db_url)
    _age(db_url, job_id, created=LONG_AGO)
    assert _claim(db_url, job_id, "worker-a", lease_seconds=60.0) == 1
    job_before = _job(db_url, job_id)
    events_before = _events(db_url, job_id)

    assert reconcile_once(settings, enqueue) == NOTHING

    assert sent == []
    job = _job(db_url, job_id)
    assert job.status == JobStatus.RUNNING.value
    assert (job.lease_owner, job.lease_token, job.attempts) == ("worker-a", 1, 1)
    assert aware(job.lease_expires_at) == aware(job_before.lease_expires_at)
    assert utc(job.lease_expires_at) > _now()
    assert job.enqueued_at is None
    assert job.error is None
    assert [e.id for e in _events(db_url, job_id)] == [e.id for e in events_before]


# --- lost messages: stale queued jobs ------------------------------------------------------


def test_stale_queued_jobs_are_resent_once_and_nothing_else_is_touched(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    never_sent = _queued_job(db_url)  # enqueued_at None: its created_at counts
    _age(db_url, never_sent, created=LONG_AGO)
    sent_long_ago = _queued_job(db_url, queue="gpu2")
    _age(db_url, sent_long_ago, created=LONG_AGO * 2, enqueued=LONG_AGO)
    fresh = _queued_job(db_url)
    # created long ago but sent recently: the last send, not the creation, counts
    sent_recently = _queued_job(db_url)
    _age(db_url, sent_recently, created=LONG_AGO, enqueued=timedelta(seconds=STALE_AFTER / 2))
    finished = {
        status: _finished_job(db_url, status)
        for status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    }
    untouched = [fresh, sent_recently, *finished.values()]
    rows_before = {job_id: _job(db_url, job_id) for job_id in untouched}
    events_before = {
        job_id: [e.id for e in _events(db_url, job_id)]
        for job_id in [never_sent, sent_long_ago, *untouched]
    }

    before = _now()
    result = reconcile_once(settings, enqueue)
    after = _now()

    assert result["requeued"] == []
    assert result["failed"] == []
    assert sorted(result["resent"]) == sorted([never_sent, sent_long_ago])
    assert sorted(sent) == sorted([(never_sent, "cpu"), (sent_long_ago, "gpu2")])
    for job_id in (never_sent, sent_long_ago):
        job = _job(db_url, job_id)
        assert job.status == JobStatus.QUEUED.value
        assert before <= utc(job.enqueued_at) <= after
        assert (job.attempts, job.lease_owner, job.error) == (0, None, None)
    for job_id, row in rows_before.items():
        job = _job(db_url, job_id)
        assert job.status == row.status
        assert aware(job.enqueued_at) == aware(row.enqueued_at)
        assert aware(job.finished_at) == aware(row.finished_at)
        assert (job.attempts, job.lease_owner, job.error) == (row.attempts, None, row.error)
    assert _job(db_url, fresh).enqueued_at is None
    for status, job_id in finished.items():
        assert _job(db_url, job_id).status == status.value
    # A re-send is silent: no job gains an event.
    for job_id, ids in events_before.items():
        assert [e.id for e in _events(db_url, job_id)] == ids

    # Their enqueued_at moved on: an immediate second round sends nothing again.
    assert reconcile_once(settings, enqueue) == NOTHING
    assert len(sent) == 2


def test_a_resent_job_is_sent_again_each_time_its_message_goes_stale(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    job_id = _queued_job(db_url)
    _age(db_url, job_id, created=LONG_AGO)

    assert reconcile_once(settings, enqueue) == {
        "requeued": [],
        "failed": [],
        "paused": [],
        "resent": [job_id],
        "unsent": [],
    }
    assert sent == [(job_id, "cpu")]
    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == [(job_id, "cpu")]

    _resent(db_url, job_id)  # still not taken by any worker after the threshold
    before = _now()
    assert reconcile_once(settings, enqueue) == {
        "requeued": [],
        "failed": [],
        "paused": [],
        "resent": [job_id],
        "unsent": [],
    }
    assert sent == [(job_id, "cpu"), (job_id, "cpu")]
    assert utc(_job(db_url, job_id).enqueued_at) >= before
    assert reconcile_once(settings, enqueue) == NOTHING
    assert sent == [(job_id, "cpu"), (job_id, "cpu")]
    assert _job(db_url, job_id).status == JobStatus.QUEUED.value


# --- the broker is down --------------------------------------------------------------------


def test_a_failing_send_keeps_the_round_and_sends_again_next_round(
    settings: Settings, db_url: str, enqueue: Callable[[str, str], object], sent: Sent
) -> None:
    dead = _dead_worker_job(db_url, attempts=1, max_attempts=3)
    lost = _queued_job(db_url)
    _age(db_url, lost, created=LONG_AGO)
    events_before = len(_events(db_url, dead))
    attempted: Sent = []

    def broker_down(job_id: str, queue: str) -> None:
        attempted.append((job_id, queue))
        raise ConnectionError("broker unreachable")

    result = reconcile_once(settings, broker_down)
    # every send is tried, each failure on its own; the round reports what did not go out
    assert attempted == [(dead, "cpu"), (lost, "cpu")]
    assert result == {
        "requeued": [dead],
        "failed": [],
        "paused": [],
        "resent": [lost],
        "unsent": [dead, lost],
    }
    # the database changes were committed: the requeue is not lost...
    job = _job(db_url, dead)
    assert job.status == JobStatus.QUEUED.value
    assert (job.attempts, job.lease_owner, job.lease_expires_at) == (1, None, None)
    assert [e.message for e in _events(db_url, dead)[events_before:]] == [
        "Job queued",
        REQUEUED_MESSAGE,
    ]
    # ...and neither job counts as sent, so the next round (broker back) sends both, once each
    for job_id in (dead, lost):
        assert _job(db_url, job_id).enqueued_at is None
    result = reconcile_once(settings, enqueue)
    assert (result["requeued"], result["failed"], result["unsent"]) == ([], [], [])
    assert sorted(result["resent"]) == sorted([dead, lost])
    assert sorted(sent) == sorted([(dead, "cpu"), (lost, "cpu")])
    assert reconcile_once(settings, enqueue) == NOTHING
    assert len(sent) == 2
    assert _claim(db_url, dead, "worker-b") == 2
