"""ListOps generator and evaluator, cross-checked by an independent evaluator."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from steering_core.tasks import listops
from steering_core.tasks.scorers import score_listops


def reference_value(expression: str) -> int:
    """Independent stack-based evaluation of the dataset notation."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for token in expression.split():
        if token.startswith("["):
            stack.append((token[1:], []))
        elif token == "]":
            op, args = stack.pop()
            if op == "MAX":
                value = max(args)
            elif op == "MIN":
                value = min(args)
            elif op == "MED":
                ordered = sorted(args)
                value = ordered[len(ordered) // 2 - (1 - len(ordered) % 2)]  # lower median
            elif op == "SM":
                value = 0
                for arg in args:
                    value = (value + arg) % 10
            else:
                raise AssertionError(op)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        else:
            stack[-1][1].append(int(token))
    assert result is not None and not stack
    return result


def reference_shape(expression: str) -> tuple[int, list[int]]:
    """(depth, argument count of every operator) by scanning brackets."""
    level = deepest = 0
    counts: list[int] = []
    open_counts: list[int] = []
    for token in expression.split():
        if token.startswith("["):
            if open_counts:
                open_counts[-1] += 1
            open_counts.append(0)
            level += 1
            deepest = max(deepest, level)
        elif token == "]":
            counts.append(open_counts.pop())
            level -= 1
        else:
            open_counts[-1] += 1
    return deepest, counts


def test_evaluate_known_expressions() -> None:
    assert listops.evaluate_expression("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9
    assert listops.evaluate_expression("[MIN 2 9 [MAX 4 7 ] 0 ]") == 0
    assert listops.evaluate_expression("[SM 9 8 7 ]") == 4
    assert listops.evaluate_expression("[SM 5 [SM 9 9 ] ]") == 3
    assert listops.evaluate_expression("3") == 3


def test_med_is_lower_median() -> None:
    assert listops.apply_operator("MED", [1, 9]) == 1
    assert listops.apply_operator("MED", [4, 1, 9, 7]) == 4
    assert listops.apply_operator("MED", [5, 1, 9]) == 5
    assert listops.evaluate_expression("[MED 8 2 6 4 ]") == 4
    assert listops.evaluate_expression("[MED 3 [MAX 1 2 ] ]") == 2


def test_parse_accepts_dataset_spacing_and_rejects_garbage() -> None:
    assert listops.evaluate_expression("[ MAX 1 [MIN 3 4 ]]") == 3
    node = listops.parse_expression("[MAX 2 9 [MIN 4 7 ] 0 ]")
    assert listops.render(node) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    for bad in ("", "[FOO 1 2 ]", "[MAX 1 2", "[MAX ]", "[MAX 1 ] 2", "]", "[MAX x ]"):
        with pytest.raises(ValueError):
            listops.parse_expression(bad)


def test_generation_is_deterministic() -> None:
    first = listops.generate_examples(50, seed=7)
    assert first == listops.generate_examples(50, seed=7)
    assert first != listops.generate_examples(50, seed=8)


def test_generated_values_match_independent_evaluation() -> None:
    for record in listops.generate_examples(500, seed=3):
        expression = record["expression"]
        assert record["answer"] == reference_value(expression)
        assert listops.evaluate_expression(expression) == record["answer"]
        assert record["completion"] == f"<answer>{record['answer']}</answer>"
        assert record["prompt"].endswith(f"Expression:\n{expression}\n")
        assert score_listops(record["completion"], str(record["answer"]))
        assert record["operators"] == [t[1:] for t in expression.split() if t.startswith("[")]


@pytest.mark.parametrize(
    ("min_depth", "max_depth", "min_args", "max_args"), [(1, 3, 2, 4), (2, 2, 3, 3), (1, 5, 1, 6)]
)
def test_depth_and_argument_bounds(
    min_depth: int, max_depth: int, min_args: int, max_args: int
) -> None:
    records = listops.generate_examples(
        300, seed=11, min_depth=min_depth, max_depth=max_depth, min_args=min_args, max_args=max_args
    )
    depths = Counter()
    for record in records:
        found_depth, counts = reference_shape(record["expression"])
        assert found_depth == record["depth"]
        assert min_depth <= found_depth <= max_depth
        assert all(min_args <= c <= max_args for c in counts)
        depths[found_depth] += 1
    assert set(depths) == set(range(min_depth, max_depth + 1))  # every depth occurs


def test_digits_and_operators() -> None:
    records = listops.generate_examples(200, seed=5, operators=("MIN", "SM"))
    for record in records:
        tokens = record["expression"].replace("]", " ").split()
        for token in tokens:
            assert token in ("[MIN", "[SM") or (len(token) == 1 and token.isdigit())
        assert 0 <= record["answer"] <= 9


def test_balanced_operators_and_exclusion() -> None:
    records = listops.generate_examples(101, seed=2, balance_operators=True)
    roots = Counter(r["operators"][0] for r in records)
    assert set(roots) == set(listops.OPERATORS)
    assert max(roots.values()) - min(roots.values()) <= 1
    expressions = [r["expression"] for r in records]
    assert len(set(expressions)) == len(expressions)
    others = listops.generate_examples(101, seed=2, balance_operators=True, exclude=expressions)
    assert not set(expressions) & {r["expression"] for r in others}


def test_generate_tree_exact_depth() -> None:
    rng = random.Random(0)
    for depth in range(1, 6):
        assert listops.depth(listops.generate_tree(rng, depth)) == depth


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        listops.generate_examples(3, seed=0, min_depth=0)
    with pytest.raises(ValueError):
        listops.generate_examples(3, seed=0, operators=("ADD",))
    with pytest.raises(ValueError):
        listops.apply_operator("ADD", [1])
    with pytest.raises(ValueError, match="distinct"):  # only 10 * 10 two-digit MAX expressions
        listops.generate_examples(
            500,
            seed=0,
            max_depth=1,
            min_args=2,
            max_args=2,
            operators=("MAX",),
            max_attempts_factor=5,
        )
