"""Job events: newest-first pages with ``after``/``limit``, and an ascending tail by ``seq``."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.errors import NotFound
from registry.jobs import add_event, events_since, list_events
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant

EXTRA_EVENTS = 9  # plus the "Created fine-tuning job" event: ten in all


def _job_with_events(session: Session) -> tuple[str, list[str]]:
    """A job and its event ids in the order they were written."""
    tenant = new_tenant()
    job = add_job(session, tenant, add_file(session, tenant).id)
    (created,), _ = list_events(session, job.id, after=None, limit=10)
    ids = [created.id]
    for index in range(EXTRA_EVENTS):
        event = add_event(
            session, job.id, f"Step {index}", type="metrics", data={"step": index, "loss": 1.0}
        )
        ids.append(event.id)
    return job.id, ids


def test_created_job_has_one_event(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        events, has_more = list_events(session, job.id, after=None, limit=20)
        assert [event.message for event in events] == [f"Created fine-tuning job: {job.id}"]
        assert has_more is False


def test_list_events_pages_newest_first(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id, ids = _job_with_events(session)
        other_job_id, _ = _job_with_events(session)  # interleaved rows of another job
    newest_first = ids[::-1]
    with session_scope(db_url) as session:
        pages: list[list[str]] = []
        more: list[bool] = []
        after: str | None = None
        while True:
            events, has_more = list_events(session, job_id, after=after, limit=4)
            pages.append([event.id for event in events])
            more.append(has_more)
            if not has_more:
                break
            after = events[-1].id
        assert pages == [newest_first[0:4], newest_first[4:8], newest_first[8:10]]
        assert more == [True, True, False]
        everything, has_more = list_events(session, job_id, after=None, limit=10)
        assert [event.id for event in everything] == newest_first
        assert has_more is False
        seqs = [event.seq for event in everything]
        assert seqs == sorted(seqs, reverse=True)
        assert all(event.job_id == job_id for event in everything)
        assert other_job_id != job_id


def test_list_events_oldest_first(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id, ids = _job_with_events(session)
    with session_scope(db_url) as session:
        first, has_more = list_events(session, job_id, after=None, limit=3, newest_first=False)
        assert [event.id for event in first] == ids[:3]
        assert has_more is True
        rest, has_more = list_events(
            session, job_id, after=first[-1].id, limit=100, newest_first=False
        )
        assert [event.id for event in rest] == ids[3:]
        assert has_more is False


def test_list_events_rejects_an_unknown_or_foreign_anchor(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id, _ = _job_with_events(session)
        _, other_ids = _job_with_events(session)
    with session_scope(db_url) as session:
        with pytest.raises(NotFound):
            list_events(session, job_id, after="ftevent-doesnotexist", limit=5)
        with pytest.raises(NotFound):
            list_events(session, job_id, after=other_ids[0], limit=5)


def test_events_since_is_ascending_after_a_seq(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id, ids = _job_with_events(session)
        _job_with_events(session)
    with session_scope(db_url) as session:
        everything = events_since(session, job_id, 0)
        assert [event.id for event in everything] == ids
        seqs = [event.seq for event in everything]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        tail = events_since(session, job_id, seqs[6])
        assert [event.id for event in tail] == ids[7:]
        assert events_since(session, job_id, seqs[-1]) == []
        limited = events_since(session, job_id, seqs[1], limit=3)
        assert [event.id for event in limited] == ids[2:5]
        assert events_since(session, "ftjob-doesnotexist", 0) == []
        metrics_event = everything[1]
        assert (metrics_event.type, metrics_event.data) == ("metrics", {"step": 0, "loss": 1.0})


def test_events_written_later_appear_after_the_last_seen_seq(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id, _ = _job_with_events(session)
    with session_scope(db_url) as session:
        last_seen = events_since(session, job_id, 0)[-1].seq
    with session_scope(db_url) as session:
        add_event(session, job_id, "Later", level="warning")
    with session_scope(db_url) as session:
        (later,) = events_since(session, job_id, last_seen)
        assert (later.message, later.level) == ("Later", "warning")
