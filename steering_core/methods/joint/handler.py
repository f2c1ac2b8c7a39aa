"""``joint``, torch side: LoRA and post-block steering trained together (METHOD.md section 4).

Orthogonality is a hard projection, no loss term: every ``every_n_steps`` optimizer steps, for
each steered layer, let ``V`` be an orthonormal basis of col(B), B being LoRA's up matrix on the
MLP down-projection (the directions LoRA writes into the residual stream). Then

- input side (default): ``W_down <- W_down (I - V V^T)``;
- output side: ``W_up <- (I - V V^T) W_up``;
- vector adapters: ``v <- (I - V V^T) v``.

A layer is skipped while ``||B|| <= min_lora_norm`` (B = 0 at step 0: its basis is arbitrary).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from steering_core.errors import ConfigValidationError
from steering_core.methods.base import AttachedMethod, MethodHandler
from steering_core.methods.joint.config import JointMethod
from steering_core.methods.lora.handler import attach_lora, load_lora, save_lora
from steering_core.methods.post_block.handler import install_adapters
from steering_core.methods.steering_tensors import load_steering, save_steering
from steering_core.model.sites import decoder_layers, get_submodule, sites_for_model
from steering_core.spec.method_config import InferenceMode
from steering_core.steering.adapter_modules import LowRankAdapter, VectorAdapter

_RELATIVE_RANK_TOL = 1e-6


def lora_b_of_down_proj(model: nn.Module, layer: int) -> torch.Tensor | None:
    """LoRA's B (H x r) on the layer's MLP down-projection, or None if it carries no LoRA."""
    module = get_submodule(decoder_layers(model)[layer], sites_for_model(model).down_proj)
    lora_b = getattr(module, "lora_B", None)
    if lora_b is None or not len(lora_b):
        return None
    name = next(iter(lora_b.keys()))
    return lora_b[name].weight


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """At least fp32 for the linear algebra (bf16 has no SVD kernel), fp64 kept as fp64."""
    return torch.promote_types(tensor.dtype, torch.float32)


def orthonormal_column_basis(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (H x k) of col(matrix), k its numerical rank."""
    u, s, _ = torch.linalg.svd(matrix.detach().to(_compute_dtype(matrix)), full_matrices=False)
    keep = s > s.max() * _RELATIVE_RANK_TOL
    return u[:, keep]


class JointAttached(AttachedMethod):
    method_type = "joint"
    config: JointMethod

    def __init__(self, config: JointMethod, model: PeftModel, steering: Any):
        super().__init__(config, model, steering)
        self.inference_mode: InferenceMode = "all"

    def parameter_groups(
        self,
        learning_rate: float,
        *,
        weight_decay: float = 0.0,
        steering_learning_rate: float | None = None,
    ) -> list[dict[str, Any]]:
        named = self.trainable_named_parameters()
        lora = [p for n, p in named if "lora_" in n]
        steering = [p for n, p in named if "lora_" not in n]
        return [
            {"params": lora, "lr": learning_rate, "weight_decay": weight_decay, "name": "lora"},
            {
                "params": steering,
                "lr": steering_learning_rate
                if steering_learning_rate is not None
                else learning_rate,
                "weight_decay": weight_decay,
                "name": "steering",
            },
        ]

    def after_optimizer_step(self, step: int) -> dict[str, Any] | None:
        ortho = self.config.orthogonality
        if not ortho.enabled or step % ortho.every_n_steps != 0:
            return None
        return {"projected_layers": self.project_out_lora_subspace()}

    @torch.no_grad()
    def project_out_lora_subspace(self) -> list[int]:
        """Apply the projection now; return the layers projected (others had B ~ 0)."""
        assert self.steering is not None
        ortho = self.config.orthogonality
        projected: list[int] = []
        for layer in self.steering.layers:
            b = lora_b_of_down_proj(self.model, layer)
            if b is None or float(b.detach().norm()) <= ortho.min_lora_norm:
                continue
            adapter = self.steering.adapter(layer)
            adapter_dtype = next(iter(adapter.parameters())).dtype
            basis = orthonormal_column_basis(b)
            basis = basis.to(torch.promote_types(basis.dtype, adapter_dtype))
            if isinstance(adapter, VectorAdapter):
                v = adapter.vector.to(basis.dtype)
                adapter.vector.copy_(v - basis @ (basis.T @ v))
            elif isinstance(adapter, LowRankAdapter):
                if ortho.side == "input":
                    w = adapter.down.weight.to(basis.dtype)  # (r, H)
                    adapter.down.weight.copy_(w - (w @ basis) @ basis.T)
                else:
                    w = adapter.up.weight.to(basis.dtype)  # (H, r)
                    adapter.up.weight.copy_(w - basis @ (basis.T @ w))
            projected.append(layer)
        return projected

    @contextmanager
    def trained_parts_disabled(self) -> Iterator[None]:
        """The base model: steering and LoRA both off (then as they were)."""
        assert self.steering is not None and isinstance(self.model, PeftModel)
        with self.steering.disabled(), self.model.disable_adapter():
            yield

    def set_inference_mode(self, mode: InferenceMode) -> None:
        """``all``: LoRA and steering; ``lora_only``: steering off; ``adapter_only``: LoRA off."""
        if mode not in ("all", "lora_only", "adapter_only"):
            raise ConfigValidationError(
                f"inference mode {mode!r} unknown; use all, lora_only or adapter_only"
            )
        assert self.steering is not None and isinstance(self.model, PeftModel)
        self.steering.enabled = mode != "lora_only"
        if mode == "adapter_only":
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
        self.inference_mode = mode

    def save_payload(self, out_dir: Path) -> list[str]:
        assert self.steering is not None and isinstance(self.model, PeftModel)
        return [save_steering(self.steering, out_dir), save_lora(self.model, out_dir)]


class JointHandler(MethodHandler):
    method_type = "joint"

    def attach(self, model: nn.Module, config: JointMethod) -> JointAttached:
        peft_model = attach_lora(model, config.lora)
        steering = install_adapters(peft_model, config.site, config.adapter)
        # install_adapters froze the base; peft's LoRA weights must train again.
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
        return JointAttached(config, peft_model, steering)

    def load(self, model: nn.Module, config: JointMethod, artifact_dir: Path) -> JointAttached:
        peft_model = load_lora(model, artifact_dir)
        steering = install_adapters(peft_model, config.site, config.adapter)
        load_steering(steering, artifact_dir)
        return JointAttached(config, peft_model, steering)
