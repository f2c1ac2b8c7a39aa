"""What generation requests share, whichever engine runs them: prompt encoding, sampling
settings, the result, and stop strings.

Prompts are encoded as training encodes them (``encode_prompt``; the chat template for chat
messages), so greedy decoding (``temperature == 0``) gives what
``steering_core.evaluation.greedy.generate_greedy`` gives for the same prompt. The engine that runs
requests is :class:`steering_core.serving.BatchEngine`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from steering_core.data.batches import encode_prompt
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


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: for each character, the byte it stands for.
    Printable bytes stand for themselves; the others are moved to 256 and up, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {chr(byte): byte for byte in printable}
    moved = (byte for byte in range(256) if byte not in set(printable))
    for offset, byte in enumerate(moved):
        table[chr(256 + offset)] = byte
    return table


def token_bytes(tokenizer: Any, token: int) -> bytes:
    """The bytes one token stands for, also when they are only part of a character: byte-level
    BPE pieces (GPT-2, Llama 3, SmolLM) and SentencePiece byte fallback (``<0xE2>``); the
    decoded text's UTF-8 otherwise."""
    text = tokenizer.decode([token])
    if "\ufffd" not in text:
        return text.encode()
    piece = tokenizer.convert_ids_to_tokens(token)
    if isinstance(piece, str):
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return bytes([int(piece[3:5], 16)])
        table = _byte_level_decoder()
        if all(character in table for character in piece):
            return bytes(table[character] for character in piece)
    return text.encode()


def token_text(tokenizer: Any, token: int) -> str:
    """A token as text; one that is only part of a character as ``bytes:\\xe2\\x80`` (as
    OpenAI writes such tokens)."""
    raw = token_bytes(tokenizer, token)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


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
