"""Training data: parsed JSONL -> token rows with answer-only labels -> padded batches.

Parsing and validation live in :mod:`steering_core.data.formats` (torch-free), locating the
answers in a chat template's rendering in :mod:`steering_core.data.chat_template`; this module adds
the tokenizer. Labels are ``-100`` everywhere except on answer tokens, which carry their own id
(the model shifts them); an EOS closes every answer and is supervised (METHOD.md section 3).

Rows by format:

- ``prompt_completion`` / ``alpaca`` (the paper's plain templates, no chat template):
  ``[BOS if the tokenizer adds one] + tok(prompt) + tok(completion) + [EOS]``, supervised from
  the completion on. Prompt and completion are tokenized separately, as at generation time.
- ``chat`` with a chat template: the conversation as ``apply_chat_template`` renders it; each
  assistant message with weight 1 supervises its content and the template's end-of-turn token
  (the first special token after the content, e.g. ``<|im_end|>``), nothing else: not the role
  header, not the newline after the end-of-turn, not system/user turns or weight-0 turns.
  Assistant spans are found by rendering prefixes ``messages[:i]`` (with the generation
  prompt) and ``messages[:i+1]`` and diffing the texts; when a template is not prefix-stable
  (it re-renders earlier turns), by rendering once with placeholder answers. Either way the
  pieces must join to exactly the template's full rendering, or the row is an error. The
  rendering is tokenized whole (the ids of ``apply_chat_template(tokenize=True)``) and a token
  is supervised when it starts inside a supervised span (span by span without offsets).
- ``chat`` without a chat template (plain fallback): ``[BOS if added]``, then per message
  ``"System: {content}\\n"``, ``"User: {content}\\n"``, or ``"Assistant: "`` + content + EOS;
  content + EOS supervised on weight-1 assistant messages.

Truncation keeps the start of a row and cuts its end at ``max_seq_length``; a row left without a
supervised token is dropped (counted in ``n_dropped_all_masked``; ``n_truncated`` counts the kept
rows that were cut).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from steering_core.data.chat_template import chat_template_segments as _chat_template_segments
from steering_core.data.formats import (
    ChatMessage,
    DataFormat,
    DataProblem,
    DataValidationError,
    Example,
    ParsedDataset,
    Segment,
    ValidationReport,
    dataset_sha256,
    parse_jsonl,
    validate_jsonl,
)
from steering_core.errors import ConfigValidationError, SteeringUserError

__all__ = [  # the torch-free parsing API is re-exported for callers that have torch anyway
    "IGNORE_INDEX",
    "DataValidationError",
    "ParsedDataset",
    "TokenizationStats",
    "TokenizedDataset",
    "TokenizedRow",
    "ValidationReport",
    "collate",
    "dataset_sha256",
    "encode_prompt",
    "pad_token_id_for",
    "parse_jsonl",
    "supervised_spans",
    "tokenize_dataset",
    "validate_jsonl",
]

IGNORE_INDEX = -100
_Piece = tuple[str | list[int], bool]  # text (or token ids) and whether it is supervised


@dataclass(frozen=True)
class TokenizedRow:
    """One training row; ``row["input_ids"]`` works as well as ``row.input_ids``."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where unsupervised
    line: int | None = None  # the JSONL line it came from

    def __getitem__(self, key: str) -> list[int]:
        if key not in ("input_ids", "labels"):
            raise KeyError(key)
        return list(getattr(self, key))


@dataclass(frozen=True)
class TokenizationStats:
    n_rows: int  # rows kept
    n_dropped_all_masked: int  # rows with no supervised token left after truncation
    n_truncated: int  # kept rows cut at max_seq_length
    n_tokens: int  # tokens in kept rows
    n_supervised_tokens: int  # labels != IGNORE_INDEX in kept rows

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class TokenizedDataset:
    format: DataFormat
    rows: list[TokenizedRow]
    stats: TokenizationStats
    pad_token_id: int  # the tokenizer's pad token, else its EOS (used for padding only)
    max_seq_length: int

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> TokenizedRow:
        return self.rows[index]

    def __iter__(self) -> Iterator[TokenizedRow]:
        return iter(self.rows)


def pad_token_id_for(tokenizer: Any) -> int:
    """The id to pad with: the pad token, else EOS (labels stay -100 on padding either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise SteeringUserError("the tokenizer has neither a pad token nor an EOS token")


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prefix_ids(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before text on its own: BOS (Llama, Gemma) or nothing."""
    plain = _encode(tokenizer, "Hello")
    full = list(tokenizer("Hello", add_special_tokens=True)["input_ids"])
    starts = [i for i in range(len(full)) if full[i : i + len(plain)] == plain]
    return full[: starts[0]] if starts else []


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """A plain (non-chat) prompt's ids exactly as training rows start: prefix + tok(prompt)."""
    return _prefix_ids(tokenizer) + _encode(tokenizer, prompt)


@dataclass(frozen=True)
class _TokenizerFacts:
    eos: int
    prefix: list[int]  # what the tokenizer puts before text on its own (BOS or nothing)
    specials: list[str]  # special token texts, longest first: end-of-turn candidates

    @classmethod
    def of(cls, tokenizer: Any) -> _TokenizerFacts:
        if tokenizer.eos_token_id is None:
            raise SteeringUserError("the tokenizer has no EOS token; answers must end with one")
        found = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
        for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
            if getattr(added, "special", False):
                found.add(str(added.content))
        specials = sorted((t for t in found if t), key=len, reverse=True)
        return cls(int(tokenizer.eos_token_id), _prefix_ids(tokenizer), specials)


def _label_by_offsets(
    tokenizer: Any, segments: Sequence[Segment]
) -> tuple[list[int], list[int]] | None:
    """Tokenize the whole rendering at once (as ``apply_chat_template`` does) and supervise the
    tokens that start inside a supervised segment; None without offset support."""
    spans: list[tuple[int, int]] = []
    position = 0
    for segment in segments:
        if segment.trainable:
            spans.append((position, position + len(segment.text)))
        position += len(segment.text)
    text = "".join(s.text for s in segments)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return None
    ids = [int(i) for i in encoded["input_ids"]]
    starts = [int(offset[0]) for offset in encoded["offset_mapping"]]
    if starts != sorted(starts):
        return None  # offsets we cannot trust: tokenize segment by segment instead
    keep = [any(a <= start < b for a, b in spans) for start in starts]
    return ids, [i if k else IGNORE_INDEX for i, k in zip(ids, keep, strict=True)]


def _chat_plain_pieces(messages: Sequence[ChatMessage], eos: int) -> list[_Piece]:
    pieces: list[_Piece] = []
    for message in messages:
        header = f"{message.role.capitalize()}: "
        if message.role == "assistant":
            pieces += [(header, False), (message.content, message.trainable)]
            pieces.append(([eos], message.trainable))
        else:
            pieces.append((f"{header}{message.content}\n", False))
    return pieces


def _encode_pieces(tokenizer: Any, pieces: Sequence[_Piece]) -> tuple[list[int], list[int]]:
    """Tokenize pieces one by one (adjacent texts of one kind together) and label them."""
    merged: list[_Piece] = []
    for content, trainable in pieces:
        last = merged[-1] if merged else None
        if not content:
            continue
        if last and isinstance(content, str) and isinstance(last[0], str) and last[1] == trainable:
            merged[-1] = (last[0] + content, trainable)
        else:
            merged.append((content, trainable))
    input_ids: list[int] = []
    labels: list[int] = []
    for content, trainable in merged:
        ids = _encode(tokenizer, content) if isinstance(content, str) else list(content)
        input_ids += ids
        labels += ids if trainable else [IGNORE_INDEX] * len(ids)
    return input_ids, labels


def _tokenize(
    example: Example, fmt: DataFormat, tokenizer: Any, facts: _TokenizerFacts
) -> tuple[list[int], list[int]]:
    if fmt != "chat":
        pieces: list[_Piece] = [(facts.prefix, False)]
        pieces += [(s.text, s.trainable) for s in example if isinstance(s, Segment)]
        return _encode_pieces(tokenizer, [*pieces, ([facts.eos], True)])
    messages = [m for m in example if isinstance(m, ChatMessage)]
    if not getattr(tokenizer, "chat_template", None):
        pieces = [(facts.prefix, False), *_chat_plain_pieces(messages, facts.eos)]
        return _encode_pieces(tokenizer, pieces)
    segments = _chat_template_segments(tokenizer, messages, facts.specials)
    labelled = _label_by_offsets(tokenizer, segments)
    return labelled or _encode_pieces(tokenizer, [(s.text, s.trainable) for s in segments])


def tokenize_dataset(
    parsed: ParsedDataset, tokenizer: Any, *, max_seq_length: int
) -> TokenizedDataset:
    """Tokenize every example with answer-only labels, truncate, and drop unsupervised rows.

    Raises :class:`DataValidationError` when no row keeps a supervised token.
    """
    if max_seq_length < 2:  # a supervised token needs a token before it
        raise ConfigValidationError(f"max_seq_length must be at least 2, got {max_seq_length}")
    facts = _TokenizerFacts.of(tokenizer)
    rows: list[TokenizedRow] = []
    n_dropped = n_truncated = 0
    shortest: int | None = None
    needed: int | None = None  # the smallest max_seq_length that keeps a row
    for example, line in zip(parsed.examples, parsed.line_numbers, strict=True):
        try:
            input_ids, labels = _tokenize(example, parsed.format, tokenizer, facts)
        except LookupError as exc:
            raise DataValidationError([DataProblem(line, "messages", str(exc))]) from exc
        supervised = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        shortest = len(input_ids) if shortest is None else min(shortest, len(input_ids))
        if supervised:
            needed = supervised[0] + 1 if needed is None else min(needed, supervised[0] + 1)
        if not supervised or supervised[0] >= max_seq_length:
            n_dropped += 1
            continue
        if len(input_ids) > max_seq_length:
            n_truncated += 1
            input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
        rows.append(TokenizedRow(input_ids, labels, line))
    if not rows:
        hint = f"; a max_seq_length of {needed} would keep a row" if needed else ""
        message = (
            f"all {n_dropped} rows exceed max_seq_length={max_seq_length}: no answer token fits "
            f"(the shortest row is {shortest} tokens){hint}"
        )
        raise DataValidationError([DataProblem(None, None, message)])
    stats = TokenizationStats(
        n_rows=len(rows),
        n_dropped_all_masked=n_dropped,
        n_truncated=n_truncated,
        n_tokens=sum(len(r.input_ids) for r in rows),
        n_supervised_tokens=sum(sum(x != IGNORE_INDEX for x in r.labels) for r in rows),
    )
    return TokenizedDataset(parsed.format, rows, stats, pad_token_id_for(tokenizer), max_seq_length)


def collate(
    rows: Sequence[TokenizedRow | Mapping[str, Sequence[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row: ``input_ids`` (pad id), ``attention_mask`` (0 on
    padding) and ``labels`` (-100 on padding), all ``int64`` of shape ``(batch, longest)``."""
    if not rows:
        raise ValueError("cannot collate an empty batch")
    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        ids, row_labels = list(row["input_ids"]), list(row["labels"])
        if len(ids) != len(row_labels):
            raise ValueError(f"row {i}: {len(ids)} input_ids but {len(row_labels)} labels")
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor(row_labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def supervised_spans(labels: Sequence[int]) -> list[list[int]]:
    """The runs of supervised labels (token ids), in order: one per answer."""
    spans: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                spans.append([])
            spans[-1].append(int(label))
        previous = label
    return spans
