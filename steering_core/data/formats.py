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

This module reads the lines and parses the supervised formats; the example types are in
:mod:`.examples`, the problems and the report in :mod:`.problems`, the field checks in
:mod:`.json_fields` and the preference format's parser in :mod:`.preference` (all re-exported).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from steering_core.data.examples import (
    ALL_DATA_FORMATS,
    DATA_FORMATS,
    PREFERENCE_FORMAT,
    ChatMessage,
    DataFormat,
    Example,
    ParsedDataset,
    PreferenceExample,
    Segment,
)
from steering_core.data.json_fields import (
    CHAT_ROLES,
    FieldErrors,
    json_type,
    message_fields,
    string_field,
)
from steering_core.data.preference import PREFERENCE_OUTPUTS, parse_preference
from steering_core.data.problems import (
    MAX_REPORTED_PROBLEMS,
    MESSAGE_PROBLEMS_SHOWN,
    DataProblem,
    DataValidationError,
    ValidationReport,
)
from steering_core.data.text_checks import shown
from steering_core.hashing import sha256_file

__all__ = [  # the types and the preference format live in their own modules, re-exported here
    "ALL_DATA_FORMATS",
    "CHAT_ROLES",
    "DATA_FORMATS",
    "DEFAULT_MAX_LINE_BYTES",
    "MAX_REPORTED_PROBLEMS",
    "MESSAGE_PROBLEMS_SHOWN",
    "PREFERENCE_FORMAT",
    "PREFERENCE_OUTPUTS",
    "ChatMessage",
    "DataFormat",
    "DataProblem",
    "DataValidationError",
    "Example",
    "ParsedDataset",
    "PreferenceExample",
    "Segment",
    "Source",
    "ValidationReport",
    "alpaca_prompt",
    "dataset_sha256",
    "detect_format",
    "parse_example",
    "parse_jsonl",
    "validate_jsonl",
]

DEFAULT_MAX_LINE_BYTES = 1_000_000

Source = str | os.PathLike[str] | bytes | BinaryIO


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


def _parse_chat(obj: dict[str, Any], errors: FieldErrors) -> list[ChatMessage]:
    raw = obj["messages"]
    if not isinstance(raw, list):
        errors.append(("messages", f"expected an array of messages, got {json_type(raw)}"))
        return []
    messages: list[ChatMessage] = []
    for index, item in enumerate(raw):
        path = f"messages[{index}]"
        n_before = len(errors)
        fields = message_fields(item, path, errors)
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


def parse_example(obj: dict[str, Any], fmt: DataFormat) -> tuple[Example, list[tuple[str, str]]]:
    """One JSON object as an example of ``fmt``, and its (field, problem) pairs."""
    errors: list[tuple[str, str]] = []
    if fmt == PREFERENCE_FORMAT:
        return parse_preference(obj, errors), errors
    if fmt == "chat":
        if "messages" not in obj:
            return [], [("messages", "missing required field")]
        return _parse_chat(obj, errors), errors
    if fmt == "prompt_completion":
        prompt = string_field(obj, "prompt", "prompt", errors)
        completion = string_field(obj, "completion", "completion", errors)
        return [Segment(prompt, False), Segment(completion, True)], errors
    instruction = string_field(obj, "instruction", "instruction", errors)
    input_text = string_field(obj, "input", "input", errors, optional=True)
    output = string_field(obj, "output", "output", errors)
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


def _json_object(text: str) -> dict[str, Any] | str:
    """A line's JSON object, or (a string) why it holds none."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    except ValueError:  # Python's limit on the digits of an int read from text
        limit = sys.get_int_max_str_digits()
        return f"invalid JSON: an integer has more than {limit} digits"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {json_type(obj)}"
    return obj


@dataclass
class _Scan:
    """One pass over a training file: its report, its valid examples and their lines."""

    max_line_bytes: int
    report: ValidationReport = field(
        default_factory=lambda: ValidationReport(format=None, n_examples=0)
    )
    examples: list[Example] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    format_line: int = 0  # the line the file's format was told from

    def problem(self, line: int | None, path: str | None, message: str) -> None:
        self.report.n_problems += 1
        if len(self.report.problems) < MAX_REPORTED_PROBLEMS:
            self.report.problems.append(DataProblem(line, path, message))

    def read(self, number: int, body: bytes | None, length: int) -> None:
        """One physical line (``body`` None: over the limit): an example, problems, or nothing."""
        self.report.n_lines = number
        obj = self._object(number, body, length)
        if obj is None:
            return
        fmt = self._format(number, obj)
        if fmt is None:
            return
        example, errors = parse_example(obj, fmt)
        for path, message in errors:
            self.problem(number, path, message)
        if not errors:
            self.examples.append(example)
            self.line_numbers.append(number)

    def _object(self, number: int, body: bytes | None, length: int) -> dict[str, Any] | None:
        """The line's JSON object; None for a blank line or a problem (recorded)."""
        if body is None:
            limit = self.max_line_bytes
            self.problem(number, None, f"line is {length} bytes, over the limit of {limit}")
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem(number, None, f"invalid UTF-8 at byte {exc.start + 1} of the line")
            return None
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            return None
        obj = _json_object(text)
        if isinstance(obj, str):
            self.problem(number, None, obj)
            return None
        return obj

    def _format(self, number: int, obj: dict[str, Any]) -> DataFormat | None:
        """The file's format (the first line that tells it sets it); None when this line does
        not tell it or tells another (a problem, recorded)."""
        line_format = detect_format(obj)
        if self.report.format is None:
            if line_format is None:
                keys = ", ".join(shown(key) for key in sorted(obj)) or "none"
                self.problem(
                    number,
                    None,
                    "cannot tell the format: expected 'messages' (chat), 'prompt' and "
                    "'completion', 'instruction' and 'output' (alpaca), or 'input', "
                    "'preferred_output' and 'non_preferred_output' (preference); "
                    f"found keys: {keys}",
                )
                return None
            self.report.format, self.format_line = line_format, number
        elif line_format is not None and line_format != self.report.format:
            self.problem(
                number,
                None,
                f"mixed formats: this line is {line_format} but the file is "
                f"{self.report.format} (from line {self.format_line})",
            )
            return None
        return self.report.format

    def finish(self) -> tuple[ValidationReport, list[Example], list[int]]:
        self.report.n_examples = len(self.examples)
        if not self.examples and self.report.n_problems == 0:
            self.problem(None, None, "no examples: the file is empty or holds only blank lines")
        return self.report, self.examples, self.line_numbers


def _scan(source: Source, max_line_bytes: int) -> tuple[ValidationReport, list[Example], list[int]]:
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    scan = _Scan(max_line_bytes)
    stream, owned = _open(source)
    try:
        for number, body, length in _lines(stream, max_line_bytes):
            scan.read(number, body, length)
    finally:
        if owned:
            stream.close()
    return scan.finish()


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
