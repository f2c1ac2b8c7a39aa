"""The LM head on labelled positions only (``steering_core.methods.loss``) against on every
position.

    python benchmarks/speed/lm_head.py [--model smollm2-135m-instruct] [--steps 12] [--quick]

Post-block r=8 training passes (forward and backward; no optimizer step, so both losses see
the same weights) on real answer-only batches of the project's own tasks (8 training rows
each, tokenized and padded as ``train.py`` does): ListOps
(short answers after a long shared instruction) and arithmetic with rationales (the
completion is about half of each row). Per task, the two losses alternate step by step on the
same batch: ``model(**batch).loss`` (transformers runs the output projection on every position
and materialises all logits) against ``causal_lm_loss`` (``logits_to_keep`` = the positions that
predict a label). Medians of ``--steps`` timed steps each, after a warm-up step of each; one
process, ``OMP_NUM_THREADS`` threads. Writes ``lm_head.md`` and ``lm_head.json`` beside this
script.

The bound: a frozen output projection costs 2·H·V FLOPs per position forward and as much again
for the gradient of its input; the body costs about 2·N_body forward and twice that backward
(activation gradients through frozen weights, plus the adapter's). Skipping the projection
on a share (1 - k) of positions speeds a step up by at most
(6·N_body + 4·H·V) / (6·N_body + 4·k·H·V), attention and the softmax left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from common import TASKS, machine_and_date, write_results  # noqa: E402


def measure(model_name: str, steps: int, rows: int) -> dict[str, Any]:
    import torch

    from steering_core.data.batches import collate, parse_jsonl, tokenize_dataset
    from steering_core.methods.loss import causal_lm_loss, predicting_positions
    from steering_core.model.loading import load_model, load_tokenizer
    from steering_core.steering.attach import attach_method

    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_name)
    attached = attach_method(load_model(model_name), {"type": "post_block"})
    model = attached.model
    model.train()
    losses = {
        "all positions": lambda batch: model(**batch).loss,
        "labelled positions": lambda batch: causal_lm_loss(model, batch),
    }
    config = model.config
    hidden, vocab = config.hidden_size, config.vocab_size
    head = hidden * vocab
    body = sum(p.numel() for p in model.parameters()) - head  # tied embedding counted once
    results: dict[str, Any] = {}
    for task, path in TASKS.items():
        data = tokenize_dataset(parse_jsonl(str(path)), tokenizer, max_seq_length=512)
        batch = collate([data[i] for i in range(rows)], data.pad_token_id)
        positions = batch["input_ids"].shape[1]
        kept = int(predicting_positions(batch["labels"]).numel())
        times: dict[str, list[float]] = {name: [] for name in losses}
        values: dict[str, float] = {}
        for step in range(steps + 1):
            for name, loss_fn in losses.items():
                started = time.perf_counter()
                loss = loss_fn(batch)
                loss.backward()
                model.zero_grad(set_to_none=True)
                if step:
                    times[name].append(time.perf_counter() - started)
                values[name] = float(loss)
        tokens = int(batch["attention_mask"].sum())
        k = kept / (positions - 1)
        medians = {name: statistics.median(t) for name, t in times.items()}
        results[task] = {
            "batch_rows": rows,
            "padded_length": positions,
            "real_tokens": tokens,
            "kept_positions": kept,
            "kept_share": round(k, 3),
            "loss_values": values,
            "step_seconds_median": {n: round(v, 4) for n, v in medians.items()},
            "tokens_per_second": {n: round(tokens / v, 1) for n, v in medians.items()},
            "speedup": round(medians["all positions"] / medians["labelled positions"], 3),
            "bound": round((6 * body + 4 * head) / (6 * body + 4 * k * head), 3),
        }
        print(task, results[task], flush=True)
    return {"body_parameters": body, "head_parameters": head, "tasks": results}


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# The LM head on labelled positions only: {r['model']}",
        "",
        f"`python benchmarks/speed/lm_head.py` on {r['date']} ({r['machine']}). Post-block r=8, "
        f"forward + backward of one batch of {r['rows']} real training rows per task, the two "
        f"losses alternating on the same batch, medians of {r['steps']} steps each.",
        "",
        "| task | padded length | positions kept | all positions: tokens/s | labelled only: "
        "tokens/s | speed-up | bound |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, t in r["tasks"].items():
        tps = t["tokens_per_second"]
        lines.append(
            f"| {task} | {t['padded_length']} | {t['kept_positions']} "
            f"({100 * t['kept_share']:.0f}%) | {tps['all positions']} | "
            f"{tps['labelled positions']} | {t['speedup']:.2f}x | {t['bound']:.2f}x |"
        )
    lines += [
        "",
        "Bound: (6·N_body + 4·H·V) / (6·N_body + 4·k·H·V) with k the share of positions kept "
        f"(N_body = {r['body_parameters']:,}, H·V = {r['head_parameters']:,}); attention, "
        "softmax and cross-entropy over the vocabulary are left out of it, and they too shrink "
        "with the positions kept. The two losses agree (`loss_values` in the JSON; "
        "`tests/steering_core/methods/test_loss.py` checks loss and gradients against "
        "transformers' "
        "on every tiny architecture and method).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 steps: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.model, args.steps = "tiny-llama", 2
    result = {
        "model": args.model,
        "rows": args.rows,
        "steps": args.steps,
        **measure(args.model, args.steps, args.rows),
        **machine_and_date(),
    }
    write_results("lm_head", result, render, args.quick)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
