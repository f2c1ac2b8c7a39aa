"""run_one's batched teacher-forced scoring equals a plain per-item forward pass.

The batched pass shares the prompts' common prefix through a KV cache, left-pads, right-aligns
answers of different lengths and keeps only the answer logits; the reference below does none
of that. Some items are made right on purpose (their completion is the model's own greedy
continuation), so that both outcomes are compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_one import RunConfig, score_teacher_forced

from steering_core.data.batches import parse_jsonl, tokenize_dataset
from steering_core.model.loading import (
    build_tiny_tokenizer,
    load_model,
    load_tokenizer,
    tiny_config,
)

MODEL = "tiny-llama"


def _model(family: str) -> torch.nn.Module:
    """A tiny model of the family; Gemma-3's sliding window widened past the items' lengths
    (the study's rows fit Gemma-3-270M's 512-token window; longer ones are refused, below)."""
    if family == "llama":
        return load_model(MODEL)
    from transformers import AutoModelForCausalLM

    config = tiny_config(family)
    config.sliding_window = 4096
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _config(tmp_path: Path, **overrides: object) -> RunConfig:
    fields: dict[str, object] = {
        "key": "k",
        "model": MODEL,
        "task": "arithmetic",
        "method": None,
        "learning_rate": None,
        "seed": 0,
        "n_epochs": 1,
        "batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 512,
        "train_file": "-",
        "validation_file": "-",
        "test_file": "-",
        "work_dir": str(tmp_path),
        "eval_batch_size": 4,
    }
    fields.update(overrides)
    return RunConfig.model_validate(fields)


def _reference(
    model, tokenizer, path: Path, config: RunConfig, steering=None
) -> tuple[list[bool], float]:
    """One plain forward pass per item; with ``steering`` limited to prompt positions, each
    pass steered at its own prompt's ends."""
    from contextlib import nullcontext

    from steering_core.steering.positions import prompt_tokens, select_positions

    rows = tokenize_dataset(parse_jsonl(path), tokenizer, max_seq_length=config.max_seq_length)
    correct, loss_sum, tokens = [], 0.0, 0
    with torch.no_grad():
        for i in range(len(rows)):
            ids = torch.tensor([rows[i].input_ids])
            labels = torch.tensor(rows[i].labels)
            at = nullcontext()
            if steering is not None:
                prompt = prompt_tokens(torch.ones_like(ids), labels[None])
                at = steering.intervention_mask(select_positions(prompt, *steering.positions))
            with at:
                logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[1:]
            keep = target != -100
            loss_sum += float(
                torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            )
            tokens += int(keep.sum())
            hits = logits[keep].argmax(-1) == target[keep]
            if int(target[keep][-1]) == tokenizer.eos_token_id:
                hits = hits[:-1]
            correct.append(bool(hits.all()))
    return correct, loss_sum / tokens


def _right_answers(model, tokenizer, head: str, want: int) -> list[dict[str, str]]:
    """Items the model gets right: its own greedy continuation, where that is printable text
    that tokenizes back to the same tokens (the tiny model's byte tokenizer often emits bytes
    that are not UTF-8). Lengths 1-4, so that one batch holds answers of different lengths."""
    found = []
    for k in range(400):
        prompt = f"{head}Item {k}: {k * 37 % 101} apples.\n"
        ids = tokenizer(prompt)["input_ids"]
        length = 1 + k % 4
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=length,
                do_sample=False,
                pad_token_id=0,
            )
        new = out[0, len(ids) :].tolist()
        text = tokenizer.decode(new)
        whole = len(new) == length and "\ufffd" not in text  # no partial UTF-8 sequence
        if whole and tokenizer(prompt + text)["input_ids"] == ids + new:
            found.append({"prompt": prompt, "completion": text})
        if len(found) == want:
            return found
    raise AssertionError(f"only {len(found)} printable greedy continuations found")


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("shared_instruction", [True, False], ids=["listops-like", "arithmetic"])
def test_batched_scoring_matches_a_plain_forward_pass(
    tmp_path: Path, shared_instruction: bool, family: str
) -> None:
    model, tokenizer = _model(family), build_tiny_tokenizer()
    torch.manual_seed(0)
    head = "Evaluate the expression.\nExpression:\n" if shared_instruction else ""
    right = _right_answers(model, tokenizer, head, want=5)
    wrong = [
        {"prompt": f"{head}Question {i}?\n", "completion": "ab" * (1 + i % 3) + f" {i * 7}"}
        for i in range(6)
    ]
    records = [r for pair in zip(right, wrong, strict=False) for r in pair] + wrong[5:]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = _config(tmp_path)

    scored = score_teacher_forced(model, tokenizer, str(path), config)
    expected, expected_loss = _reference(model, tokenizer, path, config)

    assert expected == [True, False] * 5 + [False]  # the reference sees what was built
    assert scored.correct == expected
    assert scored.loss == pytest.approx(expected_loss, rel=1e-4)


def test_rows_longer_than_a_sliding_window_are_refused(tmp_path: Path) -> None:
    """Left padding between the cached prefix and the items would shift a sliding window."""
    model, tokenizer = load_model("tiny-gemma3_text"), load_tokenizer("tiny-gemma3_text")
    assert model.config.sliding_window == 16
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"prompt": "Question: what is 12 + 30?\n", "completion": "42"}))
    with pytest.raises(SystemExit, match="exceeds the 16-token sliding window"):
        score_teacher_forced(model, tokenizer, str(path), _config(tmp_path))


@pytest.mark.parametrize("shared_instruction", [True, False], ids=["listops-like", "arithmetic"])
def test_batched_scoring_steers_reft_at_the_prompt_ends_only(
    tmp_path: Path, shared_instruction: bool
) -> None:
    """ReFT as pyreft runs it, scored in the batched pass (prefix cache, left padding): the
    same verdicts and loss as one plain pass per item steered at its own prompt's ends."""
    from steering_core.steering.attach import attach_method

    torch.manual_seed(0)
    attached = attach_method(load_model(MODEL), {"type": "reft", "rank": 4, "positions": "f2+l3"})
    model, tokenizer = attached.model.eval(), build_tiny_tokenizer()
    head = "Evaluate the expression.\nExpression:\n" if shared_instruction else ""
    right = _right_answers(model, tokenizer, head, want=4)
    wrong = [{"prompt": f"{head}Question {i}?\n", "completion": f"no {i}"} for i in range(4)]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in right + wrong))
    config = _config(tmp_path)

    scored = score_teacher_forced(model, tokenizer, str(path), config)
    expected, expected_loss = _reference(model, tokenizer, path, config, attached.steering)

    assert expected[:4] == [True] * 4  # greedy (cached) generation agrees with the mask rule
    assert scored.correct == expected
    assert scored.loss == pytest.approx(expected_loss, rel=1e-4)
