"""Per-layer size of the trained steering shift next to the residual stream it is added to.

For each steered layer, over the real (non-padding) tokens of a few training batches, with the
trained adapters active: ``residual_norm`` = mean ‖h‖ of the site's hidden state, ``shift_norm``
= mean ‖f(h)‖ of the adapter's shift, ``relative_shift`` = shift_norm / residual_norm; and
``parameter_norm`` = the Frobenius norm of the layer's adapter parameters. Recorded in the
training manifest (``layer_stats``) and plotted by the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from steering_core.methods.base import AttachedMethod


def parameter_norms(attached: AttachedMethod) -> dict[int, float]:
    steering = attached.steering
    if steering is None:
        return {}
    norms = {}
    for layer in steering.layers:
        squares = sum(
            float(p.detach().float().pow(2).sum()) for p in steering.adapter(layer).parameters()
        )
        norms[layer] = squares**0.5
    return norms


@torch.no_grad()
def layer_statistics(
    attached: AttachedMethod, batches: Iterable[dict[str, torch.Tensor]]
) -> list[dict[str, Any]]:
    """Statistics per steered layer (empty for methods without steering adapters)."""
    steering = attached.steering
    if steering is None:
        return []
    totals = {layer: [0.0, 0.0, 0] for layer in steering.layers}  # Σ‖h‖, Σ‖f(h)‖, tokens
    mask: list[torch.Tensor] = []

    def probe(layer: int, hidden: torch.Tensor, shift: torch.Tensor) -> None:
        keep = mask[0].to(hidden.device).bool()
        entry = totals[layer]
        entry[0] += float(hidden.float().norm(dim=-1)[keep].sum())
        entry[1] += float(shift.float().norm(dim=-1)[keep].sum())
        entry[2] += int(keep.sum())

    was_training = attached.model.training
    attached.model.eval()
    steering.probe = probe
    try:
        for batch in batches:
            mask[:] = [batch["attention_mask"]]
            device = next(attached.model.parameters()).device
            attached.model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            )
    finally:
        steering.probe = None
        attached.model.train(was_training)
    norms = parameter_norms(attached)
    stats = []
    for layer, (h_sum, f_sum, count) in sorted(totals.items()):
        residual = h_sum / count if count else None
        shift = f_sum / count if count else None
        stats.append(
            {
                "layer": layer,
                "parameter_norm": norms[layer],
                "residual_norm": residual,
                "shift_norm": shift,
                "relative_shift": (shift / residual) if residual else None,
            }
        )
    return stats
