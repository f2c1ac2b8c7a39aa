"""Helpers for trainer tests: tiny datasets and specs, and running the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from steering_core.engine.events import parse_event

ROOT = Path(__file__).resolve().parents[2]


class Collect:
    """A reporter that keeps every event the engine emits."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def losses(self) -> list[float]:
        return [e.loss for e in self.events if e.event == "step"]


def write_sums(path: Path, n: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            handle.write(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n")
    return path


def spec_dict(train_file: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "tiny-llama",
        "train_file": str(train_file),
        "method": {"type": "post_block"},
        "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-2},
        "seed": 7,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_cli(*args: str, timeout: float = 600) -> tuple[int, list[Any], str, str]:
    """Run ``python -m steering_core.cli ARGS``; return (exit code, events, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "steering_core.cli", *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events = [e for e in map(parse_event, result.stdout.splitlines()) if e is not None]
    return result.returncode, events, result.stdout, result.stderr


def train_cli(tmp: Path, spec: dict[str, Any], *extra: str, name: str = "run"):
    spec_path = tmp / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    return run_cli("train", "--spec", str(spec_path), "--out", str(tmp / name), *extra)


def train_tiny_artifact(root: Path, **overrides: Any) -> Path:
    """Train the default tiny spec (post_block on tiny-llama, 48 sums; about 2 s) in-process
    under ``root``; return the artifact directory the engine saved."""
    from steering_core.engine.train import train
    from steering_core.spec.training_spec import TrainingSpec

    root.mkdir(parents=True, exist_ok=True)
    spec = TrainingSpec.model_validate(spec_dict(write_sums(root / "train.jsonl"), **overrides))
    return train(spec, root / "out").artifact_dir


def write_preferences(path: Path, n: int = 32, seed: int = 0) -> Path:
    """OpenAI preference lines over sums: the right sum preferred to the sum plus one."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            line = {
                "input": {"messages": [{"role": "user", "content": f"{a}+{b}="}]},
                "preferred_output": [{"role": "assistant", "content": str(a + b)}],
                "non_preferred_output": [{"role": "assistant", "content": str(a + b + 1)}],
            }
            handle.write(json.dumps(line) + "\n")
    return path


def assert_prefers_the_preferred(trained: Any, untouched: Any) -> None:
    """A DPO-trained adapter, on the 32 sum pairs of ``write_preferences``: the margin
    log p(preferred) - log p(rejected) grows on average and on most pairs, and more pairs end
    preferring the right sum than under the untouched base. Across training seeds 0-11 the
    tiny model's adapter grows the mean margin by 0.69-0.75 nats and the margin of 24-27 of
    32 pairs, so these floors hold for any seed, not one."""
    gain = trained - untouched
    assert float(gain.mean()) > 0.4, gain
    assert float((gain > 0).float().mean()) >= 0.7, gain
    assert float((trained > 0).float().mean()) >= float((untouched > 0).float().mean()) + 0.2


def assert_resumes_to_the_same_adapter(spec: Any, root: Path) -> None:
    """Train ``spec`` (checkpointing every 4 steps) uninterrupted, then again cancelled at the
    sixth step boundary and resumed: the same losses and the same adapter tensors."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from steering_core.engine.train import TrainingCancelled, train

    full = train(spec, root / "full")
    asked = {"n": 0}

    def stop_at_sixth_ask() -> bool:
        asked["n"] += 1
        return asked["n"] >= 6

    with pytest.raises(TrainingCancelled):
        train(spec, root / "resumed", should_stop=stop_at_sixth_ask)
    reporter = Collect()
    resumed = train(spec, root / "resumed", reporter, resume=True)
    assert reporter.events[0].resumed_from_step == 4
    assert resumed.losses == full.losses
    assert full.artifact_dir is not None and resumed.artifact_dir is not None
    a = load_file(str(full.artifact_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.artifact_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
