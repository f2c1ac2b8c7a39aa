"""A claimed job's registry access: reads never commit, writes commit, both are fenced by the
lease token and retried while the database is unreachable."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.errors import LeaseLost
from registry.jobs import get_job, request_cancel
from registry.models import Job
from registry.settings import Settings
from tests.worker.helpers import expire_lease, job_row, queued_job
from worker.leased_job import FIRST_RETRY_DELAY, LeasedJob

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/nothing"  # the discard port: refused


def test_a_claim_takes_the_lease_once(worker_settings: Settings) -> None:
    job_id = queued_job(worker_settings.resolved_database_url)
    first = LeasedJob.claim(worker_settings, job_id, "worker-a")
    assert first is not None and (first.job_id, first.token) == (job_id, 1)
    assert LeasedJob.claim(worker_settings, job_id, "worker-b") is None


def test_a_read_is_never_committed(leased: LeasedJob) -> None:
    def look_and_touch(_session: Session, job: Job) -> str:
        job.suffix = "changed by a read"
        return job.model

    assert leased.read(look_and_touch) == "tiny-llama"
    assert job_row(leased.url, leased.job_id).suffix is None


def test_a_write_is_committed(leased: LeasedJob) -> None:
    def rename(_session: Session, job: Job, suffix: str) -> None:
        job.suffix = suffix

    leased.write(rename, "mine")
    assert job_row(leased.url, leased.job_id).suffix == "mine"


def test_reads_writes_and_renewals_are_fenced(leased: LeasedJob, worker_settings: Settings) -> None:
    expire_lease(leased.url, leased.job_id)
    assert LeasedJob.claim(worker_settings, leased.job_id, "worker-next") is not None
    with pytest.raises(LeaseLost):
        leased.read(lambda _session, job: job.id)
    with pytest.raises(LeaseLost):
        leased.write(lambda _session, job: setattr(job, "suffix", "stale"))
    with pytest.raises(LeaseLost):
        leased.renew()
    assert job_row(leased.url, leased.job_id).suffix is None


def test_a_renewal_says_whether_cancel_was_requested(leased: LeasedJob) -> None:
    first = leased.renew()
    assert first.cancel_requested is False
    with session_scope(leased.url) as session:
        request_cancel(session, get_job(session, leased.job_id))
    second = leased.renew()
    assert second.cancel_requested is True
    assert second.expires_at > first.expires_at


def test_an_unreachable_database_is_retried_then_given_up() -> None:
    # FIRST_RETRY_DELAY, then the next delay would pass the deadline: two tries, one wait.
    settings = Settings(database_url=UNREACHABLE, db_retry_seconds=FIRST_RETRY_DELAY * 2.5)
    leased = LeasedJob(settings, "ftjob-nowhere", 1)
    for access in (lambda: leased.read(lambda _s, job: job.id), leased.renew):
        started = time.monotonic()
        with pytest.raises(OperationalError):
            access()
        assert FIRST_RETRY_DELAY <= time.monotonic() - started < settings.db_retry_seconds + 1
