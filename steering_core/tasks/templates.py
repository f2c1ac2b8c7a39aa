"""Prompt -> completion templates of the evaluation tasks (METHOD.md sections 6 and 9).

Every template is plain text; ``\\n`` is a newline. The completion is what the model is trained
to produce after the prompt (the data pipeline appends EOS); scorers in
:mod:`steering_core.tasks.scorers` parse the generated continuation back into an answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

BOOLQ_PROMPT = (
    "Answer the question with a true/false based on the given passage.\n"
    "Passage: {passage}\nQuestion: {question}\n"
)
WINOGRANDE_PROMPT = (
    "Please choose the correct answer to fill in the blank to complete the given sentence: "
    "{sentence}\nOption1: {option1}\nOption2: {option2}\n"
)
GSM8K_PROMPT = "{question}\n"
ARC_HEADER = "Answer the following multiple-choice question.\nQuestion: {question}\n"
LISTOPS_PROMPT = (
    "Evaluate the value of the following nested list expression.\n"
    "Return only the final numeric result inside <answer>...</answer>.\n\n"
    "Expression:\n{expression}\n"
)

ARC_LETTERS = "ABCDEFGH"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


def boolq_prompt(passage: str, question: str) -> str:
    return BOOLQ_PROMPT.format(passage=passage, question=question)


def boolq_completion(answer: bool) -> str:
    return f"Answer: {'True' if answer else 'False'}."


def winogrande_prompt(sentence: str, option1: str, option2: str) -> str:
    return WINOGRANDE_PROMPT.format(sentence=sentence, option1=option1, option2=option2)


def winogrande_completion(answer: int | str) -> str:
    """``Answer: Option1.`` or ``Answer: Option2.``; ``answer`` is 1/2 or "1"/"2"."""
    choice = str(answer).strip()
    if choice not in ("1", "2"):
        raise ValueError(f"Winogrande answer must be 1 or 2, got {answer!r}")
    return f"Answer: Option{choice}."


def format_number(value: int | float | str) -> str:
    """Canonical text of a numeric answer: ``1,234`` -> ``1234``, ``12.0`` -> ``12``."""
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            number = float(text)
        except ValueError as exc:
            raise ValueError(f"not a number: {value!r}") from exc
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    if number.is_integer():
        return str(int(number))
    return repr(number)


def gsm8k_prompt(question: str) -> str:
    return GSM8K_PROMPT.format(question=question)


def gsm8k_completion(rationale: str, answer: int | float | str) -> str:
    """``{rationale}\\nAnswer: {number}``; an empty rationale gives just ``Answer: {number}``."""
    rationale = rationale.strip()
    final = f"Answer: {format_number(answer)}"
    return f"{rationale}\n{final}" if rationale else final


def split_gsm8k_solution(solution: str) -> tuple[str, str]:
    """Split an original GSM8K ``answer`` field (``...steps...\\n#### 72``) into rationale, number.

    Calculator annotations such as ``<<48/2=24>>`` are removed from the rationale: they are tool
    calls of the original annotation, not text a model should learn to write.
    """
    if "####" not in solution:
        raise ValueError("GSM8K solution has no '#### <number>' line")
    rationale, _, number = solution.rpartition("####")
    rationale = _CALCULATOR_ANNOTATION.sub("", rationale).strip()
    return rationale, number.strip()


def arc_prompt(question: str, choices: Sequence[str]) -> str:
    """Header, question, then one ``(A) text`` line per choice (letters in order)."""
    if not 2 <= len(choices) <= len(ARC_LETTERS):
        raise ValueError(f"ARC needs 2..{len(ARC_LETTERS)} choices, got {len(choices)}")
    lines = [f"({letter}) {text}\n" for letter, text in zip(ARC_LETTERS, choices, strict=False)]
    return ARC_HEADER.format(question=question) + "".join(lines)


def arc_completion(letter: str, text: str) -> str:
    """``Answer: (B) {text}.`` (a trailing period of ``text`` is not doubled)."""
    letter = letter.strip().upper()
    if len(letter) != 1 or letter not in ARC_LETTERS:
        raise ValueError(f"ARC answer letter must be one of {ARC_LETTERS}, got {letter!r}")
    return f"Answer: ({letter}) {text.strip().removesuffix('.')}."


def listops_prompt(expression: str) -> str:
    return LISTOPS_PROMPT.format(expression=expression)


def listops_completion(value: int) -> str:
    return f"<answer>{value}</answer>"
