"""Steering tensors on disk: ``adapter_model.safetensors`` with keys ``layers.{i}.{name}``."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steering_core.errors import ArtifactError
from steering_core.steering.site_steering import SiteSteering

STEERING_FILE = "adapter_model.safetensors"


def steering_tensors(steering: SiteSteering) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for layer in steering.layers:
        for name, tensor in steering.adapter(layer).export_state().items():
            tensors[f"layers.{layer}.{name}"] = tensor.detach().to("cpu").contiguous()
    return tensors


def save_steering(steering: SiteSteering, out_dir: Path) -> str:
    save_file(steering_tensors(steering), str(out_dir / STEERING_FILE), metadata={"format": "pt"})
    return STEERING_FILE


def read_steering_file(artifact_dir: Path) -> dict[str, torch.Tensor]:
    path = artifact_dir / STEERING_FILE
    if not path.is_file():
        raise ArtifactError(f"artifact {artifact_dir} has no {STEERING_FILE}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file: {exc}") from exc


def load_steering(steering: SiteSteering, artifact_dir: Path) -> None:
    """Copy saved tensors into freshly built adapters; every mismatch is an ArtifactError."""
    tensors = read_steering_file(artifact_dir)
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
            raise ArtifactError(f"unexpected tensor {key!r} in {STEERING_FILE}")
        by_layer.setdefault(int(parts[1]), {})[parts[2]] = tensor
    if sorted(by_layer) != steering.layers:
        raise ArtifactError(
            f"{STEERING_FILE} holds layers {sorted(by_layer)} but the config names "
            f"{steering.layers}"
        )
    for layer, layer_tensors in by_layer.items():
        adapter = steering.adapter(layer)
        expected = adapter.export_state()
        for name, tensor in layer_tensors.items():
            if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
                raise ArtifactError(
                    f"tensor layers.{layer}.{name} has shape {tuple(tensor.shape)}, expected "
                    f"{tuple(expected[name].shape)} for this base model and config"
                )
        try:
            adapter.import_state(layer_tensors)
        except (KeyError, RuntimeError) as exc:
            raise ArtifactError(f"layer {layer} tensors do not fit the adapter: {exc}") from exc
