"""The ``lora`` baseline's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from steering_core.spec.method_config import LoraConfig, StrictModel


class LoraMethod(StrictModel):
    """Baseline: peft LoRA on the seven projections."""

    type: Literal["lora"] = "lora"
    lora: LoraConfig = LoraConfig()
