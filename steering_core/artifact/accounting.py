"""Parameter accounting: what a method trains against the size of the base model."""

from __future__ import annotations

from torch import nn

from steering_core.artifact.schema import ParameterCount
from steering_core.methods.base import AttachedMethod
from steering_core.steering.site_steering import STEERING_ATTRIBUTE


def _is_added_parameter(name: str) -> bool:
    return name.startswith(f"{STEERING_ATTRIBUTE}.") or "lora_" in name


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the base model alone (tied tensors once; adapters and LoRA excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if not _is_added_parameter(n))


def count_parameters(attached: AttachedMethod) -> ParameterCount:
    """Trainable parameters of an attached method, the base total and the percentage."""
    trainable = sum(p.numel() for _, p in attached.trainable_named_parameters())
    base_total = base_parameter_count(attached.base_model)
    return ParameterCount(
        trainable=trainable,
        base_total=base_total,
        percent=100.0 * trainable / base_total if base_total else 0.0,
    )
