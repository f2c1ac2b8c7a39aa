"""The quality study: methods side by side on SmolLM2-135M-Instruct, generated ListOps.

    python benchmarks/quality/run.py                 # the study; resumes where it stopped
    python benchmarks/quality/run.py --quick         # a smoke run in minutes (few items, 1 seed)
    python benchmarks/quality/run.py --report-only   # rebuild results-*.md/json/png from runs/
    nohup python benchmarks/quality/run.py --hours 8 > quality.log 2>&1 &   # in the background

Each run (train one method at one learning rate and seed, then score it) is its own
``run_one.py`` process; its result lands atomically in ``runs/{protocol}/{key}.json`` and the
report is rebuilt after every run, so stopping at any moment (Ctrl-C, SIGTERM, ``--hours``) loses
at most the run in flight, and the next start carries on from the plan (``plan.py``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import (
    HERE,
    METHODS,
    ROOT,
    listops_protocol,
    load_results,
    next_runs,
    quick_protocol,
    run_config,
)
from report import build, write


def _command(args: argparse.Namespace) -> str:
    command = "python benchmarks/quality/run.py"
    if args.quick:
        command += " --quick"
        if args.model != "smollm2-135m-instruct":
            command += f" --model {args.model}"
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48/32/64 items, 1 seed, 1 lr")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="with --quick only")
    parser.add_argument("--methods", help="comma-separated subset (default: all, in order)")
    parser.add_argument("--hours", type=float, help="start no new run after this long")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "quality")
    args = parser.parse_args(argv)

    if args.quick:  # its own folder: a quick run never touches a study in progress
        args.work = args.work / "quick"
        protocol = quick_protocol(args.model, args.work)
    elif args.model != "smollm2-135m-instruct":
        parser.error("--model is for --quick; the study's protocol fixes its model")
    else:
        protocol = listops_protocol()
    methods = METHODS
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - {m.name for m in METHODS})
        if unknown:
            parser.error(f"unknown methods {unknown}; known: {[m.name for m in METHODS]}")
        methods = tuple(m for m in METHODS if m.name in wanted)
    protocol.runs_dir.mkdir(parents=True, exist_ok=True)
    stem = protocol.report_stem

    def report() -> None:
        write(build(protocol, load_results(protocol.runs_dir), _command(args)), stem)

    if args.report_only:
        report()
        print(stem.with_suffix(".md").read_text())
        return 0

    stopping = {"flag": False}
    child: dict[str, subprocess.Popen | None] = {"proc": None}

    def stop(signum: int, _frame: object) -> None:
        stopping["flag"] = True
        if child["proc"] is not None:
            child["proc"].terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started, done = time.monotonic(), 0
    while not stopping["flag"]:
        pending = next_runs(protocol, load_results(protocol.runs_dir), methods)
        if not pending:
            print("study complete", flush=True)
            break
        if args.hours is not None and time.monotonic() - started > args.hours * 3600:
            print(f"--hours {args.hours} reached; {len(pending)}+ runs left", flush=True)
            break
        if args.max_runs is not None and done >= args.max_runs:
            break
        planned = pending[0]
        config = run_config(protocol, planned, args.work / "run")
        if args.threads:
            config["torch_threads"] = args.threads
        config_path = args.work / "run-config.json"
        config_path.write_text(json.dumps(config, indent=1))
        result_path = protocol.runs_dir / f"{planned.key}.json"
        print(f"{time.strftime('%H:%M:%S')} {planned.key} ({planned.purpose}) ...", flush=True)
        run_started = time.monotonic()
        log = (args.work / "run.log").open("w")
        child["proc"] = subprocess.Popen(
            [sys.executable, str(HERE / "run_one.py"), str(config_path), str(result_path)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        code = child["proc"].wait()
        child["proc"] = None
        log.close()
        if stopping["flag"]:
            print("stopped; the run in flight will start again next time", flush=True)
            break
        if code != 0:
            tail = (args.work / "run.log").read_text()[-3000:]
            print(f"run {planned.key} failed ({code}):\n{tail}", flush=True)
            return 1
        result = json.loads(result_path.read_text())
        print(
            f"  test {100 * result['test_accuracy']:.1f}%"
            f"  val {100 * result['validation_accuracy']:.1f}%"
            f"  train {result['train_seconds']:.0f}s  {time.monotonic() - run_started:.0f}s in all",
            flush=True,
        )
        done += 1
        report()
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
