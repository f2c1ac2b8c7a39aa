"""GPU benchmark: post-block training MFU, ZeRO-2/3 checkpoint round trips, steered decode latency,
many adapters served on one base model, and one DeepSpeed job through the real service.

    python benchmarks/gpu/run.py [--out FILE] [--quick] [--smoke] [--peak-tflops 989]
        [--sections training,decode,serving,zero_round_trip,worker_job] [--budgets serving=90,...]

Five sections, all written to one JSON file (``--out``, default ``results.json`` beside this
script), rewritten after every section so a run cut short keeps what it measured. Each section
has a time budget in seconds (``SECTION_BUDGETS_S``, 510 s in all, inside ``on_device.sh``'s
540 s); a section whose budget runs out stops where it is (between steps, repeats, ZeRO stages,
or by cancelling its job), keeps what it measured and records ``budget_spent``:

1. ``training``: bf16 training throughput of post-block steering (nonlinear r=8 at block_output
   on every layer, adapters in fp32, base frozen in bf16, autocast bf16 as in
   ``steering_core.engine.train``) on a randomly initialised Llama-3.2-1B-shaped model, on a fixed
   batch
   of random token ids; tokens/s, step time, peak GPU memory, trainable parameters and
   model-FLOPs utilisation against ``--peak-tflops`` (H200 dense bf16: 989 TFLOP/s), counted
   two ways (see ``FLOP_FORMULAS``); then LoRA r=8 on the seven projections on the same batch,
   for the post-block / LoRA throughput ratio.
2. ``zero_round_trip``: the project's training engine (``steering_core.engine.train.train``) under
   DeepSpeed ZeRO-2 and ZeRO-3: run A trains uninterrupted; run B trains the same spec, is
   stopped after the first checkpoint through ``should_stop`` and resumed with
   ``resume=True``. The bound is exact equality: ``max_abs_diff`` between the two adapters
   (and between the two loss curves) should be 0. Each stage runs in its own subprocess so
   DeepSpeed's process-global state (process group, ZeRO-3 hooks) cannot leak between stages
   or into the other sections.
3. ``decode``: batch 1, a 256-token random prompt, 128 greedy new tokens with the KV cache (a
   manual ``model(...)`` loop: prefill, then one forward per token), base model against the same
   model with a non-zero post-block adapter; median over repetitions (base and steered
   interleaved). The ideal overhead bound: a rank-r adapter adds ~4·H·r FLOPs per token per
   layer against ~24·H² for the block, i.e. 4r/(24H) (0.065% at H=2048, r=8). At batch 1 a
   1B model decodes far below its FLOP and bandwidth limits (kernel-launch bound), so the
   measured overhead tracks the adapter's extra kernel launches instead.
4. ``serving``: the batching engine behind the real API (``steer api`` with
   ``STEER_GENERATION_DEVICE=cuda``) on the 1B-shaped Llama with 64 post-block adapters: tokens/s
   and p50/p99 latency at 16, 64, 4 and 1 concurrent clients, every client its own adapter,
   against the same load on the base model alone; status-read p99 under the 16-adapter load
   against idle (``serving.py``, sharing ``benchmarks/serving/traffic.py`` with the CPU run).
5. ``worker_job``: the service on its embedded default in a fresh data directory (``steer
   migrate``, ``steer api``, ``steer worker --gpus 1``), a ``post_block`` job with ``"compute":
   {"gpus": 1, "deepspeed": {"zero_stage": "auto"}}`` uploaded and polled over HTTP to its end:
   status, the job's ``compute`` block, tokens/s from its metrics (``worker_job.py``).

``--smoke`` runs every section on CPU with a tiny Llama (hidden 64, 2 layers, vocab 256;
section 2 with a local copy of ``tiny-llama``'s config; section 4 on the CPU at 16 and 1 clients;
section 5 with ``steer worker --gpus 0``,
a CPU job on ``tiny-llama``) in about two minutes, to prove the script.
Without ``--smoke`` and without CUDA the script exits with code 2. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = HERE / "results.json"
H200_PEAK_TFLOPS = 989.0  # NVIDIA H200 SXM, dense bf16 tensor-core peak (no sparsity)
RANK = 8  # the post-block and LoRA rank benchmarked (the project's default)

# Llama-3.2-1B's shape (its published config.json); rope settings are left at the defaults,
# which changes no FLOP or byte count.
LLAMA_1B: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
}
SMOKE_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
}
# The local random Llama section 2 trains on the GPU (byte-level tiny tokenizer, vocab 264).
ZERO_LLAMA: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}

FLOP_FORMULAS = {
    "N": "non-embedding parameters of the base model (decoder layers + final norm; the tied "
    "embedding / lm_head matrix excluded, adapters excluded)",
    "attention": "12·L·H·seq per token: QK^T and PV, 2 matmuls x 2 FLOPs/MAC x 3 (fwd + 2x "
    "bwd), counted over the full (non-causal) context as in the PaLM MFU convention",
    "model_flops_6n": "per token: 6·N + 12·L·H·seq (the conventional training FLOPs of "
    "Kaplan et al. / PaLM, as if every weight were trained)",
    "needed_flops_4n": "per token: 2·N forward + 2·N activation-gradient backward (the frozen "
    "base gets no weight gradients) + 12·L·H·seq attention (attention has no weights, so its "
    "backward, gradients for Q, K and V, cannot be skipped: it is not scaled down) + 6·P "
    "for the P trainable adapter parameters. Slight overcount: autograd also skips layer 0's "
    "backward (nothing trainable upstream of it), about 1/L of the backward",
    "with_lm_head": "the *_with_lm_head variants add the output projection, 2·H·V per token "
    "forward (x3 for 6N, x2 for 4N: its activation gradient is needed), which N leaves out "
    "and which is ~21% of the forward FLOPs at vocab 128256",
    "mfu": "flops_per_token x tokens_per_second / (peak_tflops x 1e12)",
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run mode (full, --quick, --smoke)."""

    mode: str
    llama: dict[str, Any]
    batch: int
    seq: int
    warmup_steps: int
    timed_steps: int
    prompt_len: int
    new_tokens: int
    repeats: int
    zero_model: dict[str, Any]
    zero_rows_per_step: int
    zero_steps: int
    zero_stop_after: int
    budgets_s: dict[str, float]


def settings_for(args: argparse.Namespace) -> Settings:
    if args.smoke:
        settings = Settings(
            mode="smoke",
            llama=SMOKE_LLAMA,
            batch=2,
            seq=32,
            warmup_steps=1,
            timed_steps=2,
            prompt_len=16,
            new_tokens=8,
            repeats=2,
            zero_model={},  # tiny-llama's own config
            zero_rows_per_step=8,
            zero_steps=6,
            zero_stop_after=3,
            budgets_s=section_budgets(args),
        )
    else:
        settings = Settings(
            mode="quick" if args.quick else "full",
            llama=LLAMA_1B,
            batch=8,
            seq=1024,
            warmup_steps=2,
            timed_steps=4 if args.quick else 6,
            prompt_len=256,
            new_tokens=128,
            repeats=2 if args.quick else 3,
            zero_model=ZERO_LLAMA,
            zero_rows_per_step=16,
            zero_steps=6,
            zero_stop_after=3,
            budgets_s=section_budgets(args),
        )
    overrides = {k: v for k, v in (("batch", args.batch), ("seq", args.seq)) if v is not None}
    return Settings(**{**asdict(settings), **overrides})


# Seconds each section may take: 510 in all, leaving on_device.sh's `timeout 540` room for the
# interpreter's start, the environment record and the JSON writes. Budgets past a section's
# last check (one training step, one decode repeat) are the only overrun.
SECTION_BUDGETS_S: dict[str, float] = {
    "training": 80.0,
    "decode": 40.0,
    "serving": 110.0,
    "zero_round_trip": 150.0,
    "worker_job": 130.0,
}


def section_budgets(args: argparse.Namespace) -> dict[str, float]:
    budgets = dict(SECTION_BUDGETS_S)
    for item in filter(None, (args.budgets or "").split(",")):
        name, _, seconds = item.partition("=")
        if name not in budgets:
            raise SystemExit(f"--budgets: no section {name!r} (sections: {', '.join(budgets)})")
        budgets[name] = float(seconds)
    return budgets


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant figures (the smoke run's MFU is ~1e-7)."""
    return float(f"{value:.{digits}g}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- shared helpers -------------------------------------------------------------------------
def build_llama(dims: dict[str, Any], device: Any, dtype: Any, seed: int = 0) -> Any:
    """A randomly initialised ``LlamaForCausalLM``, created directly on ``device`` in ``dtype``."""
    import torch
    import transformers

    config = transformers.LlamaConfig(**dims)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype)


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_gib(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def non_embedding_parameters(model: Any) -> int:
    """Base parameters outside the token embedding / lm_head (tied tensors once, no adapters)."""
    from steering_core.artifact.accounting import _is_added_parameter

    seen: set[int] = set()
    total = 0
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    for name, param in model.named_parameters(remove_duplicate=False):
        if _is_added_parameter(name) or param is embedding or param is head:
            continue
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


# -- section 1: training throughput and MFU ---------------------------------------------------
def time_training(
    settings: Settings, device: Any, method: dict[str, Any], peak_tflops: float, deadline: float
) -> dict[str, Any]:
    """Tokens/s of one method on the fixed random batch: ``warmup_steps`` then ``timed_steps``
    (fewer when ``deadline`` passes: ``timed_steps_done`` says how many ran).

    Mirrors ``steering_core.engine.train``'s plain path: trainable parameters in fp32, the bf16 base
    under bf16 autocast, AdamW over ``parameter_groups``, grad clipping at 1.0.
    """
    import torch

    from steering_core.artifact.accounting import count_parameters
    from steering_core.steering.attach import attach_method

    bf16 = device.type == "cuda"
    dtype = torch.bfloat16 if bf16 else torch.float32
    free_memory(device)
    model = build_llama(settings.llama, device, dtype)
    attached = attach_method(model, method)
    trainable = [p for _, p in attached.trainable_named_parameters()]
    for param in trainable:
        param.data = param.data.float()
    attached.model.train()
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in attached.parameter_groups(1e-4)]
    )
    ids = torch.randint(
        0,
        settings.llama["vocab_size"],
        (settings.batch, settings.seq),
        generator=torch.Generator().manual_seed(1),
    ).to(device)

    def step() -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = attached.model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(settings.warmup_steps):
        step()
    synchronize(device)
    started = time.perf_counter()
    done = 0
    while done < settings.timed_steps and (done == 0 or time.perf_counter() < deadline):
        loss = step()
        if device.type == "cuda" and time.perf_counter() >= deadline:
            synchronize(device)  # the clock only knows the step is done once the GPU is
        done += 1
    synchronize(device)
    elapsed = time.perf_counter() - started
    counts = count_parameters(attached)
    hidden, layers = settings.llama["hidden_size"], settings.llama["num_hidden_layers"]
    n_params = non_embedding_parameters(attached.base_model)
    lm_head = hidden * settings.llama["vocab_size"]
    attention = 12 * layers * hidden * settings.seq
    tokens_per_second = settings.batch * settings.seq * done / elapsed
    flops = {
        "model_flops_6n": 6 * n_params + attention,
        "needed_flops_4n": 4 * n_params + attention + 6 * counts.trainable,
        "model_flops_6n_with_lm_head": 6 * (n_params + lm_head) + attention,
        "needed_flops_4n_with_lm_head": 4 * (n_params + lm_head) + attention + 6 * counts.trainable,
    }
    result = {
        "method": method,
        "tokens_per_second": round(tokens_per_second, 1),
        "step_seconds": round(elapsed / done, 4),
        "timed_steps_done": done,
        "final_loss": round(float(loss), 4),
        "peak_memory_gib": peak_memory_gib(device),
        "trainable_parameters": counts.trainable,
        "trainable_percent": round(counts.percent, 4),
        "base_parameters": counts.base_total,
        "non_embedding_parameters": n_params,
        "flops_per_token": flops,
        "achieved_tflops": {k: sig(v * tokens_per_second / 1e12) for k, v in flops.items()},
        "mfu": {k: sig(v * tokens_per_second / (peak_tflops * 1e12)) for k, v in flops.items()},
        "attn_implementation": getattr(attached.base_model.config, "_attn_implementation", None),
    }
    return result  # the model and optimizer are freed on return (free_memory runs next)


def section_training(
    settings: Settings, device: Any, peak_tflops: float, deadline: float
) -> dict[str, Any]:
    """Post-block r=8 and LoRA r=8 training throughput on the same batch, with MFU."""
    post_block = time_training(settings, device, {"type": "post_block"}, peak_tflops, deadline)
    log(f"  post_block: {post_block['tokens_per_second']} tokens/s, mfu {post_block['mfu']}")
    if time.perf_counter() >= deadline:
        return {"post_block": post_block, "lora": {"skipped": "budget spent"}, "budget_spent": True}
    lora = time_training(settings, device, {"type": "lora"}, peak_tflops, deadline)
    log(f"  lora: {lora['tokens_per_second']} tokens/s")
    return {
        "budget_spent": lora["timed_steps_done"] < settings.timed_steps
        or post_block["timed_steps_done"] < settings.timed_steps,
        "model": {"family": "llama", **settings.llama},
        "batch": settings.batch,
        "seq": settings.seq,
        "warmup_steps": settings.warmup_steps,
        "timed_steps": settings.timed_steps,
        "precision": "bf16 base, fp32 adapters, bf16 autocast"
        if device.type == "cuda"
        else "fp32 (CPU)",
        "peak_tflops": peak_tflops,
        "flop_formulas": FLOP_FORMULAS,
        "post_block": post_block,
        "lora": lora,
        "post_block_over_lora_tokens_per_second": round(
            post_block["tokens_per_second"] / lora["tokens_per_second"], 4
        ),
    }


# -- section 3: decode latency -----------------------------------------------------------------
def section_decode(settings: Settings, device: Any, deadline: float) -> dict[str, Any]:
    """Prefill and per-token greedy decode latency, base against a non-zero post-block adapter.

    Bound: the adapter's FLOPs are 4·H·r per token per layer against ~24·H² for the block,
    i.e. 4r/(24H); its bytes are 2·H·r per layer against the block's weights.
    """
    import torch

    from steering_core.steering.attach import attach_method

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    free_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_llama(settings.llama, device, dtype).eval()
    attached = attach_method(model, {"type": "post_block"})  # adapters in the base dtype
    generator = torch.Generator(device).manual_seed(3)
    with torch.no_grad():  # a non-zero adapter, large enough to move bf16 hidden states
        for name, param in attached.steering.named_parameters():
            if name.endswith(("up.weight", "down.weight")):
                param.normal_(0.0, 0.02, generator=generator)
    prompt = torch.randint(
        0,
        settings.llama["vocab_size"],
        (1, settings.prompt_len),
        generator=torch.Generator().manual_seed(2),
    ).to(device)
    decode_steps = settings.new_tokens - 1  # the prefill yields the first new token
    # transformers 5 names the cache ``cache`` (``past_key_values`` before); logits_to_keep=1 is
    # what ``generate`` asks for (no 256 x vocab logits at prefill).
    forward_args = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in forward_args else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}

    @torch.no_grad()
    def run_once() -> tuple[float, float, Any, Any]:
        synchronize(device)
        started = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True, **extra)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        prefill = time.perf_counter() - started
        first_logits = out.logits[:, -1].float()
        cache, tokens = getattr(out, cache_name), [token]
        started = time.perf_counter()
        for _ in range(decode_steps):
            out = model(input_ids=token, use_cache=True, **{cache_name: cache}, **extra)
            cache, token = getattr(out, cache_name), out.logits[:, -1:].argmax(-1)
            tokens.append(token)
        synchronize(device)
        decode = time.perf_counter() - started
        return prefill, decode, torch.cat(tokens, dim=1), first_logits

    times: dict[str, dict[str, list[float]]] = {
        k: {"prefill": [], "decode": []} for k in ("base", "steered")
    }
    outputs: dict[str, Any] = {}
    repeats_done = 0
    for repeat in range(settings.repeats + 1):  # repeat 0 warms up (kernels, allocator)
        if repeat > 1 and time.perf_counter() >= deadline:
            break
        repeats_done = repeat
        for label in ("base", "steered"):
            switch = attached.steering_scale(1.0) if label == "steered" else None
            with switch or attached.steering_disabled():
                prefill, decode, tokens, logits = run_once()
            outputs[label] = (tokens, logits)
            if repeat:
                times[label]["prefill"].append(prefill)
                times[label]["decode"].append(decode / decode_steps)
    result: dict[str, Any] = {
        "model": {"family": "llama", **settings.llama},
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_len": settings.prompt_len,
        "new_tokens": settings.new_tokens,
        "repeats": settings.repeats,
        "repeats_done": repeats_done,
        "budget_spent": repeats_done < settings.repeats,
        "method": "manual greedy loop with the KV cache (prefill forward with logits_to_keep=1, "
        "then one forward per new token), median over repeats after one warm-up repeat, base "
        "and steered interleaved; decode_ms_per_token = decode time / (new_tokens - 1)",
    }
    for label, series in times.items():
        result[label] = {
            "prefill_ms": round(1000 * statistics.median(series["prefill"]), 3),
            "decode_ms_per_token": round(1000 * statistics.median(series["decode"]), 4),
            "decode_ms_per_token_all": [round(1000 * t, 4) for t in series["decode"]],
        }
    base, steered = result["base"], result["steered"]
    hidden, layers = settings.llama["hidden_size"], settings.llama["num_hidden_layers"]
    block_params = non_embedding_parameters(model) // layers
    result["prefill_overhead_percent"] = round(
        100 * (steered["prefill_ms"] / base["prefill_ms"] - 1), 3
    )
    result["decode_overhead_percent"] = round(
        100 * (steered["decode_ms_per_token"] / base["decode_ms_per_token"] - 1), 3
    )
    result["ideal_overhead_percent"] = {
        "flops_4r_over_24H": round(100 * 4 * RANK / (24 * hidden), 5),
        "flops_vs_this_block": round(100 * 4 * hidden * RANK / (2 * block_params), 5),
        "bytes_vs_all_weights": round(
            100 * 2 * hidden * RANK * layers / sum(p.numel() for p in model.parameters()), 5
        ),
    }
    base_logits, steered_logits = outputs["base"][1], outputs["steered"][1]
    result["adapter_is_not_a_no_op"] = {
        "max_abs_first_logit_diff": round(float((steered_logits - base_logits).abs().max()), 5),
        "same_greedy_tokens": bool(torch.equal(outputs["base"][0], outputs["steered"][0])),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = peak_memory_gib(device)
    return result


# -- section 2: ZeRO-2 / ZeRO-3 save/load round trip ------------------------------------------
def write_train_file(path: Path, rows: int, seed: int = 0) -> Path:
    """``{"prompt", "completion"}`` rows of one-digit sums (as the trainer tests use)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(rows):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            handle.write(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n")
    return path


def write_local_model(directory: Path, dims: dict[str, Any]) -> Path:
    """A random Llama with the tiny byte-level tokenizer, saved as a local model directory.

    ``dims`` empty: ``tiny-llama``'s own config, so the smoke run takes the same code path
    (load from a local directory) as the GPU run.
    """
    import torch
    import transformers

    from steering_core.model.loading import _tiny_llama_kwargs, build_tiny_tokenizer

    config = transformers.LlamaConfig(**{**_tiny_llama_kwargs(), **dims})
    torch.manual_seed(0)  # tiny-llama's seed and init: with empty dims, the same weights
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(directory))
    build_tiny_tokenizer().save_pretrained(str(directory))
    return directory


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def zero_round_trip(settings: Settings, stage: int, model: str, workdir: Path) -> dict[str, Any]:
    """Run A uninterrupted; run B stopped after a checkpoint, then resumed; compare adapters."""
    from safetensors.torch import load_file

    from steering_core.engine.runtime import ensure_single_process_env
    from steering_core.engine.train import TrainingCancelled, train
    from steering_core.spec.training_spec import TrainingSpec

    ensure_single_process_env()
    batch, accum = settings.zero_rows_per_step // 2, 2
    data = write_train_file(
        workdir / "train.jsonl", settings.zero_rows_per_step * settings.zero_steps
    )
    spec = TrainingSpec.model_validate(
        {
            "model": model,
            "train_file": str(data),
            "method": {"type": "post_block"},
            "hyperparameters": {
                "n_epochs": 1,
                "batch_size": batch,
                "gradient_accumulation_steps": accum,
                "learning_rate": 1e-2,
            },
            "seed": 7,
            "max_seq_length": 64,
            "deepspeed": {"zero_stage": stage},
            "checkpoint_every_n_steps": settings.zero_stop_after,
        }
    )
    started = time.perf_counter()
    uninterrupted = train(spec, workdir / "A")
    a_seconds = time.perf_counter() - started
    calls = {"n": 0}

    def stop_after_first_checkpoint() -> bool:
        calls["n"] += 1
        return calls["n"] >= settings.zero_stop_after

    started = time.perf_counter()
    try:
        train(spec, workdir / "B", should_stop=stop_after_first_checkpoint)
        raise RuntimeError("run B was not stopped by should_stop")
    except TrainingCancelled:
        pass
    stopped_seconds = time.perf_counter() - started
    reporter = Collect()
    started = time.perf_counter()
    resumed = train(spec, workdir / "B", reporter, resume=True)
    resumed_seconds = time.perf_counter() - started
    start = reporter.events[0]
    # Control: the uninterrupted run once more. A non-zero round-trip difference with a zero
    # control is the checkpoint's fault; with a non-zero control, the kernels' nondeterminism.
    started = time.perf_counter()
    control = train(spec, workdir / "A2")
    control_seconds = time.perf_counter() - started
    a = load_file(str(uninterrupted.artifact_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.artifact_dir / "adapter_model.safetensors"))
    c = load_file(str(control.artifact_dir / "adapter_model.safetensors"))
    if not a.keys() == b.keys() == c.keys():
        raise RuntimeError(f"adapter keys differ: {sorted(a)} vs {sorted(b)} vs {sorted(c)}")
    diffs = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a}
    control_diffs = {k: float((a[k].double() - c[k].double()).abs().max()) for k in a}
    loss_diffs = [abs(x - y) for x, y in zip(uninterrupted.losses, resumed.losses, strict=True)]
    return {
        "zero_stage": stage,
        "backend": start.backend,
        "steps": uninterrupted.total_steps,
        "stopped_and_resumed_from_step": start.resumed_from_step,
        "max_abs_diff": max(diffs.values()),
        "bit_exact": all(bool((a[k] == b[k]).all()) for k in a),
        "adapter_tensors": len(a),
        "adapter_dtype": str(next(iter(a.values())).dtype).removeprefix("torch."),
        "adapter_max_abs": max(float(t.abs().max()) for t in a.values()),
        "max_abs_loss_diff": max(loss_diffs),
        "control_rerun_max_abs_diff": max(control_diffs.values()),
        "losses_uninterrupted": [round(x, 6) for x in uninterrupted.losses],
        "wall_seconds": {
            "uninterrupted": round(a_seconds, 2),
            "stopped": round(stopped_seconds, 2),
            "resumed": round(resumed_seconds, 2),
            "control_rerun": round(control_seconds, 2),
        },
    }


def child_env(smoke: bool) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    if smoke:
        env["OMP_NUM_THREADS"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke run is CPU only, like the other sections
    return env


def section_zero(
    settings: Settings, args: argparse.Namespace, deadline: float, workdir: Path
) -> dict[str, Any]:
    """ZeRO-2 and ZeRO-3 stop/resume round trips, one subprocess per stage."""
    model_dir = write_local_model(workdir / "model", settings.zero_model)
    result: dict[str, Any] = {
        "model_dims": settings.zero_model or "tiny-llama's config",
        "procedure": f"A: {settings.zero_steps} steps uninterrupted; B: same spec, stopped by "
        f"should_stop after step {settings.zero_stop_after} (checkpoint_every_n_steps="
        f"{settings.zero_stop_after}), then train(..., resume=True); compare the adapters. "
        "Control: A run a second time (nondeterministic kernels would show there)",
    }
    for stage in args.zero_stages:
        key = f"zero{stage}"
        remaining = deadline - time.perf_counter()
        if remaining < 20:
            result[key] = {"skipped": "time budget spent before this stage"}
            result["budget_spent"] = True
            continue
        log(f"  ZeRO-{stage} round trip (subprocess, timeout {remaining:.0f} s) ...")
        stage_dir = workdir / key
        stage_dir.mkdir()
        command = [sys.executable, str(Path(__file__).resolve()), "--child-zero", str(stage)]
        command += ["--child-model", str(model_dir), "--child-workdir", str(stage_dir)]
        command += ["--smoke"] if args.smoke else (["--quick"] if args.quick else [])
        try:
            proc = subprocess.run(
                command,
                cwd=ROOT,
                env=child_env(args.smoke),
                capture_output=True,
                text=True,
                timeout=remaining,
            )
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-1500:]
            result[key] = {
                "stopped": f"budget spent after {remaining:.0f} s",
                "stderr_tail": str(tail),
            }
            result["budget_spent"] = True
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            result[key] = {
                "error": f"subprocess exited {proc.returncode}",
                "stderr_tail": proc.stderr[-3000:],
            }
        else:
            result[key] = json.loads(lines[-1].removeprefix("RESULT "))
            log(f"    max_abs_diff {result[key]['max_abs_diff']}")
    return result


# -- section 3b: many adapters on one base model, through the API --------------------------------
def section_serving(
    args: argparse.Namespace, settings: Settings, deadline: float, workdir: Path
) -> dict[str, Any]:
    """The batching engine behind the real API on one GPU; serving.py."""
    sys.path.insert(0, str(HERE))
    from serving import section_serving as run_serving

    return run_serving(smoke=args.smoke, dims=settings.llama, deadline=deadline, workdir=workdir)


# -- section 4: one job through the service -----------------------------------------------------
def section_worker_job(args: argparse.Namespace, deadline: float, workdir: Path) -> dict[str, Any]:
    """The service's own path (API, Celery worker, launcher, engine) on one GPU; worker_job.py."""
    sys.path.insert(0, str(HERE))
    from worker_job import section_worker_job as run_job

    return run_job(
        smoke=args.smoke,
        budget_s=deadline - time.perf_counter(),
        workdir=workdir,
        write_model=write_local_model,
    )


def child_zero(args: argparse.Namespace) -> int:
    import torch

    if args.smoke:
        torch.set_num_threads(1)
    settings = settings_for(args)
    result = zero_round_trip(settings, args.child_zero, args.child_model, Path(args.child_workdir))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- driver --------------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "deepspeed", "peft", "safetensors", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "device": str(device),
        "torch_cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    partial.replace(path)


def run_section(
    results: dict[str, Any], key: str, runner: Callable[[float], dict[str, Any]], budget: float
) -> None:
    """Run one section into ``results[key]`` with ``budget`` seconds (the runner gets its
    deadline and stops there, recording ``budget_spent``); an exception becomes
    ``{"error": ...}`` and the other sections still run."""
    section_started = time.perf_counter()
    try:
        results[key] = runner(section_started + budget)
    except Exception as exc:  # one failing section must not stop the others
        results[key] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
        log(f"  {key} failed: {type(exc).__name__}: {exc}")
    results[key].setdefault("budget_spent", False)
    results[key]["budget_s"] = budget
    results[key]["section_seconds"] = round(time.perf_counter() - section_started, 2)
    if results[key]["budget_spent"]:
        log(f"  {key}: budget of {budget:.0f} s spent; stopped there")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON results file")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny Llama: prove the script")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H200_PEAK_TFLOPS,
        help="dense bf16 peak the MFU is read against (default: H200, 989)",
    )
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 8)")
    parser.add_argument("--seq", type=int, default=None, help="training length (default 1024)")
    parser.add_argument(
        "--budgets",
        default=None,
        help="section=seconds,... overriding SECTION_BUDGETS_S (e.g. worker_job=200)",
    )
    parser.add_argument(
        "--sections",
        default="training,decode,serving,zero_round_trip,worker_job",
        help="comma-separated subset",
    )
    parser.add_argument(
        "--zero-stages", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3]
    )
    parser.add_argument("--child-zero", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-workdir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_zero is not None:
        return child_zero(args)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "benchmarks/gpu/run.py needs a CUDA GPU (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}). Use --smoke to prove the script on CPU.",
            file=sys.stderr,
        )
        return 2
    if args.smoke:
        torch.set_num_threads(1)
    device = torch.device("cpu") if args.smoke else torch.device("cuda", 0)
    settings = settings_for(args)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "benchmarks/gpu/run.py",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "mode": settings.mode,
        "environment": environment(device),
        "settings": asdict(settings),
    }
    write_json(args.out, results)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    runners: dict[str, Callable[[float], dict[str, Any]]] = {
        "training": lambda end: section_training(settings, device, args.peak_tflops, end),
        "decode": lambda end: section_decode(settings, device, end),
        "serving": lambda end: section_serving(args, settings, end, workdir / "serving"),
        "zero_round_trip": lambda end: section_zero(settings, args, end, workdir),
        "worker_job": lambda end: section_worker_job(args, end, workdir / "worker-job"),
    }
    # DeepSpeed runs last: its first start on a machine may JIT-compile an op for a minute.
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        workdir = Path(tmp)
        for key in [k for k in runners if k in wanted]:
            log(f"section {key} ...")
            run_section(results, key, runners[key], settings.budgets_s[key])
            write_json(args.out, results)
    results["total_seconds"] = round(time.perf_counter() - started, 2)
    write_json(args.out, results)
    log(f"wrote {args.out} in {results['total_seconds']} s")
    failed = [k for k in wanted if isinstance(results.get(k), dict) and "error" in results[k]]
    failed += [
        f"{k}.{stage}"
        for k in wanted
        for stage, value in (results.get(k) or {}).items()
        if isinstance(value, dict) and "error" in value
    ]
    if failed:
        log(f"sections with errors: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
