"""The ``zero_stage: "auto"`` rule (``steering_core/spec/compute.py``), one case per clause."""

from __future__ import annotations

import pytest

from steering_core.methods.joint.config import JointMethod
from steering_core.methods.registry import method_definition
from steering_core.spec.compute import DeepSpeedSpec, resolve_zero_stage

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


def test_zero3_buckets_are_sized_to_the_model() -> None:
    from steering_core.engine.backends import deepspeed_config
    from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters

    hp = resolve_hyperparameters("full", Hyperparameters(), n_examples=100)
    common = {"offload_optimizer": False, "offload_param": False, "hp": hp, "per_rank_batch": 2}
    zero3 = deepspeed_config(zero_stage=3, hidden_size=576, **common)["zero_optimization"]
    assert zero3["reduce_bucket_size"] == 576 * 576
    assert zero3["stage3_prefetch_bucket_size"] == int(0.9 * 576 * 576)
    assert zero3["stage3_param_persistence_threshold"] == 5760
    zero2 = deepspeed_config(zero_stage=2, hidden_size=576, **common)["zero_optimization"]
    assert zero2 == {"stage": 2}
