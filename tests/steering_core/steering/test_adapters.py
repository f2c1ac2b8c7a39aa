"""Adapter modules: shapes, init, and LoReFT's orthonormal rotation."""

from __future__ import annotations

import math

import pytest
import torch

from steering_core.spec.method_config import AdapterConfig
from steering_core.steering.adapter_modules import (
    LoReFTIntervention,
    LowRankAdapter,
    VectorAdapter,
    build_steering_adapter,
)


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu", "tanh"])
def test_low_rank_init_and_shapes(activation: str) -> None:
    torch.manual_seed(0)
    adapter = LowRankAdapter(64, 8, activation=activation, dtype=torch.float32)
    assert adapter.down.weight.shape == (8, 64) and adapter.up.weight.shape == (64, 8)
    assert adapter.down.bias is None and adapter.up.bias is None
    assert torch.count_nonzero(adapter.up.weight) == 0
    # Kaiming-uniform(a=sqrt 5) bound is 1/sqrt(fan_in); scaled by 1e-3.
    bound = 1e-3 / math.sqrt(64)
    assert 0 < adapter.down.weight.abs().max() <= bound
    h = torch.randn(2, 5, 64)
    assert torch.equal(adapter(h), torch.zeros_like(h))


def test_nonlinear_applies_the_activation_linear_does_not() -> None:
    h = torch.randn(3, 16)
    for kind, expected_act in (("linear", None), ("nonlinear", torch.tanh)):
        adapter = build_steering_adapter(
            AdapterConfig(kind=kind, rank=4, activation="tanh"),
            16,
            dtype=torch.float32,
            device=None,
        )
        with torch.no_grad():
            adapter.up.weight.normal_()
            adapter.down.weight.normal_()
        z = h @ adapter.down.weight.T
        z = expected_act(z) if expected_act else z
        torch.testing.assert_close(adapter(h), z @ adapter.up.weight.T)


def test_vector_adapter_adds_a_constant() -> None:
    adapter = VectorAdapter(8, dtype=torch.float32)
    with torch.no_grad():
        adapter.vector.copy_(torch.arange(8.0))
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(adapter(h), torch.arange(8.0).expand(2, 3, 8))


def test_loreft_rotation_stays_orthonormal_under_any_update() -> None:
    torch.manual_seed(0)
    reft = LoReFTIntervention(32, 4, dtype=torch.float64)
    with torch.no_grad():
        reft.rotation_raw.add_(torch.randn_like(reft.rotation_raw))
    rotation = reft.rotation()
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(4, dtype=torch.float64))


def test_loreft_matches_its_formula_and_identity_init() -> None:
    torch.manual_seed(0)
    reft = LoReFTIntervention(32, 4, dtype=torch.float64)
    h = torch.randn(5, 32, dtype=torch.float64)
    r = reft.rotation()
    expected = (h @ reft.source.weight.T + reft.source.bias - h @ r.T) @ r
    torch.testing.assert_close(reft(h), expected)
    assert reft(h).abs().max() > 0, "pyreft-style random init is not a no-op"
    identity = LoReFTIntervention(32, 4, init="identity", dtype=torch.float64)
    assert identity(h).abs().max() < 1e-12
