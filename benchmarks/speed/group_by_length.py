"""Training with ``group_by_length`` against the plain random order, through the real trainer.

    python benchmarks/speed/group_by_length.py [--model smollm2-135m-instruct] [--rows 160]
                                               [--repeats 2] [--quick]

Per task (the project's own ListOps and arithmetic training files), the first ``--rows`` rows
are trained for one epoch with post-block r=8 (batch 8, no gradient accumulation, fp32) by
``steering_core.engine.train.train``, in the plain random order and grouped by length, ``--repeats``
runs of each alternating A B B A in one process (``OMP_NUM_THREADS`` threads). All runs train on
exactly the same rows, so the same real tokens; only the padding differs. Tokens/s counts real
(unpadded) tokens over the trainer's own ``train_seconds``, pooled over the repeats.

The bound: a step's cost grows with its padded tokens (batch size x longest row), so the ideal
speed-up is padded tokens in the plain order / padded tokens grouped (attention, quadratic in
length, left out). It is given for the rows trained and for each whole training file (1,000
rows, where a group is 50 batches = 400 rows), from ``DataPlan`` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from common import TASKS, machine_and_date, write_results  # noqa: E402

BATCH, SEED, MAX_LEN = 8, 0, 256
ORDERS = {"plain": False, "grouped": True}


def epoch_shape(rows: Any, grouped: bool) -> dict[str, int]:
    """One epoch of ``rows`` batched as the trainer batches them: the tokens fed after padding
    each batch to its longest row, and the positions the LM head runs on (per row, the union
    over its batch of the positions that predict a label: ``steering_core.methods.loss``)."""
    from steering_core.data.batches import collate
    from steering_core.engine.plan import DataPlan
    from steering_core.methods.loss import predicting_positions

    lengths = tuple(len(rows[i].input_ids) for i in range(len(rows)))
    plan = DataPlan(
        n_rows=len(lengths),
        batch_size=BATCH,
        world_size=1,
        grad_accum=1,
        n_epochs=1,
        seed=SEED,
        lengths=lengths if grouped else None,
    )
    padded = head = 0
    for micro in range(plan.micro_per_epoch):
        batch = collate([rows[i] for i in plan.rows_for(micro, 0)], rows.pad_token_id)
        padded += batch["input_ids"].numel()
        head += BATCH * int(predicting_positions(batch["labels"]).numel())
    return {"padded_tokens": padded, "head_positions": head}


def bound(shapes: dict[str, dict[str, int]], body: int, head: int) -> float:
    """Ideal speed-up: 6·N_body per token fed (forward, and backward through frozen weights)
    plus 4·H·V per LM-head position (forward, and the gradient of its input)."""

    def cost(shape: dict[str, int]) -> int:
        return 6 * body * shape["padded_tokens"] + 4 * head * shape["head_positions"]

    return round(cost(shapes["plain"]) / cost(shapes["grouped"]), 3)


def train_once(model: str, train_file: Path, grouped: bool, work: Path) -> dict[str, Any]:
    from steering_core.engine.train import train
    from steering_core.spec.training_spec import TrainingSpec

    spec = TrainingSpec(
        model=model,
        method={"type": "post_block"},
        hyperparameters={
            "n_epochs": 1,
            "batch_size": BATCH,
            "gradient_accumulation_steps": 1,
            "learning_rate": 5e-3,
            "group_by_length": grouped,
        },
        train_file=str(train_file),
        seed=SEED,
        max_seq_length=MAX_LEN,
        precision="fp32",
    )
    result = train(spec, work)
    return {
        "steps": result.step,
        "trained_tokens": result.trained_tokens,
        "train_seconds": round(result.train_seconds, 2),
        "tokens_per_second": round(result.trained_tokens / result.train_seconds, 1),
        "final_loss": round(result.losses[-1], 4),
    }


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one order: the same rows each time, so tokens over the summed seconds."""
    seconds = sum(run["train_seconds"] for run in runs)
    return {
        **runs[0],
        "repeats": len(runs),
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(sum(r["trained_tokens"] for r in runs) / seconds, 1),
        "tokens_per_second_each": [run["tokens_per_second"] for run in runs],
    }


def measure(model: str, rows: int, repeats: int) -> dict[str, Any]:
    from steering_core.data.batches import parse_jsonl, tokenize_dataset
    from steering_core.model.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model)
    from steering_core.model.sites import decoder_layers

    loaded = load_model(model)
    head = loaded.config.hidden_size * loaded.config.vocab_size
    body = sum(p.numel() for layer in decoder_layers(loaded) for p in layer.parameters())
    del loaded
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task, path in TASKS.items():
            lines = path.read_text(encoding="utf-8").splitlines()
            subset = Path(tmp) / f"{task}.jsonl"
            subset.write_text("\n".join(lines[:rows]) + "\n", encoding="utf-8")
            every = tokenize_dataset(parse_jsonl(str(path)), tokenizer, max_seq_length=MAX_LEN)
            first = tokenize_dataset(parse_jsonl(str(subset)), tokenizer, max_seq_length=MAX_LEN)
            # ABBA...: the orders swap every repeat, so warm-up and drift fall on both alike
            timed: dict[str, list[dict[str, Any]]] = {name: [] for name in ORDERS}
            for repeat in range(repeats):
                names = list(ORDERS) if repeat % 2 == 0 else list(reversed(ORDERS))
                for name in names:
                    work = Path(tmp) / f"{task}-{name}-{repeat}"
                    timed[name].append(train_once(model, subset, ORDERS[name], work))
            runs = {name: _pooled(results) for name, results in timed.items()}
            trained = {name: epoch_shape(first, g) for name, g in ORDERS.items()}
            whole = {name: epoch_shape(every, g) for name, g in ORDERS.items()}
            tps = {name: run["tokens_per_second"] for name, run in runs.items()}
            results[task] = {
                "rows": rows,
                "real_tokens": sum(len(first[i].input_ids) for i in range(len(first))),
                "runs": runs,
                "shape": trained,
                "speedup": round(tps["grouped"] / tps["plain"], 3),
                "bound": bound(trained, body, head),
                "padding_bound": round(
                    trained["plain"]["padded_tokens"] / trained["grouped"]["padded_tokens"], 3
                ),
                "whole_file": {
                    "rows": len(every),
                    "real_tokens": sum(len(every[i].input_ids) for i in range(len(every))),
                    "shape": whole,
                    "bound": bound(whole, body, head),
                },
            }
            print(task, json.dumps(results[task]), flush=True)
    return {"body_parameters": body, "head_parameters": head, "tasks": results}


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# Grouping batches by length: {r['model']}",
        "",
        f"`python benchmarks/speed/group_by_length.py` on {r['date']} ({r['machine']}). "
        f"Post-block r=8 trained by `steering_core.engine.train.train` for one epoch on the first "
        f"{r['rows']} rows of each task's training file, batch {BATCH}, fp32, in the plain "
        f"random order and with `group_by_length`, {r['repeats']} runs of each, the two orders "
        "alternating (A B B A ...). Both train the same rows and real tokens.",
        "",
        "| task | tokens fed / real, plain | grouped | LM-head positions, plain | grouped "
        "| plain: tokens/s | grouped: tokens/s | speed-up | bound | whole file: bound |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, t in r["tasks"].items():
        real, shape, whole = t["real_tokens"], t["shape"], t["whole_file"]
        plain, grouped = shape["plain"], shape["grouped"]
        lines.append(
            f"| {task} | {plain['padded_tokens'] / real:.2f} | "
            f"{grouped['padded_tokens'] / real:.2f} | {plain['head_positions']:,} | "
            f"{grouped['head_positions']:,} | {t['runs']['plain']['tokens_per_second']} | "
            f"{t['runs']['grouped']['tokens_per_second']} | {t['speedup']:.2f}x | "
            f"{t['bound']:.2f}x | {whole['bound']:.2f}x ({whole['rows']:,} rows) |"
        )
    lines += [
        "",
        "Tokens/s: real (unpadded) tokens over the trainer's `train_seconds`, pooled over the "
        "runs. Grouping saves twice: batches pad less, and rows of one length have their "
        "answers at the same positions, so the LM head (which runs only on positions that "
        "predict a label in some row of the batch, `steering_core/methods/loss.py`) runs on fewer. "
        "Bound: the FLOP ratio plain / grouped with 6·N_body per token fed (N_body: the "
        "decoder layers' parameters) and 4·H·V per "
        f"LM-head position (N_body = {r['body_parameters']:,}, H·V = {r['head_parameters']:,}), "
        "for the rows trained and for the whole training file (where each group is 50 batches "
        "= 400 rows); attention's quadratic term and the softmax over the vocabulary are left "
        "out, and they shrink too. `group_by_length` is off by default: it changes which rows "
        "share a batch, and so a run's numbers; the quality study trains without it.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each order, alternating")
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 32 rows: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.model, args.rows = "tiny-llama", 32
    result = {
        "model": args.model,
        "rows": args.rows,
        "repeats": args.repeats,
        **measure(args.model, args.rows, args.repeats),
        **machine_and_date(),
    }
    write_results("group_by_length", result, render, args.quick)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
