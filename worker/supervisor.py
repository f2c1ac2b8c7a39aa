"""The training processes under the job's lease: launch, follow, stop.

- One rank: ``python -m steering_core.cli train``. Several: ``torch.distributed.run`` starting
  that command once per rank (see :mod:`worker.launch`). The process the worker starts runs in
  its own session (process group), and the kernel kills it when the worker that started it
  dies (``PR_SET_PDEATHSIG``); every rank is started with ``--die-with-parent`` and so dies
  with the launcher: no rank outlives its worker. It resumes from the job's last checkpoint
  when one exists.
- Only rank 0 prints events to stdout; each rank's stderr (and, for ranks other than 0, the
  error event it prints when it fails) goes to ``<job dir>/ranks/``, read back when it ends.
- :class:`LeaseKeeper` renews the lease from claim to the last write, in its own thread, and
  flags a cancel or pause request or a lost lease.
- :class:`TrainingSupervisor` hands each JSON line the process prints to a callback (the
  recorder), and stops the whole process group when the keeper raises a flag: SIGTERM on a
  cancel (the engine stops at its next step boundary), SIGKILL after a grace period; SIGKILL at
  once if following it fails (lease lost, database down past the retry window). A pause is
  asked with a file (``<job dir>/pause-requested``, the engine's ``--pause-file``): the engine
  saves a checkpoint at its next step boundary and exits ``PAUSED``; no deadline, since the
  checkpoint is the point of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from registry.errors import LeaseLost
from registry.settings import Settings
from steering_core.engine.events import EndEvent, ErrorEvent, TrainingEvent, parse_event
from worker.launch import RankLaunch
from worker.leased_job import LeasedJob

log = logging.getLogger("steer.worker")
KILL_GRACE_SECONDS = 8.0
PR_SET_PDEATHSIG = 1
# Set by a distributed launcher around the worker; the engine must not think it is one rank.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
STDERR_LINES_KEPT = 40
PAUSE_FILE = "pause-requested"  # in the job's directory; the engine checks it at each step


class LeaseKeeper(threading.Thread):
    """Renews the job's lease every third of its length, in its own thread: neither a burst of
    events nor a slow artifact check can let it lapse. Sets ``cancel_requested`` or
    ``pause_requested`` when one arrives and ``lost`` when another worker took over (or the
    database stayed down)."""

    def __init__(self, leased: LeasedJob):
        super().__init__(name=f"lease-{leased.job_id}", daemon=True)
        self.leased = leased
        self.every = max(0.2, leased.settings.lease_seconds / 3)
        self.stopping = threading.Event()
        self.cancel_requested = threading.Event()
        self.pause_requested = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                renewal = self.leased.renew()
            except LeaseLost:
                self.lost.set()
                return
            except Exception as exc:  # the database stayed down past the retry window
                log.error("job %s: cannot renew the lease: %s", self.leased.job_id, exc)
                self.lost.set()
                return
            if renewal.cancel_requested:
                self.cancel_requested.set()
            if renewal.pause_requested:
                self.pause_requested.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


@dataclass(frozen=True)
class TrainingExit:
    """How the training process ended."""

    returncode: int
    cancelled: bool  # the supervisor stopped it because the job's cancel was requested
    stderr_tail: list[str]  # its last lines of stderr (the launcher's, with several ranks)
    # The engine reported its end as paused, its checkpoint saved: with several ranks the
    # launcher's exit code is torchrun's failure (each rank exits PAUSED), not the engine's.
    paused: bool = False
    world_size: int = 1
    rank_errors: dict[int, ErrorEvent] = field(default_factory=dict)  # ranks other than 0
    rank_stderr: dict[int, list[str]] = field(default_factory=dict)  # each rank's last lines


def _own_group_dying_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError):  # Linux: SIGKILL it when the worker that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class TrainingSupervisor:
    """Runs the job's training subprocess in ``job_dir`` to its end, under ``keeper``'s lease."""

    def __init__(
        self,
        settings: Settings,
        job_dir: Path,
        keeper: LeaseKeeper,
        launch: RankLaunch | None = None,
    ):
        self.settings, self.job_dir, self.keeper = settings, job_dir, keeper
        self.launch_plan = launch or RankLaunch(processes=1)
        self.job_id = keeper.leased.job_id
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self.ended_paused = False

    @property
    def ranks_dir(self) -> Path:
        return self.job_dir / "ranks"

    @property
    def pause_file(self) -> Path:
        return self.job_dir / PAUSE_FILE

    def run(self, spec_path: Path, on_event: Callable[[TrainingEvent], None]) -> TrainingExit:
        """Launch and follow the training; ``on_event`` gets each event it prints. If following
        it fails, the process group is killed before the error propagates."""
        proc = self.launch(spec_path)
        try:
            returncode, cancelled = self._follow(proc, on_event)
        except BaseException:
            _kill_group(proc)
            raise
        return TrainingExit(
            returncode,
            cancelled,
            list(self.stderr_tail),
            paused=self.ended_paused,
            world_size=self.launch_plan.processes,
            rank_errors=self._rank_errors(),
            rank_stderr=self._rank_stderr(),
        )

    def command(self, spec_path: Path) -> list[str]:
        out = self.job_dir / "run"
        train = ["train", "--spec", str(spec_path), "--out", str(out)]
        train += ["--pause-file", str(self.pause_file)]
        if (out / "checkpoints").is_dir():  # an earlier attempt saved some: resume
            train.append("--resume")
        if self.launch_plan.processes > 1:
            train += ["--rank-logs", str(self.ranks_dir), "--die-with-parent"]
        return self.launch_plan.command([*self._cache_dir_args(), *train], python=sys.executable)

    def _cache_dir_args(self) -> list[str]:
        if self.settings.model_cache_dir is None:
            return []
        return ["--cache-dir", str(self.settings.model_cache_dir)]

    def launch(self, spec_path: Path) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
        env.update(self.launch_plan.environment(self.settings.torch_threads))
        env["PYTHONUNBUFFERED"] = "1"
        shutil.rmtree(self.ranks_dir, ignore_errors=True)  # this attempt's ranks only
        self.pause_file.unlink(missing_ok=True)  # an earlier attempt's pause is done
        return subprocess.Popen(
            self.command(spec_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_own_group_dying_with_parent,
            cwd=str(self.job_dir),
            pass_fds=self.launch_plan.inherited_fds,  # the job's device locks (allocation)
        )

    def _rank_errors(self) -> dict[int, ErrorEvent]:
        errors: dict[int, ErrorEvent] = {}
        for rank in range(1, self.launch_plan.processes):
            path = self.ranks_dir / f"rank-{rank}.stdout"
            lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
            for line in lines:
                event = parse_event(line)
                if isinstance(event, ErrorEvent):
                    errors[rank] = event
        return errors

    def _rank_stderr(self) -> dict[int, list[str]]:
        tails: dict[int, list[str]] = {}
        if self.launch_plan.processes == 1:
            return tails
        for rank in range(self.launch_plan.processes):
            path = self.ranks_dir / f"rank-{rank}.stderr"
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()
                tails[rank] = [line for line in lines if line.strip()][-STDERR_LINES_KEPT:]
        return tails

    def _follow(
        self, proc: subprocess.Popen[str], on_event: Callable[[TrainingEvent], None]
    ) -> tuple[int, bool]:
        """(exit code, whether a cancel stopped it)."""
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPE
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump_lines, args=(proc.stdout, lines), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(proc.stderr,), daemon=True).start()
        kill_at: float | None = None
        pause_asked = False
        stdout_open = True
        while True:
            now = time.monotonic()
            if self.keeper.lost.is_set():
                log.warning("job %s: lease lost, stopping", self.job_id)
                token = self.keeper.leased.token
                raise LeaseLost(f"lease {token} on job {self.job_id} is no longer held")
            if self.keeper.cancel_requested.is_set() and kill_at is None:
                log.info("job %s: cancel requested, stopping training", self.job_id)
                os.killpg(proc.pid, signal.SIGTERM)
                kill_at = now + KILL_GRACE_SECONDS
            if kill_at is not None and now >= kill_at and proc.poll() is None:
                _kill_group(proc)
            if self.keeper.pause_requested.is_set() and not pause_asked:
                log.info("job %s: pause requested, checkpointing and stopping", self.job_id)
                self.pause_file.touch()
                pause_asked = True
            try:
                line = lines.get(timeout=0.2) if stdout_open else None
            except queue.Empty:
                line = ""
            if line is None:  # stdout closed: wait for the exit, still watching the flags
                stdout_open = False
                if proc.poll() is not None:
                    return proc.wait(), kill_at is not None
                time.sleep(0.1)
                continue
            event = parse_event(line) if line else None
            if isinstance(event, EndEvent) and event.status == "paused":
                self.ended_paused = True
            if event is not None:
                on_event(event)

    @staticmethod
    def _pump_lines(stream: IO[str], sink: queue.Queue[str | None]) -> None:
        for line in stream:
            sink.put(line)
        sink.put(None)

    def _pump_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_tail.append(line.rstrip())
