"""Training data: JSONL formats, validation errors, answer-only tokenization, batches.

Tokenization runs against the real SmolLM2 tokenizer (chat template with ``<|im_end|>``, EOS =
pad = ``<|im_end|>``, no BOS) and, where it is converted, Gemma-3's (BOS, no chat template).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from steering_core.data.batches import (
    IGNORE_INDEX,
    DataValidationError,
    TokenizedRow,
    collate,
    dataset_sha256,
    encode_prompt,
    pad_token_id_for,
    parse_jsonl,
    supervised_spans,
    tokenize_dataset,
    validate_jsonl,
)
from steering_core.data.formats import ChatMessage, Segment, alpaca_prompt
from steering_core.errors import SteeringUserError
from steering_core.model.loading import load_tokenizer

SMOLLM = "smollm2-135m-instruct"


def jsonl(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def chat(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


CHAT = chat(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"))
PC = {"prompt": "Question: 2+2?\n", "completion": "Answer: 4", "answer": 4}
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_tokenizer(SMOLLM)


def fresh_tokenizer() -> Any:
    return load_tokenizer(SMOLLM)


def decoded_spans(tokenizer: Any, row: TokenizedRow) -> list[str]:
    return [tokenizer.decode(span) for span in supervised_spans(row.labels)]


# -- parsing ---------------------------------------------------------------------------------
def test_chat_parses_with_weights_and_blank_lines_skipped() -> None:
    weighted = chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    weighted["messages"][1]["weight"] = 0
    parsed = parse_jsonl(jsonl(CHAT, "", "   ", weighted))
    assert parsed.format == "chat" and len(parsed) == 2
    assert parsed.line_numbers == [1, 4]
    assert parsed.examples[0][2] == ChatMessage("assistant", "4", 1)
    assert [m.trainable for m in parsed.examples[1]] == [False, False, False, True]


def test_prompt_completion_parses_and_ignores_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(PC, {"prompt": "", "completion": "x"}))
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        parsed = parse_jsonl(source)
        assert parsed.format == "prompt_completion"
        assert parsed.examples[0] == [Segment(PC["prompt"], False), Segment("Answer: 4", True)]


def test_alpaca_prompt_rule() -> None:
    rows = [ALPACA, {"instruction": "Say hi.", "output": "hi"}, {**ALPACA, "input": None}]
    parsed = parse_jsonl(jsonl(*rows, {**ALPACA, "input": ""}))
    assert parsed.format == "alpaca"
    prompts = [example[0].text for example in parsed.examples]
    plain = "Add the numbers.\n"
    assert prompts == ["Add the numbers.\n\n2 and 2\n", "Say hi.\n", plain, plain]
    assert parsed.examples[0][1] == Segment("4", True)
    assert alpaca_prompt("I", "x") == "I\n\nx\n"


def test_bom_and_crlf_are_accepted() -> None:
    parsed = parse_jsonl(b"\xef\xbb\xbf" + jsonl(PC).replace(b"\n", b"\r\n"))
    assert parsed.examples[0][1].text == "Answer: 4"


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "malformed json": (jsonl(PC, '{"prompt": "a",'), "line 2: invalid JSON"),
    "not an object": (jsonl(PC, PC, "[1, 2]"), "line 3: expected a JSON object, got array"),
    "missing completion": (jsonl({"prompt": "a"}), "line 1: completion: missing required field"),
    "missing output": (jsonl(ALPACA, {"instruction": "x"}), "line 2: output: missing required"),
    "missing content": (
        jsonl(CHAT, {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}),
        "line 2: messages[0].content: missing required field",
    ),
    "prompt not a string": (
        jsonl(PC, {"prompt": 3, "completion": "x"}),
        "line 2: prompt: expected a string, got number",
    ),
    "messages not an array": (
        jsonl({"messages": {"role": "user"}}),
        "line 1: messages: expected an array of messages, got object",
    ),
    "message not an object": (
        jsonl({"messages": ["hi"]}),
        "line 1: messages[0]: expected an object, got string",
    ),
    "empty messages": (
        jsonl(chat(("user", "a"), ("assistant", "b")), {"messages": []}),
        "line 2: messages: no message with role 'assistant'",
    ),
    "role not a string": (
        jsonl({"messages": [{"role": 1, "content": "a"}]}),
        "line 1: messages[0].role: expected a string, got number",
    ),
    "unknown role": (
        jsonl(CHAT, CHAT, chat(("user", "a"), ("bot", "b"))),
        "line 3: messages[1].role: 'bot' is not one of system, user, assistant",
    ),
    "assistant content null": (
        jsonl({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}),
        "line 1: messages[1].content: missing required field",
    ),
    "content wrong type": (
        jsonl({"messages": [{"role": "assistant", "content": None}]}),
        "line 1: messages[0].content: expected a string, got null",
    ),
    "bad weight": (
        jsonl({"messages": [{"role": "assistant", "content": "a", "weight": 2}]}),
        "line 1: messages[0].weight: 2 is not 0 or 1",
    ),
    "weight on user": (
        jsonl({"messages": [{"role": "user", "content": "a", "weight": 1}, CHAT["messages"][2]]}),
        "line 1: messages[0].weight: only assistant messages take a weight",
    ),
    "no assistant": (
        jsonl(CHAT, chat(("system", "s"), ("user", "u"))),
        "line 2: messages: no message with role 'assistant' (nothing to train on)",
    ),
    "all weight 0": (
        jsonl({"messages": [{"role": "assistant", "content": "a", "weight": 0}]}),
        "line 1: messages: every assistant message has weight 0",
    ),
    "empty file": (b"", "file: no examples"),
    "only blank lines": (b"\n  \n\n", "file: no examples"),
    "invalid utf-8": (jsonl(PC) + b"\n" + b'{"prompt": "\xff"}\n', "line 3: invalid UTF-8"),
    "blank lines counted": (jsonl(PC, "", "", "{oops"), "line 4: invalid JSON"),
    "mixed formats": (
        jsonl(PC, ALPACA),
        "line 2: mixed formats: this line is alpaca but the file is prompt_completion "
        "(from line 1)",
    ),
    "unknown keys": (jsonl({"text": "a"}, PC), "line 1: cannot tell the format"),
    "line too long": (
        jsonl(PC, {"prompt": "x" * 300, "completion": "y"}, PC),
        "line 2: line is 333 bytes, over the limit of 200",
    ),
    # a lone surrogate (JSON "\ud800") passed validation, then failed the tokenizer: TypeError
    "lone surrogate in prompt": (
        jsonl({"prompt": "\ud800", "completion": "x"}),
        "line 1: prompt: \\ud800 at position 0 is a lone surrogate",
    ),
    "lone surrogate in content": (
        jsonl(CHAT, chat(("user", "a"), ("assistant", "ok \udc00"))),
        "line 2: messages[1].content: \\udc00 at position 3 is a lone surrogate",
    ),
    "lone surrogate in alpaca input": (
        jsonl({"instruction": "x", "input": "\udfff", "output": "y"}),
        "line 1: input: \\udfff at position 0 is a lone surrogate",
    ),
    "unprintable keys": (
        jsonl({"a\u0000": 1, "b\ud800": 2}),
        "found keys: 'a\\x00', 'b\\ud800'",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_error_names_line_and_field(name: str) -> None:
    content, expected = BAD_FILES[name]
    with pytest.raises(DataValidationError) as caught:
        parse_jsonl(content, max_line_bytes=200)
    assert expected in str(caught.value)
    assert isinstance(caught.value, SteeringUserError)
    assert caught.value.problems


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_validate_never_raises_and_reports(name: str) -> None:
    report = validate_jsonl(BAD_FILES[name][0], max_line_bytes=200)
    assert not report.ok and report.n_problems >= 1
    assert any(BAD_FILES[name][1] in str(p) for p in report.problems)
    json.dumps(report.to_dict())


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_message_can_be_stored_and_sent(name: str) -> None:
    """Problems quote the line's text; quoted NULs and lone surrogates are escaped, so the
    report encodes as UTF-8 (for a JSON answer) and holds no NUL (for PostgreSQL text)."""
    text = str(validate_jsonl(BAD_FILES[name][0], max_line_bytes=200).error())
    assert "\x00" not in text
    text.encode("utf-8")


def test_validate_reports_valid_lines_and_format() -> None:
    report = validate_jsonl(jsonl(CHAT, chat(("user", "a"), ("bot", "b")), CHAT))
    assert (report.format, report.n_examples, report.n_problems) == ("chat", 2, 1)
    problem = report.problems[0]
    assert (problem.line, problem.field) == (2, "messages[1].role")
    good = validate_jsonl(jsonl(PC, PC))
    assert good.ok and good.n_examples == 2 and good.problems == []


def test_message_lists_the_first_ten_problems() -> None:
    content = jsonl(PC, *(["{bad"] * 14))
    with pytest.raises(DataValidationError) as caught:
        parse_jsonl(content)
    message = str(caught.value)
    assert "14 problems" in message and "line 11: invalid JSON" in message
    assert "line 12:" not in message and "... and 4 more" in message
    assert caught.value.n_problems == 14


def test_deeply_nested_json_is_a_line_problem() -> None:
    report = validate_jsonl(jsonl(PC) + b"[" * 100_000 + b"\n")
    assert [str(p) for p in report.problems] == ["line 2: invalid JSON: nested too deeply"]


def test_an_integer_over_the_digit_limit_is_a_line_problem() -> None:
    """json.loads raises a plain ValueError (Python's 4300-digit limit on int(str)), which
    escaped validation as an internal error."""
    content = jsonl(PC, '{"prompt": "a", "completion": "b", "n": ' + "9" * 5000 + "}")
    expected = "line 2: invalid JSON: an integer has more than 4300 digits"
    assert [str(p) for p in validate_jsonl(content).problems] == [expected]
    with pytest.raises(DataValidationError, match=expected):
        parse_jsonl(content)


def test_max_line_bytes_is_configurable() -> None:
    content = jsonl({"prompt": "x" * 1000, "completion": "y"})
    assert parse_jsonl(content).format == "prompt_completion"
    assert not validate_jsonl(content, max_line_bytes=1032).ok
    assert validate_jsonl(content, max_line_bytes=1033).ok


def test_dataset_sha256(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(PC) * 5000)
    assert dataset_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# -- tokenization ----------------------------------------------------------------------------
def test_prompt_completion_supervises_completion_and_eos_only(tok: Any) -> None:
    data = tokenize_dataset(parse_jsonl(jsonl(PC)), tok, max_seq_length=256)
    row = data[0]
    prompt_ids = tok(PC["prompt"], add_special_tokens=False)["input_ids"]
    answer_ids = tok("Answer: 4", add_special_tokens=False)["input_ids"]
    assert row.input_ids == prompt_ids + answer_ids + [tok.eos_token_id]
    assert row.labels == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [tok.eos_token_id]
    assert decoded_spans(tok, row) == ["Answer: 4" + tok.eos_token]
    assert data.stats.n_supervised_tokens == len(answer_ids) + 1
    assert data.stats.n_tokens == len(row.input_ids) and data.stats.n_rows == 1
    assert encode_prompt(tok, PC["prompt"]) == prompt_ids  # generation sees the same prompt


def test_alpaca_supervises_output_and_eos(tok: Any) -> None:
    data = tokenize_dataset(parse_jsonl(jsonl(ALPACA)), tok, max_seq_length=256)
    row = data[0]
    assert decoded_spans(tok, row) == ["4" + tok.eos_token]
    assert tok.decode(row.input_ids) == "Add the numbers.\n\n2 and 2\n4" + tok.eos_token
    assert row.labels[-1] == tok.eos_token_id == row.input_ids[-1]


def test_chat_template_masks_exactly_the_assistant_turns(tok: Any) -> None:
    turns = chat(
        ("user", "Hi there"),
        ("assistant", "Hello! How can I help?"),
        ("user", "Skip this"),
        ("assistant", "context only"),
        ("user", "Sum 2 and 3."),
        ("assistant", " The sum is 5.\nDone"),
    )
    turns["messages"][3]["weight"] = 0
    data = tokenize_dataset(parse_jsonl(jsonl(turns, CHAT)), tok, max_seq_length=512)
    end = "<|im_end|>"
    assert decoded_spans(tok, data[0]) == [
        f"Hello! How can I help?{end}",
        f" The sum is 5.\nDone{end}",
    ]
    assert decoded_spans(tok, data[1]) == [f"4{end}"]
    for row, example in zip(data, parse_jsonl(jsonl(turns, CHAT)).examples, strict=True):
        messages = [{"role": m.role, "content": m.content} for m in example]
        rendered = tok.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert row.input_ids == list(rendered)  # the template's own tokens, untouched


def test_chat_without_template_uses_the_plain_fallback() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = None
    turns = chat(("system", "S"), ("user", "U"), ("assistant", "A1"), ("user", "V"))
    turns["messages"].append({"role": "assistant", "content": "A2"})
    row = tokenize_dataset(parse_jsonl(jsonl(turns)), tokenizer, max_seq_length=128)[0]
    eos = tokenizer.eos_token
    assert tokenizer.decode(row.input_ids) == (
        f"System: S\nUser: U\nAssistant: A1{eos}User: V\nAssistant: A2{eos}"
    )
    assert decoded_spans(tokenizer, row) == [f"A1{eos}", f"A2{eos}"]


def test_chat_template_that_rerenders_earlier_turns(tok: Any) -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = (  # like Qwen3: only the last assistant turn gets a think block
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and loop.last %}<think></think>{% endif %}"
        "{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    turns = chat(("user", "a"), ("assistant", "first"), ("user", "b"), ("assistant", "second"))
    row = tokenize_dataset(parse_jsonl(jsonl(turns)), tokenizer, max_seq_length=128)[0]
    assert decoded_spans(tokenizer, row) == ["first<|im_end|>", "second<|im_end|>"]
    rendered = tokenizer.apply_chat_template(turns["messages"], tokenize=True)["input_ids"]
    assert row.input_ids == list(rendered)


def test_answer_is_not_matched_inside_the_template_header() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = (  # prefix-stable, with a header that contains the answer's text
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}<think>think</think>{% endif %}{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    turns = chat(("user", "think"), ("assistant", "think"), ("user", "x"), ("assistant", "end"))
    row = tokenize_dataset(parse_jsonl(jsonl(turns)), tokenizer, max_seq_length=128)[0]
    assert decoded_spans(tokenizer, row) == ["think<|im_end|>", "end<|im_end|>"]


def test_segment_wise_tokenization_matches_whole_rendering(tok: Any) -> None:
    """The fallback for tokenizers without offsets gives the same row on SmolLM2."""
    from steering_core.data.batches import _chat_template_segments, _encode_pieces, _TokenizerFacts

    example = parse_jsonl(jsonl(CHAT)).examples[0]
    specials = _TokenizerFacts.of(tok).specials
    segments = _chat_template_segments(tok, example, specials)  # type: ignore[arg-type]
    by_pieces = _encode_pieces(tok, [(s.text, s.trainable) for s in segments])
    row = tokenize_dataset(parse_jsonl(jsonl(CHAT)), tok, max_seq_length=128)[0]
    assert by_pieces == (row.input_ids, row.labels)


def test_chat_template_that_rewrites_content_is_a_line_error() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m.content | replace('4', 'four') }}<|im_end|>{% endfor %}"
    )
    with pytest.raises(DataValidationError, match=r"line 2: messages: .*cannot be located"):
        tokenize_dataset(parse_jsonl(jsonl("", CHAT)), tokenizer, max_seq_length=128)


def test_truncation_counts_and_drops(tok: Any) -> None:
    long_prompt = {"prompt": "word " * 40, "completion": "yes"}
    long_answer = {"prompt": "Q\n", "completion": "word " * 40}
    data = tokenize_dataset(
        parse_jsonl(jsonl(PC, long_prompt, long_answer)), tok, max_seq_length=20
    )
    assert data.stats.n_rows == 2 and data.stats.n_dropped_all_masked == 1
    assert data.stats.n_truncated == 1
    assert [row.line for row in data] == [1, 3]
    assert all(len(row.input_ids) <= 20 for row in data)
    cut = data[1]
    assert len(cut.input_ids) == 20 and cut.labels[0] == IGNORE_INDEX and cut.labels[-1] != -100
    assert data.stats.n_tokens == sum(len(r.input_ids) for r in data)
    assert data.stats.to_dict()["n_dropped_all_masked"] == 1


def test_all_rows_too_long_is_an_error(tok: Any) -> None:
    rows = [
        {"prompt": "word " * 30, "completion": "a"},
        {"prompt": "word " * 50, "completion": "b"},
    ]
    prompt_ids = tok("word " * 30, add_special_tokens=False)["input_ids"]
    shortest = len(prompt_ids) + len(tok("a", add_special_tokens=False)["input_ids"]) + 1
    with pytest.raises(DataValidationError) as caught:
        tokenize_dataset(parse_jsonl(jsonl(*rows)), tok, max_seq_length=10)
    message = str(caught.value)
    assert "all 2 rows exceed max_seq_length=10" in message
    assert f"the shortest row is {shortest} tokens" in message


def test_collate_pads_right_with_masks(tok: Any) -> None:
    rows = jsonl(PC, PC | {"completion": "x " * 9})
    data = tokenize_dataset(parse_jsonl(rows), tok, max_seq_length=64)
    batch = collate(data.rows, data.pad_token_id)
    lengths = [len(r.input_ids) for r in data]
    assert batch["input_ids"].shape == batch["labels"].shape == (2, max(lengths))
    for i, row in enumerate(data):
        n = lengths[i]
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["input_ids"][i, :n].tolist() == row.input_ids
        assert batch["labels"][i, :n].tolist() == row.labels
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][i, n:] == data.pad_token_id).all()
    assert collate([{"input_ids": [5], "labels": [5]}], 0)["input_ids"].tolist() == [[5]]


def test_pad_equals_eos_keeps_the_real_eos_supervised() -> None:
    tokenizer = fresh_tokenizer()
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    eos = tokenizer.eos_token_id
    assert pad_token_id_for(tokenizer) == eos
    data = tokenize_dataset(
        parse_jsonl(jsonl(PC, {"prompt": "Q", "completion": "long " * 20})),
        tokenizer,
        max_seq_length=64,
    )
    assert data.pad_token_id == eos
    batch = collate(data.rows, data.pad_token_id)
    short = len(data[0].input_ids)
    assert short < batch["input_ids"].shape[1]
    assert batch["input_ids"][0, short - 1] == eos == batch["labels"][0, short - 1]
    assert (batch["input_ids"][0, short:] == eos).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].sum() == short


def test_tokenized_rows_read_like_mappings(tok: Any) -> None:
    row = tokenize_dataset(parse_jsonl(jsonl(PC)), tok, max_seq_length=64)[0]
    assert row["input_ids"] == row.input_ids and row["labels"] == row.labels
    with pytest.raises(KeyError):
        row["attention_mask"]


@pytest.mark.real_model
def test_gemma_adds_bos_and_falls_back_without_template() -> None:
    try:
        gemma = load_tokenizer("gemma-3-270m")
    except SteeringUserError as exc:
        pytest.skip(f"gemma-3-270m unavailable: {exc}")
    assert gemma.bos_token_id is not None and not gemma.chat_template
    row = tokenize_dataset(parse_jsonl(jsonl(PC)), gemma, max_seq_length=64)[0]
    assert row.input_ids[0] == gemma.bos_token_id and row.labels[0] == IGNORE_INDEX
    assert decoded_spans(gemma, row) == ["Answer: 4" + gemma.eos_token]
    prompt = encode_prompt(gemma, PC["prompt"])
    assert prompt[0] == gemma.bos_token_id and row.input_ids[: len(prompt)] == prompt
    row = tokenize_dataset(parse_jsonl(jsonl(CHAT)), gemma, max_seq_length=64)[0]
    assert row.input_ids[0] == gemma.bos_token_id
    assert decoded_spans(gemma, row) == ["4" + gemma.eos_token]
