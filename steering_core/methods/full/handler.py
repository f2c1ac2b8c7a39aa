"""``full``, torch side: every parameter trains; the artifact holds the whole model's weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file
from torch import nn

from steering_core.artifact.fingerprint import base_model_info
from steering_core.errors import ArtifactError
from steering_core.methods.base import AttachedMethod, MethodHandler, unfreeze
from steering_core.methods.full.config import FullMethod

FULL_MODEL_FILE = "model.safetensors"


class FullAttached(AttachedMethod):
    method_type = "full"

    def save_payload(self, out_dir: Path) -> list[str]:
        save_file(standalone_state(self.model), str(out_dir / FULL_MODEL_FILE), {"format": "pt"})
        return [FULL_MODEL_FILE]


def standalone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors, each a copy of its own, tied ones (embeddings / lm_head) once under
    the name safetensors' ``load_model`` expects (the first in sorted order).

    safetensors' ``save_model`` groups tensors by storage and refuses a group none of which
    covers it, which is every parameter under ZeRO 1-2: they are views into one flat buffer.
    Tied tensors are the same view (same address, shape and strides); others only share the
    buffer, so they are grouped by view, not by storage."""
    groups: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    state = model.state_dict()
    for name, tensor in state.items():
        address = tensor.data_ptr() if tensor.numel() else -len(groups) - 1  # empty: its own
        groups.setdefault((address, tuple(tensor.shape), tensor.stride()), []).append(name)
    return {
        sorted(names)[0]: state[sorted(names)[0]].detach().clone().contiguous()
        for names in groups.values()
    }


class FullHandler(MethodHandler):
    method_type = "full"

    def attach(self, model: nn.Module, config: FullMethod) -> FullAttached:
        unfreeze(model)
        attached = FullAttached(config, model)
        attached.base_info = base_model_info(model)  # before training changes the weights
        return attached

    def load(self, model: nn.Module, config: FullMethod, artifact_dir: Path) -> FullAttached:
        path = artifact_dir / FULL_MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"artifact {artifact_dir} has no {FULL_MODEL_FILE}")
        try:
            missing, unexpected = load_model(model, str(path), strict=False)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{path} does not load into this base model: {exc}") from exc
        if missing or unexpected:
            raise ArtifactError(
                f"{path} does not match this base model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return FullAttached(config, model)
