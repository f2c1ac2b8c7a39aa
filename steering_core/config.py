"""Method, site and adapter configuration: pydantic, torch-free.

These models cross process boundaries (API -> worker -> training subprocess -> artifact), so they
forbid unknown fields. Bounds that depend on the model (layer indices, rank vs hidden size) are
checked when a method is attached (see ``steering_core.methods``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SiteName = Literal["block_output", "mlp_output", "attn_output"]
AdapterKind = Literal["vector", "linear", "nonlinear"]
Activation = Literal["silu", "relu", "gelu", "tanh"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16", "float64"]
InferenceMode = Literal["all", "lora_only", "adapter_only"]
MethodType = Literal["post_block", "joint", "lora", "reft", "full"]

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


class OrthogonalityConfig(StrictModel):
    """Hard projection of the steering adapter out of LoRA's down-projection subspace."""

    enabled: bool = True
    every_n_steps: int = Field(default=100, ge=1, le=10_000_000)
    side: Literal["input", "output"] = Field(
        default="input",
        description="'input': W_down <- W_down (I - V V^T); 'output': W_up <- (I - V V^T) W_up.",
    )
    min_lora_norm: float = Field(
        default=1e-6, ge=0.0, description="Skip a layer while ||B|| is at or below this."
    )


class PostBlockMethod(StrictModel):
    """Steering adapters at a site of each layer (block_output by default: the paper's method)."""

    type: Literal["post_block"] = "post_block"
    site: SiteConfig = SiteConfig()
    adapter: AdapterConfig = AdapterConfig()


class JointMethod(StrictModel):
    """LoRA and post-block steering trained together, with the orthogonality constraint."""

    type: Literal["joint"] = "joint"
    site: SiteConfig = SiteConfig()
    adapter: AdapterConfig = AdapterConfig()
    lora: LoraConfig = LoraConfig()
    orthogonality: OrthogonalityConfig = OrthogonalityConfig()


class LoraMethod(StrictModel):
    """Baseline: peft LoRA on the seven projections."""

    type: Literal["lora"] = "lora"
    lora: LoraConfig = LoraConfig()


class ReftMethod(StrictModel):
    """Baseline: LoReFT ``h + R^T (W h + b - R h)`` with orthonormal rows of R."""

    type: Literal["reft"] = "reft"
    site: SiteConfig = SiteConfig(name="mlp_output")
    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    init: Literal["random", "identity"] = Field(
        default="random",
        description="'random' as pyreft (W random); 'identity': W = R, b = 0 (no-op at step 0).",
    )
    dtype: DTypeName = "auto"


class FullMethod(StrictModel):
    """Baseline: full fine-tuning of every parameter."""

    type: Literal["full"] = "full"


MethodConfig = Annotated[
    PostBlockMethod | JointMethod | LoraMethod | ReftMethod | FullMethod,
    Field(discriminator="type"),
]


class MethodEnvelope(StrictModel):
    """Wrapper that lets a bare method config be parsed from JSON."""

    method: MethodConfig


def parse_method(data: dict | str) -> MethodConfig:
    """Parse a method config from a dict or a JSON string (``{"type": "post_block", ...}``)."""
    if isinstance(data, str):
        return MethodEnvelope.model_validate_json('{"method": ' + data + "}").method
    return MethodEnvelope.model_validate({"method": data}).method
