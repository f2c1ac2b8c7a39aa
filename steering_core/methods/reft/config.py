"""The ``reft`` baseline's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steering_core.config import MAX_RANK, DTypeName, SiteConfig, StrictModel


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
