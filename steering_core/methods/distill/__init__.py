"""``distill``: a post-block adapter trained to match a source model (a LoRA, a full fine-tune or
any other adapter on the same base) layer by layer and in its next-token distributions: the
paper's first-order view says the per-layer oracle shift ``h_source - h_base`` is what a
post-block adapter should learn."""

from __future__ import annotations

from steering_core.methods.definition import (
    AdapterSummary,
    MethodDefaults,
    MethodDefinition,
    steering_adapter_summary,
)
from steering_core.methods.distill.config import DistillMethod, DistillWeights
from steering_core.spec.compute import ALL_STAGES


def _summary(config: DistillMethod) -> AdapterSummary:
    return steering_adapter_summary(config.trains)


def _zero_stages(_config: DistillMethod) -> tuple[tuple[int, ...], str]:
    return tuple(s for s in ALL_STAGES if s < 3), (
        "its source and base passes call the model's layers directly, which ZeRO 3 "
        "partitions across ranks"
    )


# The steering rate (METHOD.md section 3) with the post-block schedule: the targets are dense
# (every position, every steered layer), so no lower rate is needed.
METHOD = MethodDefinition(
    name="distill",
    config=DistillMethod,
    defaults=MethodDefaults(learning_rate=1e-3, lr_scheduler="linear", warmup_ratio=0.03),
    description="A post-block adapter distilled from another adapter on the same base (LoRA, "
    "full fine-tuning, ...): it learns the per-layer oracle shifts h_source - h_base and the "
    "source's next-token distributions on the training file's texts.",
    handler="steering_core.methods.distill.handler:DistillHandler",
    rank_fields=("trains.adapter.rank",),
    site_field="trains.site",
    summary=_summary,
    zero_stages=_zero_stages,
)

__all__ = ["METHOD", "DistillMethod", "DistillWeights"]
