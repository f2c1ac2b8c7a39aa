"""Preference training files (OpenAI's DPO JSONL): parsing, detection, line-numbered problems.

Torch-free, like the module: every file is written to ``tmp_path`` and read back from disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steering_core.data.formats import (
    ALL_DATA_FORMATS,
    DATA_FORMATS,
    PREFERENCE_FORMAT,
    ChatMessage,
    DataValidationError,
    PreferenceExample,
    Segment,
    detect_format,
    parse_jsonl,
    validate_jsonl,
)


def pair(
    *turns: tuple[str, str],
    preferred: str = "Paris.",
    non_preferred: str = "Lyon.",
    **extra: Any,
) -> dict[str, Any]:
    """A preference line: ``turns`` are the input messages (default: one user question)."""
    turns = turns or (("user", "Capital of France?"),)
    return {
        "input": {
            "messages": [{"role": r, "content": c} for r, c in turns],
            "tools": [],
            "parallel_tool_calls": True,
        },
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
        **extra,
    }


def write(tmp_path: Path, *rows: Any, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_bytes(text.encode())
    return path


def with_input(**changes: Any) -> dict[str, Any]:
    row = pair()
    row["input"].update(changes)
    return row


PAIR = pair()
CHAT = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
ALPACA = {"instruction": "Add.", "input": "2 and 2", "output": "4"}
PC = {"prompt": "2+2?", "completion": "4"}


# -- the format's names --------------------------------------------------------------------
def test_preference_is_a_format_but_not_a_supervised_one() -> None:
    assert DATA_FORMATS == ("chat", "prompt_completion", "alpaca")
    assert PREFERENCE_FORMAT == "preference"
    assert ALL_DATA_FORMATS == ("chat", "prompt_completion", "alpaca", "preference")


# -- parsing -------------------------------------------------------------------------------
def test_a_valid_file_parses_with_prompt_context_and_trained_outputs(tmp_path: Path) -> None:
    multi_turn = pair(
        ("system", "Be brief."),
        ("user", "2+2?"),
        ("assistant", "4"),
        ("user", "And 3+3?"),
        preferred="6",
        non_preferred="7",
    )
    path = write(tmp_path, PAIR, "", "  ", multi_turn)
    parsed = parse_jsonl(path)
    assert parsed.format == "preference"
    assert len(parsed) == 2 and parsed.line_numbers == [1, 4]
    first, second = parsed.examples
    assert first == PreferenceExample(
        prompt=[ChatMessage("user", "Capital of France?")],
        preferred=ChatMessage("assistant", "Paris.", 1),
        non_preferred=ChatMessage("assistant", "Lyon.", 1),
    )
    assert [(m.role, m.content) for m in second.prompt] == [
        ("system", "Be brief."),
        ("user", "2+2?"),
        ("assistant", "4"),
        ("user", "And 3+3?"),
    ]
    # an assistant message in the input is context: weight 0, never trained
    assert second.prompt[2].weight == 0
    assert not any(m.trainable for m in second.prompt)
    assert second.preferred.trainable and second.non_preferred.trainable
    assert (second.preferred.content, second.non_preferred.content) == ("6", "7")
    assert parse_jsonl(str(path)) == parsed == parse_jsonl(path.read_bytes())


def test_extra_keys_empty_or_missing_tools_and_empty_input_content_are_accepted(
    tmp_path: Path,
) -> None:
    no_tools = pair()
    del no_tools["input"]["tools"]
    null_tools = with_input(tools=None)
    extras = pair(metadata={"source": "x"})
    extras["input"]["seed"] = 3
    extras["preferred_output"][0]["name"] = "bot"
    empty_user = pair(("user", ""))
    parsed = parse_jsonl(write(tmp_path, no_tools, null_tools, extras, empty_user))
    assert parsed.format == "preference" and parsed.line_numbers == [1, 2, 3, 4]
    assert parsed.examples[3].prompt == [ChatMessage("user", "")]


def test_bom_crlf_and_blank_lines_behave_as_in_other_formats(tmp_path: Path) -> None:
    body = (json.dumps(PAIR) + "\r\n\r\n   \r\n" + json.dumps(pair(preferred="Yes"))).encode()
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body)
    parsed = parse_jsonl(path)
    assert parsed.format == "preference"
    assert parsed.line_numbers == [1, 4]
    assert [e.preferred.content for e in parsed.examples] == ["Paris.", "Yes"]
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n")
    report = validate_jsonl(blank)
    assert [str(p) for p in report.problems] == [
        "file: no examples: the file is empty or holds only blank lines"
    ]


# -- detection -----------------------------------------------------------------------------
def test_detection() -> None:
    assert detect_format(PAIR) == "preference"
    assert detect_format({"input": {}, "non_preferred_output": []}) == "preference"
    # an output key alone is enough: no other format has one
    assert detect_format({"preferred_output": []}) == "preference"
    # the other formats are unchanged: alpaca has an "input" too, chat's messages are top-level
    assert detect_format(ALPACA) == "alpaca"
    assert detect_format({"input": "x", "output": "y"}) == "alpaca"
    assert detect_format(CHAT) == "chat"
    assert detect_format(PC) == "prompt_completion"
    assert detect_format({"input": {"messages": []}}) is None


def test_supervised_files_still_parse_as_before(tmp_path: Path) -> None:
    parsed = parse_jsonl(write(tmp_path, ALPACA))
    assert parsed.format == "alpaca"
    assert parsed.examples[0] == [Segment("Add.\n\n2 and 2\n", False), Segment("4", True)]
    assert parse_jsonl(write(tmp_path, CHAT, name="chat.jsonl")).format == "chat"


def test_an_unknown_first_line_names_the_preference_keys(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, {"input": {"messages": []}}, PAIR))
    assert report.format == "preference" and report.n_examples == 1
    (problem,) = report.problems
    assert (problem.line, problem.field) == (1, None)
    assert "cannot tell the format" in problem.message
    assert "'input', 'preferred_output' and 'non_preferred_output' (preference)" in problem.message
    assert problem.message.endswith("found keys: input")


# -- problems ------------------------------------------------------------------------------
def _bad_message(**message: Any) -> dict[str, Any]:
    row = pair()
    row["input"]["messages"] = [message]
    return row


def _output(key: str, value: Any) -> dict[str, Any]:
    row = pair()
    row[key] = value
    return row


def _without(key: str) -> dict[str, Any]:
    row = pair()
    del row[key]
    return row


# name: (the bad line (written after a good one, so it is line 2), field, message)
BAD_LINES: dict[str, tuple[Any, str | None, str]] = {
    "input missing": (_without("input"), "input", "missing required field"),
    "input not an object": (
        {**pair(), "input": "hi"},
        "input",
        "expected an object, got string",
    ),
    "input messages missing": (
        {**pair(), "input": {"tools": []}},
        "input.messages",
        "missing required field",
    ),
    "input messages not an array": (
        with_input(messages={"role": "user", "content": "a"}),
        "input.messages",
        "expected an array of messages, got object",
    ),
    "input messages empty": (
        with_input(messages=[]),
        "input.messages",
        "no messages (a preference answers a user message)",
    ),
    "input message not an object": (
        with_input(messages=["hi"]),
        "input.messages[0]",
        "expected an object, got string",
    ),
    "input role missing": (
        _bad_message(content="a"),
        "input.messages[0].role",
        "missing required field",
    ),
    "input role not a string": (
        _bad_message(role=1, content="a"),
        "input.messages[0].role",
        "expected a string, got number",
    ),
    "input role unknown": (
        _bad_message(role="tool", content="a"),
        "input.messages[0].role",
        "'tool' is not one of system, user, assistant",
    ),
    "input content missing": (
        _bad_message(role="user"),
        "input.messages[0].content",
        "missing required field",
    ),
    "input content not a string": (
        _bad_message(role="user", content=["a"]),
        "input.messages[0].content",
        "expected a string, got array",
    ),
    "input content lone surrogate": (
        _bad_message(role="user", content="ok \ud800"),
        "input.messages[0].content",
        "\\ud800 at position 3 is a lone surrogate (half of a UTF-16 pair): not valid Unicode text",
    ),
    "input weight": (
        _bad_message(role="user", content="a", weight=0),
        "input.messages[0].weight",
        "preference messages take no weight (the input is context, the outputs are trained)",
    ),
    "input ends with assistant": (
        pair(("user", "a"), ("assistant", "b")),
        "input.messages[1].role",
        "the last input message must be the user's (a preference answers a user turn), "
        "got 'assistant'",
    ),
    "input ends with system": (
        pair(("system", "s")),
        "input.messages[0].role",
        "the last input message must be the user's (a preference answers a user turn), "
        "got 'system'",
    ),
    "tools": (
        with_input(tools=[{"type": "function", "function": {"name": "f"}}]),
        "input.tools",
        "tools are not supported (leave it out or empty)",
    ),
    "tools not an array": (
        with_input(tools={"f": 1}),
        "input.tools",
        "expected an array, got object",
    ),
    "preferred missing": (
        _without("preferred_output"),
        "preferred_output",
        "missing required field",
    ),
    "non-preferred missing": (
        _without("non_preferred_output"),
        "non_preferred_output",
        "missing required field",
    ),
    "preferred not an array": (
        _output("preferred_output", {"role": "assistant", "content": "a"}),
        "preferred_output",
        "expected an array of one message, got object",
    ),
    "preferred empty": (
        _output("preferred_output", []),
        "preferred_output",
        "expected exactly one message, got 0",
    ),
    "non-preferred two messages": (
        _output("non_preferred_output", [{"role": "assistant", "content": "a"}] * 2),
        "non_preferred_output",
        "expected exactly one message, got 2",
    ),
    "preferred message not an object": (
        _output("preferred_output", ["Paris."]),
        "preferred_output[0]",
        "expected an object, got string",
    ),
    "preferred role user": (
        _output("preferred_output", [{"role": "user", "content": "a"}]),
        "preferred_output[0].role",
        "'user' is not 'assistant'",
    ),
    "non-preferred role missing": (
        _output("non_preferred_output", [{"content": "a"}]),
        "non_preferred_output[0].role",
        "missing required field",
    ),
    "preferred content empty": (
        pair(preferred=""),
        "preferred_output[0].content",
        "must not be empty (an answer to prefer or reject)",
    ),
    "non-preferred content null": (
        _output("non_preferred_output", [{"role": "assistant", "content": None}]),
        "non_preferred_output[0].content",
        "expected a string, got null",
    ),
    "non-preferred content lone surrogate": (
        pair(non_preferred="\udc00"),
        "non_preferred_output[0].content",
        "\\udc00 at position 0 is a lone surrogate (half of a UTF-16 pair): not valid Unicode text",
    ),
    "output weight": (
        _output("preferred_output", [{"role": "assistant", "content": "a", "weight": 1}]),
        "preferred_output[0].weight",
        "preference messages take no weight (the input is context, the outputs are trained)",
    ),
    "outputs equal": (
        pair(preferred="Same.", non_preferred="Same."),
        "non_preferred_output[0].content",
        "equals the preferred output's content, so the pair teaches nothing",
    ),
    "chat line in a preference file": (
        CHAT,
        None,
        "mixed formats: this line is chat but the file is preference (from line 1)",
    ),
    "alpaca line in a preference file": (
        ALPACA,
        None,
        "mixed formats: this line is alpaca but the file is preference (from line 1)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_every_refusal_names_its_line_and_field(tmp_path: Path, name: str) -> None:
    row, field, message = BAD_LINES[name]
    path = write(tmp_path, PAIR, row, PAIR)
    report = validate_jsonl(path)
    assert report.format == "preference"
    assert report.n_examples == 2 and report.n_problems == 1
    (problem,) = report.problems
    assert (problem.line, problem.field, problem.message) == (2, field, message)
    with pytest.raises(DataValidationError) as caught:
        parse_jsonl(path)
    where = f"line 2: {field}: " if field else "line 2: "
    assert where + message in str(caught.value)
    json.dumps(report.to_dict())
    str(report.error()).encode("utf-8")  # quoted surrogates are escaped


def test_problems_of_one_line_are_all_reported(tmp_path: Path) -> None:
    row = pair(("user", "a"), ("assistant", "b"), preferred="")
    row["input"]["tools"] = [{"type": "function"}]
    del row["non_preferred_output"]
    report = validate_jsonl(write(tmp_path, row))
    assert [(p.line, p.field) for p in report.problems] == [
        (1, "input.tools"),
        (1, "input.messages[1].role"),
        (1, "preferred_output[0].content"),
        (1, "non_preferred_output"),
    ]
    assert report.n_examples == 0 and report.format == "preference"


def test_a_preference_line_in_a_supervised_file_is_a_mixed_format(tmp_path: Path) -> None:
    for first, name in ((CHAT, "chat"), (ALPACA, "alpaca"), (PC, "prompt_completion")):
        report = validate_jsonl(write(tmp_path, first, "", PAIR, name=f"{name}.jsonl"))
        assert report.format == name and report.n_examples == 1
        assert [str(p) for p in report.problems] == [
            f"line 3: mixed formats: this line is preference but the file is {name} (from line 1)"
        ]


def test_validate_reports_the_format_and_valid_examples(tmp_path: Path) -> None:
    good = validate_jsonl(write(tmp_path, PAIR, pair(preferred="Paris!"), PAIR))
    assert good.ok and good.problems == []
    assert good.to_dict() == {
        "format": "preference",
        "n_examples": 3,
        "n_lines": 3,
        "n_problems": 0,
        "problems": [],
    }
    mixed = validate_jsonl(
        write(tmp_path, PAIR, "{oops", pair(preferred="x", non_preferred="x"), name="b.jsonl")
    )
    assert (mixed.format, mixed.n_examples, mixed.n_problems) == ("preference", 1, 2)
    assert [(p.line, p.field) for p in mixed.problems] == [
        (2, None),
        (3, "non_preferred_output[0].content"),
    ]
