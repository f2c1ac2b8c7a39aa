"""``python -m steering_core.cli``: the training subprocess, and evaluate / generate.

    train     --spec spec.json --out DIR [--resume] [--progress json|human]
    verify    DIR
    evaluate  --model NAME [--adapter DIR] --data FILE --task NAME [--out metrics.json]
    generate  --model NAME [--adapter DIR] --prompt TEXT [--strength S] [--chat]

Exit codes (``steering_core.exit_codes``): 0 ok, 2 user error (bad spec, data, adapter), 3 out
of memory, 4 cancelled (SIGTERM/SIGINT, handled at the next step boundary), 5 paused (the file
named by ``--pause-file`` appeared: a checkpoint is saved at the next step boundary, and
``--resume`` continues from it), 1 internal error. A file, not a signal, asks for the pause:
torchrun forwards SIGTERM to its ranks but dies of other signals, and every rank sees the file.
In ``--progress json`` mode (the worker's), stdout carries one JSON event per line, an
``error`` event included; human mode draws a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steering_core.engine.events import ErrorEvent
from steering_core.errors import SteeringUserError
from steering_core.exit_codes import ExitCode


class JsonLinesReporter:
    def emit(self, event: Any) -> None:
        sys.stdout.write(event.model_dump_json() + "\n")
        sys.stdout.flush()


class HumanReporter:
    """A progress bar with loss and ETA on stderr; milestones as plain lines."""

    def __init__(self) -> None:
        self.bar: Any = None

    def emit(self, event: Any) -> None:
        from tqdm import tqdm

        kind = event.event
        if kind == "start":
            print(
                f"training {event.n_examples} examples for {event.total_steps} steps "
                f"({event.trainable_parameters:,} trainable parameters, "
                f"{event.trainable_percent:.3f}%) on {event.backend}",
                file=sys.stderr,
            )
            self.bar = tqdm(total=event.total_steps, initial=event.resumed_from_step, unit="step")
        elif kind == "step" and self.bar is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}", lr=f"{event.learning_rate:.2e}")
            self.bar.update(1)
        elif kind == "layer_selection":
            scores = ", ".join("-" if v is None else f"{v:.3g}" for v in event.scores)
            tqdm.write(f"layers chosen: {event.chosen} (scores by layer: {scores})")
        elif kind == "eval":
            tqdm.write(f"step {event.step}: validation loss {event.validation_loss:.4f}")
        elif kind == "checkpoint":
            tqdm.write(f"step {event.step}: checkpoint {event.path}")
        elif kind == "end":
            if self.bar is not None:
                self.bar.close()
            print(f"{event.status}: adapter at {event.artifact}", file=sys.stderr)


class StopFlag:
    """Set by SIGTERM/SIGINT; the trainer polls it at each step boundary."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


class PauseFile:
    """True once ``path`` exists; the trainer asks at each step boundary (one ``stat``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self) -> bool:
        return self.path is not None and self.path.exists()


def _load_spec(path: Path):
    from steering_core.spec.training_spec import TrainingSpec

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SteeringUserError(f"cannot read spec {path}: {exc.strerror}") from exc
    try:
        return TrainingSpec.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SteeringUserError(f"invalid spec {path}: {problems}") from exc


def cmd_train(args: argparse.Namespace) -> None:
    from steering_core.engine.runtime import die_with_parent, dist_env, redirect_rank_output

    if args.die_with_parent:
        die_with_parent()
    if args.rank_logs is not None:
        redirect_rank_output(args.rank_logs, dist_env().rank)
    spec = _load_spec(args.spec)
    if spec.deepspeed is not None:
        from steering_core.engine.runtime import ensure_single_process_env

        ensure_single_process_env()
    from steering_core.engine.train import train

    stop = StopFlag()
    stop.install()
    reporter = JsonLinesReporter() if args.progress == "json" else HumanReporter()
    train(
        spec,
        args.out,
        reporter,
        stop,
        should_pause=PauseFile(args.pause_file),
        resume=args.resume,
        cache_dir=args.cache_dir,
    )


def _load_for_inference(args: argparse.Namespace):
    from steering_core.artifact.store import load_artifact
    from steering_core.model.loading import load_model, load_tokenizer

    model = load_model(args.model, cache_dir=args.cache_dir)
    tokenizer = load_tokenizer(args.model, cache_dir=args.cache_dir)
    if args.adapter is None:
        return model, tokenizer, None
    attached = load_artifact(model, args.adapter)
    if getattr(args, "mode", None):
        attached.set_inference_mode(args.mode)
    if getattr(args, "strength", None) is not None:
        attached.set_steering_scale(args.strength)
    return attached.model, tokenizer, attached


def cmd_evaluate(args: argparse.Namespace) -> None:
    from steering_core.evaluation.greedy import evaluate_task, read_records
    from steering_core.tasks.definitions import get_task

    task = get_task(args.task, **({"pattern": args.pattern} if args.pattern else {}))
    records = read_records(args.data, limit=args.limit)
    model, tokenizer, _ = _load_for_inference(args)
    result = evaluate_task(
        model,
        tokenizer,
        records,
        task,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    summary = result.summary()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**summary, "examples": result.examples}, indent=1))
    print(json.dumps(summary))


def cmd_generate(args: argparse.Namespace) -> None:
    from steering_core.data.batches import encode_prompt
    from steering_core.evaluation.greedy import generate_greedy

    model, tokenizer, _ = _load_for_inference(args)
    if args.chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], add_generation_prompt=True, tokenize=True
        )
        prompt = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    else:
        prompt = encode_prompt(tokenizer, args.prompt)
    text = generate_greedy(model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens)[0]
    print(text)


def cmd_verify(args: argparse.Namespace) -> None:
    """Check an artifact without a base model: config, files, tensor names and shapes (from
    the safetensors headers alone, without torch; the worker runs the same check)."""
    from steering_core.artifact.check import check_artifact

    print(json.dumps(check_artifact(args.artifact).summary()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steering_core.cli", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="converted-model cache")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one spec into DIR/adapter")
    train.add_argument("--spec", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--progress", choices=["json", "human"], default="json")
    train.add_argument(
        "--rank-logs",
        type=Path,
        default=None,
        help="each rank's stderr to DIR/rank-R.stderr; ranks other than 0 also their stdout "
        "(their error event) to DIR/rank-R.stdout, so stdout carries rank 0's events alone",
    )
    train.add_argument(
        "--pause-file",
        type=Path,
        default=None,
        help="once this file exists, save a checkpoint at the next step boundary and exit 5",
    )
    train.add_argument(
        "--die-with-parent",
        action="store_true",
        help="the kernel kills this process when the process that started it (a launcher) dies",
    )
    train.set_defaults(func=cmd_train)

    verify = sub.add_parser("verify", help="check a saved artifact (no base model needed)")
    verify.add_argument("artifact", type=Path)
    verify.set_defaults(func=cmd_verify)

    for name, func in (("evaluate", cmd_evaluate), ("generate", cmd_generate)):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--adapter", type=Path, default=None)
        p.add_argument("--strength", type=float, default=None, help="steering strength")
        p.add_argument("--mode", choices=["all", "lora_only", "adapter_only"], default=None)
        p.add_argument("--max-new-tokens", type=int, default=32)
        p.set_defaults(func=func)
        if name == "evaluate":
            p.add_argument("--data", type=Path, required=True)
            p.add_argument("--task", required=True)
            p.add_argument("--pattern", default=None, help="regex task: one capture group")
            p.add_argument("--limit", type=int, default=None)
            p.add_argument("--batch-size", type=int, default=16)
            p.add_argument("--out", type=Path, default=None)
        else:
            p.add_argument("--prompt", required=True)
            p.add_argument("--chat", action="store_true", help="wrap in the chat template")
    return parser


def _fail(
    args: argparse.Namespace | None,
    code: ExitCode,
    kind: str,
    message: str,
    reason: str | None = None,
) -> int:
    if args is not None and getattr(args, "progress", None) == "json":
        event = ErrorEvent(error_type=kind, message=message, code=reason)
        sys.stdout.write(event.model_dump_json() + "\n")
        sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    return int(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SteeringUserError as exc:
        return _fail(args, ExitCode.USER_ERROR, "user_error", str(exc), exc.code)
    except MemoryError as exc:
        return _fail(args, ExitCode.OUT_OF_MEMORY, "out_of_memory", f"out of memory: {exc}")
    except Exception as exc:
        from steering_core.engine.train import TrainingCancelled, TrainingPaused

        if isinstance(exc, TrainingCancelled):
            return _fail(args, ExitCode.CANCELLED, "cancelled", str(exc))
        if isinstance(exc, TrainingPaused):  # not an error: the end event said "paused"
            print(str(exc), file=sys.stderr)
            return int(ExitCode.PAUSED)
        if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
            return _fail(args, ExitCode.OUT_OF_MEMORY, "out_of_memory", str(exc))
        traceback.print_exc()
        return _fail(
            args, ExitCode.INTERNAL_ERROR, "internal_error", f"{type(exc).__name__}: {exc}"
        )
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
