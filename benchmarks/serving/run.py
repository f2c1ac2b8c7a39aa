"""Serving many adapters on one base model, through the real API, on SmolLM2-135M-Instruct.

    python benchmarks/serving/run.py [--rounds 5] [--seconds 20] [--max-tokens 32]
                                     [--baseline REV]

Starts two APIs (``steer api``, embedded SQLite, each in its own temporary data directory, the
same 64 post-block r=8 adapters registered in both, randomly initialised at a visible scale):

- this checkout: the batching engine (one model copy, per-row adapters);
- ``--baseline`` (a pinned worktree of that commit, default the last commit before the engine):
  one model copy per (base, adapter) pair, a cache of 2, one request at a time per copy.

Then, interleaved by round (A B C A B C ...), at 1, 4, 16 and 64 concurrent clients that each
send greedy chat completions of ``--max-tokens`` tokens for ``--seconds`` seconds:

- ``adapters``: every client its own adapter (distinct adapters in flight = concurrency);
- ``base``: the same load on the base model alone, same engine;
- ``baseline``: the ``adapters`` load on the baseline API (at 1, 4 and 16 clients: at 64 its
  queue would not drain in any reasonable time).

Throughput is generated tokens over the time from the first request to the last answer; the
ratios are per round (adapters / base, adapters / baseline), reported as the median and range.
At 16 clients a status reader polls ``GET /v1/fine_tuning/jobs/{id}`` every 50 ms during the
adapters load and during an idle window of the same length, for the p99 ratio. Memory: the
engine API's RSS with the base model loaded, then after requests that load 1, 16 and 64
adapters. Both APIs run torch with 1 thread (``STEER_TORCH_THREADS=1``), leaving the other core
to the event loop and to this client. Writes ``results.md`` and ``results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from traffic import Api, idle_reads, level_row, load, register, status_job, warm  # noqa: E402

MODEL = "smollm2-135m-instruct"
ADAPTERS = 64
BASELINE = "442727c"
LEVELS = (1, 4, 16, 64)
BASELINE_LEVELS = (1, 4, 16)
TARGET_LEVEL = 16


def make_artifacts(folder: Path, count: int) -> list[Path]:
    """``count`` post-block adapters on SmolLM2 with random weights of a visible scale."""
    import torch

    from steering_core.artifact.store import save_artifact
    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    attached = attach_method(load_model(MODEL), {"type": "post_block"})
    made = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for param in attached.steering.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        made.append(folder / f"adapter-{index}")
        save_artifact(attached, made[-1], base_model_id=MODEL)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument(
        "--levels", default=",".join(map(str, LEVELS)), help="client counts (a quick check: 1,16)"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    from pinning import pinned_checkout

    baseline_code = pinned_checkout(ROOT, args.baseline, ROOT / ".cache" / "serving" / "code")
    adapters = [f"bench{i}@1" for i in range(ADAPTERS)]
    results: dict[str, Any] = {"args": vars(args), "levels": {}, "memory_mib": {}}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        artifacts = make_artifacts(root / "artifacts", ADAPTERS)
        apis = {}
        for name, code in (("engine", ROOT), ("baseline", baseline_code)):
            (root / name).mkdir()
            register(root / name, artifacts, code, MODEL)
            apis[name] = Api(name, code, root / name, env={"STEER_TORCH_THREADS": "1"})
        try:
            engine, baseline = apis["engine"], apis["baseline"]
            warm(engine.url, [MODEL])
            memory = {"base model loaded": engine.rss_mib()}
            for count in (1, 16, 64):
                warm(engine.url, adapters[:count])
                memory[f"{count} adapters"] = engine.rss_mib()
            results["memory_mib"] = memory
            print("memory", memory, flush=True)
            warm(baseline.url, [adapters[0]])
            status = status_job(engine.url)
            for level in levels:
                rounds = args.rounds if level == TARGET_LEVEL else min(3, args.rounds)
                runs: dict[str, list[dict[str, Any]]] = {"adapters": [], "base": [], "baseline": []}
                idle: list[list[float]] = []
                for r in range(rounds):
                    watch = status if level == TARGET_LEVEL else None
                    runs["adapters"].append(
                        asyncio.run(
                            load(engine.url, adapters[:level], args.seconds, args.max_tokens, watch)
                        )
                    )
                    runs["base"].append(
                        asyncio.run(
                            load(engine.url, [MODEL] * level, args.seconds, args.max_tokens, None)
                        )
                    )
                    if level in BASELINE_LEVELS:
                        runs["baseline"].append(
                            asyncio.run(
                                load(
                                    baseline.url,
                                    adapters[:level],
                                    args.seconds,
                                    args.max_tokens,
                                    None,
                                )
                            )
                        )
                    if watch is not None:
                        idle.append(asyncio.run(idle_reads(engine.url, args.seconds, status)))
                    print(
                        level,
                        r,
                        {k: round(v[-1]["tokens_per_second"], 1) for k, v in runs.items() if v},
                        flush=True,
                    )
                results["levels"][str(level)] = {"runs": runs, "idle_status_reads": idle}
        finally:
            for api in apis.values():
                api.stop()
    write(results, args)
    return 0


def write(results: dict[str, Any], args: argparse.Namespace) -> None:
    table = [
        level_row(int(level), data["runs"], data["idle_status_reads"])
        for level, data in results["levels"].items()
    ]
    for level in results["levels"].values():
        for runs in level["runs"].values():
            for run in runs:
                run["status_reads"] = len(run["status_reads"])
        level["idle_status_reads"] = [len(r) for r in level["idle_status_reads"]]
    results["table"] = table
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Serving many adapters on one base model",
        "",
        f"`python benchmarks/serving/run.py --rounds {args.rounds} --seconds {args.seconds:g} "
        f"--max-tokens {args.max_tokens}` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores, CPU). {MODEL} through the real API (`steer api`, embedded "
        "SQLite), greedy chat completions of up to "
        f"{args.max_tokens} tokens, torch 1 thread in each API (the engine's thread), the load "
        f"generator in this process. Baseline: the API of commit `{args.baseline}` (one model "
        "copy per adapter, a cache of 2, one request at a time per copy).",
        "",
        "Generated tokens/s (median over rounds) and request latency p50/p99 in seconds:",
        "",
        "| clients (= distinct adapters) | adapters: tok/s | p50 | p99 "
        "| base only: tok/s | p50 | p99 | baseline: tok/s | p50 | p99 "
        "| adapters / base (median, range) | adapters / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:

        def cell(kind: str, row: dict[str, Any] = row) -> str:
            if kind not in row:
                return "not run | | "
            r = row[kind]
            return f"{r['tokens_per_second']:.1f} | {r['p50_s']:.2f} | {r['p99_s']:.2f}"

        base = row["adapters_over_base"]
        over_base = f"{base['median']:.2f} ({base['min']:.2f}-{base['max']:.2f})"
        over_old = "-"
        if "adapters_over_baseline" in row:
            old = row["adapters_over_baseline"]
            over_old = f"{old['median']:.1f} ({old['min']:.1f}-{old['max']:.1f})"
        lines.append(
            f"| {row['level']} ({row['adapters']['rounds']} rounds) | {cell('adapters')} | "
            f"{cell('base')} | {cell('baseline')} | {over_base} | {over_old} |"
        )
    target = next(r for r in table if r["level"] == TARGET_LEVEL)
    lines += [
        "",
        f"At {TARGET_LEVEL} distinct adapters in flight: adapters / base = "
        f"{target['adapters_over_base']['median']:.2f} (target at least 0.9), adapters / "
        f"baseline = {target['adapters_over_baseline']['median']:.1f}x (target at least 5x).",
    ]
    if "status_p99_loaded_over_idle" in target:
        status = target["status_p99_loaded_over_idle"]
        lines += [
            "",
            "Status reads (`GET /v1/fine_tuning/jobs/{id}` every 50 ms) during the "
            f"{TARGET_LEVEL}-adapter load: p99 {target['status_p99_ms']['loaded']:.1f} ms against "
            f"{target['status_p99_ms']['idle']:.1f} ms idle; per-round ratio median "
            f"{status['median']:.2f} (range {status['min']:.2f}-{status['max']:.2f}; target at "
            "most 2).",
        ]
    memory = results["memory_mib"]
    base_rss = memory["base model loaded"]
    lines += [
        "",
        "Memory of the engine API (RSS, MiB): "
        + ", ".join(f"{k}: {v:.0f}" for k, v in memory.items())
        + f". Per adapter beyond the base: {(memory['64 adapters'] - base_rss) / 64:.2f} MiB "
        "(a post-block r=8 adapter on SmolLM2 is 1.1 MB of fp32; a model copy is about 540 MB).",
        "",
    ]
    (HERE / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
