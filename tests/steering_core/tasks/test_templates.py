"""Templates rendered exactly as METHOD.md sections 6 and 9 specify."""

from __future__ import annotations

import pytest

from steering_core.tasks import templates


def test_boolq() -> None:
    assert templates.boolq_prompt("The sky is blue.", "is the sky blue") == (
        "Answer the question with a true/false based on the given passage.\n"
        "Passage: The sky is blue.\nQuestion: is the sky blue\n"
    )
    assert templates.boolq_completion(True) == "Answer: True."
    assert templates.boolq_completion(False) == "Answer: False."


def test_winogrande() -> None:
    prompt = templates.winogrande_prompt(
        "The cup fell off the table because _ was wobbly.", "cup", "table"
    )
    assert prompt == (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        "The cup fell off the table because _ was wobbly.\nOption1: cup\nOption2: table\n"
    )
    assert templates.winogrande_completion("1") == "Answer: Option1."
    assert templates.winogrande_completion(2) == "Answer: Option2."
    with pytest.raises(ValueError):
        templates.winogrande_completion("3")


def test_gsm8k() -> None:
    assert templates.gsm8k_prompt("How many?") == "How many?\n"
    assert templates.gsm8k_completion("3 * 4 = 12", 12) == "3 * 4 = 12\nAnswer: 12"
    assert templates.gsm8k_completion("a\nb", "1,234") == "a\nb\nAnswer: 1234"
    assert templates.gsm8k_completion("x", 2.5) == "x\nAnswer: 2.5"
    assert templates.gsm8k_completion("x", 3.0) == "x\nAnswer: 3"
    assert templates.gsm8k_completion("", -4) == "Answer: -4"


def test_split_gsm8k_solution() -> None:
    solution = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    )
    rationale, number = templates.split_gsm8k_solution(solution)
    assert rationale == "Natalia sold 48/2 = 24 clips in May.\nIn all 48+24 = 72."
    assert number == "72"
    with pytest.raises(ValueError):
        templates.split_gsm8k_solution("no marker")


def test_arc() -> None:
    prompt = templates.arc_prompt("Which is a planet?", ["the Moon", "Mars", "the Sun"])
    assert prompt == (
        "Answer the following multiple-choice question.\nQuestion: Which is a planet?\n"
        "(A) the Moon\n(B) Mars\n(C) the Sun\n"
    )
    assert templates.arc_completion("B", "Mars") == "Answer: (B) Mars."
    assert templates.arc_completion("b", "Mars.") == "Answer: (B) Mars."  # no doubled period
    with pytest.raises(ValueError):
        templates.arc_prompt("q", ["only one"])
    with pytest.raises(ValueError):
        templates.arc_completion("Z", "x")


def test_listops() -> None:
    assert templates.listops_prompt("[MAX 2 9 [MIN 4 7 ] 0 ]") == (
        "Evaluate the value of the following nested list expression.\n"
        "Return only the final numeric result inside <answer>...</answer>.\n\n"
        "Expression:\n[MAX 2 9 [MIN 4 7 ] 0 ]\n"
    )
    assert templates.listops_completion(9) == "<answer>9</answer>"


def test_format_number() -> None:
    assert templates.format_number("1,000") == "1000"
    assert templates.format_number(" -2.50 ") == "-2.5"
    with pytest.raises(ValueError):
        templates.format_number("abc")
    with pytest.raises(ValueError):
        templates.format_number(float("nan"))
