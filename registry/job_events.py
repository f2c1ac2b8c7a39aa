"""A job's event log: adding an event, and reading the log a page at a time or since a
sequence number (what the API's event lists and streams show)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import NotFound
from registry.ids import new_id
from registry.models import JobEvent


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Append an event to the job's log (flushed: it has its sequence number)."""
    event = JobEvent(
        id=new_id("ftevent"),
        job_id=job_id,
        message=message,
        level=level,
        type=type,
        data=data,
        created_at=datetime.now(UTC),
    )
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session, job_id: str, *, after: str | None, limit: int, newest_first: bool = True
) -> tuple[list[JobEvent], bool]:
    """A page of the job's events and whether more follow; ``after`` is the id of the last
    event of the previous page."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        anchor = session.scalar(
            select(JobEvent).where(JobEvent.id == after, JobEvent.job_id == job_id)
        )
        if anchor is None:
            raise NotFound("event", after)
        query = query.where(
            JobEvent.seq < anchor.seq if newest_first else JobEvent.seq > anchor.seq
        )
    order = JobEvent.seq.desc() if newest_first else JobEvent.seq.asc()
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_since(session: Session, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
    """The job's events after sequence number ``seq``, oldest first (at most ``limit``)."""
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq.asc())
            .limit(limit)
        )
    )
