"""Checking a saved artifact without torch or its base model (``cli verify``, and the worker).

What is checked, each failure an :class:`~steering_core.errors.ArtifactError` naming the file:

- ``steering_config.json`` is JSON and a valid :class:`ArtifactConfig`;
- every file it lists exists (``lora`` is a directory);
- every safetensors file among them (or inside a listed directory) has a header that parses and
  adds up to the file's size (a truncated copy fails here);
- the steering tensors (``adapter_model.safetensors``: post_block, joint, reft) are the ones the
  config implies: ``layers.{i}.{name}``, one set per listed layer, none empty (a ZeRO-3 save
  without gathering writes empty tensors), matrices with a dimension of the base model's hidden
  size and, for a rank-r adapter, one of r; vectors of hidden size (or r: LoReFT's bias).

Only headers are read, so checking a whole-model artifact (``full``) costs no more than a LoRA.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steering_core.artifact.safetensors_header import (
    InvalidSafetensors,
    SafetensorsHeader,
    read_header,
)
from steering_core.artifact.schema import CONFIG_FILE, ArtifactConfig
from steering_core.errors import ArtifactError

STEERING_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class CheckedArtifact:
    """An artifact that passed the check, with its config."""

    directory: Path
    config: ArtifactConfig
    steering_tensors: int  # 0 for an artifact without adapter_model.safetensors

    def summary(self) -> dict[str, Any]:
        """What ``cli verify`` prints."""
        return {
            "ok": True,
            "method": self.config.method.type,
            "layers": len(self.config.layers),
            "tensors": self.steering_tensors,
            "trainable_parameters": self.config.parameters.trainable,
        }


def read_config(directory: Path) -> ArtifactConfig:
    """The artifact's ``steering_config.json``, validated; ArtifactError saying what is wrong."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an adapter artifact: {CONFIG_FILE} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from exc
    try:
        return ArtifactConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ArtifactError(f"{path} is not a valid steering config: {problems}") from exc


def check_artifact(directory: Path) -> CheckedArtifact:
    """Check the artifact in ``directory`` (see the module docstring); raise ArtifactError."""
    config = read_config(directory)
    headers: dict[str, SafetensorsHeader] = {}
    for name in config.files:
        listed = directory / name
        if not listed.exists():
            raise ArtifactError(f"artifact {directory} lists {name} but it is missing")
        for path in [listed] if listed.is_file() else sorted(listed.rglob("*.safetensors")):
            if path.suffix == ".safetensors":
                headers[str(path.relative_to(directory))] = _header(path)
    steering = headers.get(STEERING_FILE)
    if steering is not None:
        _check_steering_tensors(config, steering)
    return CheckedArtifact(directory, config, len(steering.tensors) if steering else 0)


def _header(path: Path) -> SafetensorsHeader:
    try:
        return read_header(path)
    except InvalidSafetensors as exc:
        raise ArtifactError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    except OSError as exc:
        raise ArtifactError(f"{path.name} cannot be read: {exc}") from exc


def _check_steering_tensors(config: ArtifactConfig, header: SafetensorsHeader) -> None:
    layers: set[int] = set()
    for name in header.tensors:
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
            raise ArtifactError(f"unexpected tensor {name!r} in {STEERING_FILE}")
        layers.add(int(parts[1]))
    if sorted(layers) != config.layers:
        raise ArtifactError(f"tensors cover layers {sorted(layers)}, config says {config.layers}")
    for name, tensor in header.tensors.items():
        problem = _shape_problem(tensor.shape, config.base_model.hidden_size, config.rank)
        if problem is not None:
            raise ArtifactError(f"tensor {name} has shape {tensor.shape}: {problem}")


def _shape_problem(shape: tuple[int, ...], hidden: int, rank: int | None) -> str | None:
    """Why a steering tensor's shape cannot belong to the configured adapter, or None. Vectors
    are hidden-sized (or rank-sized: a rank-r projection's bias, as in LoReFT); matrices have
    a hidden-size dimension and, in a rank-r adapter, a rank dimension."""
    if math.prod(shape) == 0:
        return "an empty tensor (a ZeRO-3 save without gathering?)"
    if len(shape) == 1:
        allowed = {hidden} if rank is None else {hidden, rank}
        if shape[0] not in allowed:
            return f"expected a vector of hidden size {hidden}" + (
                f" or rank {rank}" if rank is not None else ""
            )
        return None
    if hidden not in shape:
        return f"expected a dimension of hidden size {hidden}"
    if rank is not None and len(shape) == 2 and rank not in shape:
        return f"expected rank {rank}"
    return None
