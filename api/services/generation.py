"""Steered generation behind /v1/chat/completions and /v1/completions.

``model`` is a base model of the configured catalogue or one of the caller's adapters (id or
``name@version``). Adapters are checked against their stored sha256 before they are loaded.
Loaded models live in one :class:`steering_core.inference.ModelCache` per app (torch is
imported only here and only when a request needs it: the API runs without torch and then
answers 503 ``generation_unavailable``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.errors import ApiError
from api.services.adapters import adapter_dir, verified_files
from registry import adapters as adapters_repo
from registry.errors import NotFound
from registry.settings import Settings

_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Target:
    """What ``model`` names: a base model, and the adapter directory when it is an adapter."""

    name: str
    base: str
    adapter_dir: Path | None


def resolve_target(session: Session, settings: Settings, tenant: str, model: str) -> Target:
    if model in settings.models:
        return Target(model, model, None)
    try:
        row = adapters_repo.get_adapter(session, model, tenant)
    except NotFound:
        raise ApiError(
            404,
            f"The model {model!r} does not exist: use a base model from GET /v1/models "
            "or one of your adapters (id or name@version)",
            param="model",
            code="model_not_found",
        ) from None
    if row.base_model not in settings.models:
        raise ApiError(
            400,
            f"adapter {model!r} was trained on {row.base_model!r}, which this server no longer "
            f"serves (serving {settings.models})",
            param="model",
            code="model_not_found",
        )
    verified_files(settings, row)
    return Target(model, row.base_model, adapter_dir(settings, row))


def _inference() -> Any:
    try:
        from steering_core import inference
    except ImportError as exc:
        raise ApiError(
            503,
            "steered generation is not available on this API process: it needs torch "
            f"(install the [train] extra) ({exc})",
            type="server_error",
            code="generation_unavailable",
        ) from exc
    return inference


def model_cache(app: FastAPI, settings: Settings) -> Any:
    inference = _inference()
    with _CACHE_LOCK:
        cache = getattr(app.state, "model_cache", None)
        if cache is None:
            if settings.torch_threads:
                import torch

                torch.set_num_threads(settings.torch_threads)
            cache = inference.ModelCache(
                size=settings.generation_cache_size, cache_dir=settings.model_cache_dir
            )
            app.state.model_cache = cache
    return cache


@dataclass
class Prepared:
    loaded: Any
    prompt: list[int]
    params: Any
    cache_hit: bool


def prepare(
    app: FastAPI,
    settings: Settings,
    target: Target,
    body: ChatCompletionCreate | CompletionCreate,
) -> Prepared:
    inference = _inference()
    limit = settings.generation_max_tokens
    field = (
        "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
    )
    max_tokens = getattr(body, field) or 64
    if max_tokens > limit:
        raise ApiError(
            400, f"{field}={max_tokens} is over this server's limit of {limit}", param=field
        )
    loaded, hit = model_cache(app, settings).get(target.base, target.adapter_dir)
    if isinstance(body, ChatCompletionCreate):
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt, where = inference.encode_chat(loaded.tokenizer, messages), "messages"
    else:
        prompt, where = inference.encode_text(loaded.tokenizer, body.text()), "prompt"
    if not prompt:  # text a tokenizer reduces to nothing (an empty one is refused earlier)
        raise ApiError(
            400,
            f"the {where} gives no tokens for {target.base}: nothing for the model to continue",
            param=where,
        )
    context = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0)
    if context and len(prompt) + max_tokens > context:
        raise ApiError(
            400,
            f"{len(prompt)} prompt tokens + {field}={max_tokens} exceed {target.base}'s "
            f"context of {context} tokens",
            param=where,
            code="context_length_exceeded",
        )
    params = inference.GenerationParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stops(),
        steering_strength=body.steering_strength if target.adapter_dir is not None else 1.0,
    )
    return Prepared(loaded, prompt, params, hit)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def complete(prepared: Prepared, target: Target, chat: bool) -> dict[str, Any]:
    result = _inference().generate(prepared.loaded, prepared.prompt, prepared.params)
    created = int(time.time())
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {
            "index": 0,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
        kind, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{secrets.token_hex(12)}",
        "object": kind,
        "created": created,
        "model": target.name,
        "choices": [choice],
        "usage": _usage(result.prompt_tokens, result.completion_tokens),
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def stream_chunks(prepared: Prepared, target: Target, chat: bool) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk shape, ending with ``data: [DONE]``."""
    inference = _inference()
    outcome = inference.StreamOutcome()
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(content: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if content is None else {"content": content}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": content or "", "finish_reason": finish}
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": target.name,
            "choices": [choice],
        }

    if chat:
        yield _sse(chunk("", None, first=True))
    try:
        for piece in inference.stream(prepared.loaded, prepared.prompt, prepared.params, outcome):
            yield _sse(chunk(piece, None))
    except Exception as exc:  # the status line is sent already: report in the stream
        yield _sse(
            {
                "error": {
                    "message": str(exc),
                    "type": "server_error",
                    "param": None,
                    "code": "generation_failed",
                }
            }
        )
        return
    yield _sse(chunk(None, outcome.finish_reason))
    yield _sse("[DONE]")
