"""Scorers on hand-written generations, including near misses."""

from __future__ import annotations

import pytest

from steering_core.tasks import scorers
from steering_core.tasks.scorers import (
    extract_arc,
    extract_boolq,
    extract_gsm8k,
    extract_listops,
    extract_winogrande,
    make_exact_scorer,
    make_regex_scorer,
    parse_number,
    score_arc,
    score_boolq,
    score_gsm8k,
    score_listops,
    score_winogrande,
)

# ---------------------------------------------------------------- BoolQ


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("Answer: True.", "true"),
        ("Answer: False.", "false"),
        ("answer:FALSE", "false"),
        ("ANSWER :  true", "true"),
        ("The passage says true things. Answer: false.", "false"),  # bare "true" does not count
        ("Answer: True. Answer: False.", "true"),  # the first answer wins
        ("Answer: Truely.", None),  # not the word "true": no answer
        ("Answer: Truely. Answer: False.", "false"),  # ... so the first real answer is used
        ("True.", None),  # no "answer:"
        ("Answer: yes", None),
        ("", None),
    ],
)
def test_boolq_extract(generated: str, expected: str | None) -> None:
    assert extract_boolq(generated) == expected


def test_boolq_score() -> None:
    assert score_boolq("Answer: True.", "True")
    assert score_boolq("answer: false", "false")
    assert not score_boolq("Answer: Truely.", "True")
    assert not score_boolq("It is true. Answer: False.", "True")
    assert not score_boolq("no answer here", "False")
    with pytest.raises(ValueError, match="BoolQ gold"):
        score_boolq("Answer: True.", "maybe")


# ---------------------------------------------------------------- Winogrande


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("Answer: Option1.", "1"),
        ("Answer: Option2", "2"),
        ("answer: option 2", "2"),
        ("Between option 1 and the other one... Answer: Option2", "2"),  # before answer: ignored
        ("Option1 looks right. Answer: Option2.", "2"),
        ("Answer: I think Option1, not Option2.", "1"),  # first option after answer:
        ("Answer: Option12", None),
        ("Option1.", None),  # no answer:
        ("Answer: the trophy", None),
    ],
)
def test_winogrande_extract(generated: str, expected: str | None) -> None:
    assert extract_winogrande(generated) == expected


def test_winogrande_score() -> None:
    assert score_winogrande("Answer: Option2", "2")
    assert score_winogrande("Answer: Option1.", "Option1")
    assert not score_winogrande("option 1 ... Answer: Option2", "1")
    with pytest.raises(ValueError, match="Winogrande gold"):
        score_winogrande("Answer: Option1.", "3")


# ---------------------------------------------------------------- GSM8K


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("3 * 4 = 12\nAnswer: 12", "12"),
        ("Answer: 1,234.", "1234"),
        ("Answer: 1,000,000", "1000000"),
        ("Answer: -7", "-7"),
        ("Answer: −7", "-7"),  # unicode minus
        ("Answer: 12.00001", "12.00001"),
        ("Answer: 12.50.", "12.5"),
        ("Answer: $18.", "18"),
        ("Answer: 5\nWait. Answer: 6", "6"),  # the LAST answer:
        ("She has 5 - 3 = 2 apples, so 2 in all.", "2"),  # no answer: -> last number
        ("5-3", "3"),  # a minus between digits is not a sign
        ("He had 10 and then 4", "4"),
        ("Answer: none. She had 9 apples", "9"),
        ("Answer: unknown", None),
        ("no numbers", None),
    ],
)
def test_gsm8k_extract(generated: str, expected: str | None) -> None:
    assert extract_gsm8k(generated) == expected


def test_gsm8k_score() -> None:
    assert score_gsm8k("Answer: 1,234.", "1234")
    assert score_gsm8k("Answer: 1234", "1,234")
    assert score_gsm8k("Answer: 12.00001", "12")  # within 1e-4
    assert not score_gsm8k("Answer: 12.01", "12")
    assert score_gsm8k("Answer: -5.", "-5")
    assert not score_gsm8k("Answer: 5", "-5")
    assert score_gsm8k("so the total is 3 + 4 = 7", "7")
    assert not score_gsm8k("Answer: 7\nAnswer: 8", "7")  # last answer: counts
    assert not score_gsm8k("I don't know", "7")
    with pytest.raises(ValueError, match="not a number"):
        score_gsm8k("Answer: 1", "one")


def test_parse_number() -> None:
    assert parse_number("1,234") == 1234
    assert parse_number(" -3.5 ") == -3.5
    assert parse_number("7.") == 7
    with pytest.raises(ValueError):
        parse_number("1,2")


# ---------------------------------------------------------------- ARC


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("Answer: (C) foo.", "C"),
        ("Answer: (c) foo", "C"),
        ("Answer: ( B )", "B"),
        ("Answer: B) the moon", "B"),
        ("answer: b)", "B"),
        ("Answer: D", "D"),
        ("Answer: D.", "D"),
        ("Answer: a dog", None),  # bare lowercase "a" is the article
        ("Answer: Both", None),
        ("(A) is wrong. Answer: (B)", "B"),
        ("The answer is (B)", None),  # no "answer:"
    ],
)
def test_arc_extract(generated: str, expected: str | None) -> None:
    assert extract_arc(generated) == expected


def test_arc_score() -> None:
    assert score_arc("Answer: (C) foo.", "C")
    assert score_arc("Answer: (c)", "C")
    assert score_arc("Answer: (C) foo.", "(c)")
    assert not score_arc("Answer: (B) foo.", "C")
    with pytest.raises(ValueError, match="ARC gold"):
        score_arc("Answer: (C)", "Z")


# ---------------------------------------------------------------- ListOps


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("<answer>7</answer>", "7"),
        ("<answer> 7 </answer>", "7"),
        ("<ANSWER>3</ANSWER>", "3"),
        ("<answer>07</answer>", "7"),
        ("The result is <answer>4</answer> or <answer>5</answer>", "4"),  # first block
        ("<answer>seven</answer><answer>7</answer>", None),  # first block is not an integer
        ("<answer>7", None),
        ("7", None),
    ],
)
def test_listops_extract(generated: str, expected: str | None) -> None:
    assert extract_listops(generated) == expected


def test_listops_score() -> None:
    assert score_listops("<answer>7</answer>", "7")
    assert not score_listops("<answer>7</answer>", "8")
    assert not score_listops("7", "7")
    with pytest.raises(ValueError, match="ListOps gold"):
        score_listops("<answer>7</answer>", "x")


# ---------------------------------------------------------------- generic


def test_exact_scorer() -> None:
    exact = make_exact_scorer()
    assert exact.score("  Paris\n", "Paris")
    assert not exact.score("paris", "Paris")
    assert exact.extract(" Paris ") == "Paris"
    folded = make_exact_scorer(case_sensitive=False)
    assert folded.score("PARIS", "paris")
    assert not folded.score("Paris, France", "paris")


def test_regex_scorer() -> None:
    scorer = make_regex_scorer(r"Result:\s*(\w+)")
    assert scorer.extract("Result: blue sky") == "blue"
    assert scorer.score("x Result: blue", "blue")
    assert not scorer.score("x result: blue", "blue")  # case-sensitive by default
    assert not scorer.score("nothing", "blue")
    folded = make_regex_scorer(r"result:\s*(\w+)", case_sensitive=False)
    assert folded.score("RESULT: Blue", "blue")
    with pytest.raises(ValueError, match="exactly one capture group"):
        make_regex_scorer(r"(a)(b)")
    with pytest.raises(ValueError, match="exactly one capture group"):
        make_regex_scorer(r"abc")
    with pytest.raises(ValueError, match="invalid regex"):
        make_regex_scorer(r"(unclosed")


def test_named_scorers_bundle_extract_and_score() -> None:
    for scorer in (scorers.BOOLQ, scorers.WINOGRANDE, scorers.GSM8K, scorers.ARC, scorers.LISTOPS):
        assert callable(scorer.extract) and callable(scorer.score)
    assert scorers.GSM8K.score("Answer: 3", "3")
