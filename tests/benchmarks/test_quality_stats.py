"""McNemar's exact test and the per-seed summaries of the quality study."""

import math
import random
import statistics

import pytest
from stats import (
    accuracy_by_group,
    binomial_two_sided_p,
    mcnemar,
    paired_interval,
    seed_item_bootstrap,
    seed_level,
    spread,
    t_975,
)


def test_binomial_p_matches_hand_computed_values() -> None:
    assert binomial_two_sided_p(0, 5) == pytest.approx(2 / 32)
    assert binomial_two_sided_p(5, 5) == pytest.approx(2 / 32)
    assert binomial_two_sided_p(2, 4) == 1.0  # the middle: capped at 1
    assert binomial_two_sided_p(0, 0) == 1.0
    # 1 of 10: 2 * (1 + 10) / 1024
    assert binomial_two_sided_p(1, 10) == pytest.approx(22 / 1024)


def test_binomial_p_survives_large_counts() -> None:
    p = binomial_two_sided_p(1400, 3000)
    assert 0 < p < 0.001
    assert math.isfinite(p)


def test_mcnemar_counts_discordant_pairs_across_seeds() -> None:
    a = ["1100", "1010"]
    b = ["1000", "0011"]
    test = mcnemar(a, b)
    assert test.pairs == 8
    assert (test.a_only, test.b_only) == (2, 1)  # seed 0: item 1; seed 1: item 0 vs item 3
    assert test.difference_points == pytest.approx(100 * 1 / 8)
    assert test.p_value == pytest.approx(1.0)


def test_mcnemar_detects_a_consistent_winner() -> None:
    a = ["1" * 40 + "0" * 60] * 3
    b = ["0" * 100] * 3
    test = mcnemar(a, b)
    assert test.a_only == 120 and test.b_only == 0
    assert test.p_value < 1e-30


def test_mcnemar_refuses_mismatched_items_or_seeds() -> None:
    with pytest.raises(ValueError, match="different items"):
        mcnemar(["101"], ["10"])
    with pytest.raises(ValueError, match="same number"):
        mcnemar(["1"], ["1", "0"])


def test_spread_and_groups() -> None:
    s = spread([40.0, 44.0, 42.0])
    assert (s.mean, s.low, s.high, s.n) == (42.0, 40.0, 44.0, 3)
    assert s.std == pytest.approx(2.0)
    assert spread([5.0]).std == 0.0
    assert accuracy_by_group("1101", ["SM", "MAX", "SM", "MAX"]) == {"MAX": 1.0, "SM": 0.5}
    with pytest.raises(ValueError):
        accuracy_by_group("11", ["SM"])


def test_paired_interval_is_clustered_by_item() -> None:
    # Per item, A-B summed over 2 seeds: [1, 0, -1, 2] -> mean 0.5, sd sqrt(5/3).
    a = ["1101", "1001"]
    b = ["1110", "0000"]
    low, high = paired_interval(a, b)
    mean, se = 0.5, math.sqrt(5 / 3) / 2
    assert low == pytest.approx(100 / 2 * (mean - 1.96 * se))
    assert high == pytest.approx(100 / 2 * (mean + 1.96 * se))
    assert mcnemar(a, b).interval == (low, high)
    # The interval is centred on the pooled difference.
    assert (low + high) / 2 == pytest.approx(mcnemar(a, b).difference_points)


def test_a_difference_repeated_by_every_seed_is_no_more_certain_than_one_seed() -> None:
    """Three seeds agreeing item for item carry one seed's information: the interval of the
    pooled pairs must not shrink by sqrt(3), as it would if the pairs were independent."""
    rng = random.Random(0)
    a1 = "".join(rng.choice("01") for _ in range(400))
    b1 = "".join(rng.choice("01") for _ in range(400))
    one = paired_interval([a1], [b1])
    three = paired_interval([a1] * 3, [b1] * 3)
    assert three == pytest.approx(one)


def _bits(right: int, items: int, offset: int = 0) -> str:
    """``right`` ones among ``items``, starting at ``offset`` (wrapping)."""
    bits = ["0"] * items
    for i in range(right):
        bits[(offset + i) % items] = "1"
    return "".join(bits)


def test_t_quantiles_are_students() -> None:
    assert t_975(2) == 4.303 and t_975(1) == 12.706 and t_975(11) == 2.228
    assert t_975(100) == 1.96
    with pytest.raises(ValueError):
        t_975(0)


def test_seed_level_takes_each_seed_as_one_observation() -> None:
    items = 200
    # A beats B by +10, -6 and +8 points on the three seeds
    a = [_bits(120, items), _bits(100, items), _bits(116, items)]
    b = [_bits(100, items), _bits(112, items), _bits(100, items)]
    result = seed_level(a, b, draws=2000)
    assert result.differences == (10.0, -6.0, 8.0)
    assert result.mean == pytest.approx(4.0) and result.degrees_of_freedom == 2
    half = 4.303 * statistics.stdev([10.0, -6.0, 8.0]) / math.sqrt(3)
    assert result.t_interval == pytest.approx((4.0 - half, 4.0 + half))
    assert result.t_interval[0] < 0 < result.t_interval[1]
    # pooled over items x seeds, McNemar calls it: the seed-aware view does not
    assert mcnemar(a, b).p_value < 0.01
    assert result.bootstrap_interval[0] < 0 < result.bootstrap_interval[1]
    assert not result.a_better and not result.b_better
    assert seed_level(a, b, draws=2000) == result  # deterministic


def test_seed_level_sees_a_consistent_winner() -> None:
    items = 300
    a = [_bits(210 + s, items, offset=s) for s in range(3)]  # about 70%
    b = [_bits(150 + s, items, offset=2 * s) for s in range(3)]  # about 50%
    result = seed_level(a, b, draws=2000)
    assert all(d == pytest.approx(20.0) for d in result.differences)
    assert result.t_interval == pytest.approx((20.0, 20.0))  # no run-to-run variance here
    low, high = result.bootstrap_interval
    assert 10 < low < 20 < high < 30  # the item sample still has its width
    assert result.a_better


def test_seed_level_refuses_mismatched_sides() -> None:
    with pytest.raises(ValueError):
        seed_level(["01"], ["01", "10"])
    with pytest.raises(ValueError):
        seed_level(["011"], ["01"])


def _bootstrap_one_draw_at_a_time(a: list[str], b: list[str], draws: int) -> tuple[float, float]:
    """The seeds-and-items bootstrap as written plainly: randrange call after call."""
    seeds, items = len(a), len(a[0])
    pairs = zip(a, b, strict=True)
    differences = [[int(x) - int(y) for x, y in zip(p, q, strict=True)] for p, q in pairs]
    rng = random.Random(0)
    means = []
    for _ in range(draws):
        chosen_seeds = [rng.randrange(seeds) for _ in range(seeds)]
        chosen_items = [rng.randrange(items) for _ in range(items)]
        total = sum(differences[s][i] for s in chosen_seeds for i in chosen_items)
        means.append(100.0 * total / (seeds * items))
    means.sort()
    return (means[int(0.025 * draws)], means[min(draws - 1, int(0.975 * draws))])


@pytest.mark.parametrize(
    ("seeds", "items"),
    [(1, 1), (1, 7), (3, 64), (3, 200), (2, 1000), (3, 1024), (4, 1500)],
)
def test_the_bulk_bootstrap_draws_exactly_what_randrange_draws(seeds: int, items: int) -> None:
    rng = random.Random(seeds * 7919 + items)
    a = ["".join(rng.choice("01") for _ in range(items)) for _ in range(seeds)]
    b = ["".join(rng.choice("0011") for _ in range(items)) for _ in range(seeds)]
    draws = 150
    assert seed_item_bootstrap(a, b, draws=draws) == _bootstrap_one_draw_at_a_time(a, b, draws)
