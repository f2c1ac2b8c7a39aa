"""Small helpers shared by the worker tests: jobs in a given state, and what the registry holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from registry.db import session_scope
from registry.jobs import get_job, list_events
from registry.models import Job, JobEvent
from tests.db_fixtures import add_file, add_job
from tests.registry.helpers import new_tenant


def queued_job(url: str, **overrides: object) -> str:
    tenant = new_tenant()
    with session_scope(url) as session:
        return add_job(session, tenant, add_file(session, tenant).id, **overrides).id


def expire_lease(url: str, job_id: str) -> None:
    """The worker holding the job died: its lease ran out a second ago."""
    with session_scope(url) as session:
        get_job(session, job_id).lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)


def job_row(url: str, job_id: str) -> Job:
    """The job's row as it is now (a detached copy; sessions don't expire on commit)."""
    with session_scope(url) as session:
        return get_job(session, job_id)


def events_of(url: str, job_id: str) -> list[JobEvent]:
    """The job's events, oldest first."""
    with session_scope(url) as session:
        events, has_more = list_events(session, job_id, after=None, limit=1000, newest_first=False)
    assert not has_more
    return events
