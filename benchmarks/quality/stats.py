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
    return McNemar(pairs, a_only, b_only, binomial_two_sided_p(a_only, a_only + b_only))


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
