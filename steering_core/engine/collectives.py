"""The collectives a run's ranks agree through; each a no-op in a single process.

Every rank must call them in the same order (one rank skipping one would hang the others).
"""

from __future__ import annotations

import torch


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sum_over_ranks(*values: float) -> tuple[float, ...]:
    """Each value summed over the ranks, in one all-reduce (float64: token counts stay exact)."""
    if not _distributed():
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tuple(float(value) for value in tensor.tolist())


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, True on every rank when any rank's is set (stop and pause decisions are
    collective), in one all-reduce."""
    if not _distributed():
        return flags
    tensor = torch.tensor([1 if flag else 0 for flag in flags], dtype=torch.int32)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def barrier() -> None:
    if _distributed():
        torch.distributed.barrier()
