"""Every registered method trains on a toy task, and only its own parameters get gradients."""

from __future__ import annotations

import pytest
import torch

from steering_core.accounting import count_parameters
from steering_core.attach import attach_method
from steering_core.methods.registry import method_names
from steering_core.models import build_tiny_model

# The method test matrix: one row per method (and the site ablation for post_block):
# config, learning rate, and the loss ratio (last / first) the row must get below in 40 steps.
# Small-budget rows get a looser bar: one vector per layer can only shift the output
# distribution, not learn the +1 map, and rank 1 learns it slowly.
MATRIX: dict[str, tuple[dict, float, float]] = {
    "post_block": ({"type": "post_block"}, 1e-2, 0.8),
    "post_block_linear_r1": (
        {"type": "post_block", "adapter": {"kind": "linear", "rank": 1}},
        1e-2,
        0.9,
    ),
    "post_block_vector": ({"type": "post_block", "adapter": {"kind": "vector"}}, 1e-2, 0.95),
    "post_block_mlp_output": ({"type": "post_block", "site": {"name": "mlp_output"}}, 1e-2, 0.8),
    "post_block_attn_output": (
        {"type": "post_block", "site": {"name": "attn_output"}},
        1e-2,
        0.8,
    ),
    "joint": ({"type": "joint", "orthogonality": {"every_n_steps": 5}}, 1e-2, 0.8),
    "lora": ({"type": "lora"}, 1e-2, 0.8),
    "reft": ({"type": "reft"}, 1e-2, 0.8),
    "reft_all_tokens_mlp_output": (
        {"type": "reft", "site": {"name": "mlp_output"}, "positions": "all"},
        1e-2,
        0.8,
    ),
    "full": ({"type": "full"}, 1e-3, 0.8),
}


def test_matrix_covers_every_registered_method() -> None:
    assert {cfg["type"] for cfg, _, _ in MATRIX.values()} == set(method_names())


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences whose next token is the current token + 1 (mod 100): learnable by any method."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randint(3, 100, (16, 1), generator=generator)
    ids = (start + torch.arange(12)) % 100 + 3
    return ids, ids.clone()


@pytest.mark.parametrize("name", list(MATRIX))
def test_training_reduces_loss_and_touches_only_owned_parameters(name: str) -> None:
    config, lr, max_ratio = MATRIX[name]
    torch.manual_seed(0)
    model = build_tiny_model("llama", initializer_range=0.2)
    attached = attach_method(model, config)
    attached.model.train()
    owned = {id(p) for _, p in attached.trainable_named_parameters()}
    optimizer = torch.optim.AdamW(attached.parameter_groups(lr))
    ids, labels = _toy_batch()
    losses = []
    for step in range(1, 41):
        loss = attached.model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:
            with_grad = {id(p) for p in attached.model.parameters() if p.grad is not None}
            assert with_grad == owned, "gradients must reach exactly the method's parameters"
            assert (
                sum(p.numel() for p in attached.model.parameters() if p.grad is not None)
                == count_parameters(attached).trainable
            )
        optimizer.step()
        attached.after_optimizer_step(step)
        losses.append(loss.item())
    assert losses[-1] < max_ratio * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
