"""Distributed training on this machine: per-rank memory at each ZeRO stage, one rank against two.

    python benchmarks/distributed/run.py [--rounds 5] [--steps N] [--memory-steps 4]
        [--sections memory,speed] [--speed-methods post_block,full] [--quick] [--render-only]

Every run is the engine's real subprocess, launched as the worker launches a job (see
``launch.py``): SmolLM2-135M-Instruct on the shipped arithmetic training file, a global batch of
``--batch`` rows (split across the ranks) of at most ``--seq`` tokens, one micro-batch per step.

1. ``memory`` (``MEMORY_CONFIGS``): full fine-tuning on 2 ranks under ZeRO 0, 1, 2 and 3 (and
   ZeRO 3 with DeepSpeed's buckets sized to the model, an experiment); ``post_block`` on 2
   ranks (ZeRO 0, what ``auto`` picks, and ZeRO 2), on 1 rank through DeepSpeed (ZeRO 0) and
   on 1 rank in plain torch; full fine-tuning on 1 rank as the reference; then the full
   fine-tuning runs again with glibc returning freed memory (``RETURNS_FREED``). Per rank: RSS
   peak of loading and init, RSS after init, RSS peak during training (``VmHWM`` reset when
   training starts), and the live tensors the rank holds at its second optimizer update
   (``rank_probe.py``), against the training state ZeRO's accounting leaves each rank.
2. ``speed`` (``SPEED_ARMS``): tokens/s of 1 rank (plain torch, ``OMP_NUM_THREADS`` = all
   cores) against 2 ranks (DeepSpeed, ``auto`` stage, ``OMP_NUM_THREADS`` = cores / 2 each) and
   2 ranks at the other stage, same spec, interleaved (1, 2, 2', 1, 2, 2', ...) for ``--rounds``
   rounds, each run started on a quiet machine and repeated when other processes took a share
   of it; a run's figure is the median of its steps' tokens/s after the first (warm-up) step;
   the result is the median per-round ratio to 1 rank and its range.

Writes ``results.json`` (after each section; a run of some sections keeps the others') and
``results.md`` beside this script (``--quick``: tiny-llama, two rounds, ``results-quick.*``,
not committed). Holds the machine's timing lock throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from launch import RunConfig, busy_cpu_seconds, run_training  # noqa: E402
from render import render  # noqa: E402

MODEL = "smollm2-135m-instruct"
TRAIN_FILE = ROOT / "data" / "tasks" / "arithmetic_train.jsonl"

# DeepSpeed's bucket and live-parameter defaults (500M elements to reduce at once, 1e9 gathered
# parameters kept live) exceed this whole model, so ZeRO-3 keeps every gathered layer until the
# backward pass and collects the whole gradient in one bucket. The experiment sizes them to
# about a 27th of the model (5M elements, 20 MB in fp32), through rank_probe.py; the engine
# itself sets none of them.
SCALED_BUCKETS = {
    "reduce_bucket_size": 5_000_000,
    "stage3_prefetch_bucket_size": 5_000_000,
    "stage3_max_live_parameters": 5_000_000,
    "stage3_max_reuse_distance": 5_000_000,
}
# glibc keeps freed blocks below its (adaptive) mmap threshold for reuse, so RSS stays at the
# high-water mark of everything a rank ever held (the full model every rank loads before ZeRO-3
# partitions it, each gathered layer). A fixed 64 KiB threshold serves every tensor-sized
# block from its own mapping and unmaps it when freed: RSS then follows what the rank holds.
RETURNS_FREED = {"MALLOC_MMAP_THRESHOLD_": "65536"}
ALLOCATOR_NOTE = "glibc, MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to the system)"

MEMORY_CONFIGS = [
    RunConfig("full, 1 rank, torch", "full", 1, None),
    RunConfig("full, 2 ranks, ZeRO 0", "full", 2, 0),
    RunConfig("full, 2 ranks, ZeRO 1", "full", 2, 1),
    RunConfig("full, 2 ranks, ZeRO 2", "full", 2, 2),
    RunConfig("full, 2 ranks, ZeRO 3", "full", 2, 3),
    RunConfig("full, 2 ranks, ZeRO 3, scaled buckets", "full", 2, 3, SCALED_BUCKETS),
    RunConfig("post_block, 1 rank, torch", "post_block", 1, None),
    RunConfig("post_block, 1 rank, DeepSpeed ZeRO 0", "post_block", 1, 0),
    RunConfig("post_block, 2 ranks, ZeRO auto", "post_block", 2, "auto"),
    RunConfig("post_block, 2 ranks, ZeRO 2", "post_block", 2, 2),
    # The same runs with an allocator that returns what is freed (see RETURNS_FREED).
    RunConfig("full, 1 rank, torch; freed memory returned", "full", 1, None, env=RETURNS_FREED),
    RunConfig("full, 2 ranks, ZeRO 0; freed memory returned", "full", 2, 0, env=RETURNS_FREED),
    RunConfig("full, 2 ranks, ZeRO 2; freed memory returned", "full", 2, 2, env=RETURNS_FREED),
    RunConfig("full, 2 ranks, ZeRO 3; freed memory returned", "full", 2, 3, env=RETURNS_FREED),
    RunConfig(
        "full, 2 ranks, ZeRO 3, scaled buckets; freed memory returned",
        "full",
        2,
        3,
        SCALED_BUCKETS,
        env=RETURNS_FREED,
    ),
]

# Per method, the runs a speed round makes, in order; the first is the baseline: what a job
# runs by default on 1 rank (plain torch, all cores), then 2 ranks as a job with
# ``processes: 2`` gets them (DeepSpeed, stage auto), then 2 ranks at the stage auto did not pick.
SPEED_ARMS = {
    "post_block": [
        RunConfig("post_block, 1 rank, torch", "post_block", 1, None),
        RunConfig("post_block, 2 ranks, ZeRO auto", "post_block", 2, None),
        RunConfig("post_block, 2 ranks, ZeRO 2", "post_block", 2, 2),
    ],
    "full": [
        RunConfig("full, 1 rank, torch", "full", 1, None),
        RunConfig("full, 2 ranks, ZeRO auto", "full", 2, None),
        RunConfig("full, 2 ranks, ZeRO 0", "full", 2, 0),
    ],
}
# A speed run during which other processes took more than this share of the machine's CPU time
# is run again (at most MAX_RERUNS times; the record keeps every attempt's share).
SPEED_STEPS = {"post_block": 8, "full": 5}  # steps of a speed run (the first one warms up)
OTHER_CPU_LIMIT = 0.10
MAX_RERUNS = 2
# Before each speed run: wait until other processes (the machine is shared; only the quality
# study honours the timing lock) stay under OTHER_CPU_LIMIT over a QUIET_WINDOW_S window, for at
# most QUIET_WAIT_MAX_S (then run anyway; the record keeps the share).
QUIET_WINDOW_S = 3.0
QUIET_WAIT_MAX_S = 180.0


def analytic_state(parameters: int, trainable: int, world: int, stage: int | None) -> dict:
    """Bytes of training state one rank holds by ZeRO's own accounting, fp32 throughout (the
    engine's one regime): the model's weights, 4 bytes per parameter (ZeRO 3 shards them), the
    trainable parameters' gradients, 4 (ZeRO 2-3 shard them), and Adam's two moments, 8 (ZeRO
    1-3 shard them). DeepSpeed's own copies beyond these show in the live-tensor count."""
    shard = world if stage is not None else 1
    weights = 4 * parameters // (shard if stage == 3 else 1)
    gradients = 4 * trainable // (shard if stage in (2, 3) else 1)
    moments = 8 * trainable // (shard if stage in (1, 2, 3) else 1)
    return {
        "weights": weights,
        "gradients": gradients,
        "adam_moments": moments,
        "total": weights + gradients + moments,
    }


def with_analysis(run: dict[str, Any]) -> dict[str, Any]:
    trainable = run["trainable_parameters"]
    parameters = round(trainable * 100 / run["trainable_percent"])
    run["parameters"] = parameters
    stage = run["zero_stage"] if run["backend"] == "deepspeed" else None
    run["analytic_state_bytes"] = analytic_state(parameters, trainable, run["world_size"], stage)
    return run


def median_rate(run: dict[str, Any]) -> float:
    rates = [s["tokens_per_second"] for s in run["steps"][1:]]  # the first step warms up
    return statistics.median(rates)


def section_memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs = {}
    for config in MEMORY_CONFIGS:
        log(f"memory: {config.name} ...")
        directory = work / slug(config.name)
        run = with_analysis(run_training(config, directory, probe=True, **run_options(args)))
        shutil.rmtree(directory, ignore_errors=True)
        runs[config.name] = run
        log(f"  {json.dumps(run['memory_mib'])}  ({run['wall_seconds']} s)")
    return {
        "steps": args.memory_steps,
        "scaled_buckets": SCALED_BUCKETS,
        "allocator_returning_freed_memory": ALLOCATOR_NOTE,
        "runs": runs,
    }


def other_cpu_share(run: dict[str, Any]) -> float:
    return run["cpu_seconds"]["other_processes"] / (run["wall_seconds"] * (os.cpu_count() or 1))


def wait_for_quiet() -> dict[str, float]:
    """Wait until other processes use little of the machine (see QUIET_WINDOW_S); the time
    waited and the share of the last window."""
    started, cores = time.perf_counter(), os.cpu_count() or 1
    while True:
        before = busy_cpu_seconds()
        time.sleep(QUIET_WINDOW_S)
        share = (busy_cpu_seconds() - before) / (QUIET_WINDOW_S * cores)
        waited = time.perf_counter() - started
        if share <= OTHER_CPU_LIMIT or waited >= QUIET_WAIT_MAX_S:
            return {"waited_s": round(waited, 1), "other_share_before": round(share, 3)}


def speed_run(config: RunConfig, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """One timed run, started on a quiet machine; again when other processes took a
    noticeable share of the machine during it."""
    attempts = []
    for _attempt in range(MAX_RERUNS + 1):
        quiet = wait_for_quiet()
        options = {**run_options(args), "steps": args.steps or SPEED_STEPS[config.method]}
        run = run_training(config, directory, probe=False, **options)
        shutil.rmtree(directory, ignore_errors=True)
        attempts.append({**quiet, "other_share_during": round(other_cpu_share(run), 3)})
        if attempts[-1]["other_share_during"] <= OTHER_CPU_LIMIT:
            break
        log(f"  other processes took {attempts[-1]['other_share_during']:.0%} of the CPU: again")
    run["attempts"] = attempts
    run["median_tokens_per_second"] = round(median_rate(run), 2)
    return run


def section_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "steps": {m: args.steps or SPEED_STEPS[m] for m in args.speed_methods},
        "rounds": args.rounds,
        "other_cpu_limit": OTHER_CPU_LIMIT,
        "methods": {},
    }
    for method in args.speed_methods:
        arms = SPEED_ARMS[method]
        rounds = []
        for index in range(args.rounds):
            runs = {}
            for config in arms:
                log(f"speed: {config.name}, round {index + 1}/{args.rounds} ...")
                run = speed_run(config, args, work / f"speed-{slug(config.name)}-{index}")
                runs[config.name] = run
                log(f"  {run['median_tokens_per_second']} tokens/s ({run['wall_seconds']} s)")
            base = runs[arms[0].name]["median_tokens_per_second"]
            ratios = {
                c.name: round(runs[c.name]["median_tokens_per_second"] / base, 4) for c in arms[1:]
            }
            rounds.append({"runs": runs, "ratio_to_one_rank": ratios})
        summary: dict[str, Any] = {"baseline": arms[0].name, "rounds": rounds, "arms": {}}
        for config in arms:
            rates = [r["runs"][config.name]["median_tokens_per_second"] for r in rounds]
            arm: dict[str, Any] = {
                "tokens_per_second_median": round(statistics.median(rates), 2),
                "tokens_per_second_per_round": rates,
                "zero_stage": rounds[0]["runs"][config.name]["zero_stage"],
                "backend": rounds[0]["runs"][config.name]["backend"],
                "threads_per_rank": rounds[0]["runs"][config.name]["threads_per_rank"],
                "trained_tokens": rounds[0]["runs"][config.name]["steps"][-1]["trained_tokens"],
            }
            if config is not arms[0]:
                ratios = [r["ratio_to_one_rank"][config.name] for r in rounds]
                arm.update(
                    ratio_median=round(statistics.median(ratios), 4),
                    ratio_min=min(ratios),
                    ratio_max=max(ratios),
                    ratio_per_round=ratios,
                )
            summary["arms"][config.name] = arm
            log(f"  {config.name}: {arm}")
        result["methods"][method] = summary
    return result


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "train_file": TRAIN_FILE,
        "steps": args.memory_steps,
        "batch": args.batch,
        "seq": args.seq,
        "cache_dir": args.cache_dir,
    }


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(args: argparse.Namespace) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *command], capture_output=True, text=True)
        return done.stdout.strip()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{memory_kib / 2**20:.1f} GiB, CPU only",
        "python": platform.python_version(),
        "versions": {n: metadata.version(n) for n in ("torch", "deepspeed", "transformers")},
        "commit": git("rev-parse", "HEAD"),
        # the engine that ran differs from the commit where this lists a file
        "engine_changes": git("status", "--porcelain", "--", "steering_core").splitlines(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--cache-dir", type=Path, default=None, help="converted-model cache")
    parser.add_argument("--batch", type=int, default=4, help="global batch (rows per step)")
    parser.add_argument("--seq", type=int, default=128, help="max_seq_length")
    parser.add_argument("--memory-steps", type=int, default=4)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps of a speed run (default: post_block 8, full 5)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sections", default="memory,speed")
    parser.add_argument(
        "--speed-methods", type=lambda s: s.split(","), default=["post_block", "full"]
    )
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 rounds: a smoke run")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite results.md from results.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.rounds, args.steps, args.memory_steps = "tiny-llama", 2, 3, 3
    return args


def provenance(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """What a section's numbers come from: the command, the code, the machine, the date."""
    return {
        "command": " ".join(["python benchmarks/distributed/run.py", *(argv or sys.argv[1:])]),
        **machine(args),
    }


def engine_changed(first: str, last: str) -> list[str]:
    """The files of ``steering_core`` that differ between two commits (HEAD moving during a
    run: other work lands in the shared checkout)."""
    diff = ["git", "-C", str(ROOT), "diff", "--name-only", first, last, "--", "steering_core"]
    return subprocess.run(diff, capture_output=True, text=True).stdout.split()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suffix = "-quick" if args.quick else ""
    path = HERE / f"results{suffix}.json"
    if args.render_only:
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return 0
    sections = args.sections.split(",")
    # A run of some sections keeps the others' results (each section carries its provenance).
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results.update(
        {
            "benchmark": "benchmarks/distributed/run.py",
            "model": args.model,
            "train_file": str(TRAIN_FILE.relative_to(ROOT)),
            "global_batch": args.batch,
            "max_seq_length": args.seq,
            "launch": "as the worker: torchrun for 2 ranks (gloo), the CLI directly for 1; "
            "OMP_NUM_THREADS = cores // ranks",
        }
    )
    runners = {"memory": section_memory, "speed": section_speed}
    with tempfile.TemporaryDirectory(prefix="distributed-bench-") as tmp:
        for name in [n for n in runners if n in sections]:
            started, before = time.perf_counter(), provenance(args, argv)
            section = runners[name](args, Path(tmp))
            after = machine(args)["commit"]
            section["provenance"] = {
                **before,
                "seconds": round(time.perf_counter() - started, 1),
                "commit_at_end": after,
                "engine_changed_during_run": engine_changed(before["commit"], after),
            }
            results[name] = section
            path.write_text(json.dumps(results, indent=1) + "\n")  # kept if a later one fails
    path.with_suffix(".md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    from timing_lock import timing  # the quality study pauses while this measures

    if "--render-only" in sys.argv:
        sys.exit(main())
    with timing():
        sys.exit(main())
