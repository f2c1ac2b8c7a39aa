"""The data order and learning-rate schedule of a run: pure functions of the spec and the step.

Resuming is exact because the position in the data is a function of the step alone: micro-batch
``m`` reads the ``m``-th slice of the concatenation of per-epoch permutations, each permutation
seeded by ``seed + epoch``. ``batch_size`` is the global batch: rank ``r`` of ``W`` reads the
``r``-th of ``W`` equal parts of each slice, so the rows a step trains on (and so the trained
adapter, up to the order of floating-point sums) do not depend on the number of ranks.

With ``group_by_length`` (``lengths`` set), each epoch's permutation is regrouped so that a
micro-batch holds rows of similar length and pads little: the random permutation is cut into
megabatches of ``MEGABATCH_BATCHES`` global batches, each megabatch is sorted by length
(longest first), and the order of the full global batches is then shuffled with the same
generator; a last, partial batch stays last. Still a pure function of ``seed + epoch``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from steering_core.spec.training_spec import ResolvedHyperparameters

MEGABATCH_BATCHES = 50  # global batches sorted together by length (as in transformers' Trainer)


@dataclass(frozen=True)
class DataPlan:
    n_rows: int
    batch_size: int  # rows per micro-batch, all ranks together (the global batch)
    world_size: int
    grad_accum: int
    n_epochs: int
    seed: int
    max_steps: int | None = None
    lengths: tuple[int, ...] | None = None  # each row's length: group batches by length

    def __post_init__(self) -> None:
        if self.lengths is not None and len(self.lengths) != self.n_rows:
            raise ValueError(f"{len(self.lengths)} lengths for {self.n_rows} rows")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} does not divide by the {self.world_size} ranks "
                "that split it; use a multiple of the number of processes"
            )

    @property
    def global_batch(self) -> int:
        return self.batch_size

    @property
    def per_rank(self) -> int:
        """Rows of one micro-batch on one rank."""
        return self.batch_size // self.world_size

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.global_batch)

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, (self.n_epochs * self.micro_per_epoch) // self.grad_accum)

    def epoch_of(self, micro: int) -> int:
        return micro // self.micro_per_epoch

    def ends_epoch(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) accumulates the last micro-batch of an
        epoch (with accumulation, an epoch may end inside a step)."""
        return self.epoch_of(step * self.grad_accum) > self.epoch_of((step - 1) * self.grad_accum)

    def permutation(self, epoch: int) -> list[int]:
        return list(self._epoch_order(epoch))

    @functools.lru_cache(maxsize=2)  # noqa: B019 - plans are few, small and live for one run
    def _epoch_order(self, epoch: int) -> tuple[int, ...]:
        """Computed once per epoch, not once per micro-batch (the grouped order sorts)."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n_rows, generator=generator).tolist()
        if self.lengths is None:
            return tuple(perm)
        lengths, size = self.lengths, self.global_batch
        mega = size * MEGABATCH_BATCHES
        grouped = [
            i
            for start in range(0, self.n_rows, mega)
            for i in sorted(perm[start : start + mega], key=lambda i: -lengths[i])
        ]
        n_full = self.n_rows // size
        order = torch.randperm(n_full, generator=generator).tolist()
        batches = [grouped[b * size : (b + 1) * size] for b in order]
        return tuple(i for batch in batches for i in batch) + tuple(grouped[n_full * size :])

    def planned_tokens(self, lengths: list[int]) -> int:
        """Tokens the whole run feeds through the model (all processes), given each row's
        length: what a ``max_training_tokens`` limit is checked against before step 1."""
        total, perm, perm_epoch = 0, [], -1
        for micro in range(self.total_steps * self.grad_accum):
            epoch, j = divmod(micro, self.micro_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = self.permutation(epoch), epoch
            start = j * self.global_batch
            total += sum(lengths[perm[(start + k) % self.n_rows]] for k in range(self.global_batch))
        return total

    def rows_for(self, micro: int, rank: int) -> list[int]:
        """Row indices of micro-batch ``micro`` for process ``rank``.

        Every micro-batch holds exactly ``global_batch`` rows: the last one of an epoch wraps
        to the start of that epoch's permutation, so no process ever gets an empty batch.
        """
        epoch, j = divmod(micro, self.micro_per_epoch)
        perm = self.permutation(epoch)
        start = j * self.global_batch + rank * self.per_rank
        return [perm[(start + k) % self.n_rows] for k in range(self.per_rank)]

    def step_micro_batches(self, step: int) -> range:
        """The micro-batches optimizer step ``step`` (1-based) accumulates."""
        return range((step - 1) * self.grad_accum, step * self.grad_accum)


def lr_lambda(hp: ResolvedHyperparameters, total_steps: int):
    """Multiplier of the base lr at optimizer step ``s`` (0-based): warmup, then the decay."""
    warmup = math.ceil(hp.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if hp.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if hp.lr_scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor
