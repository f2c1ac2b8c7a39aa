"""The strength report of a steering adapter: what each inference strength does, on the task and
off it.

At each strength in :data:`STRENGTHS` the adapter's steering is scaled (``steering_scale``: the
steering parts only; a joint adapter's LoRA half stays as trained) and two things are measured:

- **score**: greedy generation on at most :data:`MAX_ITEMS` validation items, scored by the
  job's task (its own scorer for a built-in task; exact match of the completion otherwise);
- **KL**: how far the adapter moves the model off the task, as the mean over the positions of
  :data:`NEUTRAL_PROMPTS` (a fixed set of everyday prompts shipped with the package) of
  ``KL(steered || reference)`` between next-token distributions, the reference being strength 0
  (the steering off; for a joint adapter, its LoRA half alone).

So strength 0 scores what the reference scores and has KL 0 by construction. The recommended
strength is the smallest whose score reaches 99% of the best score (0 when nothing beats the
reference). The report is bounded: it stops between strengths once ``budget_seconds`` have gone
(the job gives 10% of its training time) and says which strengths it measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch
from pydantic import BaseModel, Field

from steering_core.data.batches import encode_prompt
from steering_core.evaluation.greedy import generate_greedy
from steering_core.serving.requests import encode_chat
from steering_core.tasks.definitions import Task, get_task

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
MAX_ITEMS = 64
RECOMMEND_FRACTION = 0.99
NEUTRAL_PROMPTS = "neutral_prompts.txt"


class StrengthPoint(BaseModel):
    strength: float
    score: float = Field(description="fraction of the items answered right, 0..1")
    kl: float = Field(description="mean next-token KL(steered || strength 0), nats, neutral text")


class StrengthReport(BaseModel):
    """Stored with the adapter (``strength_report`` in its manifest and API object)."""

    points: list[StrengthPoint]
    recommended_strength: float | None
    task: str
    items: int
    neutral_prompts: int
    seconds: float
    budget_seconds: float
    complete: bool = Field(description="every strength was measured within the budget")
    reference: str = "strength 0: the steering off (a joint adapter keeps its LoRA half)"


def neutral_prompts() -> list[str]:
    text = resources.files("steering_core.resources").joinpath(NEUTRAL_PROMPTS).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _items(
    records: Sequence[dict[str, Any]], tokenizer: Any, task: Task
) -> tuple[list[list[int]], list[str]]:
    """Encoded prompts and golds, as training encodes them: a chat record's last assistant
    message is its answer, everything before it the prompt."""
    prompts, golds = [], []
    for record in records[:MAX_ITEMS]:
        messages = record.get("messages")
        if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
            prompts.append(encode_chat(tokenizer, messages[:-1]))
            golds.append(str(messages[-1].get("content", "")).strip())
        else:
            prompt, _ = task.format(record)
            prompts.append(encode_prompt(tokenizer, prompt))
            golds.append(task.gold(record))
    return prompts, golds


@torch.no_grad()
def _log_probs(model: torch.nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1) for ids in batches]


def _kl(steered: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Mean over every position of KL(steered || reference)."""
    total, positions = 0.0, 0
    for p, q in zip(steered, reference, strict=True):
        total += float((p.exp() * (p - q)).sum(-1).sum())
        positions += p.shape[0] * p.shape[1]
    return max(0.0, total / positions)


def recommend(points: Sequence[StrengthPoint]) -> float | None:
    """The smallest strength whose score reaches 99% of the best; None for no points."""
    if not points:
        return None
    best = max(p.score for p in points)
    return min(p.strength for p in points if p.score >= RECOMMEND_FRACTION * best)


def strength_report(
    attached: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    *,
    task: str | None = None,
    budget_seconds: float,
    strengths: Sequence[float] = STRENGTHS,
    max_new_tokens: int = 32,
) -> StrengthReport:
    """Measure ``attached`` (a loaded adapter with steering) at each strength; see the module
    docstring. ``records`` are validation records in the training file's format."""
    started = time.perf_counter()
    chosen = get_task(task or "exact")
    prompts, golds = _items(records, tokenizer, chosen)
    model = attached.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    neutral = [
        torch.tensor([encode_prompt(tokenizer, text)], device=device) for text in neutral_prompts()
    ]
    with attached.steering_scale(0.0):
        reference = _log_probs(model, neutral)
    points: list[StrengthPoint] = []
    try:
        for strength in strengths:
            if points and time.perf_counter() - started > budget_seconds:
                break
            with attached.steering_scale(strength):
                texts = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
                kl = _kl(_log_probs(model, neutral), reference)
            right = sum(chosen.score(t, g) for t, g in zip(texts, golds, strict=True))
            points.append(StrengthPoint(strength=strength, score=right / max(1, len(golds)), kl=kl))
    finally:
        model.train(was_training)
    return StrengthReport(
        points=points,
        recommended_strength=recommend(points),
        task=chosen.name,
        items=len(golds),
        neutral_prompts=len(neutral),
        seconds=round(time.perf_counter() - started, 2),
        budget_seconds=round(budget_seconds, 2),
        complete=len(points) == len(strengths),
    )
