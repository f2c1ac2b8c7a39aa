"""Server-sent event streams of a job's events (``GET …/events?stream=true``).

A stream is a coroutine on the event loop: it holds no thread while it waits. Each poll reads
the registry in one short transaction on a thread of its own small pool (``STREAM_READ_THREADS``,
so streams never crowd out route bodies), then sleeps with ``anyio.sleep``. A sync generator
used to sleep inside the thread that iterated it: forty idle streams took all of anyio's
default threads, and uploads, downloads and generation hung while ``/health`` still said 200.

An idle stream sends a comment every ``STEER_STREAM_KEEPALIVE_SECONDS`` (proxies and clients
keep the connection), stops within a poll once its client has gone, and with ``STEER_AUTH=on``
checks its API key every ``STEER_STREAM_AUTH_RECHECK_SECONDS``, ending with an ``error`` event
once the key is revoked. A tenant holds at most ``STEER_MAX_STREAMS_PER_TENANT`` streams in one
API process; the next is a 429.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from starlette.responses import StreamingResponse

from api.deps import key_still_valid
from api.errors import ApiError
from api.serializers import event_object
from registry import jobs as repo
from registry.db import session_scope
from registry.errors import NotFound
from registry.models import JobEvent
from registry.settings import Settings
from registry.states import TERMINAL

POLL_SECONDS = 0.5
# Stream polls running at once per process: each is a few milliseconds of database work, and a
# pool of their own keeps a crowd of streams from queueing ahead of route bodies.
STREAM_READ_THREADS = 4
_stream_reads: RunVar[CapacityLimiter] = RunVar("steer_stream_read_limiter")
P = ParamSpec("P")
T = TypeVar("T")


async def _read(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        limiter = _stream_reads.get()
    except LookupError:  # one per event loop, as in api.deps
        limiter = CapacityLimiter(STREAM_READ_THREADS)
        _stream_reads.set(limiter)
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs), limiter=limiter)


class StreamSlots:
    """Open streams per tenant in this process."""

    def __init__(self, max_per_tenant: int) -> None:
        self.max_per_tenant = max_per_tenant
        self.open: Counter[str] = Counter()

    def take(self, tenant: str) -> Callable[[], None]:
        """A slot for ``tenant`` (429 when it holds them all); returns its release."""
        if self.open[tenant] >= self.max_per_tenant:
            raise ApiError(
                429,
                f"{self.open[tenant]} event streams are open for this tenant, the most allowed "
                f"(STEER_MAX_STREAMS_PER_TENANT={self.max_per_tenant}); close one, or poll "
                "GET .../events without stream=true",
                code="too_many_streams",
            )
        self.open[tenant] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[tenant] -= 1

        return release


class EventStreamResponse(StreamingResponse):
    """Releases its slot however the stream ends: finished, client gone, or failed."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def _start_seq(settings: Settings, tenant: str, job_id: str, after: str | None) -> int:
    """The sequence number the stream starts after: 0, or that of event ``after`` (404 for
    another tenant's job or an unknown event)."""
    with session_scope(settings.resolved_database_url) as session:
        repo.get_job(session, job_id, tenant)
        if after is None:
            return 0
        seq = session.scalar(
            select(JobEvent.seq).where(JobEvent.id == after, JobEvent.job_id == job_id)
        )
        if seq is None:
            raise NotFound("event", after)
        return seq


def _poll(settings: Settings, job_id: str, seq: int) -> tuple[bool, list[tuple[int, str, str]]]:
    with session_scope(settings.resolved_database_url) as session:
        # Status first: the final status commits together with the last events, so once it
        # reads terminal, the events read next include them. (Read the other way round, a
        # commit landing between the two reads ended the stream without its last events.)
        finished = repo.get_job(session, job_id).status in TERMINAL
        rows = repo.events_since(session, job_id, seq)
        return finished, [(r.seq, r.id, event_object(r).model_dump_json()) for r in rows]


def _error_event(code: str, message: str, type: str = "invalid_request_error") -> str:
    error = {"message": message, "type": type, "param": None, "code": code}
    return f"event: error\ndata: {json.dumps({'error': error})}\n\n"


async def open_event_stream(
    request: Request, settings: Settings, tenant: str, job_id: str, after: str | None
) -> EventStreamResponse:
    """The stream of ``job_id``'s events after ``after`` (or the ``Last-Event-ID`` an
    EventSource sends when it reconnects), oldest first, until the job has finished."""
    after = after or request.headers.get("last-event-id")
    seq = await _read(_start_seq, settings, tenant, job_id, after)
    slots: StreamSlots = request.app.state.stream_slots
    release = slots.take(tenant)
    return EventStreamResponse(_events(request, settings, tenant, job_id, seq), release)


async def _events(
    request: Request, settings: Settings, tenant: str, job_id: str, seq: int
) -> AsyncIterator[str]:
    authorization = request.headers.get("authorization")
    now = anyio.current_time()
    keepalive_at = now + settings.stream_keepalive_seconds
    key_check_at = now + settings.stream_auth_recheck_seconds
    while True:
        try:
            if settings.auth == "on" and now >= key_check_at:
                if not await key_still_valid(settings, authorization, tenant):
                    yield _error_event("invalid_api_key", "The API key of this stream was revoked")
                    return
                key_check_at = now + settings.stream_auth_recheck_seconds
            finished, payloads = await _read(_poll, settings, job_id, seq)
        except DBAPIError:
            message = "The registry database is unavailable; reconnect with after=<last event id>"
            yield _error_event("database_unavailable", message, type="server_error")
            return
        for _, event_id, payload in payloads:
            yield f"id: {event_id}\ndata: {payload}\n\n"
        if finished and not payloads:
            yield f"event: done\ndata: {json.dumps({'job_id': job_id})}\n\n"
            return
        now = anyio.current_time()
        if payloads:
            seq = payloads[-1][0]
            keepalive_at = now + settings.stream_keepalive_seconds
            continue  # more may be waiting: a poll reads at most a page
        if await request.is_disconnected():  # the server may tell only a read, not a write
            return
        if now >= keepalive_at:
            yield ": keep-alive\n\n"
            keepalive_at = now + settings.stream_keepalive_seconds
        await anyio.sleep(POLL_SECONDS)
        now = anyio.current_time()
