"""``joint``: LoRA and post-block steering trained together, the steering adapter kept out of
LoRA's down-projection subspace by a hard projection (METHOD.md section 4)."""

from __future__ import annotations

from typing import Any

from steering_core.errors import ConfigValidationError
from steering_core.methods.definition import (
    MethodDefaults,
    MethodDefinition,
    steering_adapter_summary,
)
from steering_core.methods.joint.config import JointMethod, OrthogonalityConfig


def refuse_projection_under_zero(config: JointMethod, spec: Any) -> None:
    """The projection edits adapter weights in place, which ZeRO stages 1-3 would overwrite
    from their fp32 master copy at the next step."""
    deepspeed = getattr(spec, "deepspeed", None)
    if config.orthogonality.enabled and deepspeed is not None and deepspeed.zero_stage > 0:
        raise ConfigValidationError(
            "joint's orthogonal projection edits the adapter weights in place, which ZeRO "
            "stages 1-3 would overwrite from their master copy: use zero_stage 0, or set "
            "orthogonality.enabled to false"
        )


# METHOD.md section 4: lr 2e-4, cosine schedule, 6% warmup.
METHOD = MethodDefinition(
    name="joint",
    config=JointMethod,
    defaults=MethodDefaults(learning_rate=2e-4, lr_scheduler="cosine", warmup_ratio=0.06),
    description="LoRA on the seven projections and a post-block steering adapter trained "
    "together, the adapter projected out of LoRA's down-projection subspace.",
    handler="steering_core.methods.joint.handler:JointHandler",
    rank_fields=("adapter.rank", "lora.rank"),
    site_field="site",
    summary=steering_adapter_summary,
    training_checks=(refuse_projection_under_zero,),
)

__all__ = ["METHOD", "JointMethod", "OrthogonalityConfig"]
