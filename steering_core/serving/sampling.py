"""Choosing each row's next token from its logits, with that row's own settings.

Greedy rows (``temperature == 0``) take the arg-max. Sampled rows divide by their temperature,
keep the smallest set of tokens whose probability reaches ``top_p`` (the most likely token is
always kept), and draw with the row's own generator: a seeded request draws the same tokens
whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class RowSampler:
    temperature: float
    top_p: float
    generator: torch.Generator | None

    @classmethod
    def for_request(cls, temperature: float, top_p: float, seed: int | None) -> RowSampler:
        if temperature == 0:
            return cls(0.0, 1.0, None)
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return cls(temperature, top_p, generator)

    def draw(self, logits: torch.Tensor) -> int:
        """The next token from one row's logits ``[V]`` (float32)."""
        if self.generator is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
            sorted_probs[before >= self.top_p] = 0.0  # outside the nucleus (never the first)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def next_tokens(logits: torch.Tensor, samplers: Sequence[RowSampler]) -> list[int]:
    """One token per row of ``logits`` ``[B, V]``; greedy rows in one arg-max."""
    logits = logits.float()
    greedy = torch.argmax(logits, dim=-1).tolist()
    if any(sampler.generator is not None for sampler in samplers):
        logits = logits.cpu()  # each row's generator lives on the CPU, wherever the model runs
    return [
        greedy[i] if sampler.generator is None else sampler.draw(logits[i])
        for i, sampler in enumerate(samplers)
    ]
