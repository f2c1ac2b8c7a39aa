"""Answer scorers: parse a generated continuation and compare it with the gold answer.

Each task has ``extract_<task>(generated) -> str | None`` (the parsed answer in canonical form,
or None when the text holds no parsable answer) and ``score_<task>(generated, gold) -> bool``.
Rules follow METHOD.md section 6 (and section 9 for ListOps):

- BoolQ: the first ``answer: true|false`` (case-insensitive, whole word: ``Answer: Truely`` is
  no answer). A bare ``true`` without ``answer:`` before it does not count.
- Winogrande: the first ``option1``/``option2`` (``Option 1`` also accepted) after the first
  ``answer:``; options mentioned before it are ignored.
- GSM8K: the first number after the last ``answer:``; if there is none, the last number of the
  whole text. Thousands separators (``1,234``), signs and decimals are understood; a sentence's
  final period is not part of the number. Correct when ``|pred - gold| < 1e-4``.
- ARC: the choice letter right after ``answer:``: ``(B)``, ``B)`` or a bare ``B``. Lowercase is
  accepted only with a parenthesis (``(c)``, ``c)``): a bare ``a`` is the English article.
- ListOps: the integer inside the first ``<answer>...</answer>`` (surrounding spaces allowed);
  exact integer equality.

A gold answer that cannot be read (``"maybe"`` for BoolQ) is a caller bug: ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from steering_core.tasks.templates import ARC_LETTERS

GSM8K_TOLERANCE = 1e-4

_ANSWER = re.compile(r"\banswer\s*:", re.IGNORECASE)
_BOOL_ANSWER = re.compile(r"\banswer\s*:\s*(true|false)\b", re.IGNORECASE)
_OPTION = re.compile(r"\boption\s*([12])\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_ARC_ANSWER = re.compile(
    rf"\banswer\s*:\s*(?:\(\s*([{ARC_LETTERS}])\s*\)|([{ARC_LETTERS}])\)|([{ARC_LETTERS}])(?!\w))",
    re.IGNORECASE,
)
_LISTOPS_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_INTEGER = re.compile(r"[-+]?\d+")


@dataclass(frozen=True)
class Scorer:
    """A named pair: ``extract(generated) -> str | None`` and ``score(generated, gold) -> bool``."""

    name: str
    extract: Callable[[str], str | None]
    score: Callable[[str, str], bool]


# ---------------------------------------------------------------- BoolQ


def _gold_bool(gold: str) -> str:
    text = str(gold).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"BoolQ gold must be 'true' or 'false', got {gold!r}")
    return text


def extract_boolq(generated: str) -> str | None:
    """``"true"`` / ``"false"`` from the first ``answer: true|false``, else None."""
    match = _BOOL_ANSWER.search(generated)
    return match.group(1).lower() if match else None


def score_boolq(generated: str, gold: str) -> bool:
    return extract_boolq(generated) == _gold_bool(gold)


# ---------------------------------------------------------------- Winogrande


def _gold_option(gold: str) -> str:
    text = str(gold).strip().lower().replace(" ", "").removeprefix("option")
    if text not in ("1", "2"):
        raise ValueError(
            f"Winogrande gold must be '1' or '2' (or 'Option1'/'Option2'), got {gold!r}"
        )
    return text


def extract_winogrande(generated: str) -> str | None:
    """``"1"`` / ``"2"``: the first option mentioned after the first ``answer:``, else None."""
    anchor = _ANSWER.search(generated)
    if anchor is None:
        return None
    match = _OPTION.search(generated, anchor.end())
    return match.group(1) if match else None


def score_winogrande(generated: str, gold: str) -> bool:
    return extract_winogrande(generated) == _gold_option(gold)


# ---------------------------------------------------------------- GSM8K


def _canonical_number(text: str) -> str:
    text = text.replace(",", "").replace("−", "-")
    if "." in text:
        value = float(text)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(int(text))


def parse_number(text: str) -> float:
    """Value of a number written like the GSM8K scorer reads it (``1,234``, ``-3.5``, ``7.``)."""
    cleaned = str(text).strip().removeprefix("$").removesuffix(".")
    match = _NUMBER.fullmatch(cleaned)
    if match is None:
        raise ValueError(f"not a number: {text!r}")
    return float(_canonical_number(match.group(0)))


def extract_gsm8k(generated: str) -> str | None:
    """The number after the last ``answer:`` (else the text's last number), canonical form."""
    anchors = list(_ANSWER.finditer(generated))
    if anchors:
        match = _NUMBER.search(generated, anchors[-1].end())
        if match is not None:
            return _canonical_number(match.group(0))
    numbers = _NUMBER.findall(generated)
    return _canonical_number(numbers[-1]) if numbers else None


def score_gsm8k(generated: str, gold: str) -> bool:
    gold_value = parse_number(gold)
    predicted = extract_gsm8k(generated)
    return predicted is not None and abs(float(predicted) - gold_value) < GSM8K_TOLERANCE


# ---------------------------------------------------------------- ARC


def _gold_letter(gold: str) -> str:
    text = str(gold).strip().strip("()").strip().upper()
    if len(text) != 1 or text not in ARC_LETTERS:
        raise ValueError(f"ARC gold must be a letter in {ARC_LETTERS}, got {gold!r}")
    return text


def extract_arc(generated: str) -> str | None:
    """The uppercase choice letter after ``answer:`` (``(B)``, ``B)``, ``B``), else None."""
    for match in _ARC_ANSWER.finditer(generated):
        paren, closed, bare = match.groups()
        if bare is not None and not bare.isupper():
            continue  # "Answer: a ..." is the article, not choice (a)
        return (paren or closed or bare).upper()
    return None


def score_arc(generated: str, gold: str) -> bool:
    return extract_arc(generated) == _gold_letter(gold)


# ---------------------------------------------------------------- ListOps


def extract_listops(generated: str) -> str | None:
    """The integer inside the first ``<answer>...</answer>``, else None."""
    match = _LISTOPS_ANSWER.search(generated)
    if match is None:
        return None
    inner = match.group(1).strip()
    return str(int(inner)) if _INTEGER.fullmatch(inner) else None


def score_listops(generated: str, gold: str) -> bool:
    try:
        gold_value = int(str(gold).strip())
    except ValueError as exc:
        raise ValueError(f"ListOps gold must be an integer, got {gold!r}") from exc
    predicted = extract_listops(generated)
    return predicted is not None and int(predicted) == gold_value


# ---------------------------------------------------------------- generic


def make_exact_scorer(*, case_sensitive: bool = True) -> Scorer:
    """Whole generated text (stripped) equals the gold (stripped); optionally case-folded."""

    def normalize(text: str) -> str:
        text = text.strip()
        return text if case_sensitive else text.casefold()

    def extract(generated: str) -> str | None:
        return generated.strip()  # case-folding only affects the comparison

    def score(generated: str, gold: str) -> bool:
        return normalize(generated) == normalize(str(gold))

    name = "exact" if case_sensitive else "exact_casefold"
    return Scorer(name=name, extract=extract, score=score)


def make_regex_scorer(pattern: str, *, case_sensitive: bool = True) -> Scorer:
    """First match of ``pattern`` (exactly one capture group); its group, stripped, vs the gold.

    ``case_sensitive=False`` makes both the matching and the comparison ignore case.
    """
    try:
        compiled = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    if compiled.groups != 1:
        raise ValueError(
            f"regex {pattern!r} must have exactly one capture group, has {compiled.groups}"
        )

    def normalize(text: str) -> str:
        text = text.strip()
        return text if case_sensitive else text.casefold()

    def extract(generated: str) -> str | None:
        match = compiled.search(generated)
        if match is None or match.group(1) is None:
            return None
        return match.group(1).strip()

    def score(generated: str, gold: str) -> bool:
        found = extract(generated)
        return found is not None and normalize(found) == normalize(str(gold))

    return Scorer(name="regex", extract=extract, score=score)


BOOLQ = Scorer("boolq", extract_boolq, score_boolq)
WINOGRANDE = Scorer("winogrande", extract_winogrande, score_winogrande)
GSM8K = Scorer("gsm8k", extract_gsm8k, score_gsm8k)
ARC = Scorer("arc", extract_arc, score_arc)
LISTOPS = Scorer("listops", extract_listops, score_listops)
