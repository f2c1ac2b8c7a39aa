"""Statistics of the quality study: summaries across seeds, McNemar's paired test (items x seeds
pooled) and seed-aware comparisons (per-seed differences, seeds and items resampled). Torch-free:
the standard library and numpy."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

import numpy as np


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


# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom.
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042,
}  # fmt: skip


def t_975(degrees: int) -> float:
    """The 0.975 quantile of Student's t with ``degrees`` of freedom (the nearest tabulated
    value at or below it; 1.96 past 30)."""
    if degrees < 1:
        raise ValueError("a t interval needs at least two seeds")
    if degrees > 30:
        return 1.96
    return T_975[max(d for d in T_975 if d <= degrees)]


@dataclass(frozen=True)
class SeedLevel:
    """A-B per seed (seed s of A with seed s of B), in accuracy points, and what they give:
    their mean with a t interval on ``seeds - 1`` degrees of freedom (each seed one
    observation: run-to-run variance included, items held fixed), and a 95% interval from
    resampling seeds and items together (:func:`seed_item_bootstrap`)."""

    differences: tuple[float, ...]
    mean: float
    t_interval: tuple[float, float]
    degrees_of_freedom: int
    bootstrap_interval: tuple[float, float]

    @property
    def a_better(self) -> bool:
        """A above B at 95%: the seeds-and-items interval lies above zero."""
        return self.bootstrap_interval[0] > 0

    @property
    def b_better(self) -> bool:
        return self.bootstrap_interval[1] < 0


class _RandrangeStream:
    """``random.Random(seed).randrange(n)``, call after call, drawn in bulk: the same values in
    the same order. ``randrange(n)`` takes ``getrandbits(n.bit_length())`` and draws again while
    the value is ``>= n``; ``getrandbits(k)`` for ``k <= 32`` is one 32-bit word of the generator
    shifted right by ``32 - k``, and ``getrandbits(32 * m)`` is the next ``m`` words, the first in
    the lowest bits. So a block of words is read at once and the rejection done on arrays."""

    _BLOCK = 1 << 16  # words per refill

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._words = np.empty(0, dtype=np.uint32)
        self._at = 0

    def _ensure(self, count: int) -> None:
        if self._at + count <= len(self._words):
            return
        words = max(self._BLOCK, count)
        fresh = np.frombuffer(
            self._rng.getrandbits(32 * words).to_bytes(4 * words, "little"), dtype="<u4"
        )
        self._words = np.concatenate([self._words[self._at :], fresh])
        self._at = 0

    def draw(self, n: int, count: int) -> np.ndarray:
        """The next ``count`` values of ``randrange(n)``."""
        if not 1 <= n < 1 << 32:
            raise ValueError(f"randrange bound {n} outside 1..2**32-1")
        shift = 32 - n.bit_length()
        taken = np.empty(0, dtype=np.int64)
        while len(taken) < count:
            wanted = count - len(taken)
            look = wanted + wanted // 2 + 64
            self._ensure(look)
            values = (self._words[self._at : self._at + look] >> shift).astype(np.int64)
            accepted = values < n
            kept = np.flatnonzero(accepted)[:wanted]
            used = int(kept[-1]) + 1 if len(kept) == wanted else look
            taken = np.concatenate([taken, values[kept]])
            self._at += used
        return taken


def seed_item_bootstrap(
    a: list[str], b: list[str], draws: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """A 95% percentile interval of A-B in points, resampling seeds and items together: each
    draw picks seeds with replacement and items with replacement (the same items for every
    seed drawn), so both the run-to-run variance and the item sample's show in its width.
    Draw by draw, the seeds are ``seeds`` calls of ``random.Random(seed).randrange(seeds)``
    and the items the next ``items`` calls of ``randrange(items)``."""
    seeds, items = len(a), len(a[0]) if a else 0
    if not seeds or not items:
        return (0.0, 0.0)
    differences = np.array(
        [
            [int(x) - int(y) for x, y in zip(bits_a, bits_b, strict=True)]
            for bits_a, bits_b in zip(a, b, strict=True)
        ],
        dtype=np.int64,
    )
    stream = _RandrangeStream(seed)
    means = []
    for _ in range(draws):
        chosen_seeds = stream.draw(seeds, seeds)
        picks = np.bincount(stream.draw(items, items), minlength=items)
        total = int((differences @ picks)[chosen_seeds].sum())
        means.append(100.0 * total / (seeds * items))
    means.sort()
    return (means[int(0.025 * draws)], means[min(draws - 1, int(0.975 * draws))])


def seed_level(a: list[str], b: list[str], draws: int = 4000) -> SeedLevel:
    """The seed-aware comparison of A and B (per-seed 0/1 strings over the same items)."""
    if len(a) != len(b) or not a:
        raise ValueError("seed_level needs the same number (>0) of seeds on both sides")
    differences = []
    for bits_a, bits_b in zip(a, b, strict=True):
        if len(bits_a) != len(bits_b) or not bits_a:
            raise ValueError("the two sides were scored on different items")
        right_a, right_b = bits_a.count("1"), bits_b.count("1")
        differences.append(100.0 * (right_a - right_b) / len(bits_a))
    mean = statistics.fmean(differences)
    degrees = len(differences) - 1
    if degrees >= 1:
        half = t_975(degrees) * statistics.stdev(differences) / math.sqrt(len(differences))
        interval = (mean - half, mean + half)
    else:
        interval = (-math.inf, math.inf)  # one seed: no run-to-run variance to estimate
    return SeedLevel(
        tuple(differences), mean, interval, degrees, seed_item_bootstrap(a, b, draws=draws)
    )
