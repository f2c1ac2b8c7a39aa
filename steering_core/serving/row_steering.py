"""Per-row adapters in one forward pass: each row of the batch gets its own adapters' shifts.

:class:`RowSteering` hooks the modules the batch's adapters touch (once each, on first use) and
applies a :class:`RowPlan` built for the rows of the forward about to run. At every hooked module
the plan holds, for all rows together,

- the sum of the rows' vector parts times their strengths, ``[B, H]``;
- per group of low-rank parts sharing an activation and a position rule, the rows' parts
  concatenated along the rank (strength folded into ``up``) and zero-padded to the group's
  widest row: ``down [B, in, R]``, ``up [B, R, out]``, ``bias [B, R]``.

A forward then adds ``bmm(phi(bmm(x, down) + bias), up)`` per group: one pair of batched matmuls
whatever the number of distinct adapters. Zero padding is exact (phi(0) = 0 for every supported
activation), and a row without adapters gets an exact zero, so it is the base model. Summing
several adapters on one row is concatenation along the rank, because phi acts element-wise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from steering_core.model.sites import site_module, unwrap_model
from steering_core.serving.forms import HookKey, LowRankPart, ServingAdapter, VectorPart
from steering_core.steering.adapter_modules import ACTIVATIONS
from steering_core.steering.positions import select_positions

Steering = Sequence[tuple[ServingAdapter, float]]  # one row's adapters and strengths


@dataclass
class LowRankGroup:
    down: torch.Tensor  # [B, in, R]
    up: torch.Tensor  # [B, R, out]
    bias: torch.Tensor | None  # [B, 1, R]
    activation: nn.Module | None
    positions: tuple[int, int] | None

    def shift(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        z = torch.bmm(x.to(self.down.dtype), self.down)
        if self.bias is not None:
            z = z + self.bias
        if self.activation is not None:
            z = self.activation(z)
        out = torch.bmm(z, self.up)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out.to(x.dtype)


@dataclass
class RowPlan:
    """What each hooked module adds for the rows of one batch (row order = batch order)."""

    rows: int
    vectors: dict[HookKey, torch.Tensor] = field(default_factory=dict)
    groups: dict[HookKey, list[LowRankGroup]] = field(default_factory=dict)

    @property
    def keys(self) -> set[HookKey]:
        return set(self.vectors) | set(self.groups)

    @classmethod
    def build(cls, rows: Sequence[Steering], *, dtype: torch.dtype, device: Any) -> RowPlan:
        plan = cls(len(rows))
        by_key: dict[HookKey, list[list[tuple[Any, float]]]] = {}
        for index, steering in enumerate(rows):
            for adapter, strength in steering:
                for key, parts in adapter.parts.items():
                    slots = by_key.setdefault(key, [[] for _ in rows])
                    # the strength scales steering; a LoRA half is the weights, always whole
                    scale = 1.0 if key.reads_input else strength
                    slots[index].extend((part, scale) for part in parts)
        for key, slots in by_key.items():
            vectors = [[(p, s) for p, s in slot if isinstance(p, VectorPart)] for slot in slots]
            if any(vectors):
                width = next(p.vector.shape[0] for slot in vectors for p, _ in slot)
                stacked = torch.zeros(len(rows), width, dtype=dtype, device=device)
                for index, slot in enumerate(vectors):
                    for part, strength in slot:
                        stacked[index] += part.vector.to(device, dtype) * strength
                plan.vectors[key] = stacked
            groups: dict[tuple[str | None, tuple[int, int] | None], list[list[Any]]] = {}
            for index, slot in enumerate(slots):
                for part, strength in slot:
                    if isinstance(part, LowRankPart):
                        rule = (part.activation, part.positions)
                        members = groups.setdefault(rule, [[] for _ in rows])
                        members[index].append((part, strength))
            if groups:
                plan.groups[key] = [
                    _stack(members, activation, positions, dtype, device)
                    for (activation, positions), members in groups.items()
                ]
        return plan


def _stack(
    members: list[list[tuple[LowRankPart, float]]],
    activation: str | None,
    positions: tuple[int, int] | None,
    dtype: torch.dtype,
    device: Any,
) -> LowRankGroup:
    sample = next(part for slot in members for part, _ in slot)
    width_in, width_out = sample.down_t.shape[0], sample.up_t.shape[1]
    rank = max(sum(part.rank for part, _ in slot) for slot in members)
    rows = len(members)
    act = ACTIVATIONS[activation]() if activation else None
    if all(len(slot) == 1 and slot[0][0].rank == rank for slot in members):
        # the common batch: one part of the same rank per row, stacked in one copy each
        parts = [slot[0][0] for slot in members]
        strengths = torch.tensor([slot[0][1] for slot in members], dtype=dtype, device=device)
        down = torch.stack([p.down_t for p in parts]).to(device, dtype)
        up = torch.stack([p.up_t for p in parts]).to(device, dtype) * strengths.view(-1, 1, 1)
        bias = None
        if sample.bias is not None and all(p.bias is not None for p in parts):
            bias = torch.stack([p.bias for p in parts]).to(device, dtype).unsqueeze(1)
        if bias is not None or all(p.bias is None for p in parts):
            return LowRankGroup(down, up, bias, act, positions)
    down = torch.zeros(rows, width_in, rank, dtype=dtype, device=device)
    up = torch.zeros(rows, rank, width_out, dtype=dtype, device=device)
    has_bias = any(part.bias is not None for slot in members for part, _ in slot)
    bias = torch.zeros(rows, 1, rank, dtype=dtype, device=device) if has_bias else None
    for index, slot in enumerate(members):
        start = 0
        for part, strength in slot:
            end = start + part.rank
            down[index, :, start:end] = part.down_t.to(device, dtype)
            up[index, start:end, :] = part.up_t.to(device, dtype) * strength
            if bias is not None and part.bias is not None:
                bias[index, 0, start:end] = part.bias.to(device, dtype)
            start = end
    return LowRankGroup(down, up, bias, act, positions)


class RowSteering:
    """Hooks on one model that apply the current :class:`RowPlan`; one forward at a time."""

    def __init__(self, model: nn.Module):
        self.base = unwrap_model(model)
        self.plan: RowPlan | None = None
        self._prompt_mask: torch.Tensor | None = None  # prefill: bool [B, T] of prompt tokens
        self._position_masks: dict[tuple[int, int], torch.Tensor] = {}
        self._handles: dict[HookKey, RemovableHandle] = {}

    @property
    def prompt_mask(self) -> torch.Tensor | None:
        return self._prompt_mask

    @prompt_mask.setter
    def prompt_mask(self, mask: torch.Tensor | None) -> None:
        """The prompt tokens of the forward about to run (None: a decode step)."""
        self._prompt_mask = mask
        self._position_masks = {}

    def _positions(self, rule: tuple[int, int]) -> torch.Tensor:
        """The tokens a position rule steers in this forward, computed once for every module."""
        assert self._prompt_mask is not None
        if rule not in self._position_masks:
            self._position_masks[rule] = select_positions(self._prompt_mask, *rule)
        return self._position_masks[rule]

    def prepare(self, plan: RowPlan) -> None:
        """Hook every module ``plan`` touches that is not hooked yet."""
        for key in plan.keys - set(self._handles):
            module = self._module(key)
            hook = self._input_hook(key) if key.reads_input else self._output_hook(key)
            self._handles[key] = module.register_forward_hook(hook)

    def remove(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()

    def _module(self, key: HookKey) -> nn.Module:
        if key.module is not None:
            return self.base.get_submodule(key.module)
        assert key.site is not None and key.layer is not None
        return site_module(self.base, key.layer, key.site)

    def _shift(self, key: HookKey, x: torch.Tensor) -> torch.Tensor | None:
        plan = self.plan
        if plan is None:
            return None
        total: torch.Tensor | None = None
        vector = plan.vectors.get(key)
        if vector is not None:
            total = vector.to(x.dtype).unsqueeze(1).expand_as(x)
        for group in plan.groups.get(key, ()):
            mask = None
            if group.positions is not None:
                if self._prompt_mask is None:  # a decode step: generated text is never steered
                    continue
                mask = self._positions(group.positions)
            shift = group.shift(x, mask)
            total = shift if total is None else total + shift
        return total

    def _output_hook(self, key: HookKey):
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            shift = self._shift(key, hidden)
            if shift is None:
                return None
            steered = hidden + shift
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    def _input_hook(self, key: HookKey):
        def hook(_module: nn.Module, args: Any, output: torch.Tensor) -> Any:
            shift = self._shift(key, args[0])
            return None if shift is None else output + shift.to(output.dtype)

        return hook
