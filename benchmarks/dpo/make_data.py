"""The DPO benchmark's preference data: short arithmetic questions whose preferred reply is
exactly ``Answer: N``, the non-preferred one a natural sentence with the same correct number.

    python benchmarks/dpo/make_data.py

The rule a reply is checked for (:data:`RULE`): it starts with ``Answer: `` followed by a
number. Both replies of a pair hold the right number, so what DPO can learn from the pairs is
the form of the reply, not the arithmetic.

Three splits, byte-identical on every run (fixed seeds):

- ``data/train.jsonl`` (256 pairs) and ``data/validation.jsonl`` (48 pairs, no question of the
  training file): OpenAI preference JSONL over the six training phrasings, operands of sums and
  differences in 2..59, of products in 2..12;
- ``data/test.jsonl`` (100 held-out prompts, with their answers): operands disjoint from
  training (sums and differences in 60..99, products 13..19 times 2..9), the six training
  phrasings and two phrasings never seen in training (``seen_phrasing: false``).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

# The rule: a reply that starts with "Answer: " followed by a number (its value: group 1).
RULE = re.compile(r"^Answer: (-?\d+)")

OPS: dict[str, Callable[[int, int], int]] = {
    "plus": lambda a, b: a + b,
    "minus": lambda a, b: a - b,
    "times": lambda a, b: a * b,
}


@dataclass(frozen=True)
class Phrasing:
    name: str
    # the question, by operation, with {a} and {b}
    question: dict[str, str]


TRAIN_PHRASINGS = (
    Phrasing("what_is", {op: f"What is {{a}} {op} {{b}}?" for op in OPS}),
    Phrasing("compute", {op: f"Compute {{a}} {op} {{b}}." for op in OPS}),
    Phrasing(
        "calculate",
        {
            "plus": "Calculate the sum of {a} and {b}.",
            "minus": "Calculate the difference between {a} and {b}.",
            "times": "Calculate the product of {a} and {b}.",
        },
    ),
    Phrasing(
        "how_much",
        {
            "plus": "How much is {a} + {b}?",
            "minus": "How much is {a} - {b}?",
            "times": "How much is {a} * {b}?",
        },
    ),
    Phrasing(
        "tell_me",
        {op: f"Tell me what {{a}} {op} {{b}} equals." for op in OPS},
    ),
    Phrasing(
        "solve",
        {
            "plus": "Solve: {a} + {b} = ?",
            "minus": "Solve: {a} - {b} = ?",
            "times": "Solve: {a} x {b} = ?",
        },
    ),
)
# Only in the test split.
UNSEEN_PHRASINGS = (
    Phrasing(
        "quick_question",
        {
            "plus": "Quick question: if I add {a} and {b}, what do I get?",
            "minus": "Quick question: if I take {b} away from {a}, what is left?",
            "times": "Quick question: if I multiply {a} by {b}, what do I get?",
        },
    ),
    Phrasing(
        "homework",
        {
            "plus": "My homework asks for {a} added to {b}. What's the result?",
            "minus": "My homework asks for {b} subtracted from {a}. What's the result?",
            "times": "My homework asks for {a} multiplied by {b}. What's the result?",
        },
    ),
)
# The non-preferred replies: natural sentences holding the same (correct) number.
SENTENCES = (
    "{a} {op} {b} equals {n}.",
    "{a} {op} {b} is {n}.",
    "The answer is {n}.",
    "Sure! {a} {op} {b} = {n}.",
    "That would be {n}.",
)
SYMBOLS = {"plus": "+", "minus": "-", "times": "x"}

TRAIN_RANGES = {"plus": ((2, 59), (2, 59)), "minus": ((2, 59), (2, 59)), "times": ((2, 12),) * 2}
TEST_RANGES = {
    "plus": ((60, 99), (60, 99)),
    "minus": ((60, 99), (60, 99)),
    "times": ((13, 19), (2, 9)),
}
N_TRAIN, N_VALIDATION, N_TEST = 256, 48, 100
SEEDS = {"train": 5101, "validation": 5102, "test": 5103}


def draw_question(rng: random.Random, op: str, ranges: dict) -> tuple[int, int]:
    (lo_a, hi_a), (lo_b, hi_b) = ranges[op]
    a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
    if op == "minus" and a < b:
        a, b = b, a
    return a, b


def preference_line(phrasing: Phrasing, op: str, a: int, b: int, rng: random.Random) -> dict:
    n = OPS[op](a, b)
    sentence = rng.choice(SENTENCES).format(a=a, b=b, n=n, op=rng.choice((op, SYMBOLS[op])))
    return {
        "input": {
            "messages": [{"role": "user", "content": phrasing.question[op].format(a=a, b=b)}]
        },
        "preferred_output": [{"role": "assistant", "content": f"Answer: {n}"}],
        "non_preferred_output": [{"role": "assistant", "content": sentence}],
    }


def preference_split(n: int, seed: int, taken: set) -> list[dict]:
    """``n`` pairs over the training phrasings, round-robin over operations and phrasings; no
    (operation, a, b) of ``taken``, which the split's own questions join."""
    rng = random.Random(seed)
    lines = []
    while len(lines) < n:
        op = list(OPS)[len(lines) % len(OPS)]
        phrasing = TRAIN_PHRASINGS[(len(lines) // len(OPS)) % len(TRAIN_PHRASINGS)]
        a, b = draw_question(rng, op, TRAIN_RANGES)
        if (op, a, b) in taken:
            continue
        taken.add((op, a, b))
        lines.append(preference_line(phrasing, op, a, b, rng))
    rng.shuffle(lines)
    return lines


def test_split(n: int, seed: int) -> list[dict]:
    """``n`` held-out prompts with their answers, round-robin over every phrasing (the unseen
    ones included) and operation; no question twice."""
    rng = random.Random(seed)
    phrasings = (*TRAIN_PHRASINGS, *UNSEEN_PHRASINGS)
    seen: set = set()
    rows = []
    while len(rows) < n:
        op = list(OPS)[len(rows) % len(OPS)]
        phrasing = phrasings[(len(rows) // len(OPS)) % len(phrasings)]
        a, b = draw_question(rng, op, TEST_RANGES)
        if (op, a, b) in seen:
            continue
        seen.add((op, a, b))
        rows.append(
            {
                "input": {
                    "messages": [
                        {"role": "user", "content": phrasing.question[op].format(a=a, b=b)}
                    ]
                },
                "answer": OPS[op](a, b),
                "operation": op,
                "phrasing": phrasing.name,
                "seen_phrasing": phrasing in TRAIN_PHRASINGS,
            }
        )
    return rows


def build() -> dict[str, list[dict]]:
    taken: set = set()
    validation = preference_split(N_VALIDATION, SEEDS["validation"], taken)
    train = preference_split(N_TRAIN, SEEDS["train"], taken)
    return {"train": train, "validation": validation, "test": test_split(N_TEST, SEEDS["test"])}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> int:
    DATA.mkdir(exist_ok=True)
    for split, rows in build().items():
        write_jsonl(DATA / f"{split}.jsonl", rows)
        print(f"{DATA / split}.jsonl: {len(rows)} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
