"""/v1/chat/completions and /v1/completions: generation with a base model or an adapter."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.deps import get_app_settings, get_session, get_tenant
from api.services import generation as service
from registry.settings import Settings

router = APIRouter(tags=["generation"])
CACHE_HEADER = "X-Steer-Model-Cache"


def _answer(
    request: Request,
    body: ChatCompletionCreate | CompletionCreate,
    session: Session,
    settings: Settings,
    tenant: str,
    chat: bool,
):
    target = service.resolve_target(session, settings, tenant, body.model)
    session.close()  # generation may take a while: hold no database connection meanwhile
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
def chat_completions(
    request: Request,
    body: ChatCompletionCreate,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Chat with a base model or an adapter; ``steering_strength`` scales the steering."""
    return _answer(request, body, session, settings, tenant, chat=True)


@router.post("/v1/completions")
def completions(
    request: Request,
    body: CompletionCreate,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_app_settings),
    tenant: str = Depends(get_tenant),
):
    """Complete a plain prompt with a base model or an adapter."""
    return _answer(request, body, session, settings, tenant, chat=False)
