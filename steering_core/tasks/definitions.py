"""Task registry: ``get_task(name)`` -> template formatting, gold answer and scorer of a task.

A :class:`Task` turns a benchmark-style record into ``(prompt, completion)`` with the task's
template, reads the gold answer of a record, and scores generated text. Records that are
already formatted (they have ``prompt`` and ``completion``, like the JSONL files written by
:mod:`steering_core.tasks.build_data`) pass through unchanged; their gold is their ``answer``
field or, without one, the answer the task's scorer extracts from the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from steering_core.errors import SteeringUserError
from steering_core.tasks import scorers, templates
from steering_core.tasks.records import (
    ARCRecord,
    BoolQRecord,
    GSM8KRecord,
    ListOpsRecord,
    WinograndeRecord,
)

Record = Mapping[str, Any]
Formatter = Callable[[Record], tuple[str, str]]
GoldReader = Callable[[Record], str]
T = TypeVar("T")


class UnknownTaskError(SteeringUserError, ValueError):
    """No task of that name; the message lists the known ones."""


class InvalidRecordError(SteeringUserError, ValueError):
    """A record does not fit its task's format (missing field, bad answer, ...)."""


@dataclass(frozen=True)
class Task:
    """One evaluation task: its template (``format``), gold reader and scorer."""

    name: str
    description: str
    scorer: scorers.Scorer
    formatter: Formatter | None = None
    gold_reader: GoldReader | None = None

    def extract(self, generated: str) -> str | None:
        return self.scorer.extract(generated)

    def score(self, generated: str, gold: str) -> bool:
        return self.scorer.score(generated, gold)

    def format(self, record: Record) -> tuple[str, str]:
        """``(prompt, completion)`` of a record, rendered with the task's template."""
        if "prompt" in record and "completion" in record:
            return str(record["prompt"]), str(record["completion"])
        if self.formatter is None:
            raise InvalidRecordError(
                f"task {self.name!r} needs records with 'prompt' and 'completion' fields; "
                f"got fields {sorted(record)}"
            )
        return self._guard(self.formatter, record)

    def gold(self, record: Record) -> str:
        """The gold answer of a record, as the scorer's ``gold`` argument."""
        if "prompt" in record and "completion" in record:
            if record.get("answer") is not None:
                return str(record["answer"])
            found = self.extract(str(record["completion"]))
            if found is None:
                raise InvalidRecordError(
                    f"task {self.name!r}: record has no 'answer' and none can be read from its "
                    f"completion {record['completion']!r}"
                )
            return found
        if self.gold_reader is None:
            raise InvalidRecordError(f"task {self.name!r}: record has no 'prompt'/'completion'")
        return self._guard(self.gold_reader, record)

    def _guard(self, function: Callable[[Record], T], record: Record) -> T:
        try:
            return function(record)
        except (ValidationError, ValueError) as exc:
            raise InvalidRecordError(f"invalid {self.name!r} record: {exc}") from exc


def _boolq_format(record: Record) -> tuple[str, str]:
    r = BoolQRecord.model_validate(record)
    return templates.boolq_prompt(r.passage, r.question), templates.boolq_completion(r.answer)


def _winogrande_format(record: Record) -> tuple[str, str]:
    r = WinograndeRecord.model_validate(record)
    prompt = templates.winogrande_prompt(r.sentence, r.option1, r.option2)
    return prompt, templates.winogrande_completion(r.answer)


def _gsm8k_format(record: Record) -> tuple[str, str]:
    r = GSM8KRecord.model_validate(record)
    return templates.gsm8k_prompt(r.question), templates.gsm8k_completion(
        r.rationale or "", r.number
    )


def _arc_format(record: Record) -> tuple[str, str]:
    r = ARCRecord.model_validate(record)
    index = r.answer_index
    letter = templates.ARC_LETTERS[index]
    prompt = templates.arc_prompt(r.question, r.texts)
    return prompt, templates.arc_completion(letter, r.texts[index])


def _listops_format(record: Record) -> tuple[str, str]:
    r = ListOpsRecord.model_validate(record)
    prompt = templates.listops_prompt(r.expression.strip())
    return prompt, templates.listops_completion(r.value)


_BUILTIN: dict[str, Task] = {
    "boolq": Task(
        "boolq",
        "BoolQ: passage + yes/no question -> 'Answer: True.' / 'Answer: False.'",
        scorers.BOOLQ,
        _boolq_format,
        lambda r: str(BoolQRecord.model_validate(r).answer).lower(),
    ),
    "winogrande": Task(
        "winogrande",
        "Winogrande: fill the blank with Option1 or Option2 -> 'Answer: Option1.'",
        scorers.WINOGRANDE,
        _winogrande_format,
        lambda r: WinograndeRecord.model_validate(r).answer,
    ),
    "gsm8k": Task(
        "gsm8k",
        "GSM8K: word problem -> rationale + 'Answer: N' (|pred - gold| < 1e-4)",
        scorers.GSM8K,
        _gsm8k_format,
        lambda r: GSM8KRecord.model_validate(r).number,
    ),
    "arc": Task(
        "arc",
        "ARC: multiple choice (A), (B), ... -> 'Answer: (B) text.'",
        scorers.ARC,
        _arc_format,
        lambda r: templates.ARC_LETTERS[ARCRecord.model_validate(r).answer_index],
    ),
    "listops": Task(
        "listops",
        "ListOps: nested MAX/MIN/MED/SM expression -> '<answer>N</answer>'",
        scorers.LISTOPS,
        _listops_format,
        lambda r: str(ListOpsRecord.model_validate(r).value),
    ),
}
# Generated word problems share GSM8K's template and scorer.
_BUILTIN["arithmetic"] = Task(
    "arithmetic",
    "Generated GSM8K-style word problems (steering_core.tasks.arithmetic)",
    scorers.GSM8K,
    _gsm8k_format,
    _BUILTIN["gsm8k"].gold_reader,
)

TASK_NAMES: tuple[str, ...] = (*_BUILTIN, "exact", "regex")


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (case-insensitive).

    Options: ``exact`` takes ``case_sensitive`` (default True); ``regex`` takes ``pattern``
    (required, exactly one capture group) and ``case_sensitive``. Both need formatted records
    (``prompt``/``completion``); their gold is the record's ``answer``, else for ``exact`` the
    stripped completion and for ``regex`` the pattern's group in the completion.
    """
    key = name.strip().lower()
    if key not in TASK_NAMES:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    allowed = {"exact": {"case_sensitive"}, "regex": {"pattern", "case_sensitive"}}.get(key, set())
    unexpected = sorted(set(options) - allowed)
    if unexpected:
        raise ValueError(
            f"task {key!r} takes no option(s) {unexpected}; it accepts {sorted(allowed) or 'none'}"
        )
    if key == "exact":
        scorer = scorers.make_exact_scorer(case_sensitive=bool(options.get("case_sensitive", True)))
        return Task("exact", "Exact match of the stripped generation with the gold", scorer)
    if key == "regex":
        if "pattern" not in options:
            raise ValueError("task 'regex' needs a 'pattern' option with one capture group")
        scorer = scorers.make_regex_scorer(
            str(options["pattern"]), case_sensitive=bool(options.get("case_sensitive", True))
        )
        return Task("regex", f"First match of {options['pattern']!r}, group 1 vs gold", scorer)
    return _BUILTIN[key]
