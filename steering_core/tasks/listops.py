"""ListOps: nested list expressions over single digits (METHOD.md section 9).

Operators: ``MAX``, ``MIN``, ``MED`` (the lower median: ``sorted(xs)[(len(xs) - 1) // 2]``) and
``SM`` (sum modulo 10). Expressions are written as in the ListOps dataset, bracketed and
space-separated: ``[MAX 2 9 [MIN 4 7 ] 0 ]``. The depth of an expression is its number of nested
operator levels (``[MAX 1 2 ]`` has depth 1).

Generation is deterministic from a seed: an expression of depth ``d`` has one operator argument
of depth exactly ``d - 1`` at a random position; every other argument is a digit or, with
probability ``nest_probability``, a shallower sub-expression.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from steering_core.tasks.templates import listops_completion, listops_prompt

OPERATORS: tuple[str, ...] = ("MAX", "MIN", "MED", "SM")


@dataclass(frozen=True)
class ListOpsNode:
    """One operator applied to its arguments (digits or nested nodes)."""

    op: str
    args: tuple[int | ListOpsNode, ...]


def apply_operator(op: str, values: Sequence[int]) -> int:
    """Value of one operator on already evaluated arguments."""
    if not values:
        raise ValueError(f"{op} needs at least one argument")
    if op == "MAX":
        return max(values)
    if op == "MIN":
        return min(values)
    if op == "MED":
        return sorted(values)[(len(values) - 1) // 2]
    if op == "SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}; known: {', '.join(OPERATORS)}")


def evaluate(node: ListOpsNode | int) -> int:
    if isinstance(node, int):
        return node
    return apply_operator(node.op, [evaluate(arg) for arg in node.args])


def render(node: ListOpsNode | int) -> str:
    """Dataset notation: ``[OP a b [OP c d ] ]``."""
    if isinstance(node, int):
        return str(node)
    return "[" + node.op + " " + " ".join(render(arg) for arg in node.args) + " ]"


def depth(node: ListOpsNode | int) -> int:
    if isinstance(node, int):
        return 0
    return 1 + max(depth(arg) for arg in node.args)


def operators_of(node: ListOpsNode | int) -> list[str]:
    """Operator tokens in pre-order (the root operator first), with repeats."""
    if isinstance(node, int):
        return []
    found = [node.op]
    for arg in node.args:
        found.extend(operators_of(arg))
    return found


def parse_expression(text: str) -> ListOpsNode | int:
    """Parse dataset notation (``[MAX 2 [MIN 4 7 ] ]``; ``[ MAX`` and ``]]`` also accepted)."""
    tokens = text.replace("[", " [ ").replace("]", " ] ").split()
    if not tokens:
        raise ValueError("empty ListOps expression")
    node, position = _parse_tokens(tokens, 0)
    if position != len(tokens):
        raise ValueError(f"trailing tokens after expression: {' '.join(tokens[position:])!r}")
    return node


def _parse_tokens(tokens: list[str], position: int) -> tuple[ListOpsNode | int, int]:
    token = tokens[position]
    if token.isdigit():
        return int(token), position + 1
    if token != "[":
        raise ValueError(f"unexpected token {token!r} at position {position}")
    if position + 1 >= len(tokens) or tokens[position + 1] not in OPERATORS:
        found = tokens[position + 1] if position + 1 < len(tokens) else "end of input"
        raise ValueError(f"expected an operator ({', '.join(OPERATORS)}) after '[', got {found!r}")
    op = tokens[position + 1]
    position += 2
    args: list[int | ListOpsNode] = []
    while True:
        if position >= len(tokens):
            raise ValueError(f"unclosed '[{op}'")
        if tokens[position] == "]":
            break
        arg, position = _parse_tokens(tokens, position)
        args.append(arg)
    if not args:
        raise ValueError(f"'[{op}' has no arguments")
    return ListOpsNode(op, tuple(args)), position + 1


def evaluate_expression(text: str) -> int:
    """Parse and evaluate an expression string."""
    return evaluate(parse_expression(text))


def generate_tree(
    rng: random.Random,
    target_depth: int,
    *,
    min_args: int = 2,
    max_args: int = 4,
    operators: Sequence[str] = OPERATORS,
    root_op: str | None = None,
    nest_probability: float = 0.25,
) -> ListOpsNode:
    """A random expression of depth exactly ``target_depth`` (>= 1)."""
    if target_depth < 1:
        raise ValueError(f"target_depth must be >= 1, got {target_depth}")
    op = root_op if root_op is not None else rng.choice(list(operators))
    n_args = rng.randint(min_args, max_args)
    deep_slot = rng.randrange(n_args) if target_depth > 1 else -1
    args: list[int | ListOpsNode] = []
    for slot in range(n_args):
        child_depth = 0
        if slot == deep_slot:
            child_depth = target_depth - 1
        elif target_depth > 1 and rng.random() < nest_probability:
            child_depth = rng.randint(1, target_depth - 1)
        if child_depth == 0:
            args.append(rng.randint(0, 9))
        else:
            args.append(
                generate_tree(
                    rng,
                    child_depth,
                    min_args=min_args,
                    max_args=max_args,
                    operators=operators,
                    nest_probability=nest_probability,
                )
            )
    return ListOpsNode(op, tuple(args))


def make_record(node: ListOpsNode) -> dict[str, Any]:
    """The record of one expression: template prompt/completion plus analysis fields."""
    expression = render(node)
    value = evaluate(node)
    return {
        "prompt": listops_prompt(expression),
        "completion": listops_completion(value),
        "answer": value,
        "expression": expression,
        "depth": depth(node),
        "operators": operators_of(node),
    }


def generate_examples(
    n: int,
    seed: int,
    *,
    min_depth: int = 1,
    max_depth: int = 3,
    min_args: int = 2,
    max_args: int = 4,
    operators: Sequence[str] = OPERATORS,
    balance_operators: bool = False,
    nest_probability: float = 0.25,
    exclude: Collection[str] = (),
    max_attempts_factor: int = 100,
) -> list[dict[str, Any]]:
    """``n`` distinct ListOps records, deterministic from ``seed``.

    Each record: ``prompt``, ``completion`` (``<answer>{value}</answer>``), ``answer`` (int),
    ``expression``, ``depth`` and ``operators`` (pre-order, root first). The depth is uniform in
    ``[min_depth, max_depth]`` and the argument count uniform in ``[min_args, max_args]`` at every
    level. ``balance_operators`` gives each operator the same share of root operators (to within
    one). Expressions in ``exclude`` (e.g. a test split) and duplicates are skipped.
    """
    _check_bounds(n, min_depth, max_depth, min_args, max_args, operators, nest_probability)
    rng = random.Random(seed)
    roots: list[str | None] = [None] * n
    if balance_operators:
        roots = [operators[i % len(operators)] for i in range(n)]
        rng.shuffle(roots)
    seen = set(exclude)
    records: list[dict[str, Any]] = []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > max_attempts_factor * max(n, 1):
            raise ValueError(
                f"could only generate {len(records)} of {n} distinct expressions with these "
                "bounds; widen them or ask for fewer"
            )
        tree = generate_tree(
            rng,
            rng.randint(min_depth, max_depth),
            min_args=min_args,
            max_args=max_args,
            operators=operators,
            root_op=roots[len(records)],
            nest_probability=nest_probability,
        )
        expression = render(tree)
        if expression in seen:
            continue
        seen.add(expression)
        records.append(make_record(tree))
    return records


def _check_bounds(
    n: int,
    min_depth: int,
    max_depth: int,
    min_args: int,
    max_args: int,
    operators: Sequence[str],
    nest_probability: float,
) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_depth <= max_depth:
        raise ValueError(f"need 1 <= min_depth <= max_depth, got {min_depth}..{max_depth}")
    if not 1 <= min_args <= max_args:
        raise ValueError(f"need 1 <= min_args <= max_args, got {min_args}..{max_args}")
    unknown = [op for op in operators if op not in OPERATORS]
    if not operators or unknown:
        raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {operators}")
    if not 0.0 <= nest_probability <= 1.0:
        raise ValueError(f"nest_probability must be in [0, 1], got {nest_probability}")
