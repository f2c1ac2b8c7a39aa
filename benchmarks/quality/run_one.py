"""One run of the quality study: train a method with the engine, then score it, in one process.

Reads a :class:`RunConfig` (JSON) and writes a :class:`RunResult` (JSON), so the orchestrator
(``run.py``) never loads torch and every run's peak memory is its own:

    python benchmarks/quality/run_one.py CONFIG.json RESULT.json

Training goes through ``steering_core.engine.train.train`` exactly as a service job does (the
engine's
loop, schedule, clipping and saving); the saved artifact is then loaded onto a fresh base model
with ``steering_core.artifact.store.load_artifact``, as the service's inference path does, and
scored on the
validation and test items by one teacher-forced pass (:func:`score_teacher_forced`), checked
against real greedy generation on the first test items (:func:`generation_check`). Per-item
correctness is kept (as a string of 0/1) so that methods can be compared item by item (McNemar)
across seeds.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


class SourceRun(BaseModel):
    """A distillation run's source: trained first, in the same process, with the run's rules."""

    model_config = ConfigDict(extra="forbid")

    method: dict[str, Any]
    learning_rate: float


class RunConfig(BaseModel):
    """What one run trains and scores (written by run.py)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    model: str
    task: str
    method: dict[str, Any] | None  # None: score the base model, untrained
    learning_rate: float | None
    steering_learning_rate: float | None = None
    seed: int
    n_epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    train_file: str
    validation_file: str
    test_file: str
    work_dir: str
    max_new_tokens: int = 8
    eval_batch_size: int = 32
    generation_check_items: int = 64
    torch_threads: int | None = None
    # v2: training evaluated on the validation split, the best checkpoint kept
    protocol_version: int = 1
    eval_every_n_steps: int | None = None
    early_stopping_patience: int | None = None
    keep_best_validation: bool = False
    # distill: the source model, trained and scored in this run before the student
    source: SourceRun | None = None


IGNORE = -100


def _split_row(input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(tokens fed before the answer, the answer's tokens) of a row whose answer ends it."""
    first = next(i for i, label in enumerate(labels) if label != -100)
    if any(label == -100 for label in labels[first:]):
        raise SystemExit("a row's supervised tokens are not one span at its end")
    return list(input_ids[:first]), list(labels[first:])


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    """The longest shared prefix, leaving every sequence at least one token of its own."""
    shortest = min(map(len, sequences))
    n = 0
    while n < shortest - 1 and all(seq[n] == sequences[0][n] for seq in sequences):
        n += 1
    return sequences[0][:n]


class GenerationCheck(BaseModel):
    """Teacher-forced exact match against the task scorer on real greedy generations."""

    model_config = ConfigDict(extra="forbid")

    items: int
    generation_accuracy: float
    teacher_forced_accuracy: float
    agreement: float


class RunResult(BaseModel):
    """What one run measured; the orchestrator's unit of resumption."""

    model_config = ConfigDict(extra="forbid")

    key: str
    config: RunConfig
    trainable_parameters: int
    trainable_percent: float
    steps: int
    trained_tokens: int
    train_seconds: float
    tokens_per_second: float
    first_loss: float | None
    final_loss: float | None
    validation_loss: float
    peak_rss_train_mib: float
    validation_correct: str
    test_correct: str
    validation_accuracy: float
    test_accuracy: float
    eval_seconds: float
    generation_check: GenerationCheck
    torch_threads: int
    date: str
    # How the engine computed the training loss: transformers' ``model(**batch).loss`` (every
    # run before 2026-11-29 01:45 UTC) or steering_core.methods.loss (the same value and gradients).
    engine_loss: Literal["all positions", "labelled positions"] = "all positions"
    # The code that ran: the git commit of this file's checkout, and whether the core or the
    # study's code differed from it (a pinned study's worktree never does).
    code_commit: str | None = None
    code_dirty: bool | None = None
    training_status: str | None = None  # succeeded | early_stopped
    # site.layers "auto": every layer's score and the layers chosen (the engine's event)
    layer_selection: dict[str, Any] | None = None
    # distill: the source's own training and scores (the same fields as a run's)
    source: dict[str, Any] | None = None
    best_validation_step: int | None = None  # the kept checkpoint, when not the last step


def code_version(root: Path = HERE.parents[1]) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``: dirty when a tracked file of the core or
    of the study's code differs from the commit (results and reports do not count)."""
    import subprocess

    def git(*args: str) -> str | None:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return commit, bool(changed)


CODE_PATHS = ("steering_core", "benchmarks/quality/*.py", "pyproject.toml")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def run(config: RunConfig) -> RunResult:
    import torch

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    work = Path(config.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    commit, dirty = code_version()
    source = None
    if config.source is not None:
        source_config = config.model_copy(
            update={
                "method": config.source.method,
                "learning_rate": config.source.learning_rate,
                "steering_learning_rate": None,
                "source": None,
            }
        )
        source = _trained_and_scored(source_config, work / "source")
        source["generation_check"] = source["generation_check"].model_dump()
    result = _trained_and_scored(
        config, work / "student", work / "source" / "adapter" if source is not None else None
    )
    shutil.rmtree(work, ignore_errors=True)  # a full fine-tune's copy is 0.5 GB
    return RunResult(
        key=config.key,
        config=config,
        **result,
        torch_threads=torch.get_num_threads(),
        date=time.strftime("%Y-%m-%d"),
        engine_loss="labelled positions",
        code_commit=commit,
        code_dirty=dirty,
        source=source,
    )


def _trained_and_scored(
    config: RunConfig, work: Path, source_artifact: Path | None = None
) -> dict[str, Any]:
    """Train ``config``'s method into ``work`` (none: the base model), then score it."""
    from steering_core.artifact.store import load_artifact
    from steering_core.model.loading import load_model, load_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    trained: dict[str, Any] = {
        "trainable_parameters": 0,
        "trainable_percent": 0.0,
        "steps": 0,
        "trained_tokens": 0,
        "train_seconds": 0.0,
        "tokens_per_second": 0.0,
        "first_loss": None,
        "final_loss": None,
        "training_status": None,
        "best_validation_step": None,
        "layer_selection": None,
    }
    if config.method is not None:
        trained = _train(config, work, source_artifact)
    peak_train = _peak_rss_mib()

    started = time.perf_counter()
    model = load_model(config.model)
    tokenizer = load_tokenizer(config.model)
    if config.method is not None:
        model = load_artifact(model, work / "adapter").model
    scored = {
        split: score_teacher_forced(model, tokenizer, path, config)
        for split, path in (("validation", config.validation_file), ("test", config.test_file))
    }
    check = generation_check(model, tokenizer, config, scored["test"].correct)
    return {
        **trained,
        "validation_loss": scored["validation"].loss,
        "peak_rss_train_mib": round(peak_train, 1),
        "validation_correct": scored["validation"].bits,
        "test_correct": scored["test"].bits,
        "validation_accuracy": scored["validation"].accuracy,
        "test_accuracy": scored["test"].accuracy,
        "eval_seconds": round(time.perf_counter() - started, 2),
        "generation_check": check,
    }


def _train(config: RunConfig, work: Path, source_artifact: Path | None = None) -> dict[str, Any]:
    """Train through the engine's loop (as a service job does); the artifact lands in work."""
    from steering_core.engine.train import train
    from steering_core.spec.training_spec import TrainingSpec

    hyperparameters: dict[str, Any] = {
        "n_epochs": config.n_epochs,
        "batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "steering_learning_rate": config.steering_learning_rate,  # joint only; else None
        # the study scores every split itself; the service's report would only add time
        "strength_report": False,
    }
    spec = TrainingSpec(
        model=config.model,
        method=config.method,
        hyperparameters=hyperparameters,
        train_file=config.train_file,
        seed=config.seed,
        max_seq_length=config.max_seq_length,
        precision="fp32",
        # v2: validation loss every few steps, the best checkpoint kept (v1: neither)
        validation_file=config.validation_file if config.eval_every_n_steps else None,
        eval_every_n_steps=config.eval_every_n_steps,
        early_stopping_patience=config.early_stopping_patience,
        keep_best_validation=config.keep_best_validation,
        source_artifact=str(source_artifact) if source_artifact is not None else None,
    )
    collect = _Collect()
    result = train(spec, work, collect)
    start = next(e for e in collect.events if e.event == "start")
    selection = next((e for e in collect.events if e.event == "layer_selection"), None)
    return {
        "trainable_parameters": start.trainable_parameters,
        "trainable_percent": start.trainable_percent,
        "steps": result.step,
        "trained_tokens": result.trained_tokens,
        "train_seconds": round(result.train_seconds, 2),
        "tokens_per_second": round(result.trained_tokens / max(result.train_seconds, 1e-9), 1),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "training_status": result.status,
        "best_validation_step": result.restored_step,
        "layer_selection": (
            selection.model_dump(mode="json", exclude={"time"}) if selection is not None else None
        ),
    }


@dataclass
class Scored:
    """Teacher-forced scores of one split: per-item exact match and answer-token loss."""

    correct: list[bool]
    loss: float

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)

    @property
    def bits(self) -> str:
        return "".join("1" if ok else "0" for ok in self.correct)


def score_teacher_forced(model: Any, tokenizer: Any, path: str, config: RunConfig) -> Scored:
    """Greedy exact match of every item's answer, in one forward pass per batch.

    Greedy decoding reproduces the gold answer tokens exactly if and only if, fed the gold
    prefix, the model's argmax at every answer position is the gold token: so one teacher-forced
    pass decides what token-by-token greedy generation would (the final EOS is not required,
    as the task's scorer ignores what follows ``</answer>``). Rows are tokenized exactly as
    training tokenized them. The same logits give the answer-token loss.
    """
    import torch

    from steering_core.data.batches import pad_token_id_for, parse_jsonl, tokenize_dataset

    rows = tokenize_dataset(parse_jsonl(path), tokenizer, max_seq_length=config.max_seq_length)
    if rows.stats.n_truncated or rows.stats.n_dropped_all_masked:
        raise SystemExit(f"{path}: rows truncated or dropped at max_seq_length")
    items = [_split_row(rows[i].input_ids, rows[i].labels) for i in range(len(rows))]
    # Left padding sits between the shared prefix and each item's tokens, and a sliding-window
    # layer's mask counts cache positions, pads included: exact only if every row fits the
    # window (Gemma-3's is 512 tokens, the study's rows at most 120).
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    longest = max(len(ids) + len(answer) for ids, answer in items)
    if window is not None and longest > window:
        raise SystemExit(f"{path}: a {longest}-token row exceeds the {window}-token sliding window")
    # The instruction every prompt starts with is computed once per batch and shared (causal
    # attention: its states do not depend on what follows); only each item's own tokens run.
    prefix = _common_prefix([ids for ids, _ in items])
    pad, eos = pad_token_id_for(tokenizer), tokenizer.eos_token_id
    # Batches of similar total length pad least (ListOps answers all have one length, so there
    # this is the order by prompt length).
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
    correct = [False] * len(items)
    total_loss, total_tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), config.eval_batch_size):
            chunk = order[start : start + config.eval_batch_size]
            # Left-pad each item's own tokens so that every answer ends at the last position.
            # Fed: prompt + answer but its last token; each answer token is predicted from
            # the gold tokens before it. Answers of different lengths (arithmetic rationales)
            # are right-aligned: a shorter one's label row starts with ignored positions.
            tails = [(items[i][0] + items[i][1][:-1])[len(prefix) :] for i in chunk]
            answers = [items[i][1] for i in chunk]
            keep = max(map(len, answers))
            width = max(map(len, tails))
            ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails])
            tail_mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])
            # Steering limited to the prompt's first and last tokens (ReFT): where they fall in
            # the shared prefix's pass and in the items' pass (the answer is not prompt).
            own = [len(items[i][0]) - len(prefix) for i in chunk]  # prompt tokens in the tail
            prompt = torch.tensor(
                [
                    [0] * (width - len(t)) + [1] * n + [0] * (len(t) - n)
                    for n, t in zip(own, tails, strict=True)
                ]
            )
            at = intervention_masks(model, len(prefix), prompt)
            if prefix:
                with at(slice(0, 1), slice(0, len(prefix))):
                    cache = model(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(chunk))
                prefix_mask = torch.ones(len(chunk), len(prefix), dtype=torch.long)
                mask = torch.cat([prefix_mask, tail_mask], 1)
            else:  # no instruction shared by every prompt (arithmetic questions)
                cache, mask = None, tail_mask
            positions = len(prefix) + tail_mask.cumsum(-1) - 1
            with at(slice(None), slice(len(prefix), None)):
                logits = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions.clamp(min=len(prefix)),
                    cache=cache,
                    use_cache=cache is not None,
                    logits_to_keep=keep,
                ).logits
            labels = torch.tensor([[IGNORE] * (keep - len(a)) + a for a in answers])
            losses = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), labels, reduction="none", ignore_index=IGNORE
            )
            total_loss += float(losses.sum())
            total_tokens += int((labels != IGNORE).sum())
            # Every answer token must be the argmax, but a final EOS need not be: the task's
            # scorer ignores whatever follows the answer.
            required = labels != IGNORE
            for row, answer in enumerate(answers):
                if answer[-1] == eos:
                    required[row, -1] = False
            hits = (logits.argmax(-1) == labels) | ~required
            for row, index in enumerate(chunk):
                correct[index] = bool(hits[row].all())
    return Scored(correct=correct, loss=total_loss / max(1, total_tokens))


def intervention_masks(model: Any, prefix: int, tail_prompt: Any) -> Any:
    """For steering limited to prompt positions (ReFT's first and last tokens): a context
    ``at(rows, columns)`` that steers that part of the full rows' positions (the prefix's
    columns, then the items' columns); for steering at every position, a no-op.
    ``tail_prompt`` (batch x tail width, 1 on the items' own prompt tokens) follows the
    ``prefix`` shared prompt tokens."""
    import contextlib

    import torch

    from steering_core.steering.positions import select_positions
    from steering_core.steering.site_steering import find_steering

    steering = find_steering(model)
    if steering is None or steering.positions is None:
        return lambda _rows, _columns: contextlib.nullcontext()
    rows = tail_prompt.shape[0]
    full = torch.cat([torch.ones(rows, prefix, dtype=torch.bool), tail_prompt.bool()], 1)
    selected = select_positions(full, *steering.positions)
    if not (selected[:, :prefix] == selected[:1, :prefix]).all():
        raise SystemExit(
            "an item's prompt is too short: its steered positions reach into the shared prefix"
        )
    return lambda r, c: steering.intervention_mask(selected[r, c])


def generation_check(
    model: Any, tokenizer: Any, config: RunConfig, teacher_forced: list[bool]
) -> GenerationCheck:
    """Greedy-generate the first items of the test split and score them with the task's scorer."""
    from steering_core.evaluation.greedy import evaluate_task, read_records
    from steering_core.tasks.definitions import get_task

    n = min(config.generation_check_items, len(teacher_forced))
    result = evaluate_task(
        model,
        tokenizer,
        read_records(config.test_file, limit=n),
        get_task(config.task),
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
    )
    generated = [bool(ex["correct"]) for ex in result.examples]
    forced = teacher_forced[:n]
    return GenerationCheck(
        items=n,
        generation_accuracy=sum(generated) / n,
        teacher_forced_accuracy=sum(forced) / n,
        agreement=sum(a == b for a, b in zip(generated, forced, strict=True)) / n,
    )


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: run_one.py CONFIG.json RESULT.json")
    config = RunConfig.model_validate_json(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    result = run(config)
    partial = out.with_suffix(".partial")
    partial.write_text(result.model_dump_json(indent=1) + "\n")
    os.replace(partial, out)


if __name__ == "__main__":
    main()
