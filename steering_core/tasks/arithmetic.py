"""GSM8K-style arithmetic word problems with step-by-step rationales.

Every rationale line holds exactly one computation written ``a op b = c`` (``op`` one of
``+ - * /``, integers only, divisions exact), each arithmetically right, and the final answer is
the result of the last line. Records use the GSM8K template: ``prompt`` = ``{question}\\n``,
``completion`` = ``{rationale}\\nAnswer: {number}``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

from steering_core.tasks.templates import gsm8k_completion, gsm8k_prompt

NAMES = (
    "Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Liam", "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq",
)  # fmt: skip
ITEMS = (
    "apples", "pencils", "stickers", "cookies", "marbles", "notebooks", "oranges", "candles",
    "postcards", "seashells", "cupcakes", "erasers",
)  # fmt: skip

Step = tuple[str, int]  # (sentence with one "a op b = c", its result c)
Problem = tuple[str, list[Step]]  # (question, steps)


def _step(template: str, a: int, op: str, b: int) -> Step:
    """Format one computation into ``template`` (which has an ``{expr}`` slot)."""
    if op == "+":
        c = a + b
    elif op == "-":
        c = a - b
    elif op == "*":
        c = a * b
    elif op == "/":
        if b == 0 or a % b:
            raise ValueError(f"inexact division {a} / {b}")
        c = a // b
    else:
        raise ValueError(f"unknown operator {op!r}")
    return template.format(expr=f"{a} {op} {b} = {c}"), c


def _shopping(rng: random.Random, name: str, item: str) -> Problem:
    count, price = rng.randint(2, 9), rng.randint(2, 12)
    cost = count * price
    bill = rng.choice([b for b in (20, 50, 100, 200) if b > cost])
    first = _step(f"The {item} cost {{expr}} dollars.", count, "*", price)
    second = _step("The change is {expr} dollars.", bill, "-", first[1])
    question = (
        f"{name} buys {count} {item} at ${price} each and pays with a ${bill} bill. "
        f"How much change does {name} get, in dollars?"
    )
    return question, [first, second]


def _sharing(rng: random.Random, name: str, item: str) -> Problem:
    while True:
        friends, each = rng.randint(2, 8), rng.randint(2, 12)
        total = friends * each
        pairs = [(b, total // b) for b in range(2, 13) if total % b == 0 and 2 <= total // b <= 12]
        if pairs:
            break
    boxes, per_box = rng.choice(pairs)
    first = _step(f"{name} has {{expr}} {item}.", boxes, "*", per_box)
    second = _step(f"Each friend gets {{expr}} {item}.", first[1], "/", friends)
    question = (
        f"{name} has {boxes} boxes with {per_box} {item} in each box. {name} shares all of them "
        f"equally among {friends} friends. How many {item} does each friend get?"
    )
    return question, [first, second]


def _rates(rng: random.Random, name: str, item: str) -> Problem:
    per_minute, morning, afternoon = rng.randint(3, 30), rng.randint(5, 40), rng.randint(5, 40)
    first = _step("The printer runs for {expr} minutes in total.", morning, "+", afternoon)
    second = _step("It prints {expr} pages.", per_minute, "*", first[1])
    question = (
        f"{name}'s printer prints {per_minute} pages per minute. It runs for {morning} minutes "
        f"in the morning and {afternoon} minutes in the afternoon. How many pages does it print?"
    )
    return question, [first, second]


def _travel(rng: random.Random, name: str, item: str) -> Problem:
    speed1, hours1 = rng.randint(20, 70), rng.randint(1, 5)
    speed2, hours2 = rng.randint(20, 70), rng.randint(1, 5)
    first = _step("First part: {expr} miles.", speed1, "*", hours1)
    second = _step("Second part: {expr} miles.", speed2, "*", hours2)
    third = _step(f"In total {name} drives {{expr}} miles.", first[1], "+", second[1])
    question = (
        f"{name} drives at {speed1} miles per hour for {hours1} hours, then at {speed2} miles "
        f"per hour for {hours2} hours. How many miles does {name} drive in total?"
    )
    return question, [first, second, third]


def _multi_step(rng: random.Random, name: str, item: str) -> Problem:
    start = rng.randint(20, 90)
    given = rng.randint(2, start - 5)
    packs, per_pack = rng.randint(2, 6), rng.randint(3, 12)
    first = _step(f"After giving some away, {name} has {{expr}} {item}.", start, "-", given)
    second = _step(f"The packs hold {{expr}} {item}.", packs, "*", per_pack)
    third = _step(f"Now {name} has {{expr}} {item}.", first[1], "+", second[1])
    question = (
        f"{name} has {start} {item}. {name} gives {given} of them to a friend, then buys "
        f"{packs} packs with {per_pack} {item} in each pack. How many {item} does {name} have now?"
    )
    return question, [first, second, third]


def _earnings(rng: random.Random, name: str, item: str) -> Problem:
    wage, hours, weeks = rng.randint(8, 25), rng.randint(5, 40), rng.randint(2, 8)
    weekly = wage * hours
    spent = rng.randint(1, weekly * weeks - 1)
    first = _step(f"Each week {name} earns {{expr}} dollars.", wage, "*", hours)
    second = _step("Over all the weeks that is {expr} dollars.", first[1], "*", weeks)
    third = _step("After spending, {expr} dollars are left.", second[1], "-", spent)
    question = (
        f"{name} earns ${wage} per hour and works {hours} hours a week. After {weeks} weeks, "
        f"{name} spends ${spent} on {item}. How many dollars does {name} have left?"
    )
    return question, [first, second, third]


TEMPLATES: dict[str, Callable[[random.Random, str, str], Problem]] = {
    "shopping": _shopping,
    "sharing": _sharing,
    "rates": _rates,
    "travel": _travel,
    "multi_step": _multi_step,
    "earnings": _earnings,
}


def generate_problem(rng: random.Random, template: str) -> dict[str, Any]:
    """One record from the named template: prompt, completion, answer, question, rationale."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown arithmetic template {template!r}; known: {', '.join(TEMPLATES)}")
    question, steps = TEMPLATES[template](rng, rng.choice(NAMES), rng.choice(ITEMS))
    rationale = "\n".join(sentence for sentence, _ in steps)
    answer = steps[-1][1]
    return {
        "prompt": gsm8k_prompt(question),
        "completion": gsm8k_completion(rationale, answer),
        "answer": answer,
        "question": question,
        "rationale": rationale,
        "template": template,
    }


def generate_problems(
    n: int,
    seed: int,
    *,
    templates: Sequence[str] | None = None,
    exclude: Collection[str] = (),
    max_attempts_factor: int = 100,
) -> list[dict[str, Any]]:
    """``n`` records with distinct questions, deterministic from ``seed``.

    Templates are drawn uniformly from ``templates`` (default: all of :data:`TEMPLATES`);
    questions in ``exclude`` (e.g. a test split's) are skipped.
    """
    names = list(templates) if templates is not None else list(TEMPLATES)
    unknown = [t for t in names if t not in TEMPLATES]
    if not names or unknown:
        raise ValueError(f"templates must be a non-empty subset of {list(TEMPLATES)}, got {names}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen = set(exclude)
    records: list[dict[str, Any]] = []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > max_attempts_factor * max(n, 1):
            raise ValueError(f"could only generate {len(records)} of {n} distinct problems")
        record = generate_problem(rng, rng.choice(names))
        if record["question"] in seen:
            continue
        seen.add(record["question"])
        records.append(record)
    return records
