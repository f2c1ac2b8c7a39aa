"""First-order analysis as code (METHOD.md section 1).

A GLU MLP computes ``y = W_d m`` with ``m = σ(a_g) ⊙ a_u``, ``a_g = W_g h``, ``a_u = W_u h``
(weights in ``nn.Linear`` convention, shape ``(out, in)``). Under a weight update ``ΔW`` its
output moves, to first order, by

    δy ≈ ΔW_d·m + W_d[(σ'(a_g) ⊙ a_u) ⊙ (ΔW_g h) + σ(a_g) ⊙ (ΔW_u h)],

while a pre-MLP activation shift ``Δh`` moves it by ``W_d J(h) Δh`` (``J`` the Jacobian of
``h ↦ σ(W_g h) ⊙ W_u h``). The "oracle" steering vector of a layer is ``h_FT − h_base`` at its
block output. σ' is computed exactly, by forward-mode AD of the elementwise activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steering_core.model.sites import decoder_layers, site_module

Activation = str | Callable[[Tensor], Tensor]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,  # exact (erf) GELU
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
}


def _activation_fn(act: Activation) -> Callable[[Tensor], Tensor]:
    if callable(act):
        return act
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ValueError(
            f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)} or a callable"
        ) from None


def activation_and_derivative(act: Activation, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(σ(x), σ'(x))`` for an elementwise σ: σ' is the JVP of σ at ``x`` along all-ones."""
    fn = _activation_fn(act)
    value, deriv = torch.func.jvp(fn, (x,), (torch.ones_like(x),))
    return value, deriv


def _check_shapes(h: Tensor, *tensors: Tensor | None) -> None:
    """Shapes of ``(w_gate, w_up, w_down, d_gate, d_up, d_down)`` against ``h``."""
    inter, hidden = tensors[0].shape  # type: ignore[union-attr]
    names = ("w_gate", "w_up", "w_down", "d_gate", "d_up", "d_down")
    shapes = ((inter, hidden), (inter, hidden), (hidden, inter)) * 2
    for name, tensor, shape in zip(names, tensors, shapes, strict=True):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
    if h.shape[-1] != hidden:
        raise ValueError(f"h has last dimension {h.shape[-1]}, expected {hidden}")


def glu_mlp_output(
    h: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor, act: Activation = "silu"
) -> Tensor:
    """``y = W_d(σ(W_g h) ⊙ W_u h)`` for ``h`` of shape ``(..., H)``."""
    return F.linear(_activation_fn(act)(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)


def glu_mlp_first_order_shift(
    h: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    d_gate: Tensor | None = None,
    d_up: Tensor | None = None,
    d_down: Tensor | None = None,
    act: Activation = "silu",
) -> Tensor:
    """Predicted first-order shift of a GLU MLP output under ``W ← W + ΔW``.

    ``δy = ΔW_d·m + W_d[(σ'(a_g) ⊙ a_u) ⊙ (ΔW_g h) + σ(a_g) ⊙ (ΔW_u h)]``, ``m = σ(a_g) ⊙ a_u``,
    ``a_g = W_g h``, ``a_u = W_u h``. A delta of ``None`` is zero. Exact when only ``W_d`` moves
    (``y`` is linear in ``W_d``) and when only ``W_u`` moves. Returns shape ``(..., H)``.
    """
    _check_shapes(h, w_gate, w_up, w_down, d_gate, d_up, d_down)
    a_gate, a_up = F.linear(h, w_gate), F.linear(h, w_up)
    sig, dsig = activation_and_derivative(act, a_gate)
    shift = h.new_zeros(*h.shape[:-1], w_down.shape[0])
    inner = None
    if d_gate is not None:
        inner = dsig * a_up * F.linear(h, d_gate)
    if d_up is not None:
        term = sig * F.linear(h, d_up)
        inner = term if inner is None else inner + term
    if inner is not None:
        shift = shift + F.linear(inner, w_down)
    if d_down is not None:
        shift = shift + F.linear(sig * a_up, d_down)
    return shift


def glu_mlp_actual_shift(
    h: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    d_gate: Tensor | None = None,
    d_up: Tensor | None = None,
    d_down: Tensor | None = None,
    act: Activation = "silu",
) -> Tensor:
    """Actual shift ``y(W + ΔW) − y(W)`` of the GLU MLP (a ``None`` delta is zero)."""
    _check_shapes(h, w_gate, w_up, w_down, d_gate, d_up, d_down)

    def moved(w: Tensor, d: Tensor | None) -> Tensor:
        return w if d is None else w + d

    new = glu_mlp_output(h, moved(w_gate, d_gate), moved(w_up, d_up), moved(w_down, d_down), act)
    return new - glu_mlp_output(h, w_gate, w_up, w_down, act)


def _glu_weights(mlp: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    for name in ("gate_proj", "up_proj", "down_proj", "act_fn"):
        if not hasattr(mlp, name):
            raise ValueError(f"{type(mlp).__name__} is not a Llama-style GLU MLP: no {name!r}")
    projs = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    if any(getattr(p, "bias", None) is not None for p in projs):
        raise ValueError("GLU MLPs with biases are not supported by the first-order analysis")
    return tuple(p.weight.detach() for p in projs)  # type: ignore[return-value]


def mlp_shift_from_module(
    mlp: nn.Module,
    h: Tensor,
    d_gate: Tensor | None = None,
    d_up: Tensor | None = None,
    d_down: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(predicted, actual)`` shift of a Llama-style MLP (``gate_proj``, ``up_proj``,
    ``down_proj``, ``act_fn``) under the given weight deltas; σ is ``mlp.act_fn`` itself.

    The module is not modified.
    """
    w_gate, w_up, w_down = _glu_weights(mlp)
    act = mlp.act_fn
    h = h.detach()
    args = (h, w_gate, w_up, w_down, d_gate, d_up, d_down)
    with torch.no_grad():
        return glu_mlp_first_order_shift(*args, act=act), glu_mlp_actual_shift(*args, act=act)


def pre_mlp_shift(mlp: nn.Module, h: Tensor, delta_h: Tensor) -> Tensor:
    """First-order MLP output shift from a pre-MLP shift ``Δh``: ``W_d J(h) Δh``.

    ``h`` is the MLP's input; computed as the JVP of ``mlp`` at ``h`` along ``Δh``.
    """
    if h.shape != delta_h.shape:
        raise ValueError(f"h {tuple(h.shape)} and delta_h {tuple(delta_h.shape)} differ")
    with torch.no_grad():
        _, tangent = torch.func.jvp(mlp, (h.detach(),), (delta_h.detach(),))
    return tangent


def _hidden(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]


def collect_site_activations(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    site: str = "block_output",
) -> Tensor:
    """Activations at ``site`` of every decoder layer, shape ``(L, B, T, H)``.

    One forward pass in eval mode under ``torch.no_grad``; the model's training mode is
    restored and the hooks are removed afterwards, also when the forward pass raises.
    """
    num_layers = len(decoder_layers(model))
    captured: list[Tensor | None] = [None] * num_layers
    handles = []

    def make_hook(index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured[index] = _hidden(output).detach()

        return hook

    was_training = model.training
    try:
        for i in range(num_layers):
            handles.append(site_module(model, i, site).register_forward_hook(make_hook(i)))
        model.eval()
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    missing = [i for i, act in enumerate(captured) if act is None]
    if missing:
        raise RuntimeError(f"site {site!r} produced no output at layers {missing}")
    return torch.stack(captured)  # type: ignore[arg-type]


def oracle_steering_vectors(
    base_model: nn.Module,
    tuned_model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    site: str = "block_output",
) -> Tensor:
    """Oracle steering vectors ``Δh = h_FT − h_base`` at ``site``, shape ``(L, B, T, H)``.

    Positions with ``attention_mask == 0`` are set to zero.
    """
    base = collect_site_activations(base_model, input_ids, attention_mask, site)
    tuned = collect_site_activations(tuned_model, input_ids, attention_mask, site)
    if base.shape != tuned.shape:
        raise ValueError(f"base {tuple(base.shape)} and tuned {tuple(tuned.shape)} differ")
    deltas = tuned - base
    if attention_mask is not None:
        deltas = deltas * attention_mask.to(deltas.dtype)[None, :, :, None]
    return deltas


def _rank_for_energy(singular_values: Tensor, fraction: float) -> int:
    energy = singular_values.square()
    total = float(energy.sum())
    if total == 0.0:
        return 0
    cumulative = torch.cumsum(energy, 0) / total
    return min(int((cumulative < fraction).sum()) + 1, singular_values.numel())


def oracle_summary(
    deltas: Tensor, attention_mask: Tensor | None = None, base: Tensor | None = None
) -> list[dict[str, Any]]:
    """Per-layer summary of oracle vectors ``deltas`` (``(L, B, T, H)``) over real tokens.

    For layer ℓ with real-token matrix ``D`` (``N × H``, rows ``Δh_t``):

    - ``mean_norm`` = mean_t ‖Δh_t‖;
    - ``relative_norm`` = mean_t ‖Δh_t‖ / mean_t ‖h_t‖ with ``h`` the base activations
      ``base`` (same shape as ``deltas``); ``None`` without ``base``;
    - ``rank_90`` / ``rank_99``: the least k with Σ_{i≤k} s_i² ≥ 0.90 / 0.99 · Σ_i s_i², s the
      singular values of ``D`` (0 when ``D`` is zero).
    """
    if deltas.dim() != 4:
        raise ValueError(f"deltas must have shape (L, B, T, H), got {tuple(deltas.shape)}")
    if base is not None and base.shape != deltas.shape:
        raise ValueError(f"base {tuple(base.shape)} and deltas {tuple(deltas.shape)} differ")
    if attention_mask is None:
        real = torch.ones(deltas.shape[1:3], dtype=torch.bool, device=deltas.device)
    else:
        real = attention_mask.to(deltas.device).bool()
    summary: list[dict[str, Any]] = []
    for layer in range(deltas.shape[0]):
        matrix = deltas[layer][real].double()
        norms = matrix.norm(dim=-1)
        singular_values = torch.linalg.svdvals(matrix)
        relative = None
        if base is not None:
            base_norm = float(base[layer][real].double().norm(dim=-1).mean())
            relative = float(norms.mean()) / base_norm if base_norm > 0 else float("inf")
        summary.append(
            {
                "layer": layer,
                "num_tokens": int(matrix.shape[0]),
                "mean_norm": float(norms.mean()) if norms.numel() else 0.0,
                "relative_norm": relative,
                "rank_90": _rank_for_energy(singular_values, 0.90),
                "rank_99": _rank_for_energy(singular_values, 0.99),
            }
        )
    return summary
