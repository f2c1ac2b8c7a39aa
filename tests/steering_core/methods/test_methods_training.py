"""Every registered method trains on a toy task, and only its own parameters get gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from steering_core.artifact.accounting import count_parameters
from steering_core.data.batches import IGNORE_INDEX
from steering_core.methods.base import LossContext, get_method_handler
from steering_core.methods.registry import method_names, parse_method
from steering_core.model.loading import build_tiny_model
from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters
from steering_core.steering.attach import attach_method

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
    # preference training from log 2: the +1 continuation preferred to the +2 one
    "dpo": ({"type": "dpo"}, 1e-2, 0.8),
    "dpo_joint": ({"type": "dpo", "trains": {"type": "joint"}}, 1e-2, 0.8),
    # distillation from 1 (the whole oracle shift missed) towards a perturbed copy of the model
    "distill": ({"type": "distill", "source": "a-perturbed-copy"}, 1e-2, 0.8),
}


def test_matrix_covers_every_registered_method() -> None:
    assert {cfg["type"] for cfg, _, _ in MATRIX.values()} == set(method_names())


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences whose next token is the current token + 1 (mod 100): learnable by any method."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randint(3, 100, (16, 1), generator=generator)
    ids = (start + torch.arange(12)) % 100 + 3
    return ids, ids.clone()


def _toy_preferences() -> dict[str, torch.Tensor]:
    """Pairs after a shared 4-token prompt: the +1 continuation preferred to the +2 one."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randint(3, 100, (8, 1), generator=generator)
    preferred = (start + torch.arange(12)) % 100 + 3
    rejected = preferred.clone()
    rejected[:, 4:] = (start + 2 * torch.arange(12)[4:]) % 100 + 3
    ids = torch.cat([preferred, rejected])
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _loss_of(name: str, attached: Any) -> Callable[[], torch.Tensor]:
    """The method's training objective on its toy data (next-token loss, or DPO's)."""
    config = MATRIX[name][0]
    if config["type"] == "distill":
        return _distill_objective(attached, config)
    if config["type"] != "dpo":
        ids, labels = _toy_batch()
        return lambda: attached.model(input_ids=ids, labels=labels).loss
    hp = resolve_hyperparameters("dpo", Hyperparameters(beta=1.0), n_examples=8)
    objective = get_method_handler("dpo").training_loss(
        attached,
        LossContext(method=parse_method(config), hyperparameters=hp, load_base_model=nn.Module),
    )
    batch = _toy_preferences()
    return lambda: objective(attached.model, batch)


def _distill_objective(attached: Any, config: dict[str, Any]) -> Callable[[], torch.Tensor]:
    """Distillation on the toy sequences from the test's model (built again from the same
    seed, without the student's hooks) with every weight perturbed: a stand-in fine-tune, a
    real second model with real oracle shifts."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        source = build_tiny_model("llama", initializer_range=0.2)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in source.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    source.requires_grad_(False).eval()
    hp = resolve_hyperparameters("distill", Hyperparameters(), n_examples=16)
    objective = get_method_handler("distill").training_loss(
        attached,
        LossContext(
            method=parse_method(config),
            hyperparameters=hp,
            load_base_model=nn.Module,
            load_source_model=lambda: source,
        ),
    )
    ids, _ = _toy_batch()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return lambda: objective(attached.model, batch)


@pytest.mark.parametrize("name", list(MATRIX))
def test_training_reduces_loss_and_touches_only_owned_parameters(name: str) -> None:
    config, lr, max_ratio = MATRIX[name]
    torch.manual_seed(0)
    model = build_tiny_model("llama", initializer_range=0.2)
    attached = attach_method(model, config)
    attached.model.train()
    owned = {id(p) for _, p in attached.trainable_named_parameters()}
    optimizer = torch.optim.AdamW(attached.parameter_groups(lr))
    objective = _loss_of(name, attached)
    losses = []
    for step in range(1, 41):
        loss = objective()
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
