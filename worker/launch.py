"""How a job's ranks are started: the command line and the environment of its processes.

One rank runs ``python -m steering_core.cli ...`` directly. Several ranks run under
``torch.distributed.run`` (torchrun), one process per rank on this machine:

- it ships with torch, so a worker needs neither ``pdsh``/``ssh`` nor a hostfile (which the
  DeepSpeed launcher needs even for one machine's ranks to be addressed by host), and the engine
  already reads the variables it sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_*``);
- ``--max-restarts 0``: a failing rank ends the job at once (the agent stops the other ranks);
  the service, not the launcher, decides about retries, from the last checkpoint;
- a static rendezvous on ``127.0.0.1`` at a port the worker picks free for each job, so two jobs
  on one machine never meet (torchrun's elastic rendezvous is for ranks across machines; see
  ``docs/architecture.md`` for what that would take).

The environment pins each job to what it was allocated: ``CUDA_VISIBLE_DEVICES`` lists its GPUs
(none for a CPU job, so it cannot take a device another job holds), and ``OMP_NUM_THREADS``
shares the machine's cores among the ranks.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from worker.allocation import Allocation

MONITOR_INTERVAL_SECONDS = 0.5  # how often torchrun checks its ranks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RankLaunch:
    """``processes`` ranks of one job on this machine, on the slots of ``allocation``;
    ``ranks_sharing_cores``: the ranks that share the machine's cores with this job's (for
    ``OMP_NUM_THREADS``; the job's own ranks by default)."""

    processes: int
    allocation: Allocation | None = None
    ranks_sharing_cores: int | None = None
    port: int | None = None  # several ranks: their rendezvous port (default: a free one)

    @property
    def inherited_fds(self) -> tuple[int, ...]:
        return tuple(self.allocation.fds) if self.allocation is not None else ()

    def command(self, engine_args: list[str], *, python: str) -> list[str]:
        """The command line that runs ``steering_core.cli ENGINE_ARGS`` on every rank."""
        if self.processes == 1:
            return [python, "-m", "steering_core.cli", *engine_args]
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(self.processes),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(self.port or free_port()),
            "--max-restarts",
            "0",
            "--monitor-interval",
            str(MONITOR_INTERVAL_SECONDS),
            "-m",
            "steering_core.cli",
            *engine_args,
        ]

    def environment(self, torch_threads: int | None) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.allocation is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.allocation.cuda_visible_devices or ""
        sharing = self.ranks_sharing_cores or self.processes
        threads = torch_threads or max(1, (os.cpu_count() or 1) // max(1, sharing))
        env["OMP_NUM_THREADS"] = str(threads)
        return env
