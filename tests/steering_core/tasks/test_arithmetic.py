"""Arithmetic word problems: every rationale step is right, the answer is the last result."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from steering_core.tasks import arithmetic
from steering_core.tasks.scorers import score_gsm8k

STEP = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")


def check_step(a: int, op: str, b: int, c: int) -> None:
    if op == "+":
        assert a + b == c
    elif op == "-":
        assert a - b == c
    elif op == "*":
        assert a * b == c
    else:
        assert b != 0 and a % b == 0 and a // b == c


def test_rationales_are_correct() -> None:
    records = arithmetic.generate_problems(600, seed=1)
    assert set(Counter(r["template"] for r in records)) == set(arithmetic.TEMPLATES)
    for record in records:
        lines = record["rationale"].split("\n")
        assert len(lines) >= 2
        last = None
        for line in lines:
            steps = STEP.findall(line)
            assert len(steps) == 1, line
            a, op, b, c = steps[0]
            check_step(int(a), op, int(b), int(c))
            last = int(c)
        assert record["answer"] == last
        assert record["answer"] > 0
        assert record["prompt"] == record["question"] + "\n"
        assert record["completion"] == f"{record['rationale']}\nAnswer: {record['answer']}"
        assert score_gsm8k(record["completion"], str(record["answer"]))


def test_steps_use_earlier_results() -> None:
    # The multi-step templates chain: the last step's operands come from the question or from
    # earlier results, so every intermediate number in a step appears somewhere before it.
    for record in arithmetic.generate_problems(200, seed=4):
        known = set(re.findall(r"\d+", record["question"]))
        for a, _, b, c in STEP.findall(record["rationale"]):
            assert a in known and b in known
            known.add(c)


def test_deterministic_and_distinct() -> None:
    first = arithmetic.generate_problems(100, seed=9)
    assert first == arithmetic.generate_problems(100, seed=9)
    assert first != arithmetic.generate_problems(100, seed=10)
    questions = [r["question"] for r in first]
    assert len(set(questions)) == len(questions)
    others = arithmetic.generate_problems(100, seed=9, exclude=questions)
    assert not set(questions) & {r["question"] for r in others}


def test_template_selection_and_errors() -> None:
    records = arithmetic.generate_problems(20, seed=0, templates=["sharing"])
    assert {r["template"] for r in records} == {"sharing"}
    with pytest.raises(ValueError, match="templates"):
        arithmetic.generate_problems(1, seed=0, templates=["poetry"])
    with pytest.raises(ValueError):
        arithmetic.generate_problems(-1, seed=0)
