"""Statistics of the quality study: summaries across seeds and McNemar's paired test. Torch-free."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of A and B on the same items (pooled over seeds, seed s with seed s)."""

    pairs: int
    a_only: int  # items A got right and B wrong
    b_only: int
    p_value: float  # exact two-sided binomial test on the discordant pairs
    interval: tuple[float, float]  # 95% interval of A-B in points: :func:`paired_interval`

    @property
    def difference_points(self) -> float:
        return 100.0 * (self.a_only - self.b_only) / self.pairs if self.pairs else 0.0


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p of ``k`` successes in ``n`` fair trials (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar(a: list[str], b: list[str]) -> McNemar:
    """McNemar's exact test; ``a`` and ``b`` are per-seed 0/1 strings over the same items."""
    if len(a) != len(b) or not a:
        raise ValueError("mcnemar needs the same number (>0) of seeds on both sides")
    a_only = b_only = pairs = 0
    for bits_a, bits_b in zip(a, b, strict=True):
        if len(bits_a) != len(bits_b):
            raise ValueError("the two sides were scored on different items")
        pairs += len(bits_a)
        for x, y in zip(bits_a, bits_b, strict=True):
            if x == "1" and y == "0":
                a_only += 1
            elif x == "0" and y == "1":
                b_only += 1
    p_value = binomial_two_sided_p(a_only, a_only + b_only)
    return McNemar(pairs, a_only, b_only, p_value, paired_interval(a, b))


def paired_interval(a: list[str], b: list[str], z: float = 1.96) -> tuple[float, float]:
    """A normal 95% interval of the accuracy difference A-B in points, clustered by item.

    The seeds score the same items, so an item's outcomes are correlated across seeds: the
    interval takes each item's difference summed over seeds as one observation (cluster-robust
    by item), where McNemar's pooled test counts every (item, seed) pair as independent. It
    shows the smallest difference the study can tell from none.
    """
    seeds, items = len(a), len(a[0]) if a else 0
    if not seeds or items < 2:
        return (0.0, 0.0)
    per_item = [
        sum(int(bits_a[i]) - int(bits_b[i]) for bits_a, bits_b in zip(a, b, strict=True))
        for i in range(items)
    ]
    mean = statistics.fmean(per_item)
    standard_error = statistics.stdev(per_item) / math.sqrt(items)
    scale = 100.0 / seeds
    return (scale * (mean - z * standard_error), scale * (mean + z * standard_error))


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation; 0 for one value
    low: float
    high: float
    n: int


def spread(values: list[float]) -> Spread:
    if not values:
        raise ValueError("no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(statistics.fmean(values), std, min(values), max(values), len(values))


def accuracy_by_group(bits: str, groups: list[str]) -> dict[str, float]:
    """Accuracy within each group label (e.g. the root operator of each test item)."""
    if len(bits) != len(groups):
        raise ValueError(f"{len(bits)} scores for {len(groups)} items")
    totals: dict[str, list[int]] = {}
    for bit, group in zip(bits, groups, strict=True):
        totals.setdefault(group, [0, 0])
        totals[group][0] += bit == "1"
        totals[group][1] += 1
    return {group: right / n for group, (right, n) in sorted(totals.items())}
