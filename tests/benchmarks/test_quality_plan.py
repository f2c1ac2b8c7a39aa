"""The quality study's plan: sweep, selection on validation, seeds, resumption order."""

from pathlib import Path

from plan import METHODS_BY_NAME, STEERING_GRID, Protocol, next_runs, run_key, select

PROTOCOL = Protocol(
    name="unit",
    model="m",
    task="listops",
    train_file=Path("train.jsonl"),
    validation_file=Path("val.jsonl"),
    test_file=Path("test.jsonl"),
)


def _result(key: str, accuracy: float, loss: float = 1.0) -> dict:
    return {"key": key, "validation_accuracy": accuracy, "validation_loss": loss}


def _keys(methods: tuple[str, ...], results: dict) -> list[str]:
    return [r.key for r in next_runs(PROTOCOL, results, tuple(METHODS_BY_NAME[m] for m in methods))]


def test_sweep_comes_first_and_seeds_wait_for_it() -> None:
    keys = _keys(("post_block",), {})
    assert keys == [run_key("post_block", lr, 0) for lr in STEERING_GRID]


def test_selection_by_validation_accuracy_then_loss() -> None:
    method = METHODS_BY_NAME["post_block"]
    results = {
        run_key("post_block", 1e-3, 0): _result(run_key("post_block", 1e-3, 0), 0.40, 0.9),
        run_key("post_block", 2e-3, 0): _result(run_key("post_block", 2e-3, 0), 0.45, 0.8),
        run_key("post_block", 5e-3, 0): _result(run_key("post_block", 5e-3, 0), 0.45, 0.7),
    }
    chosen = select(method, PROTOCOL, results)
    assert chosen is not None and chosen.learning_rate == 5e-3  # tie on accuracy: lower loss
    assert _keys(("post_block",), results) == [
        run_key("post_block", 5e-3, 1),
        run_key("post_block", 5e-3, 2),
    ]


def test_incomplete_sweep_selects_nothing() -> None:
    results = {run_key("post_block", 1e-3, 0): _result(run_key("post_block", 1e-3, 0), 0.4)}
    assert select(METHODS_BY_NAME["post_block"], PROTOCOL, results) is None
    assert _keys(("post_block",), results) == [
        run_key("post_block", lr, 0) for lr in STEERING_GRID[1:]
    ]


def test_joint_waits_for_the_post_block_rate_and_uses_it() -> None:
    assert _keys(("joint",), {}) == []
    results = {
        run_key("post_block", lr, 0): _result(run_key("post_block", lr, 0), acc)
        for lr, acc in zip(STEERING_GRID, (0.3, 0.5, 0.4), strict=True)
    }
    planned = next_runs(PROTOCOL, results, (METHODS_BY_NAME["joint"],))
    assert len(planned) == 3
    assert {p.steering_learning_rate for p in planned} == {2e-3}


def test_base_runs_once_and_finished_runs_are_never_planned_again() -> None:
    assert _keys(("base",), {}) == ["base-s0"]
    assert _keys(("base",), {"base-s0": _result("base-s0", 0.0)}) == []
