"""Process-level runtime: distributed environment, device, precision, seeding, ZeRO-3 gathers."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Rank and world size as set by the DeepSpeed launcher or torchrun (1 process otherwise)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_single_process_env() -> None:
    """DeepSpeed looks for mpi4py unless the launcher variables are set: set them for 1 process."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a rank must not outlive the launcher
    that its worker runs, nor the worker). Exits at once if the parent is already gone."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent or parent == 1:
        os._exit(137)


def redirect_rank_output(directory: Path, rank: int) -> None:
    """Send this rank's stderr to ``directory/rank-R.stderr`` (and, on ranks other than 0, its
    stdout to ``rank-R.stdout``), so each rank's messages stay apart and stdout carries rank 0's
    events alone. File descriptors are redirected, so native libraries' output follows."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = [(2, directory / f"rank-{rank}.stderr")]
    if rank != 0:
        targets.append((1, directory / f"rank-{rank}.stdout"))
    for fd, path in targets:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(handle, fd)
        os.close(handle)


def select_device(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on a device that supports it, fp32 otherwise (always fp32 on CPU)."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def is_zero3(params: Sequence[torch.nn.Parameter]) -> bool:
    return any(hasattr(p, "ds_id") for p in params)


@contextmanager
def gathered(params: Sequence[torch.nn.Parameter], *, modify: bool = False) -> Iterator[None]:
    """Make ZeRO-3-partitioned parameters whole for the block (no-op otherwise).

    Saving adapters without this writes empty tensors (a known DeepSpeed/peft pitfall).
    """
    if not is_zero3(params):
        with nullcontext():
            yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params), modifier_rank=0 if modify else None):
        yield


def hardware_summary(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info
