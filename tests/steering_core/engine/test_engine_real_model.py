"""The engine on the real SmolLM2-135M-Instruct: a post_block job teaches it ListOps."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer.held_out import cli_evaluate, head_jsonl
from tests.steering_core.train_helpers import ROOT, train_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

MODEL = "smollm2-135m-instruct"


def test_post_block_job_raises_listops_accuracy(tmp_path: Path) -> None:
    data = ROOT / "data" / "tasks"
    train = head_jsonl(data / "listops_train.jsonl", tmp_path / "train.jsonl", 80)
    test = head_jsonl(data / "listops_test.jsonl", tmp_path / "test.jsonl", 40)
    before = cli_evaluate(MODEL, test, "listops")["accuracy"]
    spec = {
        "model": MODEL,
        "train_file": str(train),
        "method": {"type": "post_block"},
        "hyperparameters": {
            "n_epochs": 1,
            "batch_size": 8,
            "gradient_accumulation_steps": 1,
            "learning_rate": 2e-3,
        },
        "max_seq_length": 256,
    }
    code, events, _, err = train_cli(tmp_path, spec)
    assert code == 0, err[-2000:]
    steps = [e for e in events if e.event == "step"]
    assert len(steps) == 10 and steps[-1].loss < 0.5 * steps[0].loss
    after = cli_evaluate(MODEL, test, "listops", adapter=events[-1].artifact)["accuracy"]
    # The base model never answers in the <answer> format (0% here and in METHOD.md's trial).
    assert after >= before + 0.2, (before, after)
