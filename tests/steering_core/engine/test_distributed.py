"""Several ranks through torchrun (gloo on CPU) and DeepSpeed: the global batch split across
ranks, one objective whatever the number of ranks, rank-0-only I/O, a collective stop."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from steering_core.artifact.store import read_artifact_config
from steering_core.engine.events import parse_event
from tests.service.harness import free_port
from tests.steering_core.train_helpers import ROOT, cli_env, spec_dict, train_cli, write_sums

pytestmark = pytest.mark.slow


def torchrun(tmp: Path, spec: dict, name: str, ranks: int = 2, *extra: str):
    spec_path = tmp / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(ranks),
            "--master_port",
            str(free_port()),
            "-m",
            "steering_core.cli",
            "train",
            "--spec",
            str(spec_path),
            "--out",
            str(tmp / name),
            *extra,
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_ragged_answers(path: Path, n: int = 40, seed: int = 0) -> Path:
    """Answers from 1 to 14 characters: ranks see different numbers of labelled tokens."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            a = rng.randint(0, 9)
            answer = " ".join(str(a + k) for k in range(rng.randint(1, 5)))
            handle.write(json.dumps({"prompt": f"{a}, count:", "completion": answer}) + "\n")
    return path


def test_two_ranks_train_one_artifact(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl", n=32)
    spec = spec_dict(data, deepspeed={"zero_stage": 2}, checkpoint_every_n_steps=2)
    result = torchrun(tmp_path, spec, "out")
    assert result.returncode == 0, result.stderr[-3000:]
    events = [e for e in map(parse_event, result.stdout.splitlines()) if e is not None]
    starts = [e for e in events if e.event == "start"]
    assert len(starts) == 1, "only rank 0 reports"
    assert (starts[0].backend, starts[0].world_size, starts[0].zero_stage) == ("deepspeed", 2, 2)
    # 32 rows, a global batch of 4 -> 8 micro-batches per epoch; accumulation 2, 2 epochs
    assert starts[0].total_steps == 8
    assert [e.step for e in events if e.event == "checkpoint"] == [2, 4, 6, 8]
    tensors = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 3 and all(t.numel() > 0 for t in tensors.values())
    manifest = read_artifact_config(tmp_path / "out" / "adapter").training_manifest
    compute = manifest["compute"]
    assert compute == {"world_size": 2, "backend": "deepspeed", "zero_stage": 2}


def test_two_ranks_reach_the_one_rank_adapter(tmp_path: Path) -> None:
    """Same global batch, seed and rows: the adapter of 2 ranks under ZeRO-2 equals the plain
    one-rank run's to 1e-5 after 10 steps, though the ranks' answers differ in length (the
    loss is normalised by the step's labelled tokens of all ranks, not per rank); each step's
    mean token accuracy counts every rank's labelled tokens, so the two runs report the same."""
    data = write_ragged_answers(tmp_path / "train.jsonl")
    spec = spec_dict(
        data,
        hyperparameters={"batch_size": 4, "max_steps": 10, "learning_rate": 2e-2},
        precision="fp32",
    )
    code, one_events, _, stderr = train_cli(tmp_path, spec, name="one")
    assert code == 0, stderr[-3000:]
    two = torchrun(tmp_path, {**spec, "deepspeed": {"zero_stage": 2}}, "two")
    assert two.returncode == 0, two.stderr[-3000:]
    two_events = [e for e in map(parse_event, two.stdout.splitlines()) if e is not None]
    one_accuracy = [e.mean_token_accuracy for e in one_events if e.event == "step"]
    two_accuracy = [e.mean_token_accuracy for e in two_events if e.event == "step"]
    assert len(one_accuracy) == 10 and one_accuracy == two_accuracy
    one_w = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    two_w = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    assert one_w.keys() == two_w.keys()
    moved = max(float(t.abs().max()) for name, t in one_w.items() if ".up." in name)
    assert moved > 1e-3, "the adapter trained"
    worst = max(float((one_w[k] - two_w[k]).abs().max()) for k in one_w)
    assert worst <= 1e-5, worst


def test_a_batch_the_ranks_cannot_split_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any collective: rank 0 of 2 alone, in this process, meets the check."""
    from steering_core.engine.train import train
    from steering_core.errors import ConfigValidationError
    from steering_core.spec.training_spec import TrainingSpec

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    data = write_sums(tmp_path / "train.jsonl", n=8)
    spec = TrainingSpec.model_validate(spec_dict(data, hyperparameters={"batch_size": 3}))
    with pytest.raises(ConfigValidationError, match="batch_size 3 is the global batch, split"):
        train(spec, tmp_path / "odd")


def test_torch_is_used_for_one_rank_without_a_deepspeed_block(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl", n=8)
    code, events, _, stderr = train_cli(tmp_path, spec_dict(data), name="plain")
    assert code == 0, stderr[-2000:]
    start = next(e for e in events if e.event == "start")
    assert (start.backend, start.world_size, start.zero_stage) == ("torch", 1, None)


def test_auto_zero_stage_resolves_before_anything_reads_it(tmp_path: Path) -> None:
    """``zero_stage: "auto"`` reaches the engine unresolved; every use sees the chosen stage."""
    data = write_sums(tmp_path / "train.jsonl", n=8)
    spec = spec_dict(data, deepspeed={"zero_stage": "auto"})
    code, events, _, stderr = train_cli(tmp_path, spec, name="auto")
    assert code == 0, stderr[-2000:]
    start = next(e for e in events if e.event == "start")
    assert (start.backend, start.world_size, start.zero_stage) == ("deepspeed", 1, 0)


def test_resume_on_another_number_of_ranks(tmp_path: Path) -> None:
    """An adapter method written by 2 ranks under ZeRO-2 resumes on 1 rank (its trained weights
    and schedule carry over); full fine-tuning refuses, naming both layouts."""
    data = write_sums(tmp_path / "train.jsonl", n=32)
    for method, name in (("post_block", "adapter"), ("full", "full")):
        spec = spec_dict(
            data,
            method={"type": method},
            deepspeed={"zero_stage": 2},
            checkpoint_every_n_steps=2,
            hyperparameters={"max_steps": 2},
        )
        first = torchrun(tmp_path, spec, name)
        assert first.returncode == 0, first.stderr[-3000:]
        longer = {**spec, "hyperparameters": {**spec["hyperparameters"], "max_steps": 4}}
        code, events, stdout, stderr = train_cli(tmp_path, longer, "--resume", name=name)
        if method == "post_block":
            assert code == 0, stderr[-3000:]
            start = next(e for e in events if e.event == "start")
            assert (start.resumed_from_step, start.world_size) == (2, 1)
            assert [e.step for e in events if e.event == "step"] == [1, 2, 3, 4]  # 1-2 again
        else:
            assert code == 2, stderr[-3000:]
            assert "written by 2 rank(s) under ZeRO 2" in stdout
            assert "this run has 1 rank(s) under ZeRO 2" in stdout
