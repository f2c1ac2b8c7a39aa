"""The engine speed benchmarks' --quick modes end to end, as subprocesses, on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEED = ROOT / "benchmarks" / "speed"


def _run_quick(script: str, results: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, str(SPEED / script), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((SPEED / (results or script.replace(".py", "-quick.json"))).read_text())


def test_group_by_length_quick_trains_the_same_tokens_with_less_padding() -> None:
    result = _run_quick("group_by_length.py")
    assert result["model"] == "tiny-llama" and set(result["tasks"]) == {"listops", "arithmetic"}
    for task in result["tasks"].values():
        plain, grouped = task["runs"]["plain"], task["runs"]["grouped"]
        assert plain["trained_tokens"] == grouped["trained_tokens"] == task["real_tokens"]
        assert plain["steps"] == grouped["steps"] == 4
        assert plain["repeats"] == grouped["repeats"] == 2
        shape = task["shape"]
        assert task["real_tokens"] <= shape["grouped"]["padded_tokens"]
        assert shape["grouped"]["padded_tokens"] < shape["plain"]["padded_tokens"]
        assert shape["grouped"]["head_positions"] <= shape["plain"]["head_positions"]
        assert task["bound"] >= task["padding_bound"] > 1.0
        assert task["whole_file"]["bound"] > 1.0
        assert task["speedup"] > 0


def test_lm_head_quick_losses_agree() -> None:
    result = _run_quick("lm_head.py")
    for task in result["tasks"].values():
        values = task["loss_values"]
        assert abs(values["all positions"] - values["labelled positions"]) < 1e-4
        assert 0 < task["kept_positions"] < task["padded_length"] * task["batch_rows"]


@pytest.mark.slow
def test_speed_quick_measures_every_configuration_in_interleaved_rounds() -> None:
    result = _run_quick("run.py", "results-quick.json")
    assert result["model"] == "tiny-llama" and result["rounds"] == 2
    training = result["training"]
    assert len(training) == 5
    for configuration in training.values():
        assert len(configuration["tokens_per_second_by_round"]) == 2
        assert configuration["tokens_per_second"]["median"] > 0
        assert configuration["peak_rss_mib"] > 0
    every, last = (
        training["post_block r=8 (every layer)"],
        training["post_block r=8 (last third of the layers)"],
    )
    assert last["trainable_parameters"] * 3 == every["trainable_parameters"]  # 1 of 3 layers
    for ratio in result["ratios"].values():
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    for phase in ("prefill", "decode"):
        assert result["inference"]["steered_over_base"][phase]["median"] > 0
