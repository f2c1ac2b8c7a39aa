"""The ``joint`` method's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steering_core.spec.method_config import AdapterConfig, LoraConfig, SiteConfig, StrictModel


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


class JointMethod(StrictModel):
    """LoRA and post-block steering trained together, with the orthogonality constraint."""

    type: Literal["joint"] = "joint"
    site: SiteConfig = SiteConfig()
    adapter: AdapterConfig = AdapterConfig()
    lora: LoraConfig = LoraConfig()
    orthogonality: OrthogonalityConfig = OrthogonalityConfig()
