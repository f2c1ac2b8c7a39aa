"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory ``checkpoints/step-000040/`` written under a ``.partial`` name and
renamed when complete, so a run killed mid-write leaves no half checkpoint behind:

- ``trainer_state.json``: step, data position, trained tokens, early-stopping state, scheduler
  state, python and numpy RNG states;
- ``trainable.safetensors``: every trainable parameter by name;
- ``optimizer.safetensors`` + ``optimizer.json``: optimizer tensors and param groups;
- ``rng.safetensors``: torch RNG state(s);
- ``adapter/``: the adapter artifact at this step (steering methods), downloadable as is;
- ``deepspeed/``: on the DeepSpeed path, the engine's own checkpoint (it holds ZeRO-partitioned
  optimizer state) instead of the two optimizer files.

No pickle is written or read on the plain path.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from steering_core.errors import SteeringUserError

STATE_FILE = "trainer_state.json"


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return checkpoint_root(out_dir) / f"step-{step:06d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    complete = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()
    )
    return complete[-1] if complete else None


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    root = checkpoint_root(out_dir)
    for partial in root.glob("*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    complete = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file(_contiguous(tensors), str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(
        json.dumps({"param_groups": state["param_groups"], "scalars": scalars})
    )


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    meta = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = cuda_state
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_checkpoint(
    directory: Path,
    *,
    state: dict[str, Any],
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """Write the portable part of a checkpoint into ``directory`` (must exist)."""
    rng_tensors, rng_plain = rng_state()
    save_file(_contiguous(trainable), str(directory / "trainable.safetensors"))
    save_file(_contiguous(rng_tensors), str(directory / "rng.safetensors"))
    if optimizer is not None:
        save_optimizer(optimizer, directory)
    (directory / STATE_FILE).write_text(json.dumps({**state, "rng": rng_plain}, indent=1))


def read_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The trainer state and the trainable tensors; RNG is restored by :func:`restore_from`."""
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        trainable = load_file(str(directory / "trainable.safetensors"))
    except (OSError, ValueError) as exc:
        raise SteeringUserError(f"checkpoint {directory} cannot be read: {exc}") from exc
    return state, trainable


def restore_rng_from(directory: Path, state: dict[str, Any]) -> None:
    restore_rng(load_file(str(directory / "rng.safetensors")), state["rng"])
