"""``distill``, torch side: a post-block student trained to reproduce a source model.

On a batch of the training file's texts (prompt and completion as input; the labels unused),
with S the steered layers, M the real (non-padding) positions, ``h^src_l``, ``h^base_l`` and
``h^stu_l`` the block outputs of layer l in the source model, the base model (the student with
its adapter off) and the student, and ``delta_l = h^src_l - h^base_l`` the oracle shift
(``steering_core.analysis.first_order``: the first-order analysis's ``h_FT - h_base``):

    hidden = sum_{l in S, t in M} ||(h^stu_l - h^base_l) - delta_l||^2
             / sum_{l in S, t in M} ||delta_l||^2

the share of the oracle shifts' energy the student misses (1 at the start, when its adapter is
zero), and

    kl = mean_{t in M} T^2 * KL(softmax(z^src / T) || softmax(z^stu / T))

over the next-token logits z, at temperature T. The loss is ``weights.hidden * hidden +
weights.kl * kl``. The source is a second model in memory (the base with the source adapter
loaded: LoRA, full fine-tuning's weights, ...), frozen, in eval mode; the base pass is the
student's own model with its adapter switched off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steering_core.analysis.first_order import collect_site_activations
from steering_core.errors import ConfigValidationError
from steering_core.methods.base import (
    AttachedMethod,
    LossContext,
    LossFunction,
    MethodHandler,
    get_method_handler,
)
from steering_core.methods.distill.config import DistillMethod
from steering_core.model.sites import decoder_layers


def _hidden(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def forward_capturing(
    forward: Callable[..., Any],
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    layers: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(block outputs at layers (L, B, T, H), logits (B, T, V))`` of one pass through
    ``forward`` (the model, or a DeepSpeed engine around it), hooks on ``model``'s layers."""
    captured: dict[int, torch.Tensor] = {}
    blocks = decoder_layers(model)

    def hook_for(layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            captured[layer] = _hidden(output)

        return hook

    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    try:
        logits = forward(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([captured[layer] for layer in layers]), logits


def distill_loss(
    student: tuple[torch.Tensor, torch.Tensor],
    source: tuple[torch.Tensor, torch.Tensor],
    base_hidden: torch.Tensor,
    mask: torch.Tensor,
    config: DistillMethod,
) -> torch.Tensor:
    """The loss of the module docstring from the three passes' block outputs and logits."""
    (student_hidden, student_logits), (source_hidden, source_logits) = student, source
    real = mask.to(torch.float32)[None, :, :, None]
    oracle = (source_hidden.float() - base_hidden.float()) * real
    shift = (student_hidden.float() - base_hidden.float()) * real
    hidden = (shift - oracle).square().sum() / oracle.square().sum().clamp_min(1e-12)
    t = config.temperature
    positions = mask.bool()
    target = F.log_softmax(source_logits[positions].float() / t, dim=-1)
    predicted = F.log_softmax(student_logits[positions].float() / t, dim=-1)
    kl = F.kl_div(predicted, target, log_target=True, reduction="batchmean") * t * t
    return config.weights.hidden * hidden + config.weights.kl * kl


class DistillHandler(MethodHandler):
    method_type = "distill"

    def attach(self, model: nn.Module, config: DistillMethod) -> AttachedMethod:
        """The student, attached as a post_block adapter: what is saved is an ordinary one."""
        return get_method_handler("post_block").attach(model, config.trains)

    def load(self, model: nn.Module, config: DistillMethod, artifact_dir: Path) -> AttachedMethod:
        return get_method_handler("post_block").load(model, config.trains, artifact_dir)

    @staticmethod
    def supervised_tokens(batch: Mapping[str, torch.Tensor]) -> int:
        """The real positions: every one is a target (the labels are not used)."""
        return int(batch["attention_mask"].sum())

    def training_loss(self, attached: AttachedMethod, context: LossContext) -> LossFunction:
        if context.load_source_model is None:
            raise ConfigValidationError(
                "the distill method needs its source adapter's files: the spec's "
                "source_artifact (the service sets it from method.distill.source)"
            )
        config: DistillMethod = context.method
        source = context.load_source_model()
        layers = attached.steered_layers

        def loss(forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            mask = batch["attention_mask"]
            with torch.no_grad():
                from_source = forward_capturing(source, source, batch, layers)
                with attached.trained_parts_disabled():
                    base_hidden = collect_site_activations(
                        attached.model, batch["input_ids"], mask
                    )[layers]
            student = forward_capturing(forward, attached.model, batch, layers)
            return distill_loss(student, from_source, base_hidden, mask, config)

        return loss
