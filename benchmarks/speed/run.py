"""Training throughput and steered-inference latency, method against method, same model and batch.

    python benchmarks/speed/run.py [--model smollm2-135m-instruct] [--steps 20] [--quick]

Each method trains in its own subprocess (so its peak resident memory is its own): post-block
(nonlinear r=8 at block_output), peft LoRA r=8 on the seven projections, full fine-tuning, and
our LoReFT r=8 at mlp_output; tokens/s over ``--steps`` optimizer steps after one warm-up step,
on a fixed batch of random token ids. Inference: prefill latency of a 256-token prompt and
per-token decode latency over 32 greedy tokens, base model against the same model with a
post-block adapter. Writes ``results.md`` and ``results.json`` beside this script (for another
``--model``, ``results-{model}.md`` and ``.json``).

The bound each figure is read against: a rank-r low-rank adapter adds about 4·H·r FLOPs per
token per layer (two H×r matrix products, forward), a Llama block costs about 24·H² (plus
attention over the context), so the ideal steering overhead is 4r/(24H) of a forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_MODEL = "smollm2-135m-instruct"  # the study's model
METHODS: dict[str, dict[str, Any]] = {
    "post_block r=8": {"type": "post_block"},
    "lora r=8 (7 projections)": {"type": "lora"},
    "reft r=8 (mlp_output)": {"type": "reft"},
    "full fine-tuning": {"type": "full"},
}


def train_speed(model_name: str, method: dict[str, Any], steps: int, batch: int, length: int):
    import torch

    from steering_core.accounting import count_parameters
    from steering_core.attach import attach_method
    from steering_core.models import load_model

    torch.manual_seed(0)
    attached = attach_method(load_model(model_name), method)
    attached.model.train()
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in attached.parameter_groups(1e-4)]
    )
    vocab = attached.model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = attached.model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step warms up (allocations, lazy init)
            times.append(time.perf_counter() - started)
    counts = count_parameters(attached)
    return {
        "tokens_per_second": round(batch * length / statistics.median(times), 1),
        "step_seconds_median": round(statistics.median(times), 3),
        "trainable_parameters": counts.trainable,
        "trainable_percent": round(counts.percent, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def inference_speed(model_name: str, prompt_len: int, new_tokens: int, repeats: int):
    import torch

    from steering_core.attach import attach_method
    from steering_core.models import load_model

    torch.manual_seed(0)
    attached = attach_method(load_model(model_name), {"type": "post_block"})
    with torch.no_grad():  # a non-zero adapter, so the steered path really computes
        for param in attached.steering.parameters():
            param.normal_(0, 0.01)
    model = attached.model.eval()
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(2))
    # Base and steered alternate repeat by repeat, so drift in the machine's load (2 shared
    # cores) falls on both alike; medians over the repeats.
    timings: dict[str, dict[str, list[float]]] = {
        label: {"prefill": [], "decode": []} for label in ("base", "steered")
    }
    for _ in range(repeats):
        for label, steered in (("base", False), ("steered", True)):
            with (
                torch.no_grad(),
                attached.steering_scale(1.0) if steered else attached.steering_disabled(),
            ):
                started = time.perf_counter()
                out = model(input_ids=prompt, use_cache=True)
                timings[label]["prefill"].append(time.perf_counter() - started)
                past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                started = time.perf_counter()
                for _ in range(new_tokens):
                    out = model(input_ids=token, past_key_values=past, use_cache=True)
                    past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                timings[label]["decode"].append((time.perf_counter() - started) / new_tokens)
    return {
        label: {
            "prefill_ms": round(1000 * statistics.median(t["prefill"]), 2),
            "decode_ms_per_token": round(1000 * statistics.median(t["decode"]), 3),
        }
        for label, t in timings.items()
    }


def child(args: argparse.Namespace) -> int:
    if args.child == "inference":
        result = inference_speed(args.model, args.prompt_len, args.new_tokens, args.repeats)
    else:
        result = train_speed(args.model, METHODS[args.child], args.steps, args.batch, args.length)
    print("RESULT " + json.dumps(result))
    return 0


def run_child(argv: list[str], name: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--child", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 steps: a smoke run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.model, args.steps, args.repeats = "tiny-llama", 2, 2
    if args.child:
        return child(args)
    argv = [
        *("--model", args.model, "--steps", str(args.steps), "--batch", str(args.batch)),
        *("--length", str(args.length), "--prompt-len", str(args.prompt_len)),
        *("--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)),
    ]
    training = {}
    for name in METHODS:
        print(f"training: {name} ...", flush=True)
        training[name] = run_child(argv, name)
        print("  ", training[name], flush=True)
    print("inference ...", flush=True)
    inference = run_child(argv, "inference")
    print("  ", inference, flush=True)
    from steering_core.catalogue import model_dimensions

    _, hidden = model_dimensions(args.model)
    results = {
        "model": args.model,
        "batch": args.batch,
        "length": args.length,
        "training": training,
        "inference": inference,
        "ideal_steering_overhead": 4 * 8 / (24 * hidden),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}",
        "date": time.strftime("%Y-%m-%d"),
    }
    # the study's model writes results.*; another model results-{model}.*
    suffix = "-quick" if args.quick else "" if args.model == DEFAULT_MODEL else f"-{args.model}"
    (HERE / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    (HERE / f"results{suffix}.md").write_text(render(results, args))
    print((HERE / f"results{suffix}.md").read_text())
    return 0


PYREFT_NOTE = (
    "pyreft: not measured. pyreft 0.1.0, the newest on PyPI, requires transformers==4.45.1 "
    "(checked with `pip install --dry-run pyreft` on 2026-11-28); this project pins "
    "transformers>=5, so pyreft does not install beside our pins. Our own LoReFT "
    "(`reft r=8 (mlp_output)` above) is the ReFT figure."
)


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    lora = r["training"]["lora r=8 (7 projections)"]["tokens_per_second"]
    post = r["training"]["post_block r=8"]["tokens_per_second"]
    base, steered = r["inference"]["base"], r["inference"]["steered"]
    decode_overhead = steered["decode_ms_per_token"] / base["decode_ms_per_token"] - 1
    prefill_overhead = steered["prefill_ms"] / base["prefill_ms"] - 1
    lines = [
        f"# Speed: {r['model']}",
        "",
        f"`python benchmarks/speed/run.py{' --quick' if args.quick else ''}` on {r['date']} "
        f"({r['machine']}). Training: batch {r['batch']} x {r['length']} tokens of random ids, "
        f"median of {args.steps} optimizer steps after a warm-up step, each method in its own "
        "process (peak RSS is that process's).",
        "",
        "| method | trainable params | % | tokens/s | step s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in r["training"].items():
        lines.append(
            f"| {name} | {t['trainable_parameters']:,} | {t['trainable_percent']} | "
            f"{t['tokens_per_second']} | {t['step_seconds_median']} | {t['peak_rss_mib']} |"
        )
    lines += [
        "",
        f"Post-block trains at {post / lora:.2f}x LoRA's tokens/s (target >= 1.2x: "
        f"{'met' if post / lora >= 1.2 else 'missed'}).",
        "",
        "| inference | base | steered (post-block r=8) | overhead |",
        "|---|---|---|---|",
        f"| prefill, {args.prompt_len} tokens | {base['prefill_ms']} ms | "
        f"{steered['prefill_ms']} ms | {100 * prefill_overhead:+.1f}% |",
        f"| decode, per token ({args.new_tokens} tokens, KV cache) | "
        f"{base['decode_ms_per_token']} ms | {steered['decode_ms_per_token']} ms | "
        f"{100 * decode_overhead:+.1f}% |",
        "",
        f"Bound: the adapter adds ~4·H·r FLOPs per token per layer against ~24·H² for the "
        f"block, an ideal overhead of {100 * r['ideal_steering_overhead']:.2f}% "
        f"(H={round(4 * 8 / (24 * r['ideal_steering_overhead']))}, r=8). Target: steered decode "
        f"within 5% of the base: {'met' if decode_overhead <= 0.05 else 'missed'}. Base and "
        f"steered alternate repeat by repeat ({args.repeats} each, medians).",
        "",
        PYREFT_NOTE,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
