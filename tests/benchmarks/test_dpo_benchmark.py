"""``benchmarks/dpo/run.py --smoke``: the DPO benchmark's whole path through the real service
(migrate, API, worker; uploads, three ``dpo`` jobs, chat completions) on ``tiny-llama``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dpo_benchmark_smoke_run_trains_scores_and_measures_memory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/dpo/run.py", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["smoke"] is True and results["model"] == "tiny-llama"
    training = results["training"]
    assert training["status"] == "succeeded" and training["adapter"].startswith("adapter-")
    assert training["hyperparameters"]["beta"] == results["setting"]["beta"]
    assert training["trained_tokens"] > 0
    for split in ("test", "validation"):
        for model in ("base", "adapter"):
            scored = results[split][model]
            assert scored["n"] == len(scored["replies"]) > 0
            assert 0.0 <= scored["rule_rate"] <= 1.0 and 0.0 <= scored["correct_rate"] <= 1.0
            assert all(isinstance(row["reply"], str) for row in scored["replies"])
    memory = results["memory"]
    runs = memory["runs"]
    assert set(runs) == {"adapters_off", "separate_copy"}
    for run in runs.values():
        assert run["status"] == "succeeded"
        assert run["peak_host_memory_mib"] > 0
        assert run["metrics"]["steps"] == memory["max_steps"]
    assert memory["difference_mib"] == pytest.approx(
        runs["separate_copy"]["peak_host_memory_mib"] - runs["adapters_off"]["peak_host_memory_mib"]
    )
    report = (out / "results.md").read_text()
    assert "## Peak memory of the reference" in report and "separate_copy" in report
    assert "adapter's rule rate >= 80%" in report
    # the committed results are not touched by a smoke run
    committed = ROOT / "benchmarks" / "dpo" / "results.json"
    assert not committed.is_file() or json.loads(committed.read_text())["smoke"] is False
