"""/v1/fine_tuning/jobs"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from api import streams
from api.broker import enqueue_job
from api.deps import get_app_settings, get_tenant, threaded
from api.schemas import JobCreate, JobObject, ListObject
from api.serializers import checkpoint_object, event_object, job_object
from api.services import checkpoints as checkpoint_service
from api.services import idempotency
from api.services import jobs as service
from registry import checkpoints as checkpoints_repo
from registry import jobs as repo
from registry import progress
from registry.db import session_scope
from registry.settings import Settings

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


@router.post("/{job_id}/pause", response_model=JobObject)
@threaded
def pause(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> JobObject:
    """A queued job is paused at once; a running one stays ``running`` until its worker has
    saved a checkpoint at the next step boundary and released it (then ``paused``)."""
    with session_scope(settings.resolved_database_url) as session:
        job = repo.request_pause(session, repo.get_job(session, job_id, tenant))
        return job_object(job)


@router.post("/{job_id}/resume", response_model=JobObject)
@threaded
def resume(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> JobObject:
    """A paused job is queued again; it continues from the checkpoint it was paused at."""
    with session_scope(settings.resolved_database_url) as session:
        job = repo.resume_job(session, repo.get_job(session, job_id, tenant))
        answer, queue = job_object(job), job.queue
    service.send_job(settings, job_id, queue)  # committed: a worker finds it queued
    return answer


@router.get("/{job_id}/events")
async def events(
    request: Request,
    job_id: str,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=1000),
    stream: bool = False,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """A page of events, newest first; with ``stream=true`` server-sent events, oldest first
    (after ``after``), until the job has finished (``api/streams.py``)."""
    if stream:
        return await streams.open_event_stream(request, settings, tenant, job_id, after)
    return await _event_page(settings, tenant, job_id, after, limit)


@threaded
def _event_page(
    settings: Settings, tenant: str, job_id: str, after: str | None, limit: int
) -> ListObject:
    with session_scope(settings.resolved_database_url) as session:
        repo.get_job(session, job_id, tenant)
        rows, more = repo.list_events(session, job_id, after=after, limit=limit)
        return ListObject(data=[event_object(r) for r in rows], has_more=more)


@router.get("/{job_id}/metrics")
@threaded
def metrics(
    job_id: str,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> dict:
    """Every recorded metric value, by step: train_loss, train_mean_token_accuracy,
    learning_rate, tokens_per_second, valid_loss, valid_mean_token_accuracy (what the
    dashboard plots; the result CSV's figures, but live)."""
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
        metrics = checkpoints_repo.metrics_at_steps(session, job_id, [r.step for r in rows])
        return ListObject.page([checkpoint_object(r, metrics[r.step]) for r in rows], more)


@router.get("/{job_id}/checkpoints/{checkpoint}/content")
@threaded
def checkpoint_content(
    job_id: str,
    checkpoint: str,
    file: str | None = None,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
) -> Response:
    """A checkpoint's adapter artifact (``checkpoint``: its id, or its
    ``fine_tuned_model_checkpoint`` ``<job id>:ckpt-step-N``) as one ``.tar.gz``, or one file of
    it with ``?file=NAME``, each file checked against its recorded sha256 first."""
    with session_scope(settings.resolved_database_url) as session:
        job = repo.get_job(session, job_id, tenant)
        row = checkpoints_repo.get_checkpoint(session, job, checkpoint)
        artifact = checkpoints_repo.checkpoint_artifact(job, row)
    return checkpoint_service.content_response(artifact, file)
