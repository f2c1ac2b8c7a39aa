"""The strength report on tiny-llama: the score and the off-task KL at each strength; strength 0
is the reference (the base model, or a joint adapter's LoRA half), with KL exactly 0; the
recommended strength; the time budget; chat records."""

from __future__ import annotations

from typing import Any

import pytest

from steering_core.data.batches import encode_prompt
from steering_core.evaluation.greedy import evaluate_task, generate_greedy
from steering_core.evaluation.strength_report import (
    STRENGTHS,
    StrengthPoint,
    neutral_prompts,
    recommend,
    strength_report,
)
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.steering.attach import attach_method
from steering_core.tasks.definitions import get_task
from tests.steering_core.helpers import randomize_adapters, randomize_lora

MODEL = "tiny-llama"
PROMPTS = [f"{a}+{b}=" for a in range(4) for b in range(4)]


def _records_answered_at_full_strength(attached: Any, tokenizer: Any) -> list[dict[str, str]]:
    """Items whose gold is what the adapter generates at strength 1."""
    ids = [encode_prompt(tokenizer, prompt) for prompt in PROMPTS]
    with attached.steering_scale(1.0):
        answers = generate_greedy(attached.model, tokenizer, ids, max_new_tokens=6)
    return [
        {"prompt": prompt, "completion": answer, "answer": answer}
        for prompt, answer in zip(PROMPTS, answers, strict=True)
    ]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(MODEL)


def test_strength_zero_is_the_base_model_and_the_curve_reaches_its_training(
    tokenizer: Any,
) -> None:
    attached = attach_method(load_model(MODEL), {"type": "post_block"})
    randomize_adapters(attached, seed=1, scale=0.5)
    records = _records_answered_at_full_strength(attached, tokenizer)
    report = strength_report(attached, tokenizer, records, budget_seconds=600, max_new_tokens=6)

    assert [p.strength for p in report.points] == list(STRENGTHS) and report.complete
    by_strength = {p.strength: p for p in report.points}
    base = evaluate_task(load_model(MODEL), tokenizer, records, get_task("exact"), max_new_tokens=6)
    assert by_strength[0.0].score == base.correct / base.n  # strength 0: the base model's score
    assert by_strength[0.0].kl == 0.0
    assert by_strength[1.0].score == 1.0  # the gold is what strength 1 answers
    assert 0 < by_strength[0.5].kl < by_strength[1.0].kl < by_strength[1.5].kl  # off-task drift
    assert report.recommended_strength == recommend(report.points)
    assert report.recommended_strength is not None and report.recommended_strength <= 1.0
    assert (report.items, report.neutral_prompts, report.task) == (
        16,
        len(neutral_prompts()),
        "exact",
    )


def test_a_joint_adapters_reference_keeps_its_lora_half(tokenizer: Any) -> None:
    attached = attach_method(load_model(MODEL), {"type": "joint"})
    randomize_adapters(attached, seed=2, scale=0.5)
    randomize_lora(attached, 3)
    records = _records_answered_at_full_strength(attached, tokenizer)
    report = strength_report(
        attached, tokenizer, records, budget_seconds=600, strengths=(0.0, 1.0), max_new_tokens=6
    )
    zero = report.points[0]
    assert zero.kl == 0.0
    attached.set_inference_mode("lora_only")
    lora_only = evaluate_task(
        attached.model, tokenizer, records, get_task("exact"), max_new_tokens=6
    )
    attached.set_inference_mode("all")
    assert zero.score == lora_only.correct / lora_only.n


def test_the_budget_stops_between_strengths_and_says_so(tokenizer: Any) -> None:
    attached = attach_method(load_model(MODEL), {"type": "post_block"})
    randomize_adapters(attached, seed=4, scale=0.5)
    records = [{"prompt": p, "completion": "x"} for p in PROMPTS]
    report = strength_report(attached, tokenizer, records, budget_seconds=0.0, max_new_tokens=2)
    assert len(report.points) == 1 and not report.complete  # at least one strength is measured


def test_chat_records_are_scored_on_their_last_assistant_message(tokenizer: Any) -> None:
    attached = attach_method(load_model(MODEL), {"type": "post_block"})
    randomize_adapters(attached, seed=5, scale=0.5)
    records = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "4"}]}
        for p in PROMPTS[:4]
    ]
    report = strength_report(
        attached, tokenizer, records, budget_seconds=600, strengths=(0.0, 1.0), max_new_tokens=2
    )
    assert report.items == 4 and [p.strength for p in report.points] == [0.0, 1.0]


def test_recommend_takes_the_smallest_strength_near_the_best() -> None:
    def points(scores: list[float]) -> list[StrengthPoint]:
        return [
            StrengthPoint(strength=s, score=v, kl=0.0)
            for s, v in zip(STRENGTHS, scores, strict=True)
        ]

    assert recommend(points([0.1, 0.5, 0.8, 0.995, 1.0, 0.9, 0.7])) == 0.75  # 0.995 >= 0.99
    assert recommend(points([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])) == 0.0
    assert recommend([]) is None
