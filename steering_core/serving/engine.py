"""The batching generation engine: one base model, every request in flight in one forward pass.

A :class:`BatchEngine` owns one loaded base model and a thread that runs it. Requests are
submitted from any thread (:meth:`BatchEngine.submit`) with their own adapters and strengths
(see :mod:`steering_core.serving.row_steering`), sampling settings and stop strings. The loop:

1. take the requests that arrived (up to ``max_batch`` rows in flight) and prefill them together
   in one forward (left-padded), each drawing its first token;
2. join them to the rows already decoding (:mod:`steering_core.serving.kv`);
3. run one decode step for every row in one forward, each row feeding its last token;
4. finish rows that drew EOS, reached ``max_tokens``, produced a stop string or were cancelled
   (a client that went away): they leave the batch and free their slot before the next step.

So a new request waits at most one decode step to start, and a batch of ``n`` requests of ``m``
tokens costs ``m`` forwards, not ``n · m``. Streaming requests get their text through
``on_text`` as it is made (never a piece of a stop string, never half a character). The loop is
the only thread that touches the model; handlers only wait on a future.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steering_core.model.sites import unwrap_model
from steering_core.serving import kv
from steering_core.serving.requests import (
    Generation,
    GenerationParams,
    TokenLogprob,
    cut_at_stop,
    emittable,
)
from steering_core.serving.row_steering import RowPlan, RowSteering, Steering
from steering_core.serving.sampling import Draw, RowSampler, next_tokens


class GenerationCancelled(Exception):
    """The request was cancelled before it finished (its client went away)."""


class RequestHandle:
    """What a caller holds: the future result, and a way to give up on it."""

    def __init__(self, keep_logits: bool = False) -> None:
        self.future: Future[Generation] = Future()
        self._cancelled = threading.Event()
        # the logits each token was drawn from, when asked (float32, one [V] tensor per token)
        self.logits: list[torch.Tensor] | None = [] if keep_logits else None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


# ``on_text(piece, logprobs)``: the next piece of text, and (when the request asked for
# logprobs) the tokens drawn since the previous piece, EOS left out
OnText = Callable[[str, tuple[TokenLogprob, ...]], None]


@dataclass
class _Row:
    handle: RequestHandle
    prompt: list[int]
    params: GenerationParams
    steering: Steering
    on_text: OnText | None
    sampler: RowSampler
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when asked; EOS left out
    length: int = 0  # tokens of this row in the cache
    text: str = ""
    sent: int = 0
    sent_logprobs: int = 0
    stopped_by_string: bool = False
    finish: str | None = None

    @property
    def tracks_text(self) -> bool:
        return self.on_text is not None or bool(self.params.stop)

    def accept(self, draw: Draw, eos: frozenset[int], tokenizer: Any) -> None:
        """Take the token drawn for this row; set ``finish`` when the row is done."""
        token = draw.token
        self.generated.append(token)
        if token in eos:
            self.finish = "stop"
        elif draw.logprob is not None:
            self.logprobs.append(draw.logprob)
        if self.tracks_text:
            self.text = tokenizer.decode(self.generated, skip_special_tokens=True)
            cut, stopped = cut_at_stop(self.text, self.params.stop)
            if stopped:
                self.text, self.finish, self.stopped_by_string = cut, "stop", True
            ready = len(self.text) if self.finish else emittable(self.text, self.params.stop)
            if ready > self.sent:
                self._send(ready)
        if self.finish is None and len(self.generated) >= self.params.max_tokens:
            self.finish = "length"
            if len(self.text) > self.sent:
                self._send(len(self.text))

    def _send(self, ready: int) -> None:
        if self.on_text is not None:
            self.on_text(self.text[self.sent : ready], tuple(self.logprobs[self.sent_logprobs :]))
            self.sent_logprobs = len(self.logprobs)
        self.sent = ready

    def result(self, tokenizer: Any) -> Generation:
        text = self.text
        if not self.tracks_text:
            text = tokenizer.decode(self.generated, skip_special_tokens=True)
        logprobs = None
        if self.params.logprobs is not None:
            logprobs = tuple(self.logprobs)
            if self.stopped_by_string:
                logprobs = logprobs[: _tokens_covering(tokenizer, self.generated, len(text))]
        return Generation(
            text, len(self.prompt), len(self.generated), self.finish or "length", logprobs
        )


def _tokens_covering(tokenizer: Any, tokens: list[int], characters: int) -> int:
    """The fewest leading ``tokens`` whose text reaches ``characters`` characters: the tokens of
    a text cut at a stop string (a token that straddles the cut counts)."""
    for count in range(len(tokens) + 1):
        if len(tokenizer.decode(tokens[:count], skip_special_tokens=True)) >= characters:
            return count
    return len(tokens)


class BatchEngine:
    """Generation for one base model, batched across requests and adapters."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, max_batch: int = 64, name: str = "engine"
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.name = name
        base = unwrap_model(model)
        self._config = base.config
        self._dtype = base.get_input_embeddings().weight.dtype
        self._device = base.get_input_embeddings().weight.device
        eos = getattr(tokenizer, "eos_token_id", None)
        self._eos = frozenset([eos] if isinstance(eos, int) else (eos or []))
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad = pad if pad is not None else (eos if isinstance(eos, int) else 0)
        self.steering = RowSteering(model)
        # forwards and the rows they carried, by phase (prefill, decode): rows / forwards is
        # the batch the engine really ran
        self.passes = {"prefill": 0, "decode": 0}
        self.rows_run = {"prefill": 0, "decode": 0}
        self.peak_rows = 0
        self._waiting: deque[_Row] = deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._plan: RowPlan | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------
    def submit(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        steering: Steering = (),
        on_text: OnText | None = None,
        *,
        keep_logits: bool = False,
    ) -> RequestHandle:
        if not prompt:
            raise ValueError("the prompt has no tokens")
        handle = RequestHandle(keep_logits)
        sampler = RowSampler.for_request(params)
        row = _Row(handle, list(prompt), params, tuple(steering), on_text, sampler)
        with self._wake:
            if self._closed:
                raise RuntimeError(f"the {self.name} engine is closed")
            self._waiting.append(row)
            self._wake.notify()
        return handle

    def generate(
        self, prompt: Sequence[int], params: GenerationParams, steering: Steering = ()
    ) -> Generation:
        """Submit and wait (for callers without their own event loop: tests, scripts)."""
        return self.submit(prompt, params, steering).future.result()

    @property
    def in_flight(self) -> int:
        with self._wake:
            return len(self._rows) + len(self._waiting)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=60)
        self.steering.remove()

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._rows:
                    self._wake.wait()
                if self._closed:
                    self._fail(list(self._waiting) + self._rows, RuntimeError("engine closed"))
                    return
                room = self.max_batch - len(self._rows)
                newcomers = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            try:
                self._drop_cancelled()
                newcomers = [r for r in newcomers if not self._cancel_if_asked(r)]
                if newcomers:
                    self._prefill(newcomers)
                if self._rows:
                    self._decode()
            except Exception as exc:  # a failed forward fails the rows in it, not the engine
                self._fail(newcomers + self._rows, exc)
                self._rows, self._cache, self._mask, self._plan = [], None, None, None

    def _forward(
        self, phase: str, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ):
        self.passes[phase] += 1
        self.rows_run[phase] += int(ids.shape[0])
        output = self.model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device, torch.long),
            position_ids=positions.to(self._device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1, :]

    def _prefill(self, rows: list[_Row]) -> None:
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt)
            mask[i, width - len(row.prompt) :] = True
            row.length = len(row.prompt)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        plan = RowPlan.build([r.steering for r in rows], dtype=self._dtype, device=self._device)
        self.steering.prepare(plan)
        self.steering.plan, self.steering.prompt_mask = plan, mask.to(self._device)
        cache = kv.new_cache(self._config)
        try:
            logits = self._forward("prefill", ids, mask, positions, cache)
        finally:
            self.steering.plan, self.steering.prompt_mask = None, None
        self._take(rows, logits)
        going = [i for i, r in enumerate(rows) if r.finish is None]
        self._settle(rows)
        if not going:
            return
        cache, mask = kv.keep_rows(cache, mask, torch.tensor(going))
        if self._rows:
            self._cache, self._mask = kv.join(self._cache, self._mask, cache, mask)
        else:
            self._cache, self._mask = cache, mask
        self._rows += [rows[i] for i in going]
        self._plan = None
        self.peak_rows = max(self.peak_rows, len(self._rows))

    def _decode(self) -> None:
        rows = self._rows
        assert self._mask is not None
        ids = torch.tensor([[r.generated[-1]] for r in rows])
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)
        positions = torch.tensor([[r.length] for r in rows])
        if self._plan is None:
            self._plan = RowPlan.build(
                [r.steering for r in rows], dtype=self._dtype, device=self._device
            )
            self.steering.prepare(self._plan)
        self.steering.plan = self._plan
        try:
            logits = self._forward("decode", ids, mask, positions, self._cache)
        finally:
            self.steering.plan = None
        self._mask = mask
        for row in rows:
            row.length += 1
        self._take(rows, logits)
        self._keep([r for r in rows if r.finish is None])
        self._settle(rows)

    def _take(self, rows: list[_Row], logits: torch.Tensor) -> None:
        draws = next_tokens(logits, [r.sampler for r in rows], [r.generated for r in rows])
        for i, (row, draw) in enumerate(zip(rows, draws, strict=True)):
            if row.handle.logits is not None:
                row.handle.logits.append(logits[i].float().cpu().clone())
            row.accept(draw, self._eos, self.tokenizer)

    def _keep(self, going: list[_Row]) -> None:
        if len(going) == len(self._rows):
            return
        if not going:
            self._rows, self._cache, self._mask, self._plan = [], None, None, None
            return
        index = {id(r): i for i, r in enumerate(self._rows)}
        assert self._mask is not None
        self._cache, self._mask = kv.keep_rows(
            self._cache, self._mask, torch.tensor([index[id(r)] for r in going])
        )
        self._rows, self._plan = going, None

    def _settle(self, rows: list[_Row]) -> None:
        for row in rows:
            if row.finish is not None and not row.handle.future.done():
                row.handle.future.set_result(row.result(self.tokenizer))

    def _cancel_if_asked(self, row: _Row) -> bool:
        if row.handle.cancelled and not row.handle.future.done():
            row.handle.future.set_exception(GenerationCancelled("the request was cancelled"))
        return row.handle.cancelled

    def _drop_cancelled(self) -> None:
        if any(r.handle.cancelled for r in self._rows):
            self._keep([r for r in self._rows if not self._cancel_if_asked(r)])

    def _fail(self, rows: list[_Row], exc: BaseException) -> None:
        for row in rows:
            if not row.handle.future.done():
                row.handle.future.set_exception(exc)
