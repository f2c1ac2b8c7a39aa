"""Pilot: does more training let full fine-tuning learn ListOps' hard operator (SM)?

    python benchmarks/quality/pilot.py [--train-items 4000] [--epochs 1] [--method full]

After the study's one epoch on 1,000 items, SM (sum mod 10) stays at chance (~10%) for full
fine-tuning and post-block alike. This trains one method (at the learning rate the study chose
for it) on a larger ListOps training split, generated without any test or validation
expression, and scores it on the study's own 1,000 test items, per root operator. Its answer
decides whether a longer protocol can make the task's hard part tell methods apart on this
machine. One run, one process (``run_one.py``); the result goes to
``runs/pilot/{key}.json`` and a line per run to ``pilot.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from plan import (  # noqa: E402
    METHODS_BY_NAME,
    ROOT,
    PlannedRun,
    listops_protocol,
    load_results,
    run_config,
    select,
)
from report import item_groups  # noqa: E402
from stats import accuracy_by_group  # noqa: E402

from steering_core.tasks import listops  # noqa: E402
from steering_core.tasks.build_data import write_jsonl  # noqa: E402


def train_split(n: int, seed: int, out: Path) -> Path:
    """``n`` ListOps items, balanced by root operator, none from the test or validation split."""
    protocol = listops_protocol()
    held_out = set()
    for path in (protocol.test_file, protocol.validation_file):
        for line in path.read_text(encoding="utf-8").splitlines():
            held_out.add(json.loads(line)["prompt"].split("Expression:\n", 1)[1].strip())
    records = listops.generate_examples(n, seed, balance_operators=True, exclude=held_out)
    assert not {r["expression"] for r in records} & held_out
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, records)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-items", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--method", default="full", choices=sorted(METHODS_BY_NAME))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "quality" / "pilot")
    args = parser.parse_args()

    protocol = listops_protocol()
    key = f"{args.method}-n{args.train_items}-e{args.epochs}-s{args.seed}"
    train = train_split(
        args.train_items, 5001, args.work / f"listops_train_{args.train_items}.jsonl"
    )
    method = METHODS_BY_NAME[args.method]
    chosen = select(method, protocol, load_results(protocol.runs_dir))
    if chosen is None:
        parser.error(f"the study has not chosen a learning rate for {args.method} yet")
    pilot = dataclasses.replace(protocol, train_file=train, n_epochs=args.epochs)
    planned = PlannedRun(key, method, chosen.learning_rate, args.seed)
    config = run_config(pilot, planned, args.work / key / "out")
    config["torch_threads"] = args.threads
    config_path = args.work / key / "config.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=1))
    result_path = HERE / "runs" / "pilot" / f"{key}.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(HERE / "run_one.py"), str(config_path), str(result_path)],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
    )
    result = json.loads(result_path.read_text())
    groups = accuracy_by_group(result["test_correct"], item_groups(protocol))
    line = (
        f"| {key} | {args.method} | {args.train_items} | {args.epochs} | "
        f"{config['learning_rate']:g} | {100 * result['test_accuracy']:.1f} | "
        + " | ".join(f"{100 * groups[op]:.1f}" for op in ("MAX", "MIN", "MED", "SM"))
        + f" | {result['train_seconds']:.0f} | {result['date']} |"
    )
    table = HERE / "pilot.md"
    if not table.exists():
        table.write_text(
            "# Pilot: more training for ListOps' hard operator\n\n"
            f"`python benchmarks/quality/pilot.py` (see its docstring). Test: the study's "
            f"{len(result['test_correct'])} ListOps test items; per-operator accuracy %.\n\n"
            "| run | method | train items | epochs | lr | test % | MAX | MIN | MED | SM "
            "| train s | date |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        )
    with table.open("a") as handle:
        handle.write(line + "\n")
    print(line, f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
