"""Joint adaptation: orthogonal projection, separate learning rates, inference modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.methods.joint.handler import lora_b_of_down_proj, orthonormal_column_basis
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import token_batch


def _joint(side: str = "input", kind: str = "nonlinear", every: int = 1):
    model = build_tiny_model("llama", dtype=torch.float64)
    attached = attach_method(
        model,
        {
            "type": "joint",
            "adapter": {"kind": kind, "rank": 4},
            "lora": {"rank": 3},
            "orthogonality": {"side": side, "every_n_steps": every},
        },
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, param in attached.trainable_named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.1)
    return attached


def _zero_b(attached, layer: int) -> None:
    with torch.no_grad():
        lora_b_of_down_proj(attached.model, layer).zero_()


@pytest.mark.parametrize("side", ["input", "output"])
def test_projection_removes_the_lora_subspace(side: str) -> None:
    attached = _joint(side)
    _zero_b(attached, 1)
    untouched = {k: v.clone() for k, v in attached.steering.adapter(1).state_dict().items()}
    before = {layer: attached.steering.adapter(layer).down.weight.clone() for layer in (0, 2)}
    projected = attached.after_optimizer_step(step=1)
    assert projected == {"projected_layers": [0, 2]}
    for layer in (0, 2):
        adapter = attached.steering.adapter(layer)
        basis = orthonormal_column_basis(lora_b_of_down_proj(attached.model, layer))
        assert basis.shape == (32, 3)
        if side == "input":
            assert (adapter.down.weight @ basis).norm() < 1e-12
            assert not torch.allclose(adapter.down.weight, before[layer])
        else:
            assert (basis.T @ adapter.up.weight).norm() < 1e-12
            assert torch.equal(adapter.down.weight, before[layer])
    for name, tensor in attached.steering.adapter(1).state_dict().items():
        assert torch.equal(tensor, untouched[name]), "a layer with B = 0 must stay untouched"


def test_vector_adapter_is_projected_too() -> None:
    attached = _joint(kind="vector")
    attached.project_out_lora_subspace()
    for layer in (0, 1, 2):
        basis = orthonormal_column_basis(lora_b_of_down_proj(attached.model, layer))
        assert (basis.T @ attached.steering.adapter(layer).vector).norm() < 1e-12


def test_projection_frequency() -> None:
    attached = _joint(every=3)
    assert attached.after_optimizer_step(1) is None and attached.after_optimizer_step(2) is None
    assert attached.after_optimizer_step(3) == {"projected_layers": [0, 1, 2]}
    disabled = attach_method(
        build_tiny_model("llama"), {"type": "joint", "orthogonality": {"enabled": False}}
    )
    assert disabled.after_optimizer_step(100) is None


def test_fresh_joint_skips_every_layer_because_b_is_zero() -> None:
    attached = attach_method(build_tiny_model("llama"), {"type": "joint"})
    assert attached.project_out_lora_subspace() == []


def test_separate_learning_rates_take_effect() -> None:
    attached = _joint()
    groups = attached.parameter_groups(1e-3, steering_learning_rate=5e-2)
    assert [g["name"] for g in groups] == ["lora", "steering"]
    assert [g["lr"] for g in groups] == [1e-3, 5e-2]
    n_lora = sum(p.numel() for p in groups[0]["params"])
    n_steer = sum(p.numel() for p in groups[1]["params"])
    assert n_steer == 3 * 2 * 32 * 4 and n_lora > 0
    optimizer = torch.optim.SGD(groups)
    snapshot = [[p.detach().clone() for p in g["params"]] for g in groups]
    for group in groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()
    for group, old in zip(groups, snapshot, strict=True):
        for p, q in zip(group["params"], old, strict=True):
            torch.testing.assert_close(q - p, torch.full_like(p, group["lr"]))


def test_three_inference_modes(tmp_path: Path) -> None:
    attached = _joint()
    ids = token_batch()
    base = build_tiny_model("llama", dtype=torch.float64)

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids).logits

    outputs = {}
    for mode in ("all", "lora_only", "adapter_only"):
        attached.set_inference_mode(mode)
        outputs[mode] = logits(attached.model)
    attached.set_inference_mode("all")
    assert torch.equal(logits(attached.model), outputs["all"])
    base_logits = logits(base)
    distinct = [outputs["all"], outputs["lora_only"], outputs["adapter_only"], base_logits]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(distinct[i], distinct[j])
    # adapter_only == the base model with only the steering adapters attached
    steering_only = attach_method(
        build_tiny_model("llama", dtype=torch.float64),
        {"type": "post_block", "adapter": {"kind": "nonlinear", "rank": 4}},
    )
    steering_only.steering.load_state_dict(attached.steering.state_dict())
    torch.testing.assert_close(outputs["adapter_only"], logits(steering_only.model), rtol=0, atol=0)
    # and each mode survives save/load
    save_artifact(attached, tmp_path)
    loaded = load_artifact(build_tiny_model("llama", dtype=torch.float64), tmp_path)
    for mode in ("all", "lora_only", "adapter_only"):
        loaded.set_inference_mode(mode)
        torch.testing.assert_close(logits(loaded.model), outputs[mode], rtol=0, atol=0)


def test_inference_mode_is_joint_only() -> None:
    from steering_core.errors import ConfigValidationError

    attached = attach_method(build_tiny_model("llama"), {"type": "post_block"})
    with pytest.raises(ConfigValidationError, match="joint adapters only"):
        attached.set_inference_mode("lora_only")
