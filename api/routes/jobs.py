"""/v1/fine_tuning/jobs"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from api.broker import enqueue_job
from api.deps import get_app_settings, get_tenant, threaded
from api.schemas import JobCreate, JobObject, ListObject
from api.serializers import checkpoint_object, event_object, job_object
from api.services import idempotency
from api.services import jobs as service
from registry import jobs as repo
from registry import progress
from registry.db import session_scope
from registry.settings import Settings
from registry.states import TERMINAL

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=JobObject)
@threaded
def create(
    body: JobCreate,
    idempotency_key: str | None = Header(default=None),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    key = idempotency.check_key(idempotency_key)
    request = idempotency.request_hash("jobs", body.model_dump_json())
    with session_scope(settings.resolved_database_url) as session:
        if key is not None and (replayed := idempotency.replay(session, tenant, key, request)):
            return replayed
        job = service.create_job(session, settings, tenant, body)
        answer = job_object(job)
        if key is not None:
            idempotency.remember(session, tenant, key, request, answer.model_dump(mode="json"))
    enqueue_job(settings, job.id, job.queue)  # committed: the row exists before any worker runs
    return answer


@router.get("", response_model=ListObject)
@threaded
def list_jobs(
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    with session_scope(settings.resolved_database_url) as session:
        rows, more = repo.list_jobs(session, tenant, after=after, limit=limit)
        return ListObject(data=[job_object(r) for r in rows], has_more=more)


@router.get("/{job_id}", response_model=JobObject)
@threaded
def retrieve(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> JobObject:
    with session_scope(settings.resolved_database_url) as session:
        return job_object(repo.get_job(session, job_id, tenant))


@router.post("/{job_id}/cancel", response_model=JobObject)
@threaded
def cancel(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> JobObject:
    with session_scope(settings.resolved_database_url) as session:
        job = repo.request_cancel(session, repo.get_job(session, job_id, tenant))
        return job_object(job)


@router.get("/{job_id}/events")
@threaded
def events(
    job_id: str,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=1000),
    stream: bool = False,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    # No request-scoped session here: a stream must not hold a transaction (on SQLite, the
    # write lock) while it waits for new events.
    with session_scope(settings.resolved_database_url) as session:
        repo.get_job(session, job_id, tenant)
        if not stream:
            rows, more = repo.list_events(session, job_id, after=after, limit=limit)
            return ListObject(data=[event_object(r) for r in rows], has_more=more)
    return StreamingResponse(
        _event_stream(settings, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


def _event_stream(settings: Settings, job_id: str, poll: float = 0.5) -> Iterator[str]:
    """Server-sent events, oldest first, until the job has finished and every event is sent.

    Each poll reads in a short transaction and yields only after it is closed.
    """
    seq = 0
    while True:
        with session_scope(settings.resolved_database_url) as session:
            # Status first: the final status commits together with the last events, so once it
            # reads terminal, the events read next include them. (Read the other way round, a
            # commit landing between the two reads ended the stream without its last events.)
            finished = repo.get_job(session, job_id).status in TERMINAL
            rows = repo.events_since(session, job_id, seq)
            payloads = [(row.seq, row.id, event_object(row).model_dump_json()) for row in rows]
        for _, event_id, payload in payloads:
            yield f"id: {event_id}\ndata: {payload}\n\n"
        if payloads:
            seq = payloads[-1][0]
        if finished and not payloads:
            yield f"event: done\ndata: {json.dumps({'job_id': job_id})}\n\n"
            return
        if not payloads:
            time.sleep(poll)


@router.get("/{job_id}/metrics")
@threaded
def metrics(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    """Every recorded metric value, by step: train_loss, learning_rate, tokens_per_second,
    valid_loss (what the dashboard plots; the same as the result CSV, but live)."""
    with session_scope(settings.resolved_database_url) as session:
        repo.get_job(session, job_id, tenant)
        rows = progress.metrics_of(session, job_id)
        return {
            "object": "list",
            "data": [{"step": m.step, "name": m.name, "value": m.value} for m in rows],
        }


@router.get("/{job_id}/checkpoints")
@threaded
def checkpoints(
    job_id: str,
    after: str | None = None,
    limit: int = Query(default=10, ge=1, le=100),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> ListObject:
    with session_scope(settings.resolved_database_url) as session:
        repo.get_job(session, job_id, tenant)
        rows, more = progress.list_checkpoints(session, job_id, after=after, limit=limit)
        return ListObject.page([checkpoint_object(r) for r in rows], more)
