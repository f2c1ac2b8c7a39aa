"""The ``full`` baseline's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from steering_core.spec.method_config import StrictModel


class FullMethod(StrictModel):
    """Baseline: full fine-tuning of every parameter."""

    type: Literal["full"] = "full"
