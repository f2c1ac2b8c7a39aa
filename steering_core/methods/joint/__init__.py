"""``joint``: LoRA and post-block steering trained together, the steering adapter kept out of
LoRA's down-projection subspace by a hard projection (METHOD.md section 4)."""

from __future__ import annotations

from steering_core.methods.definition import (
    MethodDefaults,
    MethodDefinition,
    steering_adapter_summary,
)
from steering_core.methods.joint.config import JointMethod, OrthogonalityConfig
from steering_core.spec.compute import ALL_STAGES


def zero_stages(config: JointMethod) -> tuple[tuple[int, ...], str]:
    """The projection edits adapter weights in place after each step, which ZeRO stages 1-3
    would overwrite from their partitioned master copy at the next step."""
    if not config.orthogonality.enabled:
        return ALL_STAGES, ""
    return (0,), (
        "its orthogonal projection edits the adapter weights in place, which ZeRO stages 1-3 "
        "would overwrite from their master copy (or set orthogonality.enabled to false)"
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
    zero_stages=zero_stages,
)

__all__ = ["METHOD", "JointMethod", "OrthogonalityConfig"]
