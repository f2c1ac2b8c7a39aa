"""/v1/chat/completions and /v1/completions: generation with a base model or an adapter."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.deps import get_app_settings, get_tenant, threaded_slow
from api.services import generation as service
from registry.db import session_scope
from registry.settings import Settings

router = APIRouter(tags=["generation"])
CACHE_HEADER = "X-Steer-Model-Cache"


def _answer(
    request: Request,
    body: ChatCompletionCreate | CompletionCreate,
    settings: Settings,
    tenant: str,
    chat: bool,
):
    with session_scope(settings.resolved_database_url) as session:
        target = service.resolve_target(session, settings, tenant, body.model)
    # generation may take a while: no database connection is held meanwhile
    prepared = service.prepare(request.app, settings, target, body)
    headers = {CACHE_HEADER: "hit" if prepared.cache_hit else "miss"}
    if body.stream:
        return StreamingResponse(
            service.stream_chunks(prepared, target, chat),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    return JSONResponse(service.complete(prepared, target, chat), headers=headers)


@router.post("/v1/chat/completions")
@threaded_slow
def chat_completions(
    request: Request,
    body: ChatCompletionCreate,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Chat with a base model or an adapter; ``steering_strength`` scales the steering."""
    return _answer(request, body, settings, tenant, chat=True)


@router.post("/v1/completions")
@threaded_slow
def completions(
    request: Request,
    body: CompletionCreate,
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Complete a plain prompt with a base model or an adapter."""
    return _answer(request, body, settings, tenant, chat=False)
