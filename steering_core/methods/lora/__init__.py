"""``lora`` baseline: peft LoRA, saved in peft's own format."""

from __future__ import annotations

from steering_core.methods.definition import MethodDefaults, MethodDefinition
from steering_core.methods.lora.config import LoraMethod

LORA_DIR = "lora"  # the artifact's peft folder

# The middle of the paper's LoRA grid {5e-5 ... 1.5e-3}.
METHOD = MethodDefinition(
    name="lora",
    config=LoraMethod,
    defaults=MethodDefaults(learning_rate=5e-4, lr_scheduler="linear", warmup_ratio=0.03),
    description="Baseline: peft LoRA (r=8) on the attention and MLP projections.",
    handler="steering_core.methods.lora.handler:LoraHandler",
    rank_fields=("lora.rank",),
)

__all__ = ["LORA_DIR", "METHOD", "LoraMethod"]
