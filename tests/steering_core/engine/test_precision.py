"""One precision regime for every method: fp32 weights and residual stream, bf16 autocast.

At a residual magnitude of 64-128, bf16's spacing is 0.5: a steering shift of 0.2 added in
bf16 rounds away. Under the training regime (fp32 weights, the forward pass under bf16
autocast, as both backends run it) the residual stays fp32 and the shift still moves the output.
"""

from __future__ import annotations

import torch

from steering_core.engine.backends import TorchBackend
from steering_core.model.loading import load_model
from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters
from steering_core.steering.attach import attach_method

SHIFT = 0.2  # below half of bf16's spacing (0.5) at the residual's magnitude
RESIDUAL = 100.0


def _steered_model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_model("tiny-llama", dtype=dtype)
    with torch.no_grad():  # a residual stream of magnitude ~100, as in real models' late layers
        embed = model.get_input_embeddings().weight
        embed.copy_(embed.sign() * RESIDUAL + embed * 0.01)
    method = {"type": "post_block", "adapter": {"kind": "vector"}, "site": {"layers": [1]}}
    attach_method(model, method)
    return model


def _loss(model: torch.nn.Module, shift: float) -> float:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("vector"):
                param.fill_(shift)
    backend = TorchBackend(
        model,
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0),
        None,  # type: ignore[arg-type]  # no step is taken
        resolve_hyperparameters("post_block", Hyperparameters(), n_examples=1),
        torch.bfloat16,
    )
    ids = torch.tensor([[5, 9, 13, 21, 7, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return float(backend.forward(batch))


def test_a_shift_below_bf16_spacing_still_changes_the_output_under_the_training_regime() -> None:
    model = _steered_model(torch.float32)
    hidden = model(input_ids=torch.tensor([[5, 9, 13]]), output_hidden_states=True).hidden_states
    assert float(hidden[2].abs().mean()) > 64, "the residual is where bf16's spacing is 0.5"
    assert _loss(model, SHIFT) != _loss(model, 0.0)


def test_the_same_shift_vanishes_in_a_bf16_residual_stream() -> None:
    """What the regime prevents: base weights in bf16 make the residual bf16."""
    model = _steered_model(torch.bfloat16)
    assert _loss(model, SHIFT) == _loss(model, 0.0)
