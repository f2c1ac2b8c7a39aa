"""``reft`` baseline: LoReFT interventions ``h + R^T (W h + b - R h)``."""

from __future__ import annotations

from steering_core.methods.definition import AdapterSummary, MethodDefaults, MethodDefinition
from steering_core.methods.reft.config import ReftMethod


def loreft_summary(config: ReftMethod) -> AdapterSummary:
    return AdapterSummary(adapter_kind="loreft", rank=config.rank)


METHOD = MethodDefinition(
    name="reft",
    config=ReftMethod,
    defaults=MethodDefaults(learning_rate=9e-4, lr_scheduler="linear", warmup_ratio=0.03),
    description="Baseline: LoReFT, a rank-r intervention R^T(Wh + b - Rh) with orthonormal R.",
    handler="steering_core.methods.reft.handler:ReftHandler",
    rank_fields=("rank",),
    site_field="site",
    summary=loreft_summary,
)

__all__ = ["METHOD", "ReftMethod"]
