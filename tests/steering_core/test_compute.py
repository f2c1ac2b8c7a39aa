"""The ``zero_stage: "auto"`` rule (``steering_core/compute.py``), one case per clause."""

from __future__ import annotations

import pytest

from steering_core.compute import DeepSpeedSpec, resolve_zero_stage
from steering_core.methods.joint.config import JointMethod
from steering_core.methods.registry import method_definition

AUTO = DeepSpeedSpec()


@pytest.mark.parametrize(
    ("world", "trains_base", "on_gpus", "expected"),
    [
        (1, True, True, 0),  # one rank: nothing to shard
        (4, False, True, 0),  # an adapter's state is tiny
        (4, True, True, 2),  # full on several GPUs: shard gradients and Adam
        (2, True, False, 0),  # CPU ranks share one memory: sharding costs speed, saves ~nothing
    ],
)
def test_auto_by_method_world_and_device(
    world: int, trains_base: bool, on_gpus: bool, expected: int
) -> None:
    stage = resolve_zero_stage(
        AUTO, world_size=world, trains_base_weights=trains_base, on_gpus=on_gpus
    )
    assert stage == expected


def test_offloading_picks_the_stage_it_needs() -> None:
    param = DeepSpeedSpec(offload_param=True)
    optimizer = DeepSpeedSpec(offload_optimizer=True)
    assert resolve_zero_stage(param, world_size=1, trains_base_weights=False) == 3
    assert resolve_zero_stage(optimizer, world_size=1, trains_base_weights=False) == 2


def test_an_explicit_stage_is_kept_and_auto_never_picks_a_refused_one() -> None:
    joint = method_definition("joint")
    allowed = joint.allowed_zero_stages(JointMethod())
    assert allowed == (0,)
    assert resolve_zero_stage(AUTO, world_size=8, trains_base_weights=True, allowed=allowed) == 0
    explicit = DeepSpeedSpec(zero_stage=3)
    assert resolve_zero_stage(explicit, world_size=1, trains_base_weights=False) == 3
