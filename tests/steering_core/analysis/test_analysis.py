"""First-order analysis (steering_core.analysis.first_order) on random GLU MLPs and tiny real
Llamas."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import transformers

from steering_core.analysis.first_order import (
    ACTIVATIONS,
    collect_site_activations,
    glu_mlp_actual_shift,
    glu_mlp_first_order_shift,
    glu_mlp_output,
    mlp_shift_from_module,
    oracle_steering_vectors,
    oracle_summary,
    pre_mlp_shift,
)
from steering_core.model.sites import decoder_layers

H, INTER = 8, 16
SMOOTH_ACTS = ["silu", "gelu", "gelu_pytorch_tanh", "tanh"]


def random_mlp(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "h": rnd(3, 5, H),
        "w_gate": rnd(INTER, H) / H**0.5,
        "w_up": rnd(INTER, H) / H**0.5,
        "w_down": rnd(H, INTER) / INTER**0.5,
        "d_gate": rnd(INTER, H),
        "d_up": rnd(INTER, H),
        "d_down": rnd(H, INTER),
    }


def tiny_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return transformers.LlamaForCausalLM(cfg).double().eval()


def weights(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return p["h"], p["w_gate"], p["w_up"], p["w_down"]


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_down_only_update_is_exact(act: str) -> None:
    p = random_mlp()
    pred = glu_mlp_first_order_shift(*weights(p), d_down=p["d_down"], act=act)
    actual = glu_mlp_actual_shift(*weights(p), d_down=p["d_down"], act=act)
    assert actual.abs().max() > 1e-2
    torch.testing.assert_close(pred, actual, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_up_only_update_is_exact(act: str) -> None:
    p = random_mlp(1)
    pred = glu_mlp_first_order_shift(*weights(p), d_up=p["d_up"], act=act)
    actual = glu_mlp_actual_shift(*weights(p), d_up=p["d_up"], act=act)
    torch.testing.assert_close(pred, actual, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", SMOOTH_ACTS)
def test_gate_up_error_is_second_order(act: str) -> None:
    p = random_mlp(2)
    errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        deltas = {"d_gate": eps * p["d_gate"], "d_up": eps * p["d_up"]}
        pred = glu_mlp_first_order_shift(*weights(p), **deltas, act=act)
        actual = glu_mlp_actual_shift(*weights(p), **deltas, act=act)
        errors.append(float((pred - actual).norm()))
        assert errors[-1] / float(actual.norm()) < 10 * eps
    for coarse, fine in itertools.pairwise(errors):
        assert 50 < coarse / fine < 200, errors


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_formula_matches_generic_jvp_over_weights(act: str) -> None:
    p = random_mlp(3)

    def y(w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        return glu_mlp_output(p["h"], w_gate, w_up, w_down, act)

    _, expected = torch.func.jvp(
        y, (p["w_gate"], p["w_up"], p["w_down"]), (p["d_gate"], p["d_up"], p["d_down"])
    )
    pred = glu_mlp_first_order_shift(
        *weights(p), d_gate=p["d_gate"], d_up=p["d_up"], d_down=p["d_down"], act=act
    )
    torch.testing.assert_close(pred, expected, rtol=1e-10, atol=1e-12)


def test_no_delta_gives_zero_and_bad_inputs_raise() -> None:
    p = random_mlp()
    assert torch.equal(glu_mlp_first_order_shift(*weights(p)), torch.zeros(3, 5, H).double())
    with pytest.raises(ValueError, match="unknown activation"):
        glu_mlp_first_order_shift(*weights(p), act="swish2")
    with pytest.raises(ValueError, match="d_gate"):
        glu_mlp_first_order_shift(*weights(p), d_gate=p["d_down"])
    with pytest.raises(ValueError, match="last dimension"):
        glu_mlp_actual_shift(p["h"][..., :4], p["w_gate"], p["w_up"], p["w_down"])


def test_mlp_shift_from_module_on_tiny_llama() -> None:
    mlp = decoder_layers(tiny_llama())[0].mlp
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    g = torch.Generator().manual_seed(4)
    h = torch.randn(2, 5, 32, generator=g, dtype=torch.float64)
    d = {
        "d_gate": 1e-6 * torch.randn(64, 32, generator=g, dtype=torch.float64),
        "d_up": 1e-6 * torch.randn(64, 32, generator=g, dtype=torch.float64),
        "d_down": 1e-6 * torch.randn(32, 64, generator=g, dtype=torch.float64),
    }
    pred, actual = mlp_shift_from_module(mlp, h, **d)
    assert not pred.requires_grad and not actual.requires_grad
    assert float((pred - actual).norm()) < 1e-3 * float(actual.norm())
    w = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    torch.testing.assert_close(pred, glu_mlp_first_order_shift(h, *w, **d, act="silu"))
    with torch.no_grad():
        moved = copy.deepcopy(mlp)
        moved.down_proj.weight += d["d_down"]
        exact_pred, exact_actual = mlp_shift_from_module(mlp, h, d_down=d["d_down"])
        torch.testing.assert_close(exact_actual, moved(h) - mlp(h), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(exact_pred, exact_actual, rtol=1e-10, atol=1e-13)
    for k, v in mlp.state_dict().items():
        assert torch.equal(v, before[k])


def test_pre_mlp_shift_is_the_jacobian_product() -> None:
    mlp = decoder_layers(tiny_llama())[1].mlp
    g = torch.Generator().manual_seed(5)
    h = torch.randn(32, generator=g, dtype=torch.float64)
    dh = torch.randn(32, generator=g, dtype=torch.float64)
    shift = pre_mlp_shift(mlp, h, dh)
    with torch.no_grad():
        eps = 1e-6
        finite = (mlp(h + eps * dh) - mlp(h - eps * dh)) / (2 * eps)
    torch.testing.assert_close(shift, finite, rtol=1e-6, atol=1e-9)
    # For one token, Δh equals the rank-one weight update ΔW = (W Δh) hᵀ / ‖h‖² on gate and up.
    w_gate, w_up, w_down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    outer = torch.outer
    d_gate = outer(w_gate.detach() @ dh, h) / h.dot(h)
    d_up = outer(w_up.detach() @ dh, h) / h.dot(h)
    formula = glu_mlp_first_order_shift(h, w_gate, w_up, w_down, d_gate, d_up)
    torch.testing.assert_close(shift, formula.detach(), rtol=1e-10, atol=1e-12)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    input_ids = torch.randint(0, 100, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding in the second row
    return input_ids, mask


def hook_counts(model: transformers.LlamaForCausalLM) -> list[int]:
    modules = [m for layer in decoder_layers(model) for m in (layer, layer.self_attn, layer.mlp)]
    return [len(m._forward_hooks) for m in modules]


def test_block_outputs_match_hidden_states_and_sites_add_up() -> None:
    model = tiny_llama()
    input_ids, mask = batch()
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    hidden = hidden.hidden_states
    # transformers installs output-capturing hooks of its own on first use; ours must all go.
    hooks_before = hook_counts(model)
    model.train()
    acts = collect_site_activations(model, input_ids, mask)
    assert model.training
    assert acts.shape == (2, 2, 6, 32)
    for i in range(acts.shape[0] - 1):
        torch.testing.assert_close(acts[i], hidden[i + 1], rtol=1e-12, atol=1e-12)
    attn = collect_site_activations(model, input_ids, mask, site="attn_output")
    mlp = collect_site_activations(model, input_ids, mask, site="mlp_output")
    inputs = torch.cat([hidden[0][None], acts[:-1]])
    torch.testing.assert_close(inputs + attn + mlp, acts, rtol=1e-12, atol=1e-12)
    assert hook_counts(model) == hooks_before


def test_hooks_removed_when_forward_raises() -> None:
    model = tiny_llama()
    input_ids, mask = batch()
    collect_site_activations(model, input_ids, mask)
    hooks_before = hook_counts(model)
    with pytest.raises(IndexError):
        collect_site_activations(model, torch.tensor([[1000]]))
    assert hook_counts(model) == hooks_before


def test_oracle_vectors_locate_the_perturbed_layer() -> None:
    base = tiny_llama()
    input_ids, mask = batch()
    same = oracle_steering_vectors(base, copy.deepcopy(base), input_ids, mask)
    assert torch.equal(same, torch.zeros_like(same))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.layers[1].mlp.down_proj.weight.add_(0.05 * torch.randn(32, 64).double())
    deltas = oracle_steering_vectors(base, tuned, input_ids, mask)
    assert deltas.shape == (2, 2, 6, 32)
    assert torch.equal(deltas[0], torch.zeros_like(deltas[0]))
    assert (deltas[1][mask.bool()].norm(dim=-1) > 0).all()
    assert torch.equal(deltas[:, 1, :2], torch.zeros_like(deltas[:, 1, :2]))
    base_acts = collect_site_activations(base, input_ids, mask)
    summary = oracle_summary(deltas, mask, base=base_acts)
    assert summary[0]["mean_norm"] == 0.0 and summary[0]["rank_90"] == 0
    assert summary[1]["num_tokens"] == 10 and summary[1]["mean_norm"] > 0
    assert 0 < summary[1]["relative_norm"] < 1


def test_oracle_summary_rank_one_delta() -> None:
    g = torch.Generator().manual_seed(7)
    directions = torch.randn(3, 1, 1, 16, generator=g)
    coefficients = torch.randn(1, 2, 5, 1, generator=g)
    deltas = directions * coefficients  # rank one per layer
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, :2] = 0
    deltas[:, 0, :2] = 100 * torch.randn(3, 2, 16, generator=g)  # junk at padding, ignored
    summary = oracle_summary(deltas, mask)
    assert [s["rank_90"] for s in summary] == [1, 1, 1]
    assert [s["rank_99"] for s in summary] == [1, 1, 1]
    assert all(s["num_tokens"] == 8 and s["relative_norm"] is None for s in summary)
    expected = deltas[0][mask.bool()].norm(dim=-1).mean()
    assert summary[0]["mean_norm"] == pytest.approx(float(expected))
    full = oracle_summary(torch.randn(1, 4, 16, 16, generator=g))
    assert 1 < full[0]["rank_90"] <= full[0]["rank_99"] <= 16
