"""The answers of /v1/chat/completions and /v1/completions to a prepared request: the whole
answer (:func:`complete`) or OpenAI's server-sent chunks (:func:`stream_chunks`), with
OpenAI's ``logprobs`` shapes. The request's rows run in the batching engine's thread; nothing
here holds a thread while waiting on them."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from api.errors import ApiError
from api.services.generation_targets import Target


@dataclass
class Prepared:
    """A request ready for the engine: its prompt's tokens, its sampling settings and its
    loaded adapters with their strengths, on the engine of its (base or full) model."""

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


@dataclass
class _Chunks:
    """The chunk objects of one streamed answer, in OpenAI's ``chat.completion.chunk`` or
    ``text_completion`` shape; a completions choice's logprobs offsets run on across chunks."""

    prepared: Prepared
    model: str
    chat: bool
    ident: str = ""
    created: int = 0
    offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ident = f"{'chatcmpl' if self.chat else 'cmpl'}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.offsets = [0] * self.prepared.n

    def choice(
        self,
        index: int,
        content: str | None,
        finish: str | None,
        logprobs: Any = None,
        first: bool = False,
    ) -> dict[str, Any]:
        """A chunk with choice ``index``'s next piece (or its finish reason)."""
        tokenizer = self.prepared.engine.tokenizer
        wants_logprobs = self.prepared.params.logprobs is not None
        if self.chat:
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
                    text_logprobs(tokenizer, logprobs, self.offsets[index]) if logprobs else None
                )
                self.offsets[index] += len(content or "")
        choice["finish_reason"] = finish
        return self.chunk([choice])

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """A chunk object around ``choices``."""
        body: dict[str, Any] = {
            "id": self.ident,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.prepared.include_usage:
            body["usage"] = None
        return body


def stream_chunks(prepared: Prepared, target: Target, chat: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk shape, ending with ``data: [DONE]``. The request's
    rows (one per choice) join the engine's batch now; pieces arrive from the engine's thread
    without holding one here, and a client that goes away takes its rows out of the batch.
    With ``stream_options.include_usage`` every chunk has ``usage: null`` and a last chunk
    before ``[DONE]`` has the usage and no choices."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[tuple[int, Any, Any]] = asyncio.Queue()

    def on_text(index: int) -> Callable[[str, Any], None]:
        return lambda piece, logprobs: loop.call_soon_threadsafe(
            pieces.put_nowait, (index, piece, logprobs)
        )

    handles = prepared.submit(on_text)
    for index, handle in enumerate(handles):
        handle.future.add_done_callback(
            lambda _, i=index: loop.call_soon_threadsafe(pieces.put_nowait, (i, _END, None))
        )
    return _events(_Chunks(prepared, target.name, chat), handles, pieces)


async def _events(
    chunks: _Chunks, handles: list[Any], pieces: asyncio.Queue[tuple[int, Any, Any]]
) -> AsyncIterator[str]:
    """The stream's events as the rows' pieces arrive; its rows leave the batch when it ends
    (a no-op for a finished row), whether done, failed or abandoned by the client."""
    prepared = chunks.prepared
    try:
        if chunks.chat:
            for index in range(prepared.n):
                yield _sse(chunks.choice(index, "", None, first=True))
        open_rows = prepared.n
        while open_rows:
            index, piece, logprobs = await pieces.get()
            if piece is not _END:
                yield _sse(chunks.choice(index, piece, None, logprobs))
                continue
            open_rows -= 1
            exc = handles[index].future.exception()
            if exc is not None:  # the status line is sent already: report in the stream
                error = {"message": str(exc), "type": "server_error", "param": None}
                yield _sse({"error": {**error, "code": "generation_failed"}})
                return
            yield _sse(chunks.choice(index, None, handles[index].future.result().finish_reason))
        if prepared.include_usage:
            results = [h.future.result() for h in handles]
            usage = _usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results))
            yield _sse({**chunks.chunk([]), "usage": usage})
        yield _sse("[DONE]")
    finally:
        for handle in handles:
            handle.cancel()  # a no-op once finished; else the row leaves the batch
