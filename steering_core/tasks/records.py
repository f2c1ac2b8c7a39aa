"""Benchmark-style input records of the evaluation tasks (pydantic, torch-free).

Unknown fields are ignored: public datasets carry ids and metadata the templates do not use.
Field names follow the Hugging Face releases where they exist (BoolQ ``passage/question/answer``,
Winogrande ``sentence/option1/option2/answer``, GSM8K ``question/answer`` with ``#### N``, ARC
``question/choices/answerKey``), so rows of those datasets validate as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from steering_core.tasks.listops import evaluate_expression
from steering_core.tasks.templates import ARC_LETTERS, format_number, split_gsm8k_solution


class TaskRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BoolQRecord(TaskRecord):
    passage: str
    question: str
    answer: bool


class WinograndeRecord(TaskRecord):
    sentence: str
    option1: str
    option2: str
    answer: Literal["1", "2"]

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_as_text(cls, value: Any) -> Any:
        return str(value).strip() if isinstance(value, int | str) else value


class GSM8KRecord(TaskRecord):
    """``question`` + ``rationale`` + numeric ``answer``; or the original GSM8K ``answer`` text
    (``steps ... #### 72``) with no ``rationale``, which is split into both."""

    question: str
    rationale: str | None = None
    answer: str | int | float

    @model_validator(mode="before")
    @classmethod
    def _split_solution(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and data.get("rationale") is None
            and isinstance(data.get("answer"), str)
            and "####" in data["answer"]
        ):
            rationale, number = split_gsm8k_solution(data["answer"])
            return {**data, "rationale": rationale, "answer": number}
        return data

    @field_validator("answer")
    @classmethod
    def _numeric(cls, value: str | int | float) -> str | int | float:
        format_number(value)  # raises ValueError for a non-numeric answer
        return value

    @property
    def number(self) -> str:
        return format_number(self.answer)


class ARCChoice(TaskRecord):
    label: str
    text: str


class ARCRecord(TaskRecord):
    """``choices`` as a list of texts, a list of ``{label, text}``, or the Hugging Face
    ``{"text": [...], "label": [...]}``. ``answer`` (or ``answerKey``) is a choice's label, a
    letter, or a 1-based number; prompts always show the choices as (A), (B), ... in order."""

    question: str
    choices: list[str] | list[ARCChoice] | dict[str, list[str]]
    answer: str | int = Field(validation_alias=AliasChoices("answer", "answerKey"))

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self._labelled()]

    def _labelled(self) -> list[tuple[str, str]]:
        if isinstance(self.choices, dict):
            texts = self.choices.get("text", [])
            labels = self.choices.get("label", list(ARC_LETTERS[: len(texts)]))
            return list(zip(labels, texts, strict=True))
        return [
            (c.label, c.text) if isinstance(c, ARCChoice) else (ARC_LETTERS[i], c)
            for i, c in enumerate(self.choices)
        ]

    @property
    def answer_index(self) -> int:
        labelled = self._labelled()
        key = str(self.answer).strip().strip("()").strip()
        labels = [label.strip() for label, _ in labelled]
        if key in labels:
            return labels.index(key)
        if len(key) == 1 and key.upper() in ARC_LETTERS[: len(labelled)]:
            return ARC_LETTERS.index(key.upper())
        if key.isdigit() and 1 <= int(key) <= len(labelled):
            return int(key) - 1
        raise ValueError(f"ARC answer {self.answer!r} names none of the choices {labels}")

    @model_validator(mode="after")
    def _check(self) -> ARCRecord:
        if not 2 <= len(self._labelled()) <= len(ARC_LETTERS):
            raise ValueError(f"ARC needs 2..{len(ARC_LETTERS)} choices")
        _ = self.answer_index
        return self


class ListOpsRecord(TaskRecord):
    """An ``expression`` in dataset notation; an ``answer``, if given, must be its value."""

    expression: str
    answer: int | None = None

    @model_validator(mode="after")
    def _check(self) -> ListOpsRecord:
        value = evaluate_expression(self.expression)
        if self.answer is not None and self.answer != value:
            raise ValueError(f"answer {self.answer} != value {value} of {self.expression!r}")
        return self

    @property
    def value(self) -> int:
        return evaluate_expression(self.expression)
