"""DPO through the real service: a steering adapter that learns a reply format from preference
pairs, and the memory its reference policy costs.

    python benchmarks/dpo/run.py [--learning-rate 2e-4 --beta 0.1 --epochs 2]
    python benchmarks/dpo/run.py --sweep 5e-4,0.1,1 [2e-4,0.1,2 ...]
    python benchmarks/dpo/run.py --smoke

The service as a user meets it, on its embedded default (SQLite registry, filesystem broker) in
a fresh temporary data directory: ``steer migrate``, ``steer api``, ``steer worker``. The
preference files of ``make_data.py`` are uploaded over HTTP and a ``dpo`` job (a post-block
adapter, the reference being the model with the adapter switched off) is trained on
``smollm2-135m-instruct`` through ``POST /v1/fine_tuning/jobs`` and polled to its end. Then,
through ``POST /v1/chat/completions`` (greedy, ``max_tokens`` 16), the base model and the
adapter answer the held-out test prompts (``data/test.jsonl``) and the validation prompts; a
reply follows the rule when it matches ``make_data.RULE`` (``Answer: `` then a number). Side
figures: the share of replies that follow the rule with the right number (correct), and the
share whose numbers include the right answer in any form.

Peak memory: two more jobs with the same data and hyperparameters but ``max_steps`` 10, one with
``"reference": "adapters_off"``, one with ``"reference": "separate_copy"`` (a second copy of the
base model, as two-model DPO trainers hold); each adapter's ``metrics.peak_host_memory_mib``
is the training process's peak RSS.

``--sweep LR,BETA,EPOCHS ...`` trains one job per setting and scores it on the validation
prompts only (the test prompts are not used), appending each try to ``sweep.json``; the
default run is made with the setting chosen there (the highest validation rule rate; on a tie,
the higher correct share), and its report lists every try.
``--smoke`` runs the same path on ``tiny-llama`` with a few pairs and steps, writing into a
temporary directory (or ``--out``), not over the committed results.

Writes ``results.json`` and ``results.md`` beside this script. The machine's other work is not
paused (the timing lock is not taken): training time is as measured next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from local_api import LocalService, wait_until_healthy  # noqa: E402
from make_data import DATA, RULE  # noqa: E402

MODEL = "smollm2-135m-instruct"
SMOKE_MODEL = "tiny-llama"
FINAL = {"succeeded", "failed", "cancelled"}
SEED = 7
MAX_TOKENS = 16
MEMORY_STEPS = 10
SMOKE = {"pairs": 8, "test": 6, "validation": 4, "max_steps": 2, "memory_steps": 2}
NUMBER = re.compile(r"\d+")  # the answers are whole numbers >= 0
# The defaults: the setting chosen on the validation prompts (sweep.json: the highest
# validation rule rate; on a tie, the higher correct share).
DEFAULTS = {"learning_rate": 2e-4, "beta": 0.1, "n_epochs": 2}
BATCH_SIZE = 8
GRADIENT_ACCUMULATION_STEPS = 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Service(LocalService):
    """``steer migrate``, ``steer api`` and ``steer worker`` over one fresh data directory."""

    def __init__(self, data_dir: Path, torch_threads: int):
        super().__init__(data_dir, {"STEER_TORCH_THREADS": str(torch_threads)})
        self.http = httpx.Client(base_url=self.url, timeout=600)

    def start(self) -> None:
        self.run_once("migrate", timeout=300)
        self.spawn("api", "api", "--port", str(self.port))
        self.spawn("worker", "worker", "--name", "dpo-bench", "--loglevel", "info")
        wait_until_healthy(self.url, timeout=180, process=self.procs["api"])

    def stop(self, grace: float = 30.0) -> None:
        self.http.close()
        super().stop(grace)

    def log_text(self) -> str:
        return "\n".join(f"== {name}\n{tail}" for name, tail in self.log_tails(3000).items())

    # -- the API ---------------------------------------------------------------------------
    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            response = self.http.post(
                "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, handle)}
            )
        response.raise_for_status()
        uploaded = response.json()
        if uploaded.get("status") != "processed":
            raise RuntimeError(f"{path.name} not processed: {uploaded}")
        return str(uploaded["id"])

    def train(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the job, poll it to its end; the job and (on success) its adapter."""
        created = self.http.post("/v1/fine_tuning/jobs", json=body)
        if created.status_code != 200:
            raise RuntimeError(f"job refused ({created.status_code}): {created.text[:2000]}")
        job_id = created.json()["id"]
        log(f"  job {job_id} ({body['suffix']}) created")
        started = time.perf_counter()
        last = None
        while True:
            job = self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            if job["status"] != last:
                log(f"  job {job_id}: {job['status']}")
                last = job["status"]
            if job["status"] in FINAL:
                break
            time.sleep(2.0)
        wall = time.perf_counter() - started
        if job["status"] != "succeeded":
            raise RuntimeError(
                f"job {job_id} {job['status']}: {job.get('error')}\n{self.log_text()}"
            )
        adapter = self.http.get(f"/v1/adapters/{job['fine_tuned_model']}").json()
        return {"job": job, "adapter": adapter, "wall_seconds": round(wall, 1)}

    def reply(self, model: str, messages: list[dict[str, str]]) -> str:
        body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0}
        response = self.http.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"chat completion ({response.status_code}): {response.text[:1000]}")
        return str(response.json()["choices"][0]["message"]["content"])


# -- scoring -------------------------------------------------------------------------------
def answer_of(line: dict[str, Any]) -> int:
    """A prompt's right answer: the test split's ``answer``, else the preferred reply's number."""
    if "answer" in line:
        return int(line["answer"])
    match = RULE.match(line["preferred_output"][0]["content"])
    assert match is not None, line
    return int(match.group(1))


def score(reply: str, answer: int) -> dict[str, Any]:
    """``follows_rule``: the reply matches the rule; ``correct``: and its number is the right
    answer; ``mentions_answer``: the right answer is among the reply's numbers (any form)."""
    match = RULE.match(reply)
    return {
        "follows_rule": match is not None,
        "correct": match is not None and int(match.group(1)) == answer,
        "mentions_answer": answer in [int(n) for n in NUMBER.findall(reply)],
    }


def evaluate(service: Service, model: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy replies of ``model`` to each line's prompt, one request at a time; the rule rate,
    the correct share and every reply."""
    rows = []
    started = time.perf_counter()
    for line in lines:
        reply = service.reply(model, line["input"]["messages"])
        rows.append(
            {
                "prompt": line["input"]["messages"][-1]["content"],
                "answer": answer_of(line),
                "reply": reply,
                **({"phrasing": line["phrasing"]} if "phrasing" in line else {}),
                **({"seen_phrasing": line["seen_phrasing"]} if "seen_phrasing" in line else {}),
                **score(reply, answer_of(line)),
            }
        )
    return {**rates(rows), "seconds": round(time.perf_counter() - started, 1), "replies": rows}


def rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {
        "n": n,
        "rule_rate": sum(r["follows_rule"] for r in rows) / n if n else None,
        "correct_rate": sum(r["correct"] for r in rows) / n if n else None,
        "mentions_answer_rate": sum(r["mentions_answer"] for r in rows) / n if n else None,
    }


# -- jobs ----------------------------------------------------------------------------------
def job_body(
    *,
    model: str,
    files: dict[str, str],
    suffix: str,
    setting: dict[str, Any],
    reference: str = "adapters_off",
    max_steps: int | None = None,
) -> dict[str, Any]:
    hyperparameters: dict[str, Any] = {
        "beta": setting["beta"],
        "n_epochs": setting["n_epochs"],
        "batch_size": setting["batch_size"],
        "learning_rate": setting["learning_rate"],
        "gradient_accumulation_steps": setting["gradient_accumulation_steps"],
        "strength_report": False,
    }
    if max_steps is not None:
        hyperparameters["max_steps"] = max_steps
    body: dict[str, Any] = {
        "model": model,
        "training_file": files["train"],
        "suffix": suffix,
        "seed": SEED,
        "method": {
            "type": "dpo",
            "dpo": {
                "hyperparameters": hyperparameters,
                "trains": {"type": "post_block"},
                "reference": reference,
            },
        },
    }
    if "validation" in files:
        body["validation_file"] = files["validation"]
    return body


def training_summary(trained: dict[str, Any]) -> dict[str, Any]:
    job, adapter = trained["job"], trained["adapter"]
    metrics = adapter.get("metrics") or {}
    return {
        "job_id": job["id"],
        "status": job["status"],
        "adapter": adapter["id"],
        "adapter_name": f"{adapter.get('name')}@{adapter.get('version')}",
        "hyperparameters": job.get("hyperparameters"),
        "trained_tokens": job.get("trained_tokens"),
        "train_seconds": metrics.get("train_seconds"),
        "job_wall_seconds": trained["wall_seconds"],
        "peak_host_memory_mib": metrics.get("peak_host_memory_mib"),
        "metrics": metrics,
    }


def last_validation_loss(metrics: dict[str, Any]) -> float | None:
    """The loss of the last validation ([step, loss] pairs in the adapter's metrics)."""
    points = metrics.get("validation") or []
    return points[-1][1] if points else None


def setting_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "learning_rate": args.learning_rate,
        "beta": args.beta,
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "gradient_accumulation_steps": GRADIENT_ACCUMULATION_STEPS,
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def split_files(workdir: Path, smoke: bool) -> dict[str, Path]:
    """The splits a run uses: the committed files, or their first few lines for ``--smoke``."""
    if not smoke:
        return {split: DATA / f"{split}.jsonl" for split in ("train", "validation", "test")}
    sizes = {"train": SMOKE["pairs"], "validation": SMOKE["validation"], "test": SMOKE["test"]}
    paths = {}
    for split, n in sizes.items():
        paths[split] = workdir / f"{split}.jsonl"
        paths[split].write_text(
            "".join(DATA.joinpath(f"{split}.jsonl").read_text().splitlines(True)[:n])
        )
    return paths


# -- the runs ------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace, out: Path, workdir: Path) -> dict[str, Any]:
    model = SMOKE_MODEL if args.smoke else MODEL
    setting = setting_of(args)
    paths = split_files(workdir, args.smoke)
    test, validation = read_jsonl(paths["test"]), read_jsonl(paths["validation"])
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/dpo/run.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "smoke": args.smoke,
        "model": model,
        "service": "embedded (SQLite registry, filesystem broker): steer migrate, api, worker",
        "torch_threads": args.torch_threads,
        "data": {
            split: {
                "path": str(path.relative_to(ROOT)) if not args.smoke else path.name,
                "lines": len(read_jsonl(path)),
            }
            for split, path in paths.items()
        },
        "generation": {"max_tokens": MAX_TOKENS, "temperature": 0, "rule": RULE.pattern},
        "setting": setting,
        "seed": SEED,
    }
    service = Service(workdir / "service", args.torch_threads)
    try:
        started = time.perf_counter()
        service.start()
        log(f"service up in {time.perf_counter() - started:.1f} s at {service.url}")
        files = {split: service.upload(paths[split]) for split in ("train", "validation")}
        max_steps = SMOKE["max_steps"] if args.smoke else None
        log(f"training the adapter on {model}: {setting}")
        trained = service.train(
            job_body(
                model=model, files=files, suffix="format", setting=setting, max_steps=max_steps
            )
        )
        result["training"] = training_summary(trained)
        adapter = trained["adapter"]["id"]
        log("scoring the base model and the adapter")
        result["test"] = {
            "base": evaluate(service, model, test),
            "adapter": evaluate(service, adapter, test),
        }
        result["validation"] = {
            "base": evaluate(service, model, validation),
            "adapter": evaluate(service, adapter, validation),
        }
        memory_steps = SMOKE["memory_steps"] if args.smoke else MEMORY_STEPS
        memory = {}
        for reference in ("adapters_off", "separate_copy"):
            log(f"memory run: reference {reference}, max_steps {memory_steps}")
            run = service.train(
                job_body(
                    model=model,
                    files=files,
                    suffix=f"mem-{reference.replace('_', '-')}",
                    setting=setting,
                    reference=reference,
                    max_steps=memory_steps,
                )
            )
            memory[reference] = training_summary(run)
        result["memory"] = {
            "max_steps": memory_steps,
            "runs": memory,
            "difference_mib": memory["separate_copy"]["peak_host_memory_mib"]
            - memory["adapters_off"]["peak_host_memory_mib"],
        }
    finally:
        service.stop()
    result["sweep"] = read_sweep() if not args.smoke else None
    return result


def run_sweep(args: argparse.Namespace, workdir: Path) -> None:
    """One job per setting, scored on the validation prompts; each try appended to sweep.json."""
    settings = []
    for item in args.sweep:
        lr, beta, epochs = item.split(",")
        settings.append(
            {
                **setting_of(args),
                "learning_rate": float(lr),
                "beta": float(beta),
                "n_epochs": int(epochs),
            }
        )
    paths = split_files(workdir, smoke=False)
    validation = read_jsonl(paths["validation"])
    sweep = read_sweep() or {"split": "validation", "tries": []}
    service = Service(workdir / "service", args.torch_threads)
    try:
        service.start()
        files = {split: service.upload(paths[split]) for split in ("train", "validation")}
        if "base" not in sweep:
            scored = evaluate(service, MODEL, validation)
            sweep["base"] = {k: v for k, v in scored.items() if k != "replies"}
            sweep["base"]["example_replies"] = [r["reply"] for r in scored["replies"][:4]]
            log(f"base on validation: {sweep['base']}")
        for setting in settings:
            log(f"sweep: {setting}")
            trained = service.train(
                job_body(model=MODEL, files=files, suffix="sweep", setting=setting)
            )
            scored = evaluate(service, trained["adapter"]["id"], validation)
            summary = training_summary(trained)
            sweep["tries"].append(
                {
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "setting": setting,
                    "validation_rule_rate": scored["rule_rate"],
                    "validation_correct_rate": scored["correct_rate"],
                    "validation_mentions_answer_rate": scored["mentions_answer_rate"],
                    "train_seconds": summary["train_seconds"],
                    "final_loss": summary["metrics"].get("final_loss"),
                    "validation_loss": last_validation_loss(summary["metrics"]),
                    "example_replies": [r["reply"] for r in scored["replies"][:4]],
                }
            )
            log(
                f"  validation rule rate {scored['rule_rate']:.3f}, "
                f"correct {scored['correct_rate']:.3f}"
            )
            (HERE / "sweep.json").write_text(json.dumps(sweep, indent=1) + "\n")
    finally:
        service.stop()


def read_sweep() -> dict[str, Any] | None:
    path = HERE / "sweep.json"
    return json.loads(path.read_text()) if path.is_file() else None


# -- the report ----------------------------------------------------------------------------
def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def write_report(result: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(report(result))


def report(r: dict[str, Any]) -> str:
    m, s, t = r["machine"], r["setting"], r["training"]
    base, adapter = r["test"]["base"], r["test"]["adapter"]
    targets = [
        ("base model's rule rate <= 20%", base["rule_rate"] <= 0.20, base["rule_rate"]),
        ("adapter's rule rate >= 80%", adapter["rule_rate"] >= 0.80, adapter["rule_rate"]),
    ]
    lines = [
        "# DPO: a reply format learned from preference pairs, through the service",
        "",
        f"`{r['command']}` on {r['date']}; {m['platform']}, {m['cpu_count']} CPUs, "
        f"torch threads {r['torch_threads']}{' (smoke run)' if r['smoke'] else ''}. "
        f"Service: {r['service']}, fresh data directory. Model `{r['model']}`. The machine's "
        "other work went on during the run (training time is as measured beside it).",
        "",
        "Data (`make_data.py`): "
        + ", ".join(f"{k} {v['lines']} lines" for k, v in r["data"].items())
        + ". A preferred reply is exactly `Answer: N`; the non-preferred one is a sentence "
        "with the same right number. The test prompts use operands disjoint from training and "
        "include two phrasings never seen in training.",
        "",
        "## Training",
        "",
        f"`dpo` job, `trains: post_block` (every layer, the defaults), `reference: "
        f"adapters_off`; learning rate {s['learning_rate']}, beta {s['beta']}, "
        f"{s['n_epochs']} epochs, batch size {s['batch_size']} pairs, gradient accumulation "
        f"{s['gradient_accumulation_steps']}, seed {r['seed']}. Trained tokens "
        f"{t['trained_tokens']}, training {t['train_seconds']} s (job created to finished "
        f"{t['job_wall_seconds']} s), peak host memory {t['peak_host_memory_mib']} MiB.",
        "",
        "## Rule rate on the held-out test prompts",
        "",
        f"Rule: a reply matches `{r['generation']['rule']}`. Greedy `POST /v1/chat/completions`, "
        f"max_tokens {r['generation']['max_tokens']}. Correct: the reply follows the rule and its "
        "number is the right answer. Mentions the answer: the right number is among the "
        "reply's numbers, in any form.",
        "",
        "| model | prompts | rule rate | correct | mentions the answer | rule rate, unseen "
        "phrasings |",
        "|---|---|---|---|---|---|",
    ]
    for name, scored in (("base", base), ("adapter", adapter)):
        unseen = [x for x in scored["replies"] if x.get("seen_phrasing") is False]
        unseen_rate = rates(unseen)["rule_rate"] if unseen else None
        lines.append(
            f"| {name} | {scored['n']} | {pct(scored['rule_rate'])} | "
            f"{pct(scored['correct_rate'])} | {pct(scored['mentions_answer_rate'])} | "
            f"{pct(unseen_rate)} ({len(unseen)} prompts) |"
        )
    vb, va = r["validation"]["base"], r["validation"]["adapter"]
    lines += [
        "",
        f"Validation prompts ({va['n']}): base {pct(vb['rule_rate'])}, adapter "
        f"{pct(va['rule_rate'])} rule rate; correct {pct(vb['correct_rate'])} / "
        f"{pct(va['correct_rate'])}.",
        "",
        "Targets:",
        "",
    ]
    lines += [
        f"- {what}: {'met' if ok else 'missed'} ({pct(value)})" for what, ok, value in targets
    ]
    mem = r["memory"]
    runs = mem["runs"]
    lines += [
        "",
        "## Peak memory of the reference",
        "",
        f"Two more jobs, the same data and hyperparameters, `max_steps` {mem['max_steps']}; "
        "the adapter's `metrics.peak_host_memory_mib` (the training process's peak RSS).",
        "",
        "| reference | peak host memory (MiB) | training (s) |",
        "|---|---|---|",
    ]
    for name, run in runs.items():
        lines.append(f"| `{name}` | {run['peak_host_memory_mib']} | {run['train_seconds']} |")
    lines += [
        "",
        f"Difference: {mem['difference_mib']:.0f} MiB ({mem['difference_mib'] / 1024:.2f} GiB) "
        "for the second copy of the model.",
        "",
        "## Example replies (test prompts)",
        "",
        "| prompt | base | adapter |",
        "|---|---|---|",
    ]
    picked = example_indexes(base["replies"])
    for i in picked:
        b, a = base["replies"][i], adapter["replies"][i]
        lines.append(f"| {cell(b['prompt'])} | {cell(b['reply'])} | {cell(a['reply'])} |")
    sweep = r.get("sweep")
    if sweep:
        lines += [
            "",
            "## How the setting was chosen (validation prompts only)",
            "",
            f"Every setting tried (`--sweep`, `sweep.json`), scored on the {sweep['split']} "
            f"prompts; the base model's validation rule rate there: "
            f"{pct(sweep['base']['rule_rate'])}. The setting used above is the one with the "
            "highest validation rule rate (on a tie, the higher correct share); the test "
            "prompts were used by the final run only.",
            "",
            "| learning rate | beta | epochs | validation rule rate | correct | final train "
            "loss | training (s) | first validation reply |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for tried in sweep["tries"]:
            st = tried["setting"]
            loss = tried.get("final_loss")
            lines.append(
                f"| {st['learning_rate']} | {st['beta']} | {st['n_epochs']} | "
                f"{pct(tried['validation_rule_rate'])} | {pct(tried['validation_correct_rate'])}"
                f" | {'-' if loss is None else f'{loss:.4f}'} | {tried['train_seconds']} | "
                f"{cell(tried['example_replies'][0])} |"
            )
        notes = [(i + 1, t["note"]) for i, t in enumerate(sweep["tries"]) if t.get("note")]
        if notes:
            lines.append("")
            lines += [f"Try {i}: {note}." for i, note in notes]
    lines.append("")
    return "\n".join(lines)


def example_indexes(rows: list[dict[str, Any]], n: int = 8) -> list[int]:
    """Up to ``n`` rows spread over the phrasings, the unseen ones included."""
    chosen: list[int] = []
    seen_phrasings: set[str] = set()
    for i, row in enumerate(rows):
        if row.get("phrasing") not in seen_phrasings:
            seen_phrasings.add(row.get("phrasing", ""))
            chosen.append(i)
    return chosen[:n]


def cell(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("\n", " ").replace("`", "'") + "`"


def main() -> int:
    # a stop by SIGTERM unwinds like Ctrl-C: the service's processes are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, a few pairs and steps")
    parser.add_argument(
        "--out",
        type=Path,
        help="where results go (default: beside this script; --smoke: a temporary directory)",
    )
    parser.add_argument("--sweep", nargs="+", metavar="LR,BETA,EPOCHS")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--beta", type=float, default=DEFAULTS["beta"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["n_epochs"])
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as folder:
        workdir = Path(folder)
        if args.sweep:
            run_sweep(args, workdir)
            return 0
        out = args.out or (workdir / "out" if args.smoke else HERE)
        out.mkdir(parents=True, exist_ok=True)
        result = run_benchmark(args, out, workdir)
        write_report(result, out)
        log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
        if args.smoke and args.out is None:
            print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
