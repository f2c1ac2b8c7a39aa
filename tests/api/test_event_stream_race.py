"""The SSE stream must not end before the events committed with a job's final status."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.routes import jobs as jobs_route
from registry import jobs as repo
from registry.db import session_scope
from registry.states import JobStatus
from tests.api.helpers import JOBS, Api


def test_stream_keeps_events_committed_with_the_final_status(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL (read committed) lets another transaction commit between the stream's two
    # reads; SQLite's write lock serialises them, so the race needs PostgreSQL to show.
    api = make_api("postgres")
    job = api.job_ok()
    url = api.settings.resolved_database_url
    real_events_since = repo.events_since
    landed: list[bool] = []

    def worker_commits_meanwhile(session, job_id, seq, limit=500):
        rows = real_events_since(session, job_id, seq, limit)
        if not rows and not landed:  # the worker's last transaction lands right after this read
            landed.append(True)
            with session_scope(url) as other:
                row = repo.get_job(other, job_id)
                repo.add_event(other, job_id, "last words")
                repo.set_status(other, row, JobStatus.CANCELLED)
        return rows

    monkeypatch.setattr(jobs_route.repo, "events_since", worker_commits_meanwhile)
    response = api.client.get(f"{JOBS}/{job['id']}/events", params={"stream": "true"})
    assert landed, "the race was not provoked"
    assert "last words" in response.text
    assert response.text.rstrip().endswith(f'data: {{"job_id": "{job["id"]}"}}')
