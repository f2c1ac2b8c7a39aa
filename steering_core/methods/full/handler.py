"""``full``, torch side: every parameter trains; the artifact holds the whole model's weights."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from steering_core.errors import ArtifactError
from steering_core.fingerprint import base_model_info
from steering_core.methods.base import AttachedMethod, MethodHandler, unfreeze
from steering_core.methods.full.config import FullMethod

FULL_MODEL_FILE = "model.safetensors"


class FullAttached(AttachedMethod):
    method_type = "full"

    def save_payload(self, out_dir: Path) -> list[str]:
        # save_model de-duplicates tied tensors (embeddings / lm_head).
        save_model(self.model, str(out_dir / FULL_MODEL_FILE), metadata={"format": "pt"})
        return [FULL_MODEL_FILE]


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
