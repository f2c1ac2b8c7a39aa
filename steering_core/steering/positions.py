"""Which token positions an intervention acts on, for methods that steer only part of the prompt.

pyreft's LoReFT intervenes at the first ``f`` and the last ``l`` tokens of the prompt, and not
on answer or generated tokens. Rows are padded (left for generation, right for training), so the
positions are counted among each row's own prompt tokens, never as raw indices.
"""

from __future__ import annotations

import torch

from steering_core.data.batches import IGNORE_INDEX


def select_positions(prompt: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Of each row's prompt tokens (``prompt``: bool, batch x seq, True on them, anywhere in the
    row), the first ``first`` and the last ``last``; bool, same shape. A prompt shorter than
    ``first + last`` is intervened on everywhere once."""
    prompt = prompt.bool()
    order = prompt.long().cumsum(-1)  # 1-based rank of each prompt token within its row
    count = prompt.long().sum(-1, keepdim=True)
    return prompt & ((order <= first) | (order > count - last))


def prompt_tokens(attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The prompt of each training row: its tokens (attention 1) before its first supervised
    label; a row without one is all prompt."""
    supervised = labels != IGNORE_INDEX
    before_answer = supervised.long().cumsum(-1) == 0
    return attention_mask.bool() & before_answer
