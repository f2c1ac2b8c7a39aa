"""Trainable modules applied at a steering site: ``h <- h + f(h)``.

- :class:`VectorAdapter`: ``f(h) = v``.
- :class:`LowRankAdapter`: ``f(h) = W_up W_down h`` (linear) or ``W_up phi(W_down h)``
  (nonlinear), no biases, ``W_down: H -> r``, ``W_up: r -> H``.
- :class:`LoReFTIntervention`: ``f(h) = R^T (W h + b - R h)`` with orthonormal rows of R.

Init (METHOD.md section 2): ``W_down`` Kaiming-uniform (a = sqrt 5) scaled by ``init_scale``
(1e-3), ``W_up = 0``, ``v = 0``: every steering adapter is exactly zero at step 0, so the steered
model is the base model bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from steering_core.spec.method_config import Activation, AdapterConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


class SteeringAdapter(nn.Module):
    """A module returning the shift ``f(h)`` to add at a site (same shape as ``h``)."""

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.delta(hidden)

    def export_state(self) -> dict[str, torch.Tensor]:
        """Plain tensors for the artifact (no parametrisation internals)."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def import_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors, strict=True)


class VectorAdapter(SteeringAdapter):
    """``f(h) = v``: one learned vector per layer (H parameters), zero at init."""

    def __init__(self, hidden_size: int, *, dtype: torch.dtype, device: torch.device | None = None):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(hidden_size, dtype=dtype, device=device))

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vector.to(hidden.dtype).expand_as(hidden)


class LowRankAdapter(SteeringAdapter):
    """``f(h) = W_up phi(W_down h)`` (phi = identity for the linear kind); 2·H·r parameters."""

    def __init__(
        self,
        hidden_size: int,
        rank: int,
        *,
        activation: Activation | None,
        init_scale: float = 1e-3,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ):
        super().__init__()
        self.down = nn.Linear(hidden_size, rank, bias=False, dtype=dtype, device=device)
        self.up = nn.Linear(rank, hidden_size, bias=False, dtype=dtype, device=device)
        self.act: nn.Module = ACTIVATIONS[activation]() if activation else nn.Identity()
        self.init_scale = init_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.down.weight.is_meta:
            return
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            self.down.weight.mul_(self.init_scale)
            nn.init.zeros_(self.up.weight)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        dtype = self.down.weight.dtype
        out = self.up(self.act(self.down(hidden.to(dtype))))
        return out.to(hidden.dtype)


class LoReFTIntervention(SteeringAdapter):
    """LoReFT: ``f(h) = R^T (W h + b - R h)``, ``R`` (r x H) with orthonormal rows.

    R is the QR orthonormalisation of an unconstrained parameter (rows of ``rotation_raw``,
    signs fixed so that the triangular factor has a positive diagonal), so any optimizer step
    keeps R orthonormal. ``init="random"`` follows pyreft (R random orthonormal, W a default
    Linear init, so the intervention is not a no-op at step 0); ``init="identity"`` sets
    ``W = R`` and ``b = 0``.
    """

    def __init__(
        self,
        hidden_size: int,
        rank: int,
        *,
        init: str = "random",
        dtype: torch.dtype,
        device: torch.device | None = None,
    ):
        super().__init__()
        self.rotation_raw = nn.Parameter(torch.empty(rank, hidden_size, dtype=dtype, device=device))
        self.source = nn.Linear(hidden_size, rank, bias=True, dtype=dtype, device=device)
        if self.rotation_raw.is_meta:
            return
        with torch.no_grad():
            nn.init.orthogonal_(self.rotation_raw)
            if init == "identity":
                self.source.weight.copy_(self.rotation())
                self.source.bias.zero_()

    def rotation(self) -> torch.Tensor:
        """R with orthonormal rows (r x H), differentiable in ``rotation_raw``."""
        # QR in at least fp32 (bf16 has no QR kernel and too little precision).
        compute = torch.promote_types(self.rotation_raw.dtype, torch.float32)
        q, r = torch.linalg.qr(self.rotation_raw.to(compute).T)
        signs = torch.sign(torch.diagonal(r))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        return (q * signs).T.to(self.rotation_raw.dtype)

    def export_state(self) -> dict[str, torch.Tensor]:
        state = super().export_state()
        state["rotation"] = self.rotation().detach()  # R itself, for consumers of the file
        return state

    def import_state(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        tensors.pop("rotation", None)  # derived from rotation_raw
        super().import_state(tensors)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.to(self.source.weight.dtype)
        rotation = self.rotation()
        out = (self.source(h) - h @ rotation.T) @ rotation
        return out.to(hidden.dtype)


def build_steering_adapter(
    config: AdapterConfig, hidden_size: int, *, dtype: torch.dtype, device: torch.device | None
) -> SteeringAdapter:
    if config.kind == "vector":
        return VectorAdapter(hidden_size, dtype=dtype, device=device)
    activation = config.activation if config.kind == "nonlinear" else None
    return LowRankAdapter(
        hidden_size,
        config.rank,
        activation=activation,
        init_scale=config.init_scale,
        dtype=dtype,
        device=device,
    )
