"""Task registry: formatting benchmark-style records, gold answers, unknown names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steering_core.errors import SteeringUserError
from steering_core.tasks import TASK_NAMES, UnknownTaskError, get_task
from steering_core.tasks.definitions import InvalidRecordError


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        get_task("squad")
    message = str(info.value)
    assert "squad" in message
    for name in TASK_NAMES:
        assert name in message
    assert isinstance(info.value, UnknownTaskError)
    assert isinstance(info.value, SteeringUserError)


def test_names_and_options() -> None:
    assert set(TASK_NAMES) == {
        "boolq", "winogrande", "gsm8k", "arc", "listops", "arithmetic", "exact", "regex",
    }  # fmt: skip
    assert get_task(" BoolQ ").name == "boolq"
    with pytest.raises(ValueError, match="takes no option"):
        get_task("boolq", pattern="x")
    with pytest.raises(ValueError, match="pattern"):
        get_task("regex")


def test_boolq_record() -> None:
    task = get_task("boolq")
    record = {"passage": "P.", "question": "q", "answer": False, "idx": 3}
    prompt, completion = task.format(record)
    assert prompt.endswith("Passage: P.\nQuestion: q\n")
    assert completion == "Answer: False."
    assert task.gold(record) == "false"
    assert task.score(completion, task.gold(record))
    assert task.extract(completion) == "false"


def test_winogrande_record() -> None:
    task = get_task("winogrande")
    record = {"sentence": "S _.", "option1": "a", "option2": "b", "answer": "2"}
    prompt, completion = task.format(record)
    assert prompt.endswith("sentence: S _.\nOption1: a\nOption2: b\n")
    assert completion == "Answer: Option2."
    assert task.score(completion, task.gold(record))
    assert task.format({**record, "answer": 1})[1] == "Answer: Option1."
    with pytest.raises(InvalidRecordError):
        task.format({**record, "answer": "3"})


def test_gsm8k_record_both_shapes() -> None:
    task = get_task("gsm8k")
    record = {"question": "Q?", "rationale": "2 * 3 = 6", "answer": 6}
    assert task.format(record) == ("Q?\n", "2 * 3 = 6\nAnswer: 6")
    assert task.gold(record) == "6"
    original = {"question": "Q?", "answer": "It is 1000+234 = <<1000+234=1234>>1234.\n#### 1,234"}
    _, completion = task.format(original)
    assert completion == "It is 1000+234 = 1234.\nAnswer: 1234"
    assert task.gold(original) == "1234"
    assert task.score(completion, task.gold(original))
    with pytest.raises(InvalidRecordError):
        task.format({"question": "Q?", "rationale": "r", "answer": "lots"})


def test_arithmetic_shares_gsm8k_template() -> None:
    task = get_task("arithmetic")
    assert task.format({"question": "Q?", "rationale": "1 + 1 = 2", "answer": 2}) == (
        "Q?\n",
        "1 + 1 = 2\nAnswer: 2",
    )


def test_arc_record_shapes() -> None:
    task = get_task("arc")
    plain = {"question": "Which?", "choices": ["x", "y", "z"], "answer": "C"}
    prompt, completion = task.format(plain)
    assert prompt.endswith("Question: Which?\n(A) x\n(B) y\n(C) z\n")
    assert completion == "Answer: (C) z."
    assert task.gold(plain) == "C"
    hf = {
        "question": "Which?",
        "choices": {"text": ["x", "y", "z", "w"], "label": ["1", "2", "3", "4"]},
        "answerKey": "2",
    }
    assert task.format(hf)[1] == "Answer: (B) y."
    assert task.gold(hf) == "B"
    labelled = {
        "question": "Which?",
        "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}],
        "answer": "(b)",
    }
    assert task.format(labelled)[1] == "Answer: (B) y."
    with pytest.raises(InvalidRecordError):
        task.format({**plain, "answer": "E"})


def test_listops_record() -> None:
    task = get_task("listops")
    record = {"expression": "[MAX 2 9 [MIN 4 7 ] 0 ]"}
    prompt, completion = task.format(record)
    assert prompt.endswith("Expression:\n[MAX 2 9 [MIN 4 7 ] 0 ]\n")
    assert completion == "<answer>9</answer>"
    assert task.gold(record) == "9"
    with pytest.raises(InvalidRecordError, match="value"):
        task.format({**record, "answer": 4})


def test_formatted_records_pass_through() -> None:
    task = get_task("listops")
    record = {"prompt": "P\n", "completion": "<answer>3</answer>", "answer": 3}
    assert task.format(record) == ("P\n", "<answer>3</answer>")
    assert task.gold(record) == "3"
    assert task.gold({"prompt": "P\n", "completion": "<answer>5</answer>"}) == "5"
    with pytest.raises(InvalidRecordError):
        task.gold({"prompt": "P\n", "completion": "no tags"})


def test_exact_and_regex_tasks() -> None:
    exact = get_task("exact", case_sensitive=False)
    assert exact.score(" PARIS ", "paris")
    assert exact.gold({"prompt": "Capital?", "completion": " Paris"}) == "Paris"
    with pytest.raises(InvalidRecordError, match="prompt"):
        exact.format({"question": "Capital?"})
    regex = get_task("regex", pattern=r"#(\d+)")
    assert regex.extract("ticket #42 done") == "42"
    assert regex.score("ticket #42", "42")
    assert regex.gold({"prompt": "p", "completion": "see #7"}) == "7"


def test_missing_field_is_invalid_record() -> None:
    with pytest.raises(InvalidRecordError, match="boolq"):
        get_task("boolq").format({"question": "q", "answer": True})


def test_package_is_torch_free() -> None:
    code = (
        "import sys, steering_core.tasks, steering_core.tasks.build_data;"
        "bad = [m for m in ('torch', 'numpy', 'transformers') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
