"""Training throughput and steered-inference latency, method against method, in interleaved
rounds on the same model and batch.

    python benchmarks/speed/run.py [--model smollm2-135m-instruct] [--rounds 5]
                                   [--steps-per-round 4] [--quick]

Every training configuration lives in its own process for the whole run (so its peak resident
memory is its own, and its model loads once): post-block nonlinear r=8 at block_output on every
layer, the same on the last third of the layers only (no adapter below them: the backward pass
stops there), peft LoRA r=8 on the seven projections, our LoReFT r=8 at mlp_output, and full
fine-tuning. Each process warms up with one optimizer step; then, round by round, every
configuration runs ``--steps-per-round`` optimizer steps on a fixed batch of random token ids,
the order rotating from round to round, so drift in the machine's load falls on all of them
alike. A round's tokens/s is the batch's tokens over that round's median step time; a ratio
(post-block over LoRA, all layers over the last third) is taken per round and reported as the
median with its range over the rounds.

Inference, also in rounds: per round, the base model and the same model with a non-zero
post-block adapter each prefill a 256-token prompt and decode 32 greedy tokens with the KV
cache; the steered / base ratio per round, median and range.

The bound each figure is read against: a rank-r low-rank adapter adds about 4·H·r FLOPs per
token per layer (two H×r matrix products, forward), a Llama block costs about 24·H² (plus
attention over the context), so the ideal steering overhead is 4r/(24H) of a forward pass.
Writes ``results.md`` and ``results.json`` beside this script (another ``--model``:
``results-{model}.*``; ``--quick``: tiny-llama, 2 rounds, ``results-quick.*``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_MODEL = "smollm2-135m-instruct"  # the study's model
ALL_LAYERS = "post_block r=8 (every layer)"
LAST_THIRD = "post_block r=8 (last third of the layers)"
LORA = "lora r=8 (7 projections)"


def methods(model: str) -> dict[str, dict[str, Any]]:
    from steering_core.model.catalogue import model_dimensions

    layers, _ = model_dimensions(model)
    last_third = list(range(layers - max(1, layers // 3), layers))
    return {
        ALL_LAYERS: {"type": "post_block"},
        LAST_THIRD: {"type": "post_block", "site": {"layers": last_third}},
        LORA: {"type": "lora"},
        "reft r=8 (mlp_output)": {"type": "reft"},
        "full fine-tuning": {"type": "full"},
    }


# -- the child processes -------------------------------------------------------------------------
def serve_training(model_name: str, method: dict[str, Any], batch: int, length: int) -> None:
    """Load once, warm up with one step, then answer ``steps N`` lines with step times."""
    import torch

    from steering_core.artifact.accounting import count_parameters
    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    torch.manual_seed(0)
    attached = attach_method(load_model(model_name), method)
    attached.model.train()
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in attached.parameter_groups(1e-4)]
    )
    vocab = attached.model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))

    def step() -> float:
        started = time.perf_counter()
        loss = attached.model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step()  # warm-up: allocations, lazy initialisation
    counts = count_parameters(attached)
    _reply({"trainable_parameters": counts.trainable, "trainable_percent": counts.percent})
    for line in sys.stdin:
        if line.startswith("steps "):
            _reply({"step_seconds": [step() for _ in range(int(line.split()[1]))]})
    _reply({"peak_rss_mib": _peak_rss_mib()})


def serve_inference(model_name: str, prompt_len: int, new_tokens: int) -> None:
    """Answer ``round`` lines with one prefill and decode timing each of base and steered."""
    import torch

    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    torch.manual_seed(0)
    attached = attach_method(load_model(model_name), {"type": "post_block"})
    with torch.no_grad():  # a non-zero adapter, so the steered path really computes
        for param in attached.steering.parameters():
            param.normal_(0, 0.01)
    model = attached.model.eval()
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(2))

    # transformers 5 names the KV cache ``cache`` (``past_key_values`` before)
    cache_name = (
        "cache" if "cache" in inspect.signature(model.forward).parameters else ("past_key_values")
    )

    @torch.no_grad()
    def once(steered: bool) -> dict[str, float]:
        with attached.steering_scale(1.0) if steered else attached.steering_disabled():
            started = time.perf_counter()
            out = model(input_ids=prompt, use_cache=True)
            prefill = time.perf_counter() - started
            past, token = getattr(out, cache_name), out.logits[:, -1:].argmax(-1)
            started = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=token, use_cache=True, **{cache_name: past})
                past, token = getattr(out, cache_name), out.logits[:, -1:].argmax(-1)
            return {"prefill": prefill, "decode": (time.perf_counter() - started) / new_tokens}

    once(False)  # warm-up
    _reply({})
    for line in sys.stdin:
        if line.startswith("round"):
            order = (False, True) if line.strip() == "round 0" else (True, False)
            timed = {("steered" if s else "base"): once(s) for s in order}
            _reply(timed)
    _reply({"peak_rss_mib": _peak_rss_mib()})


def _reply(payload: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(payload), flush=True)


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Child:
    """A persistent child process spoken to line by line."""

    def __init__(self, argv: list[str], name: str):
        self.name = name
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        self.process = subprocess.Popen(
            [sys.executable, __file__, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self.read()

    def ask(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise RuntimeError(f"{self.name} ended (exit {self.process.wait()})")

    def finish(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        final = self.read()
        self.process.wait(timeout=60)
        return final


# -- the driver ----------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 rounds: a smoke run")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.model, args.rounds, args.steps_per_round = "tiny-llama", 2, 2
    if args.serve == "inference":
        serve_inference(args.model, args.prompt_len, args.new_tokens)
        return 0
    if args.serve:
        serve_training(args.model, methods(args.model)[args.serve], args.batch, args.length)
        return 0

    common = [
        *("--model", args.model, "--batch", str(args.batch), "--length", str(args.length)),
        *("--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens)),
    ]
    configs = methods(args.model)
    children = {}
    for name in configs:
        print(f"loading {name} ...", flush=True)
        children[name] = Child([*common, "--serve", name], name)
    tokens = args.batch * args.length
    per_round: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            times = children[name].ask(f"steps {args.steps_per_round}")["step_seconds"]
            per_round[name].append(tokens / statistics.median(times))
        print(
            f"round {round_index + 1}:",
            {n: round(v[-1], 1) for n, v in per_round.items()},
            flush=True,
        )
    training = {
        name: {
            "tokens_per_second": summary(per_round[name]),
            "tokens_per_second_by_round": [round(v, 2) for v in per_round[name]],
            "trainable_parameters": children[name].ready["trainable_parameters"],
            "trainable_percent": round(children[name].ready["trainable_percent"], 4),
            "peak_rss_mib": children[name].finish()["peak_rss_mib"],
        }
        for name in configs
    }

    def ratio(a: str, b: str) -> dict[str, float]:
        return summary([x / y for x, y in zip(per_round[a], per_round[b], strict=True)])

    print("inference ...", flush=True)
    inference_child = Child([*common, "--serve", "inference"], "inference")
    rounds = [inference_child.ask(f"round {i % 2}") for i in range(args.rounds)]
    inference_child.finish()
    from steering_core.model.catalogue import model_dimensions

    _, hidden = model_dimensions(args.model)
    results = {
        "model": args.model,
        "batch": args.batch,
        "length": args.length,
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
        "training": training,
        "ratios": {
            "post_block_over_lora": ratio(ALL_LAYERS, LORA),
            "last_third_over_every_layer": ratio(LAST_THIRD, ALL_LAYERS),
        },
        "inference": {
            "base": _medians(rounds, "base"),
            "steered": _medians(rounds, "steered"),
            "steered_over_base": {
                phase: summary([r["steered"][phase] / r["base"][phase] for r in rounds])
                for phase in ("prefill", "decode")
            },
        },
        "ideal_steering_overhead": 4 * 8 / (24 * hidden),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}",
        "date": time.strftime("%Y-%m-%d"),
    }
    suffix = "-quick" if args.quick else "" if args.model == DEFAULT_MODEL else f"-{args.model}"
    (HERE / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    (HERE / f"results{suffix}.md").write_text(render(results, args))
    print((HERE / f"results{suffix}.md").read_text())
    return 0


def _medians(rounds: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {
        "prefill_ms": round(1000 * statistics.median(r[label]["prefill"] for r in rounds), 2),
        "decode_ms_per_token": round(
            1000 * statistics.median(r[label]["decode"] for r in rounds), 3
        ),
    }


PYREFT_NOTE = (
    "pyreft: not measured. pyreft 0.1.0, the newest on PyPI, requires transformers==4.45.1 "
    "(checked with `pip install --dry-run pyreft` on 2026-11-28); this project pins "
    "transformers>=5, so pyreft does not install beside our pins. Our own LoReFT "
    "(`reft r=8 (mlp_output)` above) is the ReFT figure."
)


def _range(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    ratios, inference = r["ratios"], r["inference"]
    post_over_lora = ratios["post_block_over_lora"]
    over = inference["steered_over_base"]
    decode_overhead = over["decode"]["median"] - 1
    lines = [
        f"# Speed: {r['model']}",
        "",
        f"`python benchmarks/speed/run.py{' --quick' if args.quick else ''}` on {r['date']} "
        f"({r['machine']}). Training: batch {r['batch']} x {r['length']} tokens of random ids; "
        f"{r['rounds']} interleaved rounds (the order rotating), each configuration "
        f"{r['steps_per_round']} optimizer steps per round in its own long-lived process (peak "
        "RSS is that process's); a round's tokens/s is over its median step time. Ratios are "
        "per round: median (min-max).",
        "",
        "| configuration | trainable params | % | tokens/s median (range) | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for name, t in r["training"].items():
        lines.append(
            f"| {name} | {t['trainable_parameters']:,} | {t['trainable_percent']} | "
            f"{_range(t['tokens_per_second'], 1)} | {t['peak_rss_mib']} |"
        )
    last_third = ratios["last_third_over_every_layer"]
    lines += [
        "",
        f"Post-block trains at {_range(post_over_lora)}x LoRA's tokens/s per round (target "
        f">= 1.2x: {'met' if post_over_lora['median'] >= 1.2 else 'missed'} by the median).",
        "",
        f"Adapters on the last third of the layers train at {_range(last_third)}x the tokens/s "
        "of adapters on every layer: with no adapter below them, the backward pass stops at "
        "the lowest adapted layer (the base is frozen and nothing below needs a gradient).",
        "",
        "| inference (medians over rounds) | base | steered (post-block r=8) | steered / base "
        "per round |",
        "|---|---|---|---|",
        f"| prefill, {args.prompt_len} tokens | {inference['base']['prefill_ms']} ms | "
        f"{inference['steered']['prefill_ms']} ms | {_range(over['prefill'], 3)} |",
        f"| decode, per token ({args.new_tokens} tokens, KV cache) | "
        f"{inference['base']['decode_ms_per_token']} ms | "
        f"{inference['steered']['decode_ms_per_token']} ms | {_range(over['decode'], 3)} |",
        "",
        f"Bound: the adapter adds ~4·H·r FLOPs per token per layer against ~24·H² for the "
        f"block, an ideal overhead of {100 * r['ideal_steering_overhead']:.2f}% "
        f"(H={round(4 * 8 / (24 * r['ideal_steering_overhead']))}, r=8). Target: steered decode "
        f"within 5% of the base: {'met' if decode_overhead <= 0.05 else 'missed'} by the median "
        f"({100 * decode_overhead:+.1f}%). Base and steered alternate within each round, the "
        "order swapping from round to round.",
        "",
        PYREFT_NOTE,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    if "--serve" in sys.argv:
        sys.exit(main())
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
