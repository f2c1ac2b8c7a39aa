"""Peak host memory of a two-model DPO by trl, beside the service's two ``dpo`` memory runs.

    python benchmarks/dpo/trl_memory.py [--repeats 1]

trl (Hugging Face's library, not a dependency of the project: ``pip install trl``) trains 10 DPO
steps with its ``DPOTrainer`` on ``data/train.jsonl``, each line turned into trl's
conversational preference format (``prompt``: the input messages; ``chosen`` / ``rejected``:
the preferred / non-preferred assistant message). The policy is ``smollm2-135m-instruct`` with
the project's post-block adapter attached (``attach_method(model, {"type": "post_block"})``,
its ``.model``: the Hugging Face model, adapters trainable, base frozen); the reference is a
second ``load_model("smollm2-135m-instruct")`` passed as ``ref_model`` (two models, trl's usual
way). The hyperparameters are those ``results.json`` records for its memory runs: batch size 8
pairs, beta 0.1, its learning rate, linear schedule with its warmup ratio, weight decay and
gradient clipping, seed 7; fp32 on the CPU, ``max_steps`` 10, no evaluation, no saving, torch
threads 1, no gradient checkpointing (trl's default turns it on; the service does not use it).

Each measurement runs in a fresh Python process (this script re-run with ``--child``), so its
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is that run's own peak RSS, imports and model
loading included, as the service's ``metrics.peak_host_memory_mib`` is for its training
subprocess. The service's figures are read from ``results.json``, not measured again.

Writes ``trl_memory.json`` and ``trl_memory.md`` beside this script. The machine's other work is
not paused: wall times are as measured beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODEL = "smollm2-135m-instruct"
TRAIN = HERE / "data" / "train.jsonl"
MAX_STEPS = 10
SEED = 7
TORCH_THREADS = 1
MAX_LENGTH = 512  # the service's default max_seq_length; every pair here is far shorter
RESULT_TAG = "TRL_MEMORY_RESULT "


def rss_mib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def current_rss_mib() -> float | None:
    """This process's resident memory now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


def service_setting() -> dict[str, Any]:
    """The hyperparameters and peak RSS of the service's two memory runs (``results.json``)."""
    results = json.loads((HERE / "results.json").read_text())
    memory = results["memory"]
    runs = memory["runs"]
    hp = runs["adapters_off"]["hyperparameters"]
    return {
        "date": results["date"],
        "max_steps": memory["max_steps"],
        "hyperparameters": hp,
        "runs": {
            name: {
                "peak_host_memory_mib": run["peak_host_memory_mib"],
                "train_seconds": run["train_seconds"],
                "final_loss": run["metrics"]["final_loss"],
                "trained_tokens": run["trained_tokens"],
            }
            for name, run in runs.items()
        },
    }


def preference_rows(path: Path) -> list[dict[str, Any]]:
    """The service's preference lines in trl's conversational preference format."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        rows.append(
            {
                "prompt": record["input"]["messages"],
                "chosen": record["preferred_output"][:1],
                "rejected": record["non_preferred_output"][:1],
            }
        )
    return rows


def child() -> dict[str, Any]:
    """One measurement: 10 trl DPO steps, two models; this process's peak RSS at each stage."""
    stages: dict[str, float] = {"start": rss_mib()}
    import torch

    torch.set_num_threads(TORCH_THREADS)
    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    sys.path.insert(0, str(ROOT))
    from steering_core.model.loading import load_model, load_tokenizer
    from steering_core.steering.attach import attach_method

    stages["imports"] = rss_mib()
    hp = service_setting()["hyperparameters"]
    torch.manual_seed(SEED)
    policy_base = load_model(MODEL)
    attached = attach_method(policy_base, {"type": "post_block"})
    policy = attached.model
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in policy.parameters() if not p.requires_grad)
    stages["policy_loaded"] = rss_mib()
    reference = load_model(MODEL)
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    stages["reference_loaded"] = rss_mib()
    tokenizer = load_tokenizer(MODEL)
    train = datasets.Dataset.from_list(preference_rows(TRAIN))

    per_step: list[dict[str, Any]] = []

    class StepMemory(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            per_step.append(
                {"step": state.global_step, "peak_mib": rss_mib(), "now_mib": current_rss_mib()}
            )

    with tempfile.TemporaryDirectory(prefix="trl-dpo-") as out:
        config = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=hp["batch_size"],
            gradient_accumulation_steps=hp["gradient_accumulation_steps"],
            learning_rate=hp["learning_rate"],
            beta=hp["beta"],
            lr_scheduler_type=hp["lr_scheduler"],
            warmup_steps=hp["warmup_ratio"],  # a float below 1: a ratio of the steps
            weight_decay=hp["weight_decay"],
            max_grad_norm=hp["max_grad_norm"],
            max_steps=MAX_STEPS,
            num_train_epochs=hp["n_epochs"],
            seed=SEED,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            max_length=MAX_LENGTH,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            logging_steps=1,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[StepMemory()],
        )
        stages["trainer_built"] = rss_mib()
        reference_is_ours = trainer.ref_model is reference
        started = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - started
    stages["trained"] = rss_mib()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    return {
        "peak_host_memory_mib": stages["trained"],
        "peak_rss_by_stage_mib": stages,
        "rss_by_step_mib": per_step,
        "train_wall_seconds": round(wall, 3),
        "trl_train_runtime_seconds": output.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "losses": losses,
        "num_tokens": tokens[-1] if tokens else None,
        "policy": {
            "class": type(policy).__name__,
            "trainable_parameters": trainable,
            "frozen_parameters": frozen,
        },
        "reference": "trl kept the ref_model passed in and created no reference of its own"
        if reference_is_ours
        else f"trl created its own reference: {type(trainer.ref_model).__name__}",
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "python": platform.python_version(),
        },
    }


def run_child() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return {"ok": True, **json.loads(line.removeprefix(RESULT_TAG))}
    return {"ok": False, "returncode": done.returncode, "error": done.stderr[-4000:]}


PROJECT_MODULES = [  # what the service's training subprocess (steering_core.cli train) loads
    "torch",
    "transformers",
    "steering_core.cli",
    "steering_core.engine.train",
    "steering_core.methods.dpo.handler",
]
IMPORT_SETS = {
    "project": PROJECT_MODULES,
    "project + trl": [*PROJECT_MODULES, "datasets", "trl", "trl.trainer.dpo_trainer"],
}


def import_footprint() -> dict[str, float]:
    """Peak RSS of a fresh process that only imports each set of modules, MiB."""
    code = (
        "import importlib, resource, sys\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
        "print(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1))\n"
    )
    return {
        label: float(
            subprocess.run(
                [sys.executable, "-c", code, *modules],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout.split()[-1]
        )
        for label, modules in IMPORT_SETS.items()
    }


def machine() -> dict[str, Any]:
    import os

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def write_markdown(result: dict[str, Any]) -> str:
    service = result["service"]
    runs = result["trl_runs"]
    ok = [r for r in runs if r["ok"]]
    versions = ok[0]["versions"] if ok else {}
    hp = service["hyperparameters"]
    lines = [
        "# Peak host memory of DPO: the service beside trl's two-model trainer",
        "",
        f"`{result['command']}` on {result['date']}; {result['machine']['platform']}, "
        f"{result['machine']['cpu_count']} CPUs, torch threads {TORCH_THREADS}. "
        + (
            f"trl {versions['trl']}, transformers {versions['transformers']}, "
            f"torch {versions['torch']}, datasets {versions['datasets']}. "
            if versions
            else ""
        )
        + "The machine's other work went on during the runs (wall times are as measured "
        "beside it).",
        "",
        "## What was run",
        "",
        f"trl's `DPOTrainer`, {MAX_STEPS} steps, on `data/train.jsonl` (each line as trl's "
        "conversational preference format: `prompt` the input messages, `chosen` / `rejected` "
        f"the preferred / non-preferred reply). Model `{MODEL}`, fp32, CPU. Policy: the model "
        "with the project's post-block adapter attached (`attach_method(model, "
        '{"type": "post_block"})`, its `.model`: adapters trainable, base frozen). Reference: a '
        'second `load_model("smollm2-135m-instruct")` passed as `ref_model`'
        + (f"; {ok[0]['reference']}" if ok else "")
        + ". The hyperparameters of the service's memory runs (`results.json`): batch size "
        f"{hp['batch_size']} pairs, beta {hp['beta']}, learning rate {hp['learning_rate']}, "
        f"{hp['lr_scheduler']} schedule, warmup ratio {hp['warmup_ratio']}, weight decay "
        f"{hp['weight_decay']}, gradient clipping {hp['max_grad_norm']}, seed {SEED}; no "
        "evaluation, no saving, no gradient checkpointing. Each run is a fresh process; its "
        "peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end.",
        "",
        "## Peak host memory, 10 steps",
        "",
        "| trainer | reference | peak host memory (MiB) | 10 steps (s) | final loss |",
        "|---|---|---|---|---|",
    ]
    names = {
        "adapters_off": "the model itself, adapter switched off",
        "separate_copy": "a second copy of the base model",
    }
    for name, run in service["runs"].items():
        lines.append(
            f"| service `dpo` (`results.json`, {service['date']}) | `{name}`: {names[name]} | "
            f"{run['peak_host_memory_mib']} | {run['train_seconds']} | {run['final_loss']:.4f} |"
        )
    for i, run in enumerate(runs, 1):
        if run["ok"]:
            lines.append(
                f"| trl `DPOTrainer` (run {i}) | `ref_model`: a second `load_model` | "
                f"{run['peak_host_memory_mib']} | {run['train_wall_seconds']} | "
                f"{run['losses'][-1]:.4f} |"
            )
        else:
            lines.append(
                f"| trl `DPOTrainer` (run {i}) | `ref_model`: a second `load_model` | "
                f"failed: {run['error'].strip().splitlines()[-1]} | - | - |"
            )
    lines += [""]
    if ok:
        peaks = [r["peak_host_memory_mib"] for r in ok]
        low, high = min(peaks), max(peaks)
        lines += [
            f"trl's two-model run peaks at {low}-{high} MiB: "
            + ", ".join(
                f"{low - run['peak_host_memory_mib']:+.1f} to "
                f"{high - run['peak_host_memory_mib']:+.1f} MiB against `{name}`"
                for name, run in service["runs"].items()
            )
            + ".",
            "",
        ]
        first = ok[0]
        stages = first["peak_rss_by_stage_mib"]
        now = [s["now_mib"] for s in first["rss_by_step_mib"]]
        lines += [
            "Peak RSS of trl's run 1 as it went (MiB): "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stages.items())
            + ".",
            "",
            "Peak RSS of trl's run 1 after each step (MiB): "
            + ", ".join(str(s["peak_mib"]) for s in first["rss_by_step_mib"])
            + "; resident at each step's end: "
            + ", ".join(str(s["now_mib"]) for s in first["rss_by_step_mib"])
            + f". The peak lies {first['peak_host_memory_mib'] - max(now):.0f} MiB above the most "
            "that was resident at any step's end: memory taken and given back within a step.",
            "",
            "Loss per step, trl run 1: " + ", ".join(f"{x:.4f}" for x in first["losses"]) + ".",
            "",
            f"Tokens through the model in the 10 steps: trl {first['num_tokens']:.0f}, the service "
            f"{service['runs']['adapters_off']['trained_tokens']}.",
            "",
        ]
    imports = result["import_footprint_mib"]
    lines += [
        "Imports alone (a fresh process that only imports, peak RSS, MiB): "
        + ", ".join(f"{k} ({', '.join(IMPORT_SETS[k])}) {v}" for k, v in imports.items())
        + f"; trl's libraries add {imports['project + trl'] - imports['project']:.1f} MiB "
        "before any model is loaded.",
        "",
    ]
    lines += ["## Caveats", ""] + [f"- {c}" for c in result["caveats"]] + [""]
    return "\n".join(lines)


CAVEATS = [
    "Same model, data file, batch size, step count, precision, learning rate and beta; not the "
    "same process around them. The service's figure is its training subprocess (the project's "
    "own trainer, its tokenization and collation, one validation pass over the 48 validation "
    "pairs at step 10); trl's is a process that also imports trl, `datasets` (with pyarrow and "
    "pandas) and accelerate, holds the training set as an Arrow table, and tokenizes it with "
    "its own `DataCollatorForPreference`. Part of any difference is those libraries, not the "
    "reference model.",
    "trl patches a fused LM head onto the policy and the reference (per-token "
    "log-probabilities computed in tiles of up to 4096 positions by 32768 vocabulary entries, "
    "never the whole logits). Without Triton (on the CPU) it scores every position of a row, "
    "prompt and padding included, and masks afterwards; the project computes logits only at "
    "the positions that predict an answer token (`logits_to_keep`).",
    "trl's defaults that would change the comparison were set to the service's: "
    "`gradient_checkpointing=False` (trl turns it on by default), `bf16=False` (trl defaults "
    "to bf16 where it can), `use_cpu=True`.",
    "The batches are drawn by each trainer's own sampler (seed 7 in both); the tokens the 10 "
    "steps put through the model are compared above (`num_tokens` of trl's last logged step, "
    "`trained_tokens` of the service).",
    "The warmup differs in form: with 10 steps and warmup ratio 0.03 both warm up for one "
    "step, but transformers' schedule starts at learning rate 0 (trl's first update is a "
    "no-op, so its first two losses are both log 2) where the service's starts at half the "
    "rate. The losses are not meant to agree; they show that both trained.",
    "The per-stage figures do not measure the models: loading each model (134.5M parameters, "
    "about 513 MiB in fp32) raised the peak RSS by only some 15-25 MiB; the weights become "
    "resident when first read, so both models' weights show up in the figures from the first "
    "step on.",
    "ru_maxrss is a high-water mark of resident memory: it counts freed memory that was once "
    "resident and the libraries' import footprint, and it varies by tens of MiB between runs.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help="fresh-process runs of trl")
    args = parser.parse_args()
    if args.child:
        print(RESULT_TAG + json.dumps(child()), flush=True)
        return 0

    service = service_setting()
    imports = import_footprint()
    runs = []
    for i in range(args.repeats):
        print(f"trl run {i + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
        runs.append(run_child())
        print(
            json.dumps({k: v for k, v in runs[-1].items() if k != "error"})
            if runs[-1]["ok"]
            else runs[-1]["error"],
            file=sys.stderr,
            flush=True,
        )
    command = "python benchmarks/dpo/trl_memory.py" + (
        f" --repeats {args.repeats}" if args.repeats != 1 else ""
    )
    result = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "model": MODEL,
        "data": {"train": str(TRAIN.relative_to(ROOT))},
        "max_steps": MAX_STEPS,
        "torch_threads": TORCH_THREADS,
        "service": service,
        "trl_runs": runs,
        "import_footprint_mib": imports,
        "caveats": CAVEATS,
    }
    (HERE / "trl_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "trl_memory.md").write_text(write_markdown(result))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
