"""``benchmarks/gpu/run.py --smoke``: every section runs on CPU and writes real numbers.

The GPU benchmark only runs where a GPU is lent; this proves the script end to end on a tiny
Llama so that a GPU run does not fail on a typo. The ZeRO-2/3 stop/resume round trips are
bit-exact on CPU (fp32, deterministic kernels): the tolerance below is only a guard.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROUND_TRIP_ATOL = 1e-6


def _errors(value: Any, path: str = "") -> list[str]:
    """Every ``error`` key anywhere in the results, with its path."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "error":
                found.append(f"{path}: {item}")
            found += _errors(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _errors(item, f"{path}[{index}]")
    return found


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu/run.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert _errors(results) == []
    assert results["mode"] == "smoke"
    assert {"torch", "transformers", "deepspeed"} <= set(results["environment"]["versions"])

    training = results["training"]
    for method in ("post_block", "lora"):
        run = training[method]
        assert _positive(run["tokens_per_second"]), run
        assert _positive(run["step_seconds"]) and math.isfinite(run["final_loss"])
        for name in ("model_flops_6n", "needed_flops_4n"):
            assert _positive(run["flops_per_token"][name]) and _positive(run["mfu"][name])
        assert run["flops_per_token"]["needed_flops_4n"] < run["flops_per_token"]["model_flops_6n"]
    hidden, layers = training["model"]["hidden_size"], training["model"]["num_hidden_layers"]
    assert training["post_block"]["trainable_parameters"] == 2 * hidden * 8 * layers
    assert _positive(training["post_block_over_lora_tokens_per_second"])
    assert "model_flops_6n" in training["flop_formulas"]

    zero = results["zero_round_trip"]
    for stage in (2, 3):
        trip = zero[f"zero{stage}"]
        assert trip["backend"] == "deepspeed" and trip["zero_stage"] == stage
        assert trip["stopped_and_resumed_from_step"] == 3 and trip["steps"] == 6
        assert trip["max_abs_diff"] <= ROUND_TRIP_ATOL, trip
        assert trip["max_abs_loss_diff"] <= ROUND_TRIP_ATOL, trip
        assert trip["adapter_max_abs"] > 0, "the adapter never trained: the comparison is empty"

    decode = results["decode"]
    for label in ("base", "steered"):
        assert _positive(decode[label]["prefill_ms"])
        assert _positive(decode[label]["decode_ms_per_token"])
    assert math.isfinite(decode["prefill_overhead_percent"])
    assert math.isfinite(decode["decode_overhead_percent"])
    assert _positive(decode["ideal_overhead_percent"]["flops_4r_over_24H"])
    assert decode["adapter_is_not_a_no_op"]["max_abs_first_logit_diff"] > 0

    serving = results["serving"]
    assert [row["level"] for row in serving["table"]] == [16, 1]
    for row in serving["table"]:
        for kind in ("adapters", "base"):
            assert _positive(row[kind]["tokens_per_second"]) and _positive(row[kind]["p99_s"])
        assert _positive(row["adapters_over_base"]["median"])
    assert _positive(serving["table"][0]["status_p99_loaded_over_idle"]["median"])
    passes = serving["metrics"]['steer_generation_forward_passes_total{phase="decode"}']
    rows = serving["metrics"]['steer_generation_rows_total{phase="decode"}']
    assert rows > passes  # concurrent requests shared decode forwards
