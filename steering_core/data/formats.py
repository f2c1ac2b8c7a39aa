"""Training files: JSONL parsing and validation, torch-free (the API imports this module).

Four formats, detected per file from the first line that is a JSON object with recognisable
keys, and then required on every line. Three are supervised (answer-only next-token loss):

- ``chat`` (OpenAI): ``{"messages": [{"role": "system"|"user"|"assistant", "content": str,
  "weight": 0|1 (optional, assistant messages only)}, ...]}``. Loss on assistant messages with
  weight 1 (the default); at least one such message per line. Other message keys are ignored.
- ``prompt_completion``: ``{"prompt": str, "completion": str}``; extra keys are ignored.
- ``alpaca``: ``{"instruction": str, "input": str (optional, may be null), "output": str}``.
  The prompt is ``instruction + ("\\n\\n" + input if input != "" else "") + "\\n"`` and the
  completion is ``output`` (:func:`alpaca_prompt`).

and one holds preference pairs (OpenAI's DPO files):

- ``preference``: ``{"input": {"messages": [...], "tools": [] (optional, must be empty)},
  "preferred_output": [{"role": "assistant", "content": str}], "non_preferred_output": [...]}``.
  The input's messages are the prompt (its last message is the user's; assistant messages in it
  are context, weight 0); each output is exactly one non-empty assistant message, trained
  (weight 1), and the two must differ. Other keys (``parallel_tool_calls``) are ignored.
  A line with ``preferred_output`` or ``non_preferred_output`` is in this format.

Supervised non-chat examples become two segments ``[(prompt, False), (completion, True)]``;
chat examples keep their messages; preference examples are :class:`PreferenceExample`. The
tokenizer (``steering_core.data.batches``) appends and supervises EOS.

Lines are split on ``\\n`` (a trailing ``\\r`` is dropped), blank lines are skipped, a UTF-8 BOM
at the start of the file is ignored, and line numbers are 1-based physical lines. Field paths
index messages from 0 (``messages[1].role`` is the second message).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

from steering_core.data.text_checks import lone_surrogate, shown
from steering_core.errors import SteeringUserError
from steering_core.hashing import sha256_file

DataFormat = Literal["chat", "prompt_completion", "alpaca", "preference"]
# the supervised formats (answer-only next-token loss); preference pairs are not among them
DATA_FORMATS: tuple[DataFormat, ...] = ("chat", "prompt_completion", "alpaca")
PREFERENCE_FORMAT: DataFormat = "preference"
ALL_DATA_FORMATS: tuple[DataFormat, ...] = (*DATA_FORMATS, PREFERENCE_FORMAT)
PREFERENCE_OUTPUTS = ("preferred_output", "non_preferred_output")
CHAT_ROLES = ("system", "user", "assistant")
DEFAULT_MAX_LINE_BYTES = 1_000_000
MAX_REPORTED_PROBLEMS = 1000  # a report keeps the first ones and counts the rest
MESSAGE_PROBLEMS_SHOWN = 10

Source = str | os.PathLike[str] | bytes | BinaryIO


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


@dataclass
class ValidationReport:
    """What :func:`validate_jsonl` found; ``ok`` when the file can be trained on."""

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


def alpaca_prompt(instruction: str, input_text: str | None) -> str:
    """``instruction``, then ``"\\n\\n" + input`` when input is non-empty, then ``"\\n"``."""
    return instruction + (f"\n\n{input_text}" if input_text else "") + "\n"


def detect_format(obj: dict[str, Any]) -> DataFormat | None:
    """The format a JSON object's keys point to: a preference output key wins over the others
    (no other format has one), then ``messages``."""
    if any(key in obj for key in PREFERENCE_OUTPUTS):
        return PREFERENCE_FORMAT
    if "messages" in obj:
        return "chat"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _string_field(
    obj: dict[str, Any], key: str, path: str, errors: list[tuple[str, str]], optional: bool = False
) -> str:
    if key not in obj or (optional and obj[key] is None):
        if not optional:
            errors.append((path, "missing required field"))
        return ""
    value = obj[key]
    if not isinstance(value, str):
        errors.append((path, f"expected a string, got {_json_type(value)}"))
        return ""
    problem = lone_surrogate(value)  # a tokenizer fails on it, far from its line
    if problem is not None:
        errors.append((path, problem))
        return ""
    return value


def _message_fields(
    item: Any, path: str, errors: list[tuple[str, str]], roles: tuple[str, ...] = CHAT_ROLES
) -> tuple[str, str] | None:
    """A message's role (one of ``roles``) and content (a string); None when either is wrong."""
    if not isinstance(item, dict):
        errors.append((path, f"expected an object, got {_json_type(item)}"))
        return None
    n_before = len(errors)
    role = item.get("role")
    if "role" not in item:
        errors.append((f"{path}.role", "missing required field"))
    elif not isinstance(role, str):
        errors.append((f"{path}.role", f"expected a string, got {_json_type(role)}"))
    elif role not in roles:
        expected = (
            f"is not {roles[0]!r}" if len(roles) == 1 else f"is not one of {', '.join(roles)}"
        )
        errors.append((f"{path}.role", f"{role!r} {expected}"))
    content = _string_field(item, "content", f"{path}.content", errors)
    return (str(role), content) if len(errors) == n_before else None


def _parse_chat(obj: dict[str, Any], errors: list[tuple[str, str]]) -> list[ChatMessage]:
    raw = obj["messages"]
    if not isinstance(raw, list):
        errors.append(("messages", f"expected an array of messages, got {_json_type(raw)}"))
        return []
    messages: list[ChatMessage] = []
    for index, item in enumerate(raw):
        path = f"messages[{index}]"
        n_before = len(errors)
        fields = _message_fields(item, path, errors)
        if fields is None and not isinstance(item, dict):
            continue
        role = item.get("role")
        weight = item.get("weight", 1)
        if "weight" in item:
            if isinstance(weight, bool) or weight not in (0, 1):
                errors.append((f"{path}.weight", f"{weight!r} is not 0 or 1"))
            elif role in ("system", "user"):
                errors.append((f"{path}.weight", "only assistant messages take a weight"))
        if fields is not None and len(errors) == n_before:
            messages.append(ChatMessage(fields[0], fields[1], int(weight)))
    if errors:
        return messages
    if not any(m.role == "assistant" for m in messages):
        errors.append(("messages", "no message with role 'assistant' (nothing to train on)"))
    elif not any(m.trainable for m in messages):
        errors.append(("messages", "every assistant message has weight 0 (nothing to train on)"))
    return messages


_NO_WEIGHT = "preference messages take no weight (the input is context, the outputs are trained)"


def _parse_preference_input(
    obj: dict[str, Any], errors: list[tuple[str, str]]
) -> list[ChatMessage]:
    if "input" not in obj:
        errors.append(("input", "missing required field"))
        return []
    raw = obj["input"]
    if not isinstance(raw, dict):
        errors.append(("input", f"expected an object, got {_json_type(raw)}"))
        return []
    tools = raw.get("tools")
    if isinstance(tools, list) and tools:
        errors.append(("input.tools", "tools are not supported (leave it out or empty)"))
    elif tools is not None and not isinstance(tools, list):
        errors.append(("input.tools", f"expected an array, got {_json_type(tools)}"))
    if "messages" not in raw:
        errors.append(("input.messages", "missing required field"))
        return []
    items = raw["messages"]
    if not isinstance(items, list):
        errors.append(("input.messages", f"expected an array of messages, got {_json_type(items)}"))
        return []
    if not items:
        errors.append(("input.messages", "no messages (a preference answers a user message)"))
        return []
    prompt: list[ChatMessage] = []
    for index, item in enumerate(items):
        path = f"input.messages[{index}]"
        fields = _message_fields(item, path, errors)
        if isinstance(item, dict) and "weight" in item:
            errors.append((f"{path}.weight", _NO_WEIGHT))
        elif fields is not None:
            role, content = fields
            prompt.append(ChatMessage(role, content, 0 if role == "assistant" else 1))
    if len(prompt) == len(items) and prompt[-1].role != "user":
        errors.append(
            (
                f"input.messages[{len(items) - 1}].role",
                f"the last input message must be the user's (a preference answers a user "
                f"turn), got {prompt[-1].role!r}",
            )
        )
    return prompt


def _parse_preference_output(
    obj: dict[str, Any], key: str, errors: list[tuple[str, str]]
) -> ChatMessage | None:
    if key not in obj:
        errors.append((key, "missing required field"))
        return None
    raw = obj[key]
    if not isinstance(raw, list):
        errors.append((key, f"expected an array of one message, got {_json_type(raw)}"))
        return None
    if len(raw) != 1:
        errors.append((key, f"expected exactly one message, got {len(raw)}"))
        return None
    path = f"{key}[0]"
    fields = _message_fields(raw[0], path, errors, roles=("assistant",))
    if isinstance(raw[0], dict) and "weight" in raw[0]:
        errors.append((f"{path}.weight", _NO_WEIGHT))
        return None
    if fields is None:
        return None
    if fields[1] == "":
        errors.append((f"{path}.content", "must not be empty (an answer to prefer or reject)"))
        return None
    return ChatMessage("assistant", fields[1], 1)


def _parse_preference(obj: dict[str, Any], errors: list[tuple[str, str]]) -> PreferenceExample:
    prompt = _parse_preference_input(obj, errors)
    preferred, non_preferred = (
        _parse_preference_output(obj, k, errors) for k in PREFERENCE_OUTPUTS
    )
    if (
        preferred is not None
        and non_preferred is not None
        and preferred.content == non_preferred.content
    ):
        errors.append(
            (
                "non_preferred_output[0].content",
                "equals the preferred output's content, so the pair teaches nothing",
            )
        )
    missing = ChatMessage("assistant", "")  # stands in for an output with problems
    return PreferenceExample(prompt, preferred or missing, non_preferred or missing)


def parse_example(obj: dict[str, Any], fmt: DataFormat) -> tuple[Example, list[tuple[str, str]]]:
    """One JSON object as an example of ``fmt``, and its (field, problem) pairs."""
    errors: list[tuple[str, str]] = []
    if fmt == PREFERENCE_FORMAT:
        return _parse_preference(obj, errors), errors
    if fmt == "chat":
        if "messages" not in obj:
            return [], [("messages", "missing required field")]
        return _parse_chat(obj, errors), errors
    if fmt == "prompt_completion":
        prompt = _string_field(obj, "prompt", "prompt", errors)
        completion = _string_field(obj, "completion", "completion", errors)
        return [Segment(prompt, False), Segment(completion, True)], errors
    instruction = _string_field(obj, "instruction", "instruction", errors)
    input_text = _string_field(obj, "input", "input", errors, optional=True)
    output = _string_field(obj, "output", "output", errors)
    return [Segment(alpaca_prompt(instruction, input_text), False), Segment(output, True)], errors


def _open(source: Source) -> tuple[BinaryIO, bool]:
    if isinstance(source, bytes | bytearray):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, str | os.PathLike):
        return Path(source).open("rb"), True
    return source, False


def _lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, content without newline or None when too long, content length in bytes).

    Reads at most ``max_line_bytes`` + 2 bytes of a line at once, so a huge line costs no memory.
    """
    number = 0
    while True:
        chunk = stream.readline(max_line_bytes + 2)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            body = chunk[:-1].removesuffix(b"\r")
            yield number, (body if len(body) <= max_line_bytes else None), len(body)
            continue
        total, ended = len(chunk), False
        while not ended:  # an over-long line (or the last line): consume the rest of it
            more = stream.readline(1 << 20)
            if not more:
                break
            total += len(more)
            ended = more.endswith(b"\n")
        if total == len(chunk):  # the last line, without a newline, read whole
            body = chunk.removesuffix(b"\r")
            yield number, (body if len(body) <= max_line_bytes else None), len(body)
        else:
            yield number, None, total - (1 if ended else 0)


def _scan(source: Source, max_line_bytes: int) -> tuple[ValidationReport, list[Example], list[int]]:
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    report = ValidationReport(format=None, n_examples=0)
    examples: list[Example] = []
    line_numbers: list[int] = []
    format_line = 0

    def problem(line: int | None, path: str | None, message: str) -> None:
        report.n_problems += 1
        if len(report.problems) < MAX_REPORTED_PROBLEMS:
            report.problems.append(DataProblem(line, path, message))

    stream, owned = _open(source)
    try:
        for number, body, length in _lines(stream, max_line_bytes):
            report.n_lines = number
            if body is None:
                problem(number, None, f"line is {length} bytes, over the limit of {max_line_bytes}")
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem(number, None, f"invalid UTF-8 at byte {exc.start + 1} of the line")
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problem(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                problem(number, None, "invalid JSON: nested too deeply")
                continue
            except ValueError:  # Python's limit on the digits of an int read from text
                limit = sys.get_int_max_str_digits()
                problem(number, None, f"invalid JSON: an integer has more than {limit} digits")
                continue
            if not isinstance(obj, dict):
                problem(number, None, f"expected a JSON object, got {_json_type(obj)}")
                continue
            line_format = detect_format(obj)
            if report.format is None:
                if line_format is None:
                    keys = ", ".join(shown(key) for key in sorted(obj)) or "none"
                    problem(
                        number,
                        None,
                        "cannot tell the format: expected 'messages' (chat), 'prompt' and "
                        "'completion', 'instruction' and 'output' (alpaca), or 'input', "
                        "'preferred_output' and 'non_preferred_output' (preference); "
                        f"found keys: {keys}",
                    )
                    continue
                report.format, format_line = line_format, number
            elif line_format is not None and line_format != report.format:
                problem(
                    number,
                    None,
                    f"mixed formats: this line is {line_format} but the file is "
                    f"{report.format} (from line {format_line})",
                )
                continue
            example, errors = parse_example(obj, report.format)
            for path, message in errors:
                problem(number, path, message)
            if not errors:
                examples.append(example)
                line_numbers.append(number)
    finally:
        if owned:
            stream.close()
    report.n_examples = len(examples)
    if not examples and report.n_problems == 0:
        problem(None, None, "no examples: the file is empty or holds only blank lines")
    return report, examples, line_numbers


def validate_jsonl(
    path_or_bytes: Source, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> ValidationReport:
    """Check a JSONL training file; never raises for content problems (I/O errors do raise).

    ``path_or_bytes``: a path (``str`` is always a path), the file's bytes, or a binary stream.
    """
    return _scan(path_or_bytes, max_line_bytes)[0]


def parse_jsonl(
    path_or_bytes: Source, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> ParsedDataset:
    """Parse a JSONL training file; raise :class:`DataValidationError` on any problem."""
    report, examples, line_numbers = _scan(path_or_bytes, max_line_bytes)
    if not report.ok or report.format is None:
        raise report.error()
    return ParsedDataset(report.format, examples, line_numbers)


dataset_sha256 = sha256_file  # the name the manifest and the API use for datasets
