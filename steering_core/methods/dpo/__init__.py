"""``dpo``: a steering adapter (post-block, or joint's two halves) trained on preference pairs
with direct preference optimisation; the reference is the model with the adapter switched off."""

from __future__ import annotations

from steering_core.data.formats import PREFERENCE_FORMAT
from steering_core.methods.definition import (
    AdapterSummary,
    MethodDefaults,
    MethodDefinition,
    steering_adapter_summary,
)
from steering_core.methods.dpo.config import DpoMethod
from steering_core.methods.joint import zero_stages as joint_zero_stages
from steering_core.methods.joint.config import JointMethod
from steering_core.spec.compute import ALL_STAGES


def _summary(config: DpoMethod) -> AdapterSummary:
    return steering_adapter_summary(config.trains)


def _zero_stages(config: DpoMethod) -> tuple[tuple[int, ...], str]:
    if isinstance(config.trains, JointMethod):
        return joint_zero_stages(config.trains)
    return ALL_STAGES, ""


# Steering learning rates (METHOD.md section 3) sit near 1e-3; preference training moves the
# policy from a reference it starts equal to, so half that, with the post-block schedule.
METHOD = MethodDefinition(
    name="dpo",
    config=DpoMethod,
    defaults=MethodDefaults(learning_rate=5e-4, lr_scheduler="linear", warmup_ratio=0.03),
    description="Direct preference optimisation (OpenAI's preference files) of a post-block or "
    "joint adapter; the reference is the same model with the adapter off, so no second copy "
    "of the model is held.",
    handler="steering_core.methods.dpo.handler:DpoHandler",
    data_formats=(PREFERENCE_FORMAT,),
    rank_fields=("trains.adapter.rank", "trains.lora.rank"),
    site_field="trains.site",
    summary=_summary,
    zero_stages=_zero_stages,
    hyperparameters=("beta",),
)

__all__ = ["METHOD", "DpoMethod"]
