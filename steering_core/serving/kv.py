"""The batch's KV cache: rows joined, dropped and re-aligned between decode steps.

Rows are left-padded: every row's newest token is in the last column, and the 2D attention mask
(``[B, L]``, False on padding) says which columns are a row's own. Rows of different lengths
share one cache this way, as Hugging Face's batched ``generate`` keeps them; the engine passes
each row's own ``position_ids``. Joining right-aligns two caches (padding the shorter on the
left); dropping keeps some rows; trimming removes padding columns no row needs any more.
Sliding-window layers keep only their last ``window - 1`` columns and count every column seen
(``cumulative_length``): they are aligned the same way, on the right.
"""

from __future__ import annotations

import torch
from torch.nn import functional
from transformers import DynamicCache


def new_cache(config: object) -> DynamicCache:
    return DynamicCache(config=config)


def _pad_left(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    return functional.pad(tensor, (0, 0, columns, 0))  # [B, heads, L, d]: pad dim -2 on the left


def _set_length(layer: object, length: int) -> None:
    if hasattr(layer, "cumulative_length"):
        layer.cumulative_length = length  # type: ignore[attr-defined]


def join(
    cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """``cache``'s rows then ``other``'s, right-aligned; the joined mask."""
    length = max(mask.shape[1], other_mask.shape[1])
    for mine, theirs in zip(cache.layers, other.layers, strict=True):
        window = getattr(mine, "sliding_window", None)
        keep = length if window is None else min(length, window - 1)
        mine.keys = torch.cat([_pad_left(x.keys, keep - x.keys.shape[-2]) for x in (mine, theirs)])
        mine.values = torch.cat(
            [_pad_left(x.values, keep - x.values.shape[-2]) for x in (mine, theirs)]
        )
        _set_length(mine, length)
    joined = torch.cat(
        [
            functional.pad(mask, (length - mask.shape[1], 0)),
            functional.pad(other_mask, (length - other_mask.shape[1], 0)),
        ]
    )
    return cache, joined


def keep_rows(
    cache: DynamicCache, mask: torch.Tensor, rows: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Only ``rows`` (indices, in that order), with padding no kept row needs trimmed away."""
    # the cache is on the model's device, the mask on the CPU: the indices moved once for all
    on_device = rows.to(cache.layers[0].keys.device) if cache.layers else rows
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, on_device)
        layer.values = layer.values.index_select(0, on_device)
    mask = mask.index_select(0, rows)
    used = mask.any(dim=0)
    first = int(used.nonzero()[0]) if bool(used.any()) else mask.shape[1]
    if first:
        length = mask.shape[1] - first
        mask = mask[:, first:]
        for layer in cache.layers:
            if layer.keys.shape[-2] > length:
                layer.keys = layer.keys[:, :, -length:] if length else layer.keys[:, :, :0]
                layer.values = layer.values[:, :, -length:] if length else layer.values[:, :, :0]
            _set_length(layer, length)
    return cache, mask
