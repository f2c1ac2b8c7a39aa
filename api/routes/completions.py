"""/v1/chat/completions and /v1/completions: generation with a base model or adapters.

The handlers are ``async``: loading and tokenizing run on a worker thread, then the request
waits on the batching engine without holding a thread (the engine runs in its own thread)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.deps import get_app_settings, get_tenant
from api.services import generation as service
from registry.db import session_scope
from registry.settings import Settings

router = APIRouter(tags=["generation"])
CACHE_HEADER = "X-Steer-Model-Cache"
CLIENT_CLOSED_REQUEST = 499  # the status proxies log for a caller that hung up first


def _prepare(
    request: Request,
    body: ChatCompletionCreate | CompletionCreate,
    settings: Settings,
    tenant: str,
) -> tuple[service.Target, service.Prepared]:
    with session_scope(settings.resolved_database_url) as session:
        target = service.resolve_target(session, settings, tenant, body)
    # loading may take a while: no database connection is held meanwhile
    return target, service.prepare(request.app, settings, target, body)


async def _answer(
    request: Request,
    body: ChatCompletionCreate | CompletionCreate,
    settings: Settings,
    tenant: str,
    chat: bool,
):
    target, prepared = await anyio.to_thread.run_sync(_prepare, request, body, settings, tenant)
    headers = {CACHE_HEADER: "hit" if prepared.cache_hit else "miss"}
    if body.stream:
        return StreamingResponse(
            service.stream_chunks(prepared, target, chat),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    try:
        answer = await service.complete(prepared, target, chat, request.receive)
    except service.ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # no one is there to read it
    return JSONResponse(answer, headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(
    request: Request,
    body: ChatCompletionCreate,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Chat with a base model or an adapter; ``steering_strength`` scales the steering and
    ``steering`` adds more adapters of the same base model."""
    return await _answer(request, body, settings, tenant, chat=True)


@router.post("/v1/completions")
async def completions(
    request: Request,
    body: CompletionCreate,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Complete a plain prompt with a base model or adapters."""
    return await _answer(request, body, settings, tenant, chat=False)
