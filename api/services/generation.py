"""Steered generation behind /v1/chat/completions and /v1/completions: loading what a request
needs and encoding its prompt (:func:`prepare`).

Every batched adapter (post_block, joint, reft, lora) runs on its base model's one loaded copy,
in the batching engine, per row (:mod:`steering_core.serving`); a ``full`` adapter is a whole
model and is served as its own copy. Stored files are checked against their sha256 when an
adapter is first loaded. torch is imported only here and only when a request needs it: the API
runs without torch and then answers 503 ``generation_unavailable``. What a request runs with is
resolved in :mod:`api.services.generation_targets`; its answer, whole or streamed, is written in
:mod:`api.services.generation_answers` (both re-exported here).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.errors import ApiError
from api.services.generation_answers import (
    ClientGone,
    Prepared,
    chat_logprobs,
    complete,
    stream_chunks,
    text_logprobs,
)
from api.services.generation_targets import StoredAdapter, Target, resolve_target
from registry.settings import Settings

__all__ = [
    "ClientGone",
    "Prepared",
    "StoredAdapter",
    "Target",
    "chat_logprobs",
    "complete",
    "prepare",
    "resolve_target",
    "served_models",
    "stream_chunks",
    "text_logprobs",
]

_SERVED_LOCK = threading.Lock()


def _serving() -> tuple[Any, Any]:
    """``(steering_core.serving.requests, steering_core.serving)``, or 503 without torch."""
    try:
        from steering_core import serving
        from steering_core.serving import requests as inference
    except ImportError as exc:
        raise ApiError(
            503,
            "steered generation is not available on this API process: it needs torch "
            f"(install the [train] extra) ({exc})",
            type="server_error",
            code="generation_unavailable",
        ) from exc
    return inference, serving


def served_models(app: FastAPI, settings: Settings) -> Any:
    """The app's one ``ServedModels`` (engines, adapter pool, full copies), made on first use."""
    _, serving = _serving()
    with _SERVED_LOCK:
        served = getattr(app.state, "served_models", None)
        if served is None:
            if settings.torch_threads:
                import torch

                torch.set_num_threads(settings.torch_threads)
            from steering_core.errors import SteeringUserError

            try:
                served = serving.ServedModels(
                    cache_dir=settings.model_cache_dir,
                    adapter_pool_bytes=int(settings.generation_adapter_pool_mb * 2**20),
                    max_batch=settings.generation_max_batch,
                    full_copies=settings.generation_cache_size,
                    device=settings.generation_device,
                    dtype=settings.generation_dtype,
                )
            except SteeringUserError as exc:  # the server's settings, not the request, are wrong
                raise ApiError(
                    503,
                    f"steered generation is not available on this API process: {exc}",
                    type="server_error",
                    code="generation_unavailable",
                ) from exc
            app.state.served_models = served
    return served


def _load_adapter(served: Any, engine: Any, stored: StoredAdapter) -> tuple[Any, bool]:
    from steering_core.errors import ArtifactError

    try:
        return served.adapter(engine, stored.sha256, stored.directory, stored.verify)
    except ArtifactError as exc:
        raise ApiError(
            400, f"adapter {stored.reference!r} cannot be served: {exc}", param=stored.param
        ) from exc


def _max_tokens(
    settings: Settings, body: ChatCompletionCreate | CompletionCreate
) -> tuple[str, int]:
    """The request's token budget and the field that set it, within the server's limit."""
    limit = settings.generation_max_tokens
    field_name = (
        "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
    )
    max_tokens = getattr(body, field_name) or 64
    if max_tokens > limit:
        raise ApiError(
            400,
            f"{field_name}={max_tokens} is over this server's limit of {limit}",
            param=field_name,
        )
    return field_name, max_tokens


def _steering(
    served: Any, engine: Any, target: Target, mode: str
) -> tuple[list[tuple[Any, float]], bool]:
    """The target's adapters loaded on ``engine`` (a joint one reduced to ``mode``'s half),
    and whether every one of them was resident already."""
    if mode != "all" and not any(s.method == "joint" for s, _ in target.steering):
        raise ApiError(
            400,
            f"inference_mode {mode!r} picks a half of a joint adapter; this request has none",
            param="inference_mode",
        )
    steering: list[tuple[Any, float]] = []
    hit = True
    for stored, strength in target.steering:
        adapter, resident = _load_adapter(served, engine, stored)
        hit = hit and resident
        steering.append((adapter.only(mode) if stored.method == "joint" else adapter, strength))
    return steering, hit


def _prompt(
    inference: Any, engine: Any, target: Target, body: ChatCompletionCreate | CompletionCreate
) -> tuple[list[int], str]:
    """The prompt's tokens and the field they come from; never empty."""
    tokenizer = engine.tokenizer
    if isinstance(body, ChatCompletionCreate):
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt, where = inference.encode_chat(tokenizer, messages), "messages"
    else:
        prompt, where = inference.encode_text(tokenizer, body.text()), "prompt"
    if not prompt:  # text a tokenizer reduces to nothing (an empty one is refused earlier)
        raise ApiError(
            400,
            f"the {where} gives no tokens for {target.base}: nothing for the model to continue",
            param=where,
        )
    return prompt, where


def _check_context(
    engine: Any, target: Target, prompt: list[int], where: str, field_name: str, max_tokens: int
) -> None:
    """The prompt and the completion's budget fit in the model's context."""
    context = int(getattr(engine.model.config, "max_position_embeddings", 0) or 0)
    if context and len(prompt) + max_tokens > context:
        raise ApiError(
            400,
            f"{len(prompt)} prompt tokens + {field_name}={max_tokens} exceed {target.base}'s "
            f"context of {context} tokens",
            param=where,
            code="context_length_exceeded",
        )


def _token_biases(
    engine: Any, target: Target, body: ChatCompletionCreate | CompletionCreate
) -> tuple[tuple[int, float], ...]:
    """The request's ``logit_bias``, each token inside the model's vocabulary."""
    biases = body.token_biases()
    vocabulary = int(engine.model.get_output_embeddings().weight.shape[0])
    outside = [token for token, _ in biases if token >= vocabulary]
    if outside:
        raise ApiError(
            400,
            f"logit_bias names token {outside[0]}, outside {target.base}'s vocabulary of "
            f"{vocabulary} tokens",
            param="logit_bias",
        )
    return biases


def prepare(
    app: FastAPI,
    settings: Settings,
    target: Target,
    body: ChatCompletionCreate | CompletionCreate,
) -> Prepared:
    """Load what the request needs (once per server) and encode its prompt; blocking."""
    inference, _ = _serving()
    field_name, max_tokens = _max_tokens(settings, body)
    served = served_models(app, settings)
    if target.full is not None:
        engine, hit = served.full(
            target.base, target.full.sha256, target.full.directory, target.full.verify
        )
    else:
        engine, hit = served.base(target.base)
    steering, resident = _steering(served, engine, target, body.inference_mode)
    hit = hit and resident
    prompt, where = _prompt(inference, engine, target, body)
    _check_context(engine, target, prompt, where, field_name, max_tokens)
    biases = _token_biases(engine, target, body)
    params = inference.GenerationParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stops(),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        logit_bias=biases,
        logprobs=body.logprobs_wanted(),
    )
    return Prepared(
        engine, prompt, params, steering, hit, n=body.n, include_usage=body.include_usage()
    )
