"""Steered generation behind /v1/chat/completions and /v1/completions.

``model`` is a base model of the configured catalogue or one of the caller's adapters (id or
``name@version``); ``steering`` adds more adapters of the same base model, each at its strength.
Every batched adapter (post_block, joint, reft, lora) runs on its base model's one loaded copy,
in the batching engine, per row (:mod:`steering_core.serving`); a ``full`` adapter is a whole
model and is served as its own copy. Stored files are checked against their sha256 when an
adapter is first loaded. torch is imported only here and only when a request needs it: the API
runs without torch and then answers 503 ``generation_unavailable``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.errors import ApiError
from api.services.adapters import check_stored_files
from registry import adapters as adapters_repo
from registry import checkpoints as checkpoints_repo
from registry.errors import NotFound
from registry.settings import Settings
from steering_core.errors import ConfigValidationError
from steering_core.methods.registry import method_definition

_SERVED_LOCK = threading.Lock()


@dataclass(frozen=True)
class StoredAdapter:
    """What generation needs of an adapter row (read while the session is open)."""

    id: str
    reference: str
    param: str
    base_model: str
    method: str
    sha256: str
    directory: Path
    files: dict[str, str]

    @property
    def whole_model(self) -> bool:
        """A method that trains the base weights stores a whole model: its own copy serves it
        (an unknown method is tried as an adapter, and refused by name if it is not one)."""
        try:
            return method_definition(self.method).trains_base_weights
        except ConfigValidationError:
            return False

    def verify(self) -> None:
        check_stored_files(self.id, self.directory, self.files)


@dataclass(frozen=True)
class Target:
    """What a request generates with: the base model, a full model copy when ``model`` is a
    ``full`` adapter, and the batched adapters with their strengths."""

    name: str
    base: str
    full: StoredAdapter | None = None
    steering: tuple[tuple[StoredAdapter, float], ...] = ()


def _not_found(reference: str, param: str) -> ApiError:
    return ApiError(
        404,
        f"The model {reference!r} does not exist: use a base model from GET /v1/models "
        "or one of your adapters (id or name@version)",
        param=param,
        code="model_not_found",
    )


def _stored(
    session: Session, settings: Settings, tenant: str, reference: str, param: str
) -> StoredAdapter:
    """An adapter by id or ``name@version``, or a job's checkpoint by its model id
    (``ftjob-…:ckpt-step-N``)."""
    if checkpoints_repo.parse_checkpoint_model_id(reference) is not None:
        stored = _checkpoint(session, tenant, reference, param)
    else:
        try:
            row = adapters_repo.get_adapter(session, reference, tenant)
        except NotFound:
            raise _not_found(reference, param) from None
        stored = StoredAdapter(
            id=row.id,
            reference=reference,
            param=param,
            base_model=row.base_model,
            method=str((row.method or {}).get("type", "")),
            sha256=row.sha256,
            directory=settings.adapters_dir / row.storage_path,
            files=dict(row.files),
        )
    if stored.base_model not in settings.models:
        raise ApiError(
            400,
            f"adapter {reference!r} was trained on {stored.base_model!r}, which this server no "
            f"longer serves (serving {settings.models})",
            param=param,
            code="model_not_found",
        )
    return stored


def _checkpoint(session: Session, tenant: str, reference: str, param: str) -> StoredAdapter:
    try:
        found = checkpoints_repo.resolve_checkpoint_model(session, reference, tenant)
    except NotFound as exc:
        raise ApiError(
            404,
            f"The model {reference!r} does not exist: {exc}",
            param=param,
            code="model_not_found",
        ) from None
    return StoredAdapter(
        id=found.id,
        reference=reference,
        param=param,
        base_model=found.base_model,
        method=found.method,
        sha256=found.sha256,
        directory=found.directory,
        files=dict(found.files),
    )


def resolve_target(
    session: Session,
    settings: Settings,
    tenant: str,
    body: ChatCompletionCreate | CompletionCreate,
) -> Target:
    model = body.model
    steering: list[tuple[StoredAdapter, float]] = []
    full = None
    if model in settings.models:
        base = model
    else:
        named = _stored(session, settings, tenant, model, "model")
        base = named.base_model
        if named.whole_model:
            full = named
        else:
            steering.append((named, body.steering_strength))
    for index, entry in enumerate(body.steering or ()):
        param = f"steering.{index}.adapter"
        extra = _stored(session, settings, tenant, entry.adapter, param)
        if extra.whole_model:
            raise ApiError(
                400,
                f"adapter {entry.adapter!r} is a full fine-tuned model, not a steering adapter: "
                "use it as `model`",
                param=param,
            )
        if full is not None:
            raise ApiError(
                400,
                f"`steering` adds adapters to a base model; {model!r} is a full fine-tuned model",
                param=param,
            )
        if extra.base_model != base:
            raise ApiError(
                400,
                f"adapter {entry.adapter!r} was trained on {extra.base_model!r}, not on "
                f"{base!r}: the adapters of one request must share its base model",
                param=param,
            )
        steering.append((extra, entry.strength))
    return Target(model, base, full, tuple(steering))


def _serving() -> Any:
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


@dataclass
class Prepared:
    engine: Any
    prompt: list[int]
    params: Any
    steering: list[tuple[Any, float]] = field(default_factory=list)
    cache_hit: bool = True
    n: int = 1
    include_usage: bool = False

    def choice_params(self, index: int) -> Any:
        """Choice ``index``'s settings: with a seed, choice i samples with seed + i."""
        if index == 0 or self.params.seed is None:
            return self.params
        return replace(self.params, seed=(self.params.seed + index) % 2**63)

    def submit(self, on_text: Callable[[int], Any] | None = None) -> list[Any]:
        """One engine row per choice; ``on_text(i)`` gives choice i's piece callback."""
        return [
            self.engine.submit(
                self.prompt,
                self.choice_params(index),
                self.steering,
                on_text=None if on_text is None else on_text(index),
            )
            for index in range(self.n)
        ]


def _load_adapter(served: Any, engine: Any, stored: StoredAdapter) -> tuple[Any, bool]:
    from steering_core.errors import ArtifactError

    try:
        return served.adapter(engine, stored.sha256, stored.directory, stored.verify)
    except ArtifactError as exc:
        raise ApiError(
            400, f"adapter {stored.reference!r} cannot be served: {exc}", param=stored.param
        ) from exc


def prepare(
    app: FastAPI,
    settings: Settings,
    target: Target,
    body: ChatCompletionCreate | CompletionCreate,
) -> Prepared:
    """Load what the request needs (once per server) and encode its prompt; blocking."""
    inference, _ = _serving()
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
    served = served_models(app, settings)
    if target.full is not None:
        engine, hit = served.full(
            target.base, target.full.sha256, target.full.directory, target.full.verify
        )
    else:
        engine, hit = served.base(target.base)
    steering = []
    mode = body.inference_mode
    if mode != "all" and not any(s.method == "joint" for s, _ in target.steering):
        raise ApiError(
            400,
            f"inference_mode {mode!r} picks a half of a joint adapter; this request has none",
            param="inference_mode",
        )
    for stored, strength in target.steering:
        adapter, resident = _load_adapter(served, engine, stored)
        hit = hit and resident
        steering.append((adapter.only(mode) if stored.method == "joint" else adapter, strength))
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
    context = int(getattr(engine.model.config, "max_position_embeddings", 0) or 0)
    if context and len(prompt) + max_tokens > context:
        raise ApiError(
            400,
            f"{len(prompt)} prompt tokens + {field_name}={max_tokens} exceed {target.base}'s "
            f"context of {context} tokens",
            param=where,
            code="context_length_exceeded",
        )
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


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _failed(exc: BaseException) -> ApiError:
    return ApiError(500, f"generation failed: {exc}", type="server_error", code="generation_failed")


class ClientGone(Exception):
    """The caller closed its connection before its answer was ready."""


async def _until_disconnected(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Return once the client closes its connection (its body is read already, so the next
    ASGI message is ``http.disconnect``, whenever that comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def complete(
    prepared: Prepared,
    target: Target,
    chat: bool,
    receive: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """The whole answer, every choice; a client that leaves first takes its rows out of the
    batch (raises :class:`ClientGone`)."""
    handles = prepared.submit()
    answers = asyncio.ensure_future(
        asyncio.gather(*(asyncio.wrap_future(h.future) for h in handles))
    )
    left = asyncio.ensure_future(_until_disconnected(receive))
    try:
        await asyncio.wait({answers, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not answers.done():
            for handle in handles:  # the client went away (or this task was cancelled)
                handle.cancel()
            answers.cancel()
    if not answers.done() or answers.cancelled():
        raise ClientGone
    try:
        results = answers.result()
    except Exception as exc:
        raise _failed(exc) from exc
    tokenizer = prepared.engine.tokenizer
    choices = []
    for index, result in enumerate(results):
        logprobs = None
        if result.logprobs is not None:
            logprobs = (chat_logprobs if chat else text_logprobs)(tokenizer, result.logprobs)
        if chat:
            message = {"role": "assistant", "content": result.text}
            choice: dict[str, Any] = {"index": index, "message": message}
        else:
            choice = {"index": index, "text": result.text}
        choices.append({**choice, "finish_reason": result.finish_reason, "logprobs": logprobs})
    kind, prefix = ("chat.completion", "chatcmpl") if chat else ("text_completion", "cmpl")
    return {
        "id": f"{prefix}-{secrets.token_hex(12)}",
        "object": kind,
        "created": int(time.time()),
        "model": target.name,
        "choices": choices,
        "usage": _usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results)),
    }


def _token_text(tokenizer: Any, token: int) -> str:
    from steering_core.serving.requests import token_text

    return token_text(tokenizer, token)


def chat_logprobs(tokenizer: Any, entries: Sequence[Any]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: ``content`` lists each token with its alternatives; a token
    that is part of a character has its exact ``bytes``."""
    from steering_core.serving.requests import token_bytes, token_text

    def one(token: int, logprob: float) -> dict[str, Any]:
        text = token_text(tokenizer, token)
        return {"token": text, "logprob": logprob, "bytes": list(token_bytes(tokenizer, token))}

    content = [
        {**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def text_logprobs(tokenizer: Any, entries: Sequence[Any], offset: int = 0) -> dict[str, Any]:
    """OpenAI's completions ``logprobs``: parallel lists, offsets into the completion text."""
    tokens = [_token_text(tokenizer, e.token) for e in entries]
    ids = [e.token for e in entries]
    offsets = [offset + len(tokenizer.decode(ids[:i])) for i in range(len(ids))]
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            {_token_text(tokenizer, t): lp for t, lp in e.top} if e.top else None for e in entries
        ],
        "text_offset": offsets,
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


_END = object()


def stream_chunks(prepared: Prepared, target: Target, chat: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk shape, ending with ``data: [DONE]``. The request's
    rows (one per choice) join the engine's batch now; pieces arrive from the engine's thread
    without holding one here, and a client that goes away takes its rows out of the batch.
    With ``stream_options.include_usage`` every chunk has ``usage: null`` and a last chunk
    before ``[DONE]`` has the usage and no choices."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[tuple[int, Any, Any]] = asyncio.Queue()
    tokenizer = prepared.engine.tokenizer

    def on_text(index: int) -> Callable[[str, Any], None]:
        return lambda piece, logprobs: loop.call_soon_threadsafe(
            pieces.put_nowait, (index, piece, logprobs)
        )

    handles = prepared.submit(on_text)
    for index, handle in enumerate(handles):
        handle.future.add_done_callback(
            lambda _, i=index: loop.call_soon_threadsafe(pieces.put_nowait, (i, _END, None))
        )
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    wants_logprobs = prepared.params.logprobs is not None
    offsets = [0] * prepared.n

    def chunk(
        index: int,
        content: str | None,
        finish: str | None,
        logprobs: Any = None,
        first: bool = False,
    ) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if content is None else {"content": content}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": index, "delta": delta}
            if wants_logprobs:
                choice["logprobs"] = chat_logprobs(tokenizer, logprobs) if logprobs else None
        else:
            choice = {"index": index, "text": content or ""}
            if wants_logprobs:
                choice["logprobs"] = (
                    text_logprobs(tokenizer, logprobs, offsets[index]) if logprobs else None
                )
                offsets[index] += len(content or "")
        choice["finish_reason"] = finish
        return _chunk_object([choice])

    def _chunk_object(choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": target.name,
            "choices": choices,
        }
        if prepared.include_usage:
            body["usage"] = None
        return body

    async def events() -> AsyncIterator[str]:
        try:
            if chat:
                for index in range(prepared.n):
                    yield _sse(chunk(index, "", None, first=True))
            open_rows = prepared.n
            while open_rows:
                index, piece, logprobs = await pieces.get()
                if piece is not _END:
                    yield _sse(chunk(index, piece, None, logprobs))
                    continue
                open_rows -= 1
                exc = handles[index].future.exception()
                if exc is not None:  # the status line is sent already: report in the stream
                    error = {"message": str(exc), "type": "server_error", "param": None}
                    yield _sse({"error": {**error, "code": "generation_failed"}})
                    return
                yield _sse(chunk(index, None, handles[index].future.result().finish_reason))
            if prepared.include_usage:
                results = [h.future.result() for h in handles]
                usage = _usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results))
                yield _sse({**_chunk_object([]), "usage": usage})
            yield _sse("[DONE]")
        finally:
            for handle in handles:
                handle.cancel()  # a no-op once finished; else the row leaves the batch

    return events()
