"""What is wrong with a training file, torch-free: line-numbered problems, the error that carries
them, and the validation report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steering_core.data.examples import DataFormat
from steering_core.errors import SteeringUserError

MAX_REPORTED_PROBLEMS = 1000  # a report keeps the first ones and counts the rest
MESSAGE_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a training file: where (line, field) and what."""

    line: int | None  # 1-based; None: the file as a whole
    field: str | None  # e.g. "messages[2].role"; None: the line as a whole
    message: str

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


class DataValidationError(SteeringUserError):
    """A training file (or its tokenization) is unusable; ``problems`` says where and why."""

    def __init__(self, problems: list[DataProblem], n_problems: int | None = None) -> None:
        self.problems = list(problems)
        self.n_problems = len(self.problems) if n_problems is None else n_problems
        shown = "\n".join(f"  {p}" for p in self.problems[:MESSAGE_PROBLEMS_SHOWN])
        more = self.n_problems - min(len(self.problems), MESSAGE_PROBLEMS_SHOWN)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        plural = "" if self.n_problems == 1 else "s"
        head = f"invalid training data ({self.n_problems} problem{plural}):"
        super().__init__(f"{head}\n{shown}{tail}")


@dataclass
class ValidationReport:
    """What :func:`~steering_core.data.formats.validate_jsonl` found; ``ok`` when the file can be
    trained on."""

    format: DataFormat | None
    n_examples: int  # valid examples
    problems: list[DataProblem] = field(default_factory=list)  # the first MAX_REPORTED_PROBLEMS
    n_problems: int = 0
    n_lines: int = 0  # physical lines read

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def error(self) -> DataValidationError:
        return DataValidationError(self.problems, self.n_problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "n_examples": self.n_examples,
            "n_lines": self.n_lines,
            "n_problems": self.n_problems,
            "problems": [p.to_dict() for p in self.problems],
        }


__all__ = [
    "MAX_REPORTED_PROBLEMS",
    "MESSAGE_PROBLEMS_SHOWN",
    "DataProblem",
    "DataValidationError",
    "ValidationReport",
]
