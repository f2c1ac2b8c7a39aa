"""What generation requests share, whichever engine runs them: prompt encoding, sampling
settings, the result, and stop strings.

Prompts are encoded as training encodes them (``encode_prompt``; the chat template for chat
messages), so greedy decoding (``temperature == 0``) gives what
``steering_core.evaluate.generate_greedy`` gives for the same prompt. The engine that runs
requests is :class:`steering_core.serving.BatchEngine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steering_core.data import encode_prompt
from steering_core.errors import SteeringUserError


@dataclass(frozen=True)
class GenerationParams:
    """One request's sampling settings (OpenAI's meanings).

    Before a token is chosen the row's logits are adjusted: ``logit_bias`` adds to the listed
    token ids; each token already generated ``c`` times is lowered by
    ``c * frequency_penalty + presence_penalty`` (the prompt does not count). Then greedy
    (``temperature == 0``) takes the arg-max; otherwise temperature and ``top_p`` apply.
    ``logprobs`` (0 to 20): report each generated token's log-probability and that many most
    likely alternatives, from the adjusted logits before temperature and ``top_p``; None: none.
    """

    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability and the most likely alternatives at its step."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprobs: tuple[TokenLogprob, ...] | None = None  # the tokens of ``text``, when asked


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise SteeringUserError("this model has no chat template: use /v1/completions")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def encode_text(tokenizer: Any, prompt: str) -> list[int]:
    return encode_prompt(tokenizer, prompt)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop string it holds, and whether it held one."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


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
