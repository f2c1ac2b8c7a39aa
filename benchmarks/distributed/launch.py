"""One training run of the distributed benchmark: launch it as the worker does, watch its ranks.

The command line is the worker's (``worker/launch.py``): one rank runs
``python -m steering_core.cli train ...`` directly, several ranks run under
``torch.distributed.run`` (static rendezvous on 127.0.0.1, ``--max-restarts 0``), every rank
with ``OMP_NUM_THREADS = cores // ranks``. A memory run swaps the engine's module for
``rank_probe.py`` (the same CLI plus a count of the tensors each rank holds).

While it runs, the parent reads the ranks' memory from ``/proc``: when rank 0 prints its
``start`` event (after the model is loaded and DeepSpeed's engine is built), it records each
rank's ``VmHWM`` (the peak of loading and init) and ``VmRSS`` (what init left), then writes
``5`` to ``/proc/<pid>/clear_refs``, which resets ``VmHWM`` to the current RSS; at every ``step``
event it reads ``VmHWM`` and ``VmRSS`` again. The last ``VmHWM`` read is the rank's peak during
training alone.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBE = HERE / "rank_probe.py"
CENSUS_ENV = "DISTRIBUTED_BENCH_CENSUS_DIR"  # where rank_probe.py writes its counts
ZERO_OVERRIDES_ENV = "DISTRIBUTED_BENCH_ZERO_OVERRIDES"  # rank_probe.py merges them into ZeRO's
MIB = 2**20


@dataclass(frozen=True)
class RunConfig:
    """One configuration: a method on ``ranks`` ranks, through DeepSpeed at ``zero_stage`` or
    (``zero_stage`` None and one rank) plain torch; ``"auto"`` leaves the stage to the engine."""

    name: str
    method: str
    ranks: int
    zero_stage: int | str | None
    zero_overrides: dict[str, Any] | None = None  # an experiment: keys merged by rank_probe.py
    env: dict[str, str] | None = None  # more environment for the ranks (an allocator setting)

    def deepspeed_block(self) -> dict[str, Any] | None:
        return None if self.zero_stage is None else {"zero_stage": self.zero_stage}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def threads_per_rank(ranks: int) -> int:
    """What the worker gives each rank: the machine's cores shared among the job's ranks."""
    return max(1, (os.cpu_count() or 1) // ranks)


def command(ranks: int, engine_args: list[str], *, probe: bool) -> list[str]:
    entry = [str(PROBE)] if probe else ["-m", "steering_core.cli"]
    if ranks == 1:
        return [sys.executable, *entry, *engine_args]
    return [
        sys.executable,
        *("-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks)),
        *("--master-addr", "127.0.0.1", "--master-port", str(free_port())),
        *("--max-restarts", "0", "--monitor-interval", "0.5"),
        *entry,
        *engine_args,
    ]


def proc_status(pid: int) -> dict[str, int]:
    """``VmHWM`` and ``VmRSS`` of a process, in KiB ({} once it is gone)."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
    except OSError:
        return {}
    return found


def reset_peak(pid: int) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux ``clear_refs`` value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def rank_pids(launcher: int, ranks: int) -> dict[int, int]:
    """Rank -> pid: the launcher itself for one rank; for several, torchrun's children whose
    environment names a ``RANK`` and a ``TORCHELASTIC_RUN_ID``."""
    if ranks == 1:
        return {0: launcher}
    found: dict[int, int] = {}
    for pid in children_of(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in variables and b"TORCHELASTIC_RUN_ID" in variables:
            found[int(variables[b"RANK"])] = pid
    return found


def busy_cpu_seconds() -> float:
    """CPU time every process on the machine has spent, from ``/proc/stat`` (idle and iowait
    left out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_spec(
    path: Path, config: RunConfig, *, model: str, train_file: Path, steps: int, batch: int, seq: int
) -> Path:
    method: dict[str, Any] = {"type": config.method}
    spec: dict[str, Any] = {
        "model": model,
        "method": method,
        "train_file": str(train_file),
        "max_seq_length": seq,
        "seed": 3,
        "hyperparameters": {
            "batch_size": batch,
            "gradient_accumulation_steps": 1,
            "max_steps": steps,
        },
    }
    if config.deepspeed_block() is not None:
        spec["deepspeed"] = config.deepspeed_block()
    path.write_text(json.dumps(spec, indent=1))
    return path


def run_training(
    config: RunConfig,
    workdir: Path,
    *,
    model: str,
    train_file: Path,
    steps: int,
    batch: int,
    seq: int,
    probe: bool,
    cache_dir: Path | None,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Run ``config`` for ``steps`` steps; its events, each rank's memory and the census."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = write_spec(
        workdir / "spec.json",
        config,
        model=model,
        train_file=train_file,
        steps=steps,
        batch=batch,
        seq=seq,
    )
    rank_logs = workdir / "ranks"
    engine_args = [*(["--cache-dir", str(cache_dir)] if cache_dir else [])]
    engine_args += ["train", "--spec", str(spec), "--out", str(workdir / "out")]
    engine_args += ["--rank-logs", str(rank_logs), "--die-with-parent"]
    threads = threads_per_rank(config.ranks)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(config.env or {})
    if probe:
        env[CENSUS_ENV] = str(rank_logs)
    if config.zero_overrides:
        if not probe:
            raise ValueError(f"{config.name}: ZeRO overrides need the probe")
        env[ZERO_OVERRIDES_ENV] = json.dumps(config.zero_overrides)
    busy0, mine0, started = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    launcher_log = (workdir / "launcher.stderr").open("w")
    proc = subprocess.Popen(
        command(config.ranks, engine_args, probe=probe),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=launcher_log,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends the launcher and ranks
    )
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, 9))
    timer.start()
    events: list[dict[str, Any]] = []
    pids: dict[int, int] = {}
    init: dict[int, dict[str, int]] = {}
    steps_seen: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            events.append(event)
            if event.get("event") == "start":
                pids = rank_pids(proc.pid, config.ranks)
                for rank, pid in pids.items():
                    init[rank] = proc_status(pid)
                    init[rank]["peak_reset"] = int(reset_peak(pid))
            elif event.get("event") == "step":
                memory = {rank: proc_status(pid) for rank, pid in pids.items()}
                steps_seen.append({**event, "memory_kib": memory})
        code = proc.wait()
    finally:
        timer.cancel()
        launcher_log.close()
    wall = time.perf_counter() - started
    mine = children_cpu_seconds() - mine0
    other = max(0.0, busy_cpu_seconds() - busy0 - mine)
    total = next((e["total_steps"] for e in events if e.get("event") == "start"), None)
    if len(steps_seen) != total:  # a run that failed after its last step still measured
        tails = "\n".join(
            f"== {p.name}\n{p.read_text()[-2500:]}"
            for p in sorted([workdir / "launcher.stderr", *rank_logs.glob("rank-*")])
            if p.is_file()
        )
        raise RuntimeError(f"{config.name}: exit {code}, {len(steps_seen)} steps\n{tails}")
    errors = [e for e in events if e.get("event") == "error"]
    start = next(e for e in events if e.get("event") == "start")
    return {
        "config": config.name,
        "method": config.method,
        "ranks": config.ranks,
        "requested_zero_stage": config.zero_stage,
        "zero_overrides": config.zero_overrides,
        "env": config.env,
        "backend": start["backend"],
        "world_size": start["world_size"],
        "zero_stage": start["zero_stage"],
        "threads_per_rank": threads,
        "trainable_parameters": start["trainable_parameters"],
        "trainable_percent": start["trainable_percent"],
        "steps": [
            {
                "step": s["step"],
                "tokens_per_second": round(s["tokens_per_second"], 2),
                "trained_tokens": s["trained_tokens"],
                "loss": round(s["loss"], 5),
                "memory_mib": {
                    rank: {k: round(v / 1024, 1) for k, v in m.items()}
                    for rank, m in s["memory_kib"].items()
                },
            }
            for s in steps_seen
        ],
        "memory_mib": summarise_memory(init, steps_seen),
        "census": read_census(rank_logs) if probe else None,
        "exit_code": code,
        "error_after_training": errors[-1]["message"] if code != 0 and errors else None,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": {"this_run": round(mine, 1), "other_processes": round(other, 1)},
    }


def summarise_memory(
    init: dict[int, dict[str, int]], steps: list[dict[str, Any]]
) -> dict[str, dict[str, float | None]]:
    """Per rank: the peak of loading and init, the RSS init left, the training peak (the last
    ``VmHWM`` read after the reset) and the training peak's growth over the post-init RSS."""
    summary: dict[str, dict[str, float | None]] = {}
    for rank, at_start in sorted(init.items()):
        reads = [s["memory_kib"].get(rank, {}) for s in steps]
        reads = [r for r in reads if "VmHWM" in r]
        peak = reads[-1]["VmHWM"] if reads else None
        after = at_start.get("VmRSS")
        summary[str(rank)] = {
            "load_and_init_peak": mib(at_start.get("VmHWM")),
            "after_init": mib(after),
            "training_peak": mib(peak),
            "training_growth": mib(peak - after) if peak is not None and after else None,
            "peak_was_reset": float(at_start.get("peak_reset", 0)),
        }
    return summary


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def read_census(directory: Path) -> dict[str, Any]:
    found = {}
    for path in sorted(directory.glob("census-rank-*.json")):
        found[path.stem.removeprefix("census-rank-")] = json.loads(path.read_text())
    return found
