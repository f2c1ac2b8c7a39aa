"""Automatic layer choice (``site.layers: "auto"``): score every layer on a few training batches,
steer the best ``k``.

The score is a first-order estimate of the loss drop a steering shift at that layer's site can
buy. Let ``G`` (``N × H``) hold the gradient of the training loss with respect to the site's
output at each of the ``N`` real tokens of the probe batches (base model, no adapters), and
``X`` the site's outputs themselves. An adapter adds a shift ``Δ`` (``N × H``, one row per
token); to first order the loss moves by ``⟨G, Δ⟩``. Bound the shift relative to what it is
added to, ``‖Δ‖_F ≤ ε‖X‖_F`` (its energy at most ``ε²`` times the residual's), and ask for the
largest first-order drop per unit ``ε``:

- rank ``r`` (``linear``, ``nonlinear``): the shift lies in an ``r``-dimensional subspace with
  free per-token coefficients, ``Δ = C Uᵀ``; the maximum of ``⟨G, Δ⟩`` over rank-``r``
  matrices in the ball is ``ε ‖X‖_F ‖G_r‖_F`` (``G_r`` the best rank-``r`` approximation,
  Eckart-Young), so **score = ‖X‖_F · sqrt(σ₁² + … + σ_r²)**, σ the singular values of ``G``;
- ``vector``: the same shift ``v`` at every token, ``‖v‖ ≤ ε‖X‖_F/√N``, so
  **score = ‖X‖_F / √N · ‖Σ_t g_t‖**.

Why relative to ``‖X‖``: every consumer of the residual stream reads it through a
normalisation (the next layer's RMSNorm/LayerNorm, the final norm), so the gradient at a layer
scales like ``1/‖x‖`` and a raw gradient norm favours whichever layers have the smallest
residual stream. The product is invariant to rescaling the stream, and it is what a
trained adapter's scale follows (the engine's ``layer_stats`` report its shift relative to the
residual). Why gradients of the shift rather than of the adapter's parameters: the adapters
start at zero (``W_up = 0``), where the parameters' own gradient is zero for ``W_down``; the
shift's gradient is what the first optimizer steps act on. The nonlinear adapter's per-token
coefficients are a function of ``h``: the free coefficients make the rank-``r`` score an
upper bound for it (and for ``linear``, whose shift is linear in ``h``), the same bound at
every layer.

The probe: at most :data:`PROBE_BATCHES` micro-batches of the run's own size, the first rows
of the permutation seeded by the spec's seed (without ``group_by_length``, the run's first
micro-batches), one forward and backward each, gradients taken with respect to a zero shift
added at every site (the base model stays frozen). Its cost is that of a few training
micro-batches with the backward going through every layer. Deterministic for a seed on a
given device; every rank of a multi-rank run scores the same rows. The choice: the ``k``
highest scores (ties to the later layer, whose backward is shorter), recorded with every
layer's score in a ``layer_selection`` event, in the artifact's training manifest
(``layer_selection``) and in checkpoints (a resumed run reuses it); the artifact's method lists
the chosen layers, so it loads like any other.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_core.engine.checkpoint import STATE_FILE, latest_checkpoint
from steering_core.engine.events import LayerSelectionEvent
from steering_core.errors import ConfigValidationError
from steering_core.model.sites import decoder_layers, hidden_size_of, site_module
from steering_core.spec.layer_budget import SelectableSiteConfig, is_auto, layer_budget
from steering_core.spec.method_config import AdapterConfig

PROBE_BATCHES = 4  # micro-batches scored (fewer when an epoch has fewer)
SCORE_NAME = "first_order_loss_drop"

Loss = Callable[[Callable[..., Any], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class LayerScores:
    scores: list[float]  # by decoder layer index
    tokens: int  # real tokens of the probe batches


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class _ZeroShifts:
    """Forward hooks adding a zero shift (the gradient's target) to the site's output at every
    layer, summing ``‖x_t‖²`` over the real tokens of the batch being probed."""

    def __init__(self, n_layers: int) -> None:
        self.energy = [0.0] * n_layers  # Σ_t ‖x_t‖²
        self.shifts: list[torch.Tensor | None] = [None] * n_layers
        self.real: torch.Tensor | None = None  # the batch's real tokens (attention mask)

    def hook(self, index: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden_state = _hidden(output)
            assert self.real is not None
            real = self.real.to(hidden_state.device)
            self.energy[index] += float(hidden_state.detach().double()[real].pow(2).sum())
            zero = torch.zeros_like(hidden_state, requires_grad=True)
            self.shifts[index] = zero
            shifted = hidden_state + zero
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

        return hook

    def take(self, site: str) -> list[torch.Tensor]:
        """The shifts of the forward just run (every layer's, or an error), cleared."""
        captured = [s for s in self.shifts if s is not None]
        if len(captured) != len(self.shifts):
            raise RuntimeError(f"site {site!r} ran at {len(captured)} of {len(self.shifts)} layers")
        self.shifts = [None] * len(self.shifts)
        return captured


@contextmanager
def _probing(model: nn.Module, site: str, shifts: _ZeroShifts) -> Iterator[None]:
    """``shifts``' hooks on every layer's ``site``, the model in eval mode; both undone after."""
    handles = [
        site_module(model, i, site).register_forward_hook(shifts.hook(i))
        for i in range(len(shifts.shifts))
    ]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _zero_moments(
    n_layers: int, hidden: int, low_rank: bool, device: torch.device
) -> list[torch.Tensor]:
    """Per layer, float64: ``Σ_t g_t g_tᵀ`` (rank r) or ``Σ_t g_t`` (vector), at zero."""
    shape = (hidden, hidden) if low_rank else (hidden,)
    return [torch.zeros(shape, dtype=torch.float64, device=device) for _ in range(n_layers)]


def _add_gradients(
    moments: list[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    real: torch.Tensor,
    low_rank: bool,
) -> None:
    for index, grad in enumerate(grads):
        if grad is None:
            continue
        rows = grad[real].double()
        moments[index] += rows.T @ rows if low_rank else rows.sum(0)


def _layer_scores(
    energy: Sequence[float], moments: Sequence[torch.Tensor], rank: int | None, tokens: int
) -> list[float]:
    """``‖X‖_F`` times the reach of a rank-``rank`` shift (``None``: a vector) per layer."""
    scores = []
    for size_squared, moment in zip(energy, moments, strict=True):
        if rank is not None:
            eigenvalues = torch.linalg.eigvalsh(moment).clamp(min=0.0)
            reach = math.sqrt(float(eigenvalues[-rank:].sum()))
        else:
            reach = float(moment.norm()) / math.sqrt(max(1, tokens))
        scores.append(math.sqrt(size_squared) * reach)
    return scores


def score_layers(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    site: str,
    adapter: AdapterConfig,
    loss: Loss,
    supervised_tokens: Callable[[Mapping[str, torch.Tensor]], int],
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> LayerScores:
    """Every decoder layer's score at ``site`` (see the module docstring) over ``batches``.

    ``loss(forward, batch)`` is the method's batch mean; the probe minimises their mean over
    all supervised tokens, as a training step does. The model's parameters are not changed.
    """
    n_layers = len(decoder_layers(model))
    device = device or next(model.parameters()).device
    low_rank = adapter.kind != "vector"
    moments = _zero_moments(n_layers, hidden_size_of(model), low_rank, device)
    shifts = _ZeroShifts(n_layers)
    labelled = max(1, sum(supervised_tokens(batch) for batch in batches))
    tokens = 0
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    with _probing(model, site, shifts):
        for batch in batches:
            on_device = {name: value.to(device) for name, value in batch.items()}
            real = shifts.real = on_device["attention_mask"].bool()
            tokens += int(real.sum())
            with torch.enable_grad(), autocast:
                value = loss(model, on_device) * (supervised_tokens(batch) / labelled)
            grads = torch.autograd.grad(value, shifts.take(site), allow_unused=True)
            _add_gradients(moments, grads, real, low_rank)
    rank = adapter.rank if low_rank else None
    return LayerScores(scores=_layer_scores(shifts.energy, moments, rank, tokens), tokens=tokens)


def choose_layers(scores: Sequence[float], k: int) -> list[int]:
    """The ``k`` layers with the highest scores, in layer order (ties to the later layer; a
    score that is not finite ranks last)."""

    def rank(layer: int) -> tuple[float, int]:
        score = scores[layer]
        return (-score if math.isfinite(score) else math.inf, -layer)

    return sorted(sorted(range(len(scores)), key=rank)[:k])


def probe_rows(n_rows: int, *, seed: int, batch_rows: int, n_batches: int) -> list[list[int]]:
    """The rows of the probe's micro-batches: consecutive slices of ``batch_rows`` of the
    permutation of the training rows seeded by ``seed`` (epoch 0's order in the data plan)."""
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(n_batches, math.ceil(n_rows / batch_rows))
    return [order[b * batch_rows : (b + 1) * batch_rows] for b in range(count)]


def _saved_selection(out_dir: Path) -> dict[str, Any] | None:
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return None
    state = json.loads((checkpoint / STATE_FILE).read_text())
    saved = state.get("layer_selection")
    return saved if isinstance(saved, dict) else None


def resolve_auto_layers(
    method: Any,
    model: nn.Module,
    handler: Any,
    rows: Any,
    pad_id: int,
    *,
    seed: int,
    batch_rows: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    resume_from: Path | None = None,
) -> tuple[Any, LayerSelectionEvent | None, bool]:
    """``(method, selection, restored)``: a method whose ``site.layers`` is ``"auto"`` comes
    back with the chosen layers in its place, and the selection that chose them (read from the
    latest checkpoint under ``resume_from`` when there is one: ``restored`` True); any other
    method comes back as it is, with None."""
    site = getattr(method, "site", None)
    if not is_auto(site):
        return method, None, False
    assert isinstance(site, SelectableSiteConfig)
    if resume_from is not None and (saved := _saved_selection(resume_from)) is not None:
        selection = LayerSelectionEvent.model_validate(
            {k: v for k, v in saved.items() if k not in ("event", "time")}
        )
        return _with_layers(method, site, selection.chosen), selection, True
    adapter = getattr(method, "adapter", None)
    if not isinstance(adapter, AdapterConfig):
        raise ConfigValidationError(f'the {method.type} method has no adapter to size "auto" by')
    n_layers = len(decoder_layers(model))
    k = layer_budget(site, adapter, n_layers, hidden_size_of(model))
    started = time.perf_counter()
    slices = probe_rows(len(rows), seed=seed, batch_rows=batch_rows, n_batches=PROBE_BATCHES)
    batches = [handler.collate([rows[i] for i in chosen], pad_id) for chosen in slices]
    model.to(device)
    result = score_layers(
        model,
        batches,
        site=site.name,
        adapter=adapter,
        loss=handler.loss,
        supervised_tokens=handler.supervised_tokens,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    chosen = choose_layers(result.scores, k)
    selection = LayerSelectionEvent(
        site=site.name,
        score=SCORE_NAME,
        scores=[s if math.isfinite(s) else None for s in result.scores],
        chosen=chosen,
        max_layers=site.max_layers,
        max_parameters=site.max_parameters,
        probe_batches=len(batches),
        probe_tokens=result.tokens,
        seconds=round(time.perf_counter() - started, 3),
    )
    return _with_layers(method, site, chosen), selection, False


def _with_layers(method: Any, site: SelectableSiteConfig, layers: list[int]) -> Any:
    return method.model_copy(update={"site": site.resolved(layers)})


def selection_record(selection: LayerSelectionEvent) -> dict[str, Any]:
    """What the manifest and checkpoints keep of a selection (the event without its stamp)."""
    return selection.model_dump(mode="json", exclude={"time"})


__all__ = [
    "PROBE_BATCHES",
    "SCORE_NAME",
    "LayerScores",
    "choose_layers",
    "probe_rows",
    "resolve_auto_layers",
    "score_layers",
    "selection_record",
]
