"""Identity at init and the hook points, for every supported family, adapter kind and site."""

from __future__ import annotations

import pytest
import torch

from steering_core.model.loading import TINY_FAMILIES, build_tiny_model
from steering_core.model.sites import SITE_TABLE, decoder_layers
from steering_core.spec.method_config import SITE_NAMES
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import capture, randomize_adapters, token_batch

ADAPTER_KINDS = ("vector", "linear", "nonlinear")


def test_site_table_covers_every_tiny_family() -> None:
    covered = {mt for entry in SITE_TABLE for mt in entry.model_types}
    assert set(TINY_FAMILIES) <= covered


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_identity_at_init_bit_for_bit(family: str) -> None:
    model = build_tiny_model(family)
    ids = token_batch()
    with torch.no_grad():
        base = model(input_ids=ids).logits.clone()
    for kind in ADAPTER_KINDS:
        for site in SITE_NAMES:
            fresh = build_tiny_model(family)
            attached = attach_method(
                fresh,
                {"type": "post_block", "site": {"name": site}, "adapter": {"kind": kind}},
            )
            with torch.no_grad():
                steered = attached.model(input_ids=ids).logits
            assert torch.equal(steered, base), f"{family}/{kind}/{site} is not identity at init"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_branch_sites_decompose_the_residual_stream(family: str) -> None:
    """layer_out == layer_in + attn_site + mlp_site: the sites are the values added to the stream.

    Pointing a site at, say, the MLP's normalised input (the reference code's mistake in Llama)
    breaks this identity.
    """
    model = build_tiny_model(family, dtype=torch.float64)
    for layer in range(len(decoder_layers(model))):
        with capture(model, layer) as seen, torch.no_grad():
            model(input_ids=token_batch())
        rebuilt = seen["in"] + seen["attn_output"] + seen["mlp_output"]
        torch.testing.assert_close(rebuilt, seen["out"], rtol=1e-10, atol=1e-10)


def _base_and_steered(family: str, site: str, kind: str, layer: int):
    base = build_tiny_model(family, dtype=torch.float64)
    steered = build_tiny_model(family, dtype=torch.float64)
    attached = attach_method(
        steered,
        {
            "type": "post_block",
            "site": {"name": site, "layers": [layer]},
            "adapter": {"kind": kind, "dtype": "float64"},
        },
    )
    randomize_adapters(attached, seed=layer + 1)
    ids = token_batch()
    with capture(base, layer) as before, torch.no_grad():
        base(input_ids=ids)
    with capture(steered, layer) as after, torch.no_grad():
        steered(input_ids=ids)
    return attached.steering.adapter(layer), before, after


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("kind", ["linear", "nonlinear"])
def test_block_output_adds_f_of_layer_output(family: str, kind: str) -> None:
    adapter, before, after = _base_and_steered(family, "block_output", kind, layer=1)
    torch.testing.assert_close(after["in"], before["in"], rtol=0, atol=0)
    with torch.no_grad():
        expected = before["out"] + adapter(before["out"])
    torch.testing.assert_close(after["out"], expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mlp_output_changes_only_the_mlp_branch(family: str) -> None:
    adapter, before, after = _base_and_steered(family, "mlp_output", "nonlinear", layer=1)
    torch.testing.assert_close(after["in"], before["in"], rtol=0, atol=0)
    torch.testing.assert_close(after["attn_output"], before["attn_output"], rtol=0, atol=0)
    with torch.no_grad():
        shifted_branch = before["mlp_output"] + adapter(before["mlp_output"])
    torch.testing.assert_close(after["mlp_output"], shifted_branch, rtol=0, atol=0)
    expected_out = before["in"] + before["attn_output"] + shifted_branch
    torch.testing.assert_close(after["out"], expected_out, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_attn_output_changes_only_the_attention_branch(family: str) -> None:
    adapter, before, after = _base_and_steered(family, "attn_output", "nonlinear", layer=1)
    torch.testing.assert_close(after["in"], before["in"], rtol=0, atol=0)
    with torch.no_grad():
        shifted_branch = before["attn_output"] + adapter(before["attn_output"])
    torch.testing.assert_close(after["attn_output"], shifted_branch, rtol=0, atol=0)
    # The MLP reads the shifted stream (or, with a parallel residual, the layer input).
    expected_out = before["in"] + shifted_branch + after["mlp_output"]
    torch.testing.assert_close(after["out"], expected_out, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(after["out"], before["out"])


def test_layers_before_the_steered_one_are_untouched() -> None:
    _, before, after = _base_and_steered("llama", "block_output", "linear", layer=2)
    torch.testing.assert_close(after["in"], before["in"], rtol=0, atol=0)
    assert not torch.equal(after["out"], before["out"])
