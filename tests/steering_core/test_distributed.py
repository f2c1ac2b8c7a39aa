"""Two processes through torchrun (gloo on CPU) with DeepSpeed: sharded data, rank-0-only I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from steering_core.events import parse_event
from tests.steering_core.train_helpers import ROOT, cli_env, spec_dict, write_sums

pytestmark = pytest.mark.slow


def test_two_ranks_train_one_artifact(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl", n=32)
    spec = spec_dict(data, deepspeed={"zero_stage": 2}, checkpoint_every_n_steps=2)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29611",
            "-m",
            "steering_core.cli",
            "train",
            "--spec",
            str(tmp_path / "spec.json"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = [e for e in map(parse_event, result.stdout.splitlines()) if e is not None]
    starts = [e for e in events if e.event == "start"]
    assert len(starts) == 1, "only rank 0 reports"
    # 32 rows, 4 per rank per micro-batch, 2 ranks -> 4 micro-batches per epoch; accum 2, 2 epochs
    assert starts[0].total_steps == 4
    assert [e.step for e in events if e.event == "checkpoint"] == [2, 4]
    tensors = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 3 and all(t.numel() > 0 for t in tensors.values())
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
    ]
