"""``full`` baseline: every parameter trains; the artifact holds the whole model's weights."""

from __future__ import annotations

from steering_core.methods.definition import MethodDefaults, MethodDefinition
from steering_core.methods.full.config import FullMethod

# Inside the paper's full fine-tuning grid {5e-6 ... 1e-4}.
METHOD = MethodDefinition(
    name="full",
    config=FullMethod,
    defaults=MethodDefaults(learning_rate=2e-5, lr_scheduler="linear", warmup_ratio=0.03),
    description="Baseline: full fine-tuning of every parameter.",
    handler="steering_core.methods.full.handler:FullHandler",
    trains_base_weights=True,
)

__all__ = ["METHOD", "FullMethod"]
