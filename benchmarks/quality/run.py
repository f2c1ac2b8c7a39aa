"""The quality study: methods side by side on SmolLM2-135M-Instruct (then Gemma-3-270M), on
generated ListOps and GSM8K-style arithmetic with rationales.

    python benchmarks/quality/run.py --pin REV       # protocol v2 from a pinned copy of the code
    python benchmarks/quality/run.py --quick         # a smoke run in minutes (few items, 1 seed)
    python benchmarks/quality/run.py --report-only   # rebuild results-*.md/json/png from runs/
    nohup python benchmarks/quality/run.py --pin REV > quality.log 2>&1 &   # in the background

``--pin REV`` runs the whole study (this orchestrator and every run) from a git worktree of
commit REV under ``.cache/quality/code/``, writing results into this checkout: code that
changes here while the study runs for days does not change its runs, and every run's JSON
records the commit it ran (``code_commit``). While a timing benchmark holds the machine's timing
lock (``benchmarks/timing_lock.py``) the runs are stopped (SIGSTOP) and go on afterwards.

Each run (train one method at one learning rate and seed, then score it) is its own
``run_one.py`` process; its result lands atomically in ``runs/{protocol}/{key}.json`` and the
report is rebuilt after every run, so stopping at any moment (Ctrl-C, SIGTERM, ``--hours``) loses
at most the run in flight, and the next start carries on from the plan (``plan.py``). Order:
the core methods (``plan.CORE``) of every SmolLM2 protocol, then the other variants of every
SmolLM2 protocol; Gemma-3-270M's protocols (tier 1: the core methods at the learning rates
SmolLM2's sweeps chose) come after all of those.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import (
    CORE,
    HERE,
    PROTOCOLS,
    ROOT,
    STUDY,
    PlannedRun,
    Protocol,
    adopt_same_runs,
    load_results,
    methods_of,
    next_runs,
    quick_protocol,
    run_config,
)
from report import build, summary, summary_by_protocol, write

sys.path.insert(0, str(HERE.parent))
from pinning import pinned_checkout
from timing_lock import timing_in_progress


def _command(args: argparse.Namespace) -> str:
    command = "python benchmarks/quality/run.py"
    if args.protocol:
        command += f" --protocol {args.protocol}"
    if args.quick:
        command += " --quick"
        if args.model != "smollm2-135m-instruct":
            command += f" --model {args.model}"
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48/32/64 items, 1 seed, 1 lr")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="with --quick only")
    parser.add_argument(
        "--protocol", help=f"comma-separated subset of {list(PROTOCOLS)} (default: all, in order)"
    )
    parser.add_argument("--methods", help="comma-separated subset (default: all, in order)")
    parser.add_argument("--hours", type=float, help="start no new run after this long")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--parallel", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, help="torch threads per run (cores / parallel)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "quality")
    parser.add_argument(
        "--pin", metavar="REV", help="run from a worktree of this commit (see the docstring)"
    )
    parser.add_argument(
        "--results-root",
        type=Path,
        default=HERE,
        help="where runs/ and the reports go (a pinned study writes into the main checkout)",
    )
    args = parser.parse_args(argv)
    if args.pin:
        return run_pinned(args.pin, argv if argv is not None else sys.argv[1:], args.work)

    if args.quick:  # its own folder: a quick run never touches a study in progress
        args.work = args.work / "quick"
        protocols = [quick_protocol(args.model, args.work)]
    elif args.model != "smollm2-135m-instruct":
        parser.error("--model is for --quick; the study's protocol fixes its model")
    else:
        names = args.protocol.split(",") if args.protocol else list(STUDY)
        unknown = sorted(set(names) - set(PROTOCOLS))
        if unknown:
            parser.error(f"unknown protocols {unknown}; known: {list(PROTOCOLS)}")
        protocols = [at_root(PROTOCOLS[name](), args.results_root) for name in names]
    wanted = set(args.methods.split(",")) if args.methods else None
    if wanted is not None:
        known = {m.name for protocol in protocols for m in methods_of(protocol)}
        if wanted - known:
            parser.error(f"unknown methods {sorted(wanted - known)}; known: {sorted(known)}")
    for protocol in protocols:
        protocol.runs_dir.mkdir(parents=True, exist_ok=True)
        for key in adopt_same_runs(
            protocol, lambda name: at_root(PROTOCOLS[name](), args.results_root).runs_dir
        ):
            print(f"{protocol.name}/{key}: the same run as another protocol's, adopted", flush=True)
    by_name = {protocol.name: protocol for protocol in protocols}

    # A summary covers every task of the protocol's study, whichever --protocol this run was
    # given (v1 and v2 side by side in summary.md, the layer study in summary-layers.md, ...).
    every = (
        protocols
        if args.quick
        else [at_root(make(), args.results_root) for make in PROTOCOLS.values()]
    )

    def report(*selected: Protocol) -> set[str]:
        return write_reports(every, selected, _command(args))

    if args.report_only:
        written = report(*protocols)
        for protocol in protocols:
            if protocol.name in written:
                print(protocol.report_stem.with_suffix(".md").read_text())
            else:
                print(f"{protocol.name}: no runs yet, no report")
        return 0

    slots: dict[int, Slot] = {}
    stopping = {"flag": False}

    def stop(signum: int, _frame: object) -> None:
        stopping["flag"] = True
        for slot in slots.values():
            slot.proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started, launched = time.monotonic(), 0
    # One torch thread per run and ``--parallel`` runs side by side: on 2 shared cores, two
    # 1-thread runs train as fast together as one 2-thread run, and unlike it they do not
    # collapse (OpenMP threads spinning at barriers) when anything else wants a core.
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.parallel)
    while not stopping["flag"]:
        # Runs in flight here, or in another run.py on the same work folder (a run outlives an
        # orchestrator killed with SIGKILL and still lands its result).
        own = {slot.key for slot in slots.values()}
        elsewhere = running_elsewhere(args.work) - own
        pause_while_timing(slots)
        pending = [
            (protocol, run)
            for protocol, run in pending_runs(protocols, wanted)
            if f"{protocol.name}/{run.key}" not in own | elsewhere
        ]
        over_time = args.hours is not None and time.monotonic() - started > args.hours * 3600
        over_count = args.max_runs is not None and launched >= args.max_runs
        # Runs of another orchestrator (one killed and restarted) hold slots too: --parallel
        # bounds the runs sharing the machine's cores, not just this process's.
        free = args.parallel - len(slots) - len(elsewhere)
        if pending and free > 0 and not over_time and not over_count:
            index = next(i for i in range(args.parallel) if i not in slots)
            protocol, planned = pending[0]
            key = f"{protocol.name}/{planned.key}"
            folder = args.work / "runs" / key
            folder.mkdir(parents=True, exist_ok=True)
            config = run_config(protocol, planned, folder / "out")
            config["torch_threads"] = threads
            config_path = folder / "config.json"
            config_path.write_text(json.dumps(config, indent=1))
            slots[index] = Slot.launch(key, config_path, protocol.runs_dir, folder, threads)
            launched += 1
            print(f"{time.strftime('%H:%M:%S')} {key} ({planned.purpose}) ...", flush=True)
            continue
        if not slots:
            if elsewhere and not over_time and not over_count:
                time.sleep(2)  # wait for them: their results may unlock the next runs
                continue
            if not pending and not elsewhere:
                print("study complete", flush=True)
            else:
                print(f"stopping: {len(pending)}+ runs left (--hours/--max-runs)", flush=True)
            break
        time.sleep(2)
        for index, slot in list(slots.items()):
            code = slot.proc.poll()
            if code is None:
                continue
            del slots[index]
            slot.log.close()
            if stopping["flag"]:
                continue
            if code != 0:
                tail = slot.log_path.read_text()[-3000:]
                print(f"run {slot.key} failed ({code}):\n{tail}", flush=True)
                stop(signal.SIGTERM, None)
                return 1
            result = json.loads(slot.result_path.read_text())
            print(
                f"  {slot.key}: test {100 * result['test_accuracy']:.1f}%"
                f"  val {100 * result['validation_accuracy']:.1f}%"
                f"  train {result['train_seconds']:.0f}s"
                f"  {time.monotonic() - slot.started:.0f}s in all",
                flush=True,
            )
            report(by_name[slot.key.split("/")[0]])
    if stopping["flag"]:
        print("stopped; runs in flight start again next time", flush=True)
    report(*protocols)
    return 0


def at_root(protocol: Protocol, root: Path) -> Protocol:
    """The protocol with its runs and reports under ``root`` (a quick run keeps its own)."""
    if protocol.quick or root == HERE:
        return protocol
    source = protocol.lr_from
    return replace(
        protocol, out_dir=root, lr_from=at_root(source, root) if source is not None else None
    )


SUMMARIES = {
    "layers": ("summary-layers.md", "Where to steer at a third of the budget: layer study"),
    "distill": ("summary-distill.md", "Distilling a LoRA and a full fine-tune into post-block"),
}


def write_reports(every: list[Protocol], selected: tuple[Protocol, ...], command: str) -> set[str]:
    """Rebuild the reports of ``selected`` and each study's summary over ``every`` protocol of
    that study (each built once, from its runs); a protocol without runs gets no report.
    Returns the names of the reports written."""
    names = {protocol.name for protocol in selected}
    studies = {protocol.study for protocol in selected}
    if studies & {"v1", "v2"}:
        studies |= {"v1", "v2"}  # one page holds both protocols
    built: dict[str, list[dict]] = {}
    v2_waiting: list[dict] = []  # v2 protocols not started: their targets read pending
    for protocol in every:
        if protocol.study not in studies:
            continue
        results = load_results(protocol.runs_dir)
        if not results:
            if protocol.study == "v2":
                v2_waiting.append(build(protocol, {}, command))
            continue
        report = build(protocol, results, command)
        built.setdefault(protocol.study, []).append(report)
        if protocol.name in names:
            write(report, protocol.report_stem)
    side_by_side = not every[0].quick  # a quick smoke run's page is its own protocol alone
    for study, reports in built.items():
        if study in ("v1", "v2") and side_by_side:
            continue
        file_name, title = SUMMARIES.get(study, ("summary.md", "Quality study at a glance"))
        (every[0].out_dir / file_name).write_text(summary(reports, title))
    if side_by_side and ("v1" in built or "v2" in built):
        page = summary_by_protocol(built.get("v1", []), built.get("v2", []), v2_waiting)
        (every[0].out_dir / "summary.md").write_text(page)
    return {r["protocol"] for reports in built.values() for r in reports} & names


def pending_runs(
    protocols: list[Protocol], wanted: set[str] | None = None
) -> list[tuple[Protocol, PlannedRun]]:
    """Every runnable run (of the ``wanted`` methods, default all), by the protocols' tier (the
    main model first): within a tier, the core methods of each protocol, then the rest."""
    results = {protocol.name: load_results(protocol.runs_dir) for protocol in protocols}
    runs = []
    for tier in sorted({protocol.tier for protocol in protocols}):
        for core in (True, False):
            for protocol in (p for p in protocols if p.tier == tier):
                group = tuple(
                    m
                    for m in methods_of(protocol)
                    if (m.name in CORE or protocol.version > 1) == core
                    and (wanted is None or m.name in wanted)
                )
                pending = next_runs(protocol, results[protocol.name], group)
                runs += [(protocol, run) for run in pending]
    return runs


def pause_while_timing(slots: dict[int, Slot]) -> None:
    """While a timing benchmark holds the machine's timing lock, stop every run in flight
    (SIGSTOP: a stopped process uses no CPU) and wait; let them go on when it is released."""
    if not timing_in_progress():
        return
    print(f"{time.strftime('%H:%M:%S')} a timing benchmark runs: runs paused", flush=True)
    for slot in slots.values():
        slot.proc.send_signal(signal.SIGSTOP)
    try:
        while timing_in_progress():
            time.sleep(2)
    finally:
        for slot in slots.values():
            slot.proc.send_signal(signal.SIGCONT)
    print(f"{time.strftime('%H:%M:%S')} timing done: runs resumed", flush=True)


def run_pinned(rev: str, argv: list[str], work: Path) -> int:
    """This orchestrator again, from a worktree of ``rev``, writing results here."""
    code = pinned_checkout(ROOT, rev, work / "code")
    rest = _without_pin(argv)
    command = [sys.executable, str(code / "benchmarks" / "quality" / "run.py"), *rest]
    if "--results-root" not in rest:
        command += ["--results-root", str(HERE)]
    if "--work" not in rest:
        command += ["--work", str(work)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    print(f"pinned: {code} ({rev})", flush=True)
    os.execve(sys.executable, command, env)
    return 1  # not reached


def _without_pin(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--pin":
            skip = True
        elif not arg.startswith("--pin="):
            out.append(arg)
    return out


@dataclass
class Slot:
    """One run in flight: its process, log and where its result lands."""

    key: str
    proc: subprocess.Popen
    log: IO[str]
    log_path: Path
    result_path: Path
    started: float

    @classmethod
    def launch(cls, key: str, config: Path, runs_dir: Path, folder: Path, threads: int) -> Slot:
        log_path = folder / "run.log"
        log = log_path.open("w")
        result_path = runs_dir / f"{key.split('/')[-1]}.json"
        # The run inherits a lock on {folder}/lock and holds it for as long as it lives, even
        # if this orchestrator dies first: another orchestrator then sees the run as live.
        lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "run_one.py"), str(config), str(result_path)],
                cwd=ROOT,  # this code's checkout: the pinned worktree of a pinned study
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                pass_fds=(lock_fd,),
            )
        finally:
            os.close(lock_fd)
        (folder / "pid").write_text(str(proc.pid))
        return cls(key, proc, log, log_path, result_path, time.monotonic())


def running_elsewhere(work: Path) -> set[str]:
    """``{protocol}/{key}`` of every run whose process still holds its
    ``{work}/runs/{protocol}/{key}/lock``.

    A lock rather than a pid: it needs no /proc (pid namespaces and sandboxes differ), is
    immune to pid reuse, and is released by the kernel however the run ends.
    """
    keys = set()
    for lock_path in (work / "runs").glob("*/*/lock"):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            keys.add(f"{lock_path.parent.parent.name}/{lock_path.parent.name}")
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return keys


if __name__ == "__main__":
    raise SystemExit(main())
