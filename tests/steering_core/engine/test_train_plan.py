"""The data order of a run, with and without grouping rows by length."""

from __future__ import annotations

import random

import pytest

from steering_core.engine.plan import MEGABATCH_BATCHES, DataPlan


def _lengths(n: int, seed: int = 0) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randint(20, 200) for _ in range(n))


def _plan(n: int, grouped: bool, **fields) -> DataPlan:
    base = {"batch_size": 8, "world_size": 1, "grad_accum": 1, "n_epochs": 2, "seed": 3}
    return DataPlan(n_rows=n, lengths=_lengths(n) if grouped else None, **{**base, **fields})


def _padded_tokens(plan: DataPlan, lengths: tuple[int, ...]) -> int:
    micro = plan.micro_per_epoch
    total = 0
    for m in range(micro):
        rows = [i for rank in range(plan.world_size) for i in plan.rows_for(m, rank)]
        total += max(lengths[i] for i in rows) * len(rows)
    return total


@pytest.mark.parametrize("n", [1000, 1003, 37])
def test_a_grouped_epoch_is_a_permutation_fixed_by_seed_and_epoch(n: int) -> None:
    plan = _plan(n, grouped=True)
    first = plan.permutation(0)
    assert sorted(first) == list(range(n))
    assert plan.permutation(0) == first
    assert plan.permutation(1) != first
    assert _plan(n, grouped=True, seed=4).permutation(0) != first


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_row_is_trained_once_per_epoch_when_grouped(world_size: int) -> None:
    n = 1003  # not a multiple of the global batch: the last batch wraps to the epoch's start
    plan = _plan(n, grouped=True, world_size=world_size)
    seen = [
        i
        for m in range(plan.micro_per_epoch)
        for r in range(world_size)
        for i in plan.rows_for(m, r)
    ]
    assert set(seen) == set(range(n))
    assert len(seen) == plan.micro_per_epoch * plan.global_batch
    # only the rows the last batch wraps to are seen twice
    assert len(seen) - len(set(seen)) == plan.micro_per_epoch * plan.global_batch - n > 0


def test_grouping_removes_most_padding() -> None:
    n = 2000
    lengths = _lengths(n)
    plain = _padded_tokens(_plan(n, grouped=False), lengths)
    grouped = _padded_tokens(_plan(n, grouped=True), lengths)
    real = sum(lengths)
    assert plain / real > 1.3  # random batches of 8 lengths in 20..200 pad a lot
    assert grouped / real < 1.03


def test_grouped_batches_come_in_shuffled_order_not_longest_first() -> None:
    n = 8 * MEGABATCH_BATCHES * 3
    lengths = _lengths(n)
    plan = _plan(n, grouped=True)
    longest = [max(lengths[i] for i in plan.rows_for(m, 0)) for m in range(plan.micro_per_epoch)]
    assert longest != sorted(longest, reverse=True)
    # batches hold rows of similar length: each batch spans a narrow range
    spans = [
        max(lengths[i] for i in plan.rows_for(m, 0)) - min(lengths[i] for i in plan.rows_for(m, 0))
        for m in range(plan.micro_per_epoch)
    ]
    assert sum(spans) / len(spans) < 10


def test_lengths_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="3 lengths for 4 rows"):
        DataPlan(
            n_rows=4,
            batch_size=2,
            world_size=1,
            grad_accum=1,
            n_epochs=1,
            seed=0,
            lengths=(1, 2, 3),
        )


def test_ungrouped_order_is_unchanged() -> None:
    """Runs without the option keep exactly the order they always had (resumable, comparable)."""
    import torch

    plan = _plan(100, grouped=False)
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(3 + 1)).tolist()
    assert plan.permutation(1) == expected


@pytest.mark.parametrize("grouped", [False, True])
def test_ranks_split_the_global_batch_into_the_one_rank_order(grouped: bool) -> None:
    """batch_size is global: two ranks read, together, exactly the rows one rank reads."""
    one = _plan(37, grouped, batch_size=4, world_size=1)
    two = _plan(37, grouped, batch_size=4, world_size=2)
    assert two.per_rank == 2 and two.total_steps == one.total_steps
    for m in range(one.total_steps * one.grad_accum):
        assert two.rows_for(m, 0) + two.rows_for(m, 1) == one.rows_for(m, 0)


def test_a_batch_that_does_not_divide_by_the_ranks_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size 6 does not divide by the 4 ranks"):
        _plan(10, False, batch_size=6, world_size=4)


def test_a_step_accumulates_its_own_micro_batches() -> None:
    plan = _plan(40, False, grad_accum=3)
    assert list(plan.step_micro_batches(1)) == [0, 1, 2]
    assert list(plan.step_micro_batches(2)) == [3, 4, 5]


@pytest.mark.parametrize(
    ("n_rows", "grad_accum", "ending"),
    [
        (16, 1, [2, 4, 6]),  # 2 micro-batches an epoch, one a step
        (24, 2, [2, 3]),  # 3 an epoch, 2 a step: epoch 1 ends inside step 2, epoch 2 with step 3
        (8, 2, [1]),  # 1 an epoch, 2 a step: the one step holds the ends of two epochs
    ],
)
def test_the_steps_that_end_an_epoch(n_rows: int, grad_accum: int, ending: list[int]) -> None:
    plan = _plan(n_rows, grouped=False, grad_accum=grad_accum, n_epochs=3)
    assert [s for s in range(1, plan.total_steps + 1) if plan.ends_epoch(s)] == ending
