"""Devices and CPU slots, allocated to one job at a time: a GPU is never handed to two jobs.

Each GPU and each CPU slot of the machine is a lock file under ``<data_dir>/devices``
(``gpu-0.lock``, ``cpu-1.lock``) held with ``flock``. A job takes the GPUs it asks for (a GPU
job) or one CPU slot per rank (a CPU job), all of them or none. ``flock`` belongs to the open file,
so the locks hold across the worker's threads and across worker processes sharing the data
directory, and the kernel releases them when the last process holding the files exits: the
launcher inherits the descriptors, so a job's devices stay taken for exactly as long as any of
its processes lives, whether the worker ends it, or the worker is killed and its launcher with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from registry.workers import compute_needs

Kind = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class JobNeed:
    """What one job takes: ``gpus`` devices, or (a CPU job) one CPU slot per process."""

    gpus: int
    processes: int

    @property
    def kind(self) -> Kind:
        return "gpu" if self.gpus > 0 else "cpu"

    @property
    def count(self) -> int:
        return self.gpus if self.gpus > 0 else self.processes

    @classmethod
    def of(cls, compute: dict | None, gpus: int) -> JobNeed:
        """From a job's stored ``compute`` block (rows written before it existed: ``gpus``)."""
        return cls(*compute_needs(compute or {"gpus": gpus}))


@dataclass
class Allocation:
    """The slots one job holds; ``fds`` are the open, locked files (inherited by its launcher)."""

    kind: Kind
    ids: list[int]
    fds: list[int] = field(default_factory=list)

    @property
    def cuda_visible_devices(self) -> str | None:
        return ",".join(str(i) for i in self.ids) if self.kind == "gpu" else None

    def release(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


class SlotAllocator:
    """The machine's ``gpus`` GPUs and ``cpu_slots`` CPU slots, as lock files in ``lock_dir``."""

    def __init__(self, lock_dir: Path, *, gpus: int, cpu_slots: int):
        self.lock_dir, self.gpus, self.cpu_slots = lock_dir, gpus, cpu_slots
        lock_dir.mkdir(parents=True, exist_ok=True)

    def capacity(self, kind: Kind) -> int:
        return self.gpus if kind == "gpu" else self.cpu_slots

    def fits(self, need: JobNeed) -> bool:
        """Whether this worker could ever run the job (it may have to wait for its slots)."""
        return need.count <= self.capacity(need.kind)

    def try_allocate(self, need: JobNeed) -> Allocation | None:
        """Lock ``need.count`` free slots of its kind, lowest ids first; None when fewer are free
        now (nothing stays locked then)."""
        allocation = Allocation(need.kind, [])
        for slot in range(self.capacity(need.kind)):
            if len(allocation.ids) == need.count:
                break
            fd = os.open(self.lock_dir / f"{need.kind}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            allocation.ids.append(slot)
            allocation.fds.append(fd)
        if len(allocation.ids) < need.count:
            allocation.release()
            return None
        return allocation

    def is_free(self, kind: Kind, slot: int) -> bool:
        """Whether nothing holds the slot now (for checks and tests)."""
        fd = os.open(self.lock_dir / f"{kind}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True
