"""Choosing each row's next token from its logits, with that row's own settings.

Per row, in this order (OpenAI's meanings, see
:class:`~steering_core.serving.requests.GenerationParams`):

1. adjust: ``logit_bias`` is added; every token the row has generated ``c`` times is lowered by
   ``c * frequency_penalty + presence_penalty``;
2. log-probabilities for ``logprobs``, from the adjusted logits;
3. choose: greedy rows (``temperature == 0``) take the arg-max; sampled rows divide by their
   temperature, keep the smallest set of tokens whose probability reaches ``top_p`` (the most
   likely token is always kept) and draw with the row's own generator, so a seeded request
   draws the same tokens whatever else shares its batch.

Rows with nothing to adjust and no log-probabilities take the batch's one arg-max; the others
work on their own ``[V]`` row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steering_core.serving.requests import GenerationParams, TokenLogprob


@dataclass
class RowSampler:
    temperature: float
    top_p: float
    generator: torch.Generator | None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    bias_ids: torch.Tensor | None = None  # [k] token ids of logit_bias
    bias_values: torch.Tensor | None = None  # [k]
    logprobs: int | None = None

    @classmethod
    def for_request(cls, params: GenerationParams) -> RowSampler:
        generator = None
        if params.temperature != 0:
            generator = torch.Generator()
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        bias_ids = bias_values = None
        if params.logit_bias:
            bias_ids = torch.tensor([token for token, _ in params.logit_bias], dtype=torch.long)
            bias_values = torch.tensor([value for _, value in params.logit_bias])
        return cls(
            temperature=params.temperature if generator is not None else 0.0,
            top_p=params.top_p,
            generator=generator,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            bias_ids=bias_ids,
            bias_values=bias_values,
            logprobs=params.logprobs,
        )

    @property
    def adjusts(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty or self.bias_ids is not None)

    @property
    def plain_greedy(self) -> bool:
        return self.generator is None and not self.adjusts and self.logprobs is None

    def adjust(self, logits: torch.Tensor, generated: Sequence[int]) -> torch.Tensor:
        """Row logits ``[V]`` (float32) with the bias and the penalties applied (a new tensor)."""
        logits = logits.clone()
        if self.bias_ids is not None and self.bias_values is not None:
            ids = self.bias_ids.to(logits.device)
            logits.index_add_(0, ids, self.bias_values.to(logits.device))
        if generated and (self.frequency_penalty or self.presence_penalty):
            seen = torch.tensor(generated, dtype=torch.long, device=logits.device)
            tokens, counts = torch.unique(seen, return_counts=True)
            penalty = counts.float() * self.frequency_penalty + self.presence_penalty
            logits.index_add_(0, tokens, -penalty)
        return logits

    def draw(self, logits: torch.Tensor) -> int:
        """The next token from one row's (adjusted) logits ``[V]`` (float32)."""
        if self.generator is None:
            return int(torch.argmax(logits))
        logits = logits.cpu()  # the row's generator lives on the CPU, wherever the model runs
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
            sorted_probs[before >= self.top_p] = 0.0  # outside the nucleus (never the first)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """``token``'s log-probability under ``logits`` ``[V]`` and the ``top`` most likely ones."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    alternatives: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(logprobs, top)
        alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), alternatives)


@dataclass(frozen=True)
class Draw:
    token: int
    logprob: TokenLogprob | None = None


def next_tokens(
    logits: torch.Tensor,
    samplers: Sequence[RowSampler],
    generated: Sequence[Sequence[int]],
) -> list[Draw]:
    """One draw per row of ``logits`` ``[B, V]``; ``generated[i]``: row i's tokens so far."""
    logits = logits.float()
    greedy = torch.argmax(logits, dim=-1).tolist()
    draws = []
    for i, sampler in enumerate(samplers):
        if sampler.plain_greedy:
            draws.append(Draw(greedy[i]))
            continue
        row = sampler.adjust(logits[i], generated[i]) if sampler.adjusts else logits[i]
        token = sampler.draw(row)
        logprob = None
        if sampler.logprobs is not None:
            logprob = token_logprob(row, token, sampler.logprobs)
        draws.append(Draw(token, logprob))
    return draws
