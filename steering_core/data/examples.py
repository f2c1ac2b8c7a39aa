"""The parsed training data, torch-free: the formats, the examples a line becomes, and a parsed
file (:mod:`steering_core.data.formats` describes each format's lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

DataFormat = Literal["chat", "prompt_completion", "alpaca", "preference"]
# the supervised formats (answer-only next-token loss); preference pairs are not among them
DATA_FORMATS: tuple[DataFormat, ...] = ("chat", "prompt_completion", "alpaca")
PREFERENCE_FORMAT: DataFormat = "preference"
ALL_DATA_FORMATS: tuple[DataFormat, ...] = (*DATA_FORMATS, PREFERENCE_FORMAT)


class Segment(NamedTuple):
    """A piece of an example's text; ``trainable`` pieces are supervised."""

    text: str
    trainable: bool


class ChatMessage(NamedTuple):
    role: str
    content: str
    weight: int = 1  # assistant messages only; 0 = context, no loss

    @property
    def trainable(self) -> bool:
        return self.role == "assistant" and self.weight == 1


class PreferenceExample(NamedTuple):
    """A preference pair: the prompt's messages (assistant ones are context, weight 0) and the
    preferred and non-preferred answers (assistant messages, weight 1)."""

    prompt: list[ChatMessage]
    preferred: ChatMessage
    non_preferred: ChatMessage


Example = list[Segment] | list[ChatMessage] | PreferenceExample


@dataclass(frozen=True)
class ParsedDataset:
    """A valid training file: its format and one example per non-blank line."""

    format: DataFormat
    examples: list[Example]
    line_numbers: list[int]  # the line each example came from

    def __len__(self) -> int:
        return len(self.examples)


__all__ = [
    "ALL_DATA_FORMATS",
    "DATA_FORMATS",
    "PREFERENCE_FORMAT",
    "ChatMessage",
    "DataFormat",
    "Example",
    "ParsedDataset",
    "PreferenceExample",
    "Segment",
]
