"""Post-block steering on SmolLM2-135M-Instruct, generated ListOps, through the engine CLI.

Evaluates the base model on held-out ListOps items, trains a ``post_block`` adapter on a few
hundred training items with ``python -m steering_core.cli train``, evaluates the steered model
on the same items, and writes ``results.json`` and ``results.md`` beside this script.

    python benchmarks/listops_smollm2/run.py [--train 400] [--test 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from steer.held_out import cli_evaluate, head_jsonl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "data" / "tasks"
MODEL = "smollm2-135m-instruct"


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "steering_core.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"cli {args[0]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def evaluate(work: Path, test: Path, adapter: Path | None, name: str) -> dict:
    started = time.perf_counter()
    summary = cli_evaluate(MODEL, test, "listops", adapter=adapter, out=work / f"{name}.json")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-listops")
    parser.add_argument("--quick", action="store_true", help="80 train / 40 test items")
    args = parser.parse_args()
    if args.quick:
        args.train, args.test = 80, 40
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    train = head_jsonl(DATA / "listops_train.jsonl", work / "train.jsonl", args.train)
    test = head_jsonl(DATA / "listops_test.jsonl", work / "test.jsonl", args.test)

    before = evaluate(work, test, None, "before")
    spec = {
        "model": MODEL,
        "train_file": str(train),
        "method": {"type": "post_block"},
        "hyperparameters": {
            "n_epochs": 1,
            "batch_size": 8,
            "gradient_accumulation_steps": 1,
            "learning_rate": args.lr,
        },
        "seed": 42,
        "max_seq_length": 256,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    out = cli("train", "--spec", str(work / "spec.json"), "--out", str(work / "run"))
    train_seconds = time.perf_counter() - started
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    after = evaluate(work, test, work / "run" / "adapter", "after")

    result = {
        "model": MODEL,
        "method": spec["method"],
        "train_items": args.train,
        "test_items": args.test,
        "learning_rate": args.lr,
        "steps": len(steps),
        "trainable_parameters": events[0]["trainable_parameters"],
        "trainable_percent": round(events[0]["trainable_percent"], 4),
        "first_loss": round(steps[0]["loss"], 4),
        "last_loss": round(steps[-1]["loss"], 4),
        "mean_tokens_per_second": round(sum(e["tokens_per_second"] for e in steps) / len(steps), 1),
        "train_wall_seconds_incl_load": round(train_seconds, 1),
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "eval_seconds_after": after["seconds"],
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, CPU only",
        "date": time.strftime("%Y-%m-%d"),
    }
    name = "results-quick" if args.quick else "results"
    (HERE / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / f"{name}.md").write_text(
        "# post_block on SmolLM2-135M-Instruct, generated ListOps\n\n"
        f"Command: `python benchmarks/listops_smollm2/run.py{' --quick' if args.quick else ''}`"
        f" ({result['date']}, {result['machine']}).\n\n"
        "| | value |\n|---|---|\n"
        + "".join(f"| {k} | {v} |\n" for k, v in result.items() if k not in ("date", "machine"))
        + "\nAccuracy: greedy decoding; the integer inside the first `<answer>` tag, exact.\n"
        f"{args.test} test items give a standard error of about "
        f"{100 * (0.25 / args.test) ** 0.5:.1f} points at 50%.\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
