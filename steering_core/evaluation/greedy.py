"""Generation-based evaluation: batched greedy decoding, task scorers, accuracy.

Prompts are encoded exactly as training encoded them (``steering_core.data.batches``), left-padded,
and
decoded greedily; only the new tokens are decoded and handed to the task's scorer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steering_core.data.batches import encode_prompt, pad_token_id_for
from steering_core.errors import SteeringUserError
from steering_core.tasks.definitions import Task


@dataclass
class EvaluationResult:
    task: str
    n: int
    correct: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "n": self.n, "correct": self.correct, "accuracy": self.accuracy}


def read_records(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SteeringUserError(f"{path}: line {number}: invalid JSON: {exc.msg}") from exc
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise SteeringUserError(f"{path} holds no records")
    return records


@torch.no_grad()
def generate_greedy(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions of already-encoded prompts, left-padded, new tokens only."""
    pad = pad_token_id_for(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in generated[:, width:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    model.train(was_training)
    return outputs


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Any,
    records: list[dict[str, Any]],
    task: Task,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> EvaluationResult:
    """Accuracy of greedy generations on ``records`` under ``task``'s template and scorer."""
    prompts, golds = [], []
    for record in records:
        prompt, _ = task.format(record)
        prompts.append(encode_prompt(tokenizer, prompt))
        golds.append(task.gold(record))
    texts = generate_greedy(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    result = EvaluationResult(task=task.name, n=len(records), correct=0)
    for text, gold in zip(texts, golds, strict=True):
        ok = task.score(text, gold)
        result.correct += ok
        result.examples.append(
            {"generated": text, "gold": gold, "extracted": task.extract(text), "correct": ok}
        )
    return result
