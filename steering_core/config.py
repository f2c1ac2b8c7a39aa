"""The building blocks of method configs: site, adapter and LoRA settings. Pydantic, torch-free.

These models cross process boundaries (API -> worker -> training subprocess -> artifact), so they
forbid unknown fields. Each method's own config lives in its folder
(``steering_core/methods/<name>/config.py``) and is built from these blocks. Bounds that depend on
the model (layer indices, rank vs hidden size) are checked by the method's definition
(:meth:`~steering_core.methods.definition.MethodDefinition.check_sizes`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SiteName = Literal["block_output", "mlp_output", "attn_output"]
AdapterKind = Literal["vector", "linear", "nonlinear"]
Activation = Literal["silu", "relu", "gelu", "tanh"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16", "float64"]
InferenceMode = Literal["all", "lora_only", "adapter_only"]

SITE_NAMES: tuple[str, ...] = ("block_output", "mlp_output", "attn_output")
MAX_RANK = 4096


class StrictModel(BaseModel):
    """Base of every config: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SiteConfig(StrictModel):
    """Where adapters are applied: the site inside each steered decoder layer, and which layers."""

    name: SiteName = "block_output"
    layers: list[int] | None = Field(
        default=None,
        description="Decoder layer indices to steer (0-based); null steers every layer.",
    )

    @field_validator("layers")
    @classmethod
    def _layers_unique_non_negative(cls, layers: list[int] | None) -> list[int] | None:
        if layers is None:
            return None
        if not layers:
            raise ValueError("layers must name at least one layer, or be null for all layers")
        bad = [i for i in layers if i < 0]
        if bad:
            raise ValueError(f"layer indices must be >= 0, got {bad}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer indices must be unique, got {layers}")
        return sorted(layers)


class AdapterConfig(StrictModel):
    """The per-layer steering adapter ``h <- h + f(h)`` (METHOD.md section 2)."""

    kind: AdapterKind = "nonlinear"
    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    activation: Activation = "silu"
    dtype: DTypeName = Field(default="auto", description="'auto' uses the base model's dtype.")
    init_scale: float = Field(
        default=1e-3, gt=0, le=1.0, description="Scale applied to W_down after Kaiming init."
    )


class LoraConfig(StrictModel):
    """peft LoRA settings. ``target_modules`` null means the architecture's seven projections."""

    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    alpha: float = Field(default=8.0, gt=0, le=1e6)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _targets_non_empty(cls, targets: list[str] | None) -> list[str] | None:
        if targets is not None and not targets:
            raise ValueError("target_modules must name at least one module, or be null")
        return targets
