"""Section ``serving`` of the GPU benchmark: many adapters on one base model, through the API.

What ``benchmarks/serving/run.py`` measures on the CPU, on one GPU: ``steer api`` (embedded
SQLite, a fresh data directory) with ``STEER_GENERATION_DEVICE=cuda`` (bfloat16), a random
Llama of Llama-3.2-1B's shape saved as a local model directory with the tiny byte-level
tokenizer (the GPU machine carries no pretrained weights), and 64 post-block r=8 adapters of it
registered as a worker would. At each level (16 distinct adapters first, then 64, 4 and 1
concurrent clients, each sending greedy chat completions back to back for ``seconds``), rounds
interleave the adapters load (every client its own adapter) and the same load on the base model
alone; at 16, a status reader polls a job every 50 ms under load and in an idle window of the
same length. Reported per level: tokens/s and p50/p99 latency (medians over rounds) and the
per-round ratios (adapters / base, status p99 loaded / idle) as median and range.

The one-copy-per-adapter path of before the engine is measured on the CPU only (it loaded
models on the CPU). The section keeps to its budget: it stops between rounds and keeps what it
measured (``budget_spent``). ``--smoke``: tiny dimensions on the CPU, levels 16 and 1, one
round of 1 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "serving"))
from traffic import Api, idle_reads, level_row, load, register, status_job, warm  # noqa: E402

ADAPTERS = 64
RANK = 8  # the default post-block adapter's rank
TARGET_LEVEL = 16
GPU = {"levels": (16, 64, 4, 1), "rounds": 3, "seconds": 4.0, "max_tokens": 32}
SMOKE = {"levels": (16, 1), "rounds": 1, "seconds": 1.0, "max_tokens": 4}
STOP_MARGIN_S = 10.0  # kept back to stop the API


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_model_and_adapters(
    directory: Path, dims: dict[str, Any], count: int, dtype: Any
) -> tuple[Path, list[Path]]:
    """The random Llama saved as a local model directory, and ``count`` post-block adapters of
    it with random weights of a visible scale (each its own seed)."""
    import torch
    import transformers

    from steering_core.artifact.store import save_artifact
    from steering_core.model.loading import _tiny_llama_kwargs, build_tiny_tokenizer
    from steering_core.steering.attach import attach_method

    config = transformers.LlamaConfig(**{**_tiny_llama_kwargs(), **dims})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dtype)
    model_dir = directory / "model"
    model.save_pretrained(str(model_dir))
    build_tiny_tokenizer().save_pretrained(str(model_dir))
    attached = attach_method(model, {"type": "post_block"})  # the default: nonlinear r=8
    artifacts = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for param in attached.steering.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        artifacts.append(directory / "adapters" / f"bench{index}")
        save_artifact(attached, artifacts[-1], base_model_id=str(model_dir))
    return model_dir, artifacts


def section_serving(
    *, smoke: bool, dims: dict[str, Any], deadline: float, workdir: Path
) -> dict[str, Any]:
    import torch

    plan = SMOKE if smoke else GPU
    stop_by = deadline - STOP_MARGIN_S
    workdir.mkdir(parents=True, exist_ok=True)
    dtype = torch.float32 if smoke else torch.bfloat16
    model_dir, artifacts = write_model_and_adapters(workdir, dims, ADAPTERS, dtype)
    data_dir = workdir / "api"
    data_dir.mkdir()
    env = {
        "STEER_GENERATION_DEVICE": "cpu" if smoke else "cuda",
        "STEER_MODELS": json.dumps(["tiny-llama", str(model_dir)]),
    }
    if smoke:
        env["STEER_TORCH_THREADS"] = "1"
    register(data_dir, artifacts, ROOT, str(model_dir), env=env)
    result: dict[str, Any] = {
        "model": {"family": "llama", **dims, "source": "random init, local directory"},
        "dtype": str(dtype).removeprefix("torch."),
        "adapters": f"{ADAPTERS} post_block nonlinear r={RANK} at block_output, every layer",
        "plan": {**plan, "levels": list(plan["levels"])},
        "api": "steer api, embedded SQLite, STEER_GENERATION_DEVICE="
        + env["STEER_GENERATION_DEVICE"],
        "budget_spent": False,
        "levels": {},
    }
    api = Api(
        "serving", ROOT, data_dir, env=env, start_timeout=max(10.0, stop_by - time.perf_counter())
    )
    try:
        models = [f"bench{i}@1" for i in range(ADAPTERS)]
        started = time.perf_counter()
        warm(api.url, [str(model_dir)])
        result["base_model_load_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        warm(api.url, models)
        result["adapters_first_use_s"] = round(time.perf_counter() - started, 2)
        status = status_job(api.url)
        table = []
        for level in plan["levels"]:
            runs: dict[str, list[dict[str, Any]]] = {"adapters": [], "base": []}
            idle: list[list[float]] = []
            watch = status if level == TARGET_LEVEL else None
            for _ in range(plan["rounds"]):
                needed = plan["seconds"] * (3 if watch else 2) + 2
                if time.perf_counter() + needed > stop_by:
                    result["budget_spent"] = True
                    break
                args = (plan["seconds"], plan["max_tokens"])
                runs["adapters"].append(asyncio.run(load(api.url, models[:level], *args, watch)))
                runs["base"].append(
                    asyncio.run(load(api.url, [str(model_dir)] * level, *args, None))
                )
                if watch is not None:
                    idle.append(asyncio.run(idle_reads(api.url, plan["seconds"], status)))
            if runs["base"]:
                table.append(level_row(level, runs, idle))
                log(f"  serving: {level} clients, {len(runs['base'])} rounds")
            for kind_runs in runs.values():
                for run in kind_runs:
                    run["status_reads"] = len(run["status_reads"])
            result["levels"][str(level)] = {
                "runs": runs,
                "idle_status_reads": [len(r) for r in idle],
            }
            if result["budget_spent"]:
                break
        result["table"] = table
        result["metrics"] = _engine_counters(api.url)
    except Exception:
        result["api_log_tail"] = api.log_tail()
        raise
    finally:
        api.stop()
    return result


def _engine_counters(url: str) -> dict[str, float]:
    """The engine's forwards and rows by phase (rows / forwards: the batch it really ran)."""
    import httpx

    counters: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(
            ("steer_generation_forward_passes_total", "steer_generation_rows_total")
        ):
            name, value = line.rsplit(" ", 1)
            counters[name] = float(value)
    return counters
