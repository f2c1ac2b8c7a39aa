"""Generation with a base model or a trained adapter, for a long-running server.

- :class:`ModelCache` keeps the last few loaded (base model, adapter) pairs, least recently used
  out first, so a second request for the same model does not reload it. Each entry has its own
  lock: a model with steering hooks is not safe to run from two threads at once.
- :func:`generate` runs one request to its end; :func:`stream` yields the text as it is made.
  Prompts are encoded as training encodes them (``encode_prompt``; the chat template for chat
  messages), and greedy decoding (``temperature == 0``) gives exactly what
  ``steering_core.evaluate.generate_greedy`` gives for the same prompt.
- ``steering_strength`` scales every steering adapter's shift for that request only (1.0: as
  trained, 0.0: the base model).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steering_core.data import encode_prompt, pad_token_id_for
from steering_core.errors import SteeringUserError
from steering_core.io import load_artifact
from steering_core.methods.base import AttachedMethod
from steering_core.models import load_model, load_tokenizer


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    attached: AttachedMethod | None
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    steering_strength: float = 1.0


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


class ModelCache:
    """Loaded (base model, adapter directory) pairs; at most ``size`` kept."""

    def __init__(self, size: int = 2, cache_dir: Path | None = None):
        if size < 1:
            raise ValueError("the model cache needs room for at least one model")
        self.size, self.cache_dir = size, cache_dir
        self._entries: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, base: str, adapter_dir: Path | None = None) -> tuple[LoadedModel, bool]:
        """The loaded pair and whether it came from the cache."""
        key = (base, str(adapter_dir) if adapter_dir is not None else None)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key], True
            self.misses += 1
            started = time.perf_counter()
            model = load_model(base, cache_dir=self.cache_dir)
            tokenizer = load_tokenizer(base, cache_dir=self.cache_dir)
            attached = None
            if adapter_dir is not None:
                attached = load_artifact(model, adapter_dir)
                model = attached.model
            model.eval()
            loaded = LoadedModel(model, tokenizer, attached, time.perf_counter() - started)
            self._entries[key] = loaded
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return loaded, False


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise SteeringUserError("this model has no chat template: use /v1/completions")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def encode_text(tokenizer: Any, prompt: str) -> list[int]:
    return encode_prompt(tokenizer, prompt)


def _generate_kwargs(loaded: LoadedModel, prompt: list[int], params: GenerationParams) -> dict:
    tokenizer = loaded.tokenizer
    kwargs: dict[str, Any] = {
        "input_ids": torch.tensor([prompt]),
        "attention_mask": torch.ones(1, len(prompt), dtype=torch.long),
        "max_new_tokens": params.max_tokens,
        "pad_token_id": pad_token_id_for(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
    }
    if params.temperature == 0:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
    return kwargs


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _steered(loaded: LoadedModel, strength: float):
    if loaded.attached is None:
        return nullcontext()
    return loaded.attached.steering_scale(strength)


def _run(
    loaded: LoadedModel, prompt: list[int], params: GenerationParams, kwargs: dict
) -> tuple[list[int], bool]:
    """Generate under the model's lock at the request's strength; (new token ids, whether it
    ended by itself: EOS, or fewer tokens than allowed)."""
    with loaded.lock, _steered(loaded, params.steering_strength), torch.no_grad():
        if params.seed is not None:
            torch.manual_seed(params.seed)
        output = loaded.model.generate(**kwargs)
    new = output[0, len(prompt) :].tolist()
    eos = loaded.tokenizer.eos_token_id
    return new, (eos is not None and eos in new) or len(new) < params.max_tokens


def generate(loaded: LoadedModel, prompt: list[int], params: GenerationParams) -> Generation:
    new, ended = _run(loaded, prompt, params, _generate_kwargs(loaded, prompt, params))
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    text, stopped = cut_at_stop(text, params.stop)
    return Generation(text, len(prompt), len(new), "stop" if (ended or stopped) else "length")


def emittable(text: str, stop: tuple[str, ...]) -> int:
    """How much of ``text`` can be sent: all but a tail that could start a stop string."""
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    ready = len(text) - hold
    # a token that ends inside a multi-byte character decodes to U+FFFD until the rest arrives
    while ready > 0 and text[ready - 1] == "\ufffd":
        ready -= 1
    return ready


@dataclass
class StreamOutcome:
    """Filled in by :func:`stream` once the generator is exhausted."""

    completion_tokens: int = 0
    finish_reason: str = "stop"


def stream(
    loaded: LoadedModel,
    prompt: list[int],
    params: GenerationParams,
    outcome: StreamOutcome | None = None,
) -> Iterator[str]:
    """Yield the completion in pieces as tokens are generated; a stop string ends it (and the
    generation) early, and no piece of a stop string is ever sent."""
    outcome = outcome if outcome is not None else StreamOutcome()
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    halt = threading.Event()

    class Halt(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> bool:  # type: ignore[override]
            return halt.is_set()

    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {
        **_generate_kwargs(loaded, prompt, params),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([Halt()]),
    }
    errors: list[BaseException] = []

    def run() -> None:
        try:
            new, ended = _run(loaded, prompt, params, kwargs)
            outcome.completion_tokens = len(new)
            outcome.finish_reason = "stop" if ended else "length"
        except BaseException as exc:  # surfaced to the reader below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, name="generate", daemon=True)
    worker.start()
    text, sent, finished, stopped_early = "", 0, False, False
    try:
        for piece in streamer:
            text += piece
            cut, stopped = cut_at_stop(text, params.stop)
            if stopped:
                if cut[sent:]:
                    yield cut[sent:]
                sent = len(cut)
                stopped_early = True
                break
            ready = emittable(text, params.stop)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
        else:
            finished = True
            if text[sent:]:
                yield text[sent:]
    finally:  # also when the client goes away: stop generating and release the model
        halt.set()
        if not finished:  # read to the streamer's end mark (reading past it would block)
            for _ in streamer:
                pass
        worker.join()
    if errors:
        raise errors[0]
    if stopped_early:
        outcome.finish_reason = "stop"
