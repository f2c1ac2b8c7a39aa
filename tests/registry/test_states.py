"""The job state machine: allowed transitions work through ``set_status``, all others fail."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.jobs import claim_job, get_job, list_events, set_status
from registry.models import Job, JobEvent
from registry.states import (
    ALLOWED,
    TERMINAL,
    UNLEASED,
    InvalidTransition,
    JobStatus,
    check_transition,
)
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant, utc

PAIRS = list(itertools.product(JobStatus, JobStatus))


def _pair_id(pair: tuple[JobStatus, JobStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_allowed_covers_every_status_and_terminal_states_are_final() -> None:
    assert set(ALLOWED) == set(JobStatus)
    for status in TERMINAL:
        assert ALLOWED[status] == frozenset()
    for status in set(JobStatus) - TERMINAL:
        assert status not in ALLOWED[status], f"{status} may not follow itself"


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_check_transition_agrees_with_allowed(pair: tuple[JobStatus, JobStatus]) -> None:
    current, new = pair
    if new in ALLOWED[current]:
        check_transition(current.value, new.value)
    else:
        with pytest.raises(InvalidTransition) as caught:
            check_transition(current.value, new.value)
        assert (caught.value.current, caught.value.new) == (current.value, new.value)
        assert repr(current.value) in str(caught.value)


def _job_in(session: Session, status: JobStatus) -> Job:
    """A fresh job brought to ``status`` the way the service gets there."""
    tenant = new_tenant()
    job = add_job(session, tenant, add_file(session, tenant).id)
    if status == JobStatus.VALIDATING_FILES:
        # create_job always starts at queued; nothing in registry/ enters validating_files.
        job.status = JobStatus.VALIDATING_FILES.value
    elif status in (JobStatus.RUNNING, JobStatus.SUCCEEDED):
        assert claim_job(session, job.id, "worker-a", lease_seconds=60.0) == 1
        session.refresh(job)
        if status == JobStatus.SUCCEEDED:
            set_status(session, job, JobStatus.SUCCEEDED)
    elif status == JobStatus.FAILED:
        set_status(session, job, JobStatus.FAILED, error={"message": "bad", "code": "x"})
    elif status == JobStatus.CANCELLED:
        set_status(session, job, JobStatus.CANCELLED)
    elif status == JobStatus.PAUSED:
        set_status(session, job, JobStatus.PAUSED)
    session.flush()
    assert job.status == status.value
    return job


def _event_count(session: Session, job_id: str) -> int:
    return session.scalar(select(func.count()).where(JobEvent.job_id == job_id)) or 0


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_set_status_follows_the_state_machine(
    module_db_url: str, pair: tuple[JobStatus, JobStatus]
) -> None:
    current, new = pair
    with session_scope(module_db_url) as session:
        job = _job_in(session, current)
        job_id, had_lease = job.id, job.lease_owner is not None
    before = datetime.now(UTC)

    with session_scope(module_db_url) as session:
        job = get_job(session, job_id)
        events_before = _event_count(session, job_id)
        if new not in ALLOWED[current]:
            with pytest.raises(InvalidTransition):
                set_status(session, job, new)
            session.rollback()
            job = get_job(session, job_id)
            assert job.status == current.value
            assert _event_count(session, job_id) == events_before
            return
        set_status(session, job, new)

    with session_scope(module_db_url) as session:
        job = get_job(session, job_id)
        assert job.status == new.value
        assert _event_count(session, job_id) == events_before + 1
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert latest.data == {"status": new.value}
        assert latest.level == "info"
        if new in UNLEASED:  # finished, or waiting for a worker: none holds it
            assert job.lease_owner is None
            assert job.lease_expires_at is None
            assert job.estimated_finish is None
        if new in TERMINAL:
            assert utc(job.finished_at) >= before
        else:
            assert job.finished_at is None
        if new == JobStatus.RUNNING:
            assert job.started_at is not None
        if current == JobStatus.RUNNING and new in TERMINAL:
            assert had_lease, "the running job should have held a lease before"


def test_failure_records_the_error(db_url: str) -> None:
    tenant = new_tenant()
    error = {"message": "CUDA out of memory", "type": "platform_error", "code": "oom"}
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        assert claim_job(session, job.id, "worker-a", lease_seconds=60.0) == 1
        session.refresh(job)
        set_status(session, job, JobStatus.FAILED, error=error)
        job_id = job.id
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.status == "failed"
        assert job.error == error
        assert job.finished_at is not None
        (latest,), _ = list_events(session, job_id, after=None, limit=1)
        assert latest.level == "error"
        assert "CUDA out of memory" in latest.message


def test_failure_with_an_error_without_message(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        set_status(session, job, JobStatus.FAILED, error={"code": "oom"})
        assert job.status == "failed"
