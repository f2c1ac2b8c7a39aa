"""``dpo``, torch side: preference pairs in, the DPO loss against the adapter-off reference out.

For a prompt x with preferred answer y_w and non-preferred y_l, the policy pi is the model with
the trained adapter and the reference pi_ref the same model with it switched off (for ``joint``,
its LoRA half too). With ``beta`` from the hyperparameters, the loss of a pair is

    -log sigmoid(beta * ((log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))))

where a log-probability is the sum over the answer's tokens (its end-of-turn token included),
and a batch's loss is the mean over its pairs. A batch holds the preferred rows first, then the
non-preferred ones in the same order (``2 * pairs`` rows): one forward pass scores both. The
reference pass runs without gradients, through the same forward (the same DeepSpeed engine,
the same precision), with the trained parts off; at step 0 the adapter is zero and policy and
reference agree, so the first loss is log 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steering_core.data.batches import (
    IGNORE_INDEX,
    TokenizationStats,
    TokenizedRow,
    collate,
    pad_token_id_for,
    tokenize_dataset,
)
from steering_core.data.formats import (
    ChatMessage,
    DataProblem,
    DataValidationError,
    ParsedDataset,
    PreferenceExample,
)
from steering_core.methods.base import (
    AttachedMethod,
    LossContext,
    LossFunction,
    MethodHandler,
    get_method_handler,
)
from steering_core.methods.dpo.config import DpoMethod
from steering_core.methods.loss import predicting_positions
from steering_core.spec.training_spec import DEFAULT_DPO_BETA

_UNTRUNCATED = 1 << 30  # tokenized whole first; pairs are cut to max_seq_length together


@dataclass(frozen=True)
class PreferenceRow:
    """One preference pair, both answers tokenized after the same prompt."""

    preferred: TokenizedRow
    non_preferred: TokenizedRow
    line: int | None

    @property
    def input_ids(self) -> list[int]:
        """Every token the pair puts through the model (its length sizes batches and quotas)."""
        return [*self.preferred.input_ids, *self.non_preferred.input_ids]


@dataclass(frozen=True)
class PreferenceDataset:
    format: str
    rows: list[PreferenceRow]
    stats: TokenizationStats
    pad_token_id: int
    max_seq_length: int

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PreferenceRow:
        return self.rows[index]


def _side(dataset: ParsedDataset, pick: Callable[[PreferenceExample], ChatMessage]) -> Any:
    examples = [[*ex.prompt, pick(ex)] for ex in dataset.examples]  # type: ignore[union-attr]
    return ParsedDataset("chat", examples, list(dataset.line_numbers))


def _first_label(row: TokenizedRow) -> int:
    return next(i for i, label in enumerate(row.labels) if label != IGNORE_INDEX)


def _cut(row: TokenizedRow, max_seq_length: int) -> TokenizedRow:
    return TokenizedRow(row.input_ids[:max_seq_length], row.labels[:max_seq_length], row.line)


def tokenize_preferences(
    dataset: ParsedDataset, tokenizer: Any, max_seq_length: int
) -> PreferenceDataset:
    """Each pair as two chat rows (the prompt's messages, then one answer, supervised alone),
    cut to ``max_seq_length`` together; a pair where either answer would lose every token is
    dropped (counted in ``stats.n_dropped_all_masked``)."""
    sides = [
        {
            row.line: row
            for row in tokenize_dataset(
                _side(dataset, pick), tokenizer, max_seq_length=_UNTRUNCATED
            )
        }
        for pick in (lambda ex: ex.preferred, lambda ex: ex.non_preferred)
    ]
    rows: list[PreferenceRow] = []
    dropped = truncated = 0
    for line in dataset.line_numbers:
        preferred, non_preferred = sides[0].get(line), sides[1].get(line)
        pair = (preferred, non_preferred)
        if any(
            r is None
            or min(i for i, x in enumerate(r.labels) if x != IGNORE_INDEX) >= max_seq_length
            for r in pair
        ):
            dropped += 1
            continue
        assert preferred is not None and non_preferred is not None
        if max(len(preferred.input_ids), len(non_preferred.input_ids)) > max_seq_length:
            truncated += 1
        rows.append(
            PreferenceRow(
                _cut(preferred, max_seq_length), _cut(non_preferred, max_seq_length), line
            )
        )
    if not rows:
        raise DataValidationError(
            [
                DataProblem(
                    None,
                    None,
                    f"all {dropped} pairs exceed max_seq_length={max_seq_length}: no answer token "
                    "of both answers fits",
                )
            ]
        )
    both = [r for pair in rows for r in (pair.preferred, pair.non_preferred)]
    stats = TokenizationStats(
        n_rows=len(rows),
        n_dropped_all_masked=dropped,
        n_truncated=truncated,
        n_tokens=sum(len(r.input_ids) for r in both),
        n_supervised_tokens=sum(sum(x != IGNORE_INDEX for x in r.labels) for r in both),
    )
    return PreferenceDataset("preference", rows, stats, pad_token_id_for(tokenizer), max_seq_length)


def collate_pairs(rows: Sequence[PreferenceRow], pad_id: int) -> dict[str, torch.Tensor]:
    """The preferred rows, then the non-preferred ones, right-padded to the longest."""
    return collate([r.preferred for r in rows] + [r.non_preferred for r in rows], pad_id)


def answer_log_probs(
    forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Per row, the sum of the log-probabilities of its labelled tokens (fp32), computing the
    logits only where a label needs them."""
    labels = batch["labels"]
    keep = predicting_positions(labels)
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    logits = forward(**inputs, logits_to_keep=keep).logits  # (rows, len(keep), vocab)
    targets = labels[:, keep + 1]
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return -nll.view(targets.shape).sum(-1)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """The mean DPO loss over pairs from per-row log-probabilities (preferred rows first)."""
    pairs = policy.shape[0] // 2
    margin = (policy[:pairs] - reference[:pairs]) - (policy[pairs:] - reference[pairs:])
    return -F.logsigmoid(beta * margin).mean()


class DpoObjective:
    """DPO's loss on a batch through ``forward`` (the model, or a DeepSpeed engine around it),
    the reference being ``attached`` with its trained parts off, or ``reference_model``."""

    def __init__(
        self, attached: AttachedMethod, beta: float, reference_model: nn.Module | None = None
    ):
        self.attached, self.beta, self.reference_model = attached, beta, reference_model

    def reference_log_probs(
        self, forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        with torch.no_grad():
            if self.reference_model is not None:
                return answer_log_probs(self.reference_model, batch)
            with self.attached.trained_parts_disabled():
                return answer_log_probs(forward, batch)

    def __call__(
        self, forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        reference = self.reference_log_probs(forward, batch)
        return dpo_loss(answer_log_probs(forward, batch), reference, self.beta)


class DpoHandler(MethodHandler):
    method_type = "dpo"

    def attach(self, model: nn.Module, config: DpoMethod) -> AttachedMethod:
        """The adapter ``trains`` names, attached as its own method: what is saved is an
        ordinary post_block or joint adapter."""
        return get_method_handler(config.trains.type).attach(model, config.trains)

    def load(self, model: nn.Module, config: DpoMethod, artifact_dir: Path) -> AttachedMethod:
        return get_method_handler(config.trains.type).load(model, config.trains, artifact_dir)

    def tokenize(self, dataset: ParsedDataset, tokenizer: Any, max_seq_length: int) -> Any:
        return tokenize_preferences(dataset, tokenizer, max_seq_length)

    def collate(self, rows: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(rows, pad_id)

    @staticmethod
    def supervised_tokens(batch: Mapping[str, torch.Tensor]) -> int:
        """The pairs: the loss is a mean over pairs, so they weight it across micro-batches."""
        return int(batch["input_ids"].shape[0]) // 2

    def loss(self, forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Before an adapter is attached the reference is the model itself: log 2 per pair,
        with the gradient of DPO at the reference point."""
        policy = answer_log_probs(forward, batch)
        return dpo_loss(policy, policy.detach(), DEFAULT_DPO_BETA)

    def training_loss(self, attached: AttachedMethod, context: LossContext) -> LossFunction:
        separate = isinstance(context.method, DpoMethod) and (
            context.method.reference == "separate_copy"
        )
        reference_model = context.load_base_model() if separate else None
        return DpoObjective(attached, float(context.hyperparameters.beta), reference_model)

    def completion_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A pair's prompt with its preferred answer as the completion to reproduce."""
        return [
            {"messages": [*r["input"]["messages"], *r["preferred_output"][:1]]} for r in records
        ]
