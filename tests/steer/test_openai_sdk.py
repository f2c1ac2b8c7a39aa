"""The official ``openai`` package, unchanged, against a real server: only ``base_url`` and the
key are set. Files, fine-tuning jobs, events, cancel, pause and resume (with a real worker's
training), checkpoints, and steered chat."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from registry.checkpoints import resolve_checkpoint_model
from registry.db import session_scope
from steering_core.artifact.check import check_artifact
from steering_core.artifact.store import load_artifact
from steering_core.evaluation.greedy import generate_greedy
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving.requests import encode_text
from tests.api.conftest import running_api
from tests.api.helpers import VALID_JSONL, Api
from tests.steering_core.train_helpers import write_sums
from tests.worker.helpers import run_in_thread
from worker.runner import run_job

ADMIN = "adm-openai-0123456789"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[openai.OpenAI]:
    with running_api(tmp_path, auth="on", admin_key=ADMIN) as api:
        yield openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=ADMIN, max_retries=0)


def test_files_jobs_events_cancel(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(VALID_JSONL)
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="fine-tune")
    assert file.id.startswith("file-") and file.filename == "train.jsonl"
    assert client.files.retrieve(file.id).bytes == len(VALID_JSONL)

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        method={"type": "post_block"},  # type: ignore[typeddict-item]  (ours; sent as given)
        seed=3,
    )
    assert job.status == "queued" and job.training_file == file.id and job.seed == 3
    assert [j.id for j in client.fine_tuning.jobs.list(limit=5).data] == [job.id]
    assert client.fine_tuning.jobs.retrieve(job.id).model == "tiny-llama"
    events = client.fine_tuning.jobs.list_events(job.id, limit=10).data
    assert events and events[-1].message.startswith("Created fine-tuning job")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert messages[0] == "The job was cancelled"

    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert missing.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="gpt-4o", training_file=file.id)
    assert "gpt-4o" in str(bad.value)


def test_the_compute_block_goes_in_extra_body(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(VALID_JSONL)
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        extra_body={"compute": {"gpus": 2, "deepspeed": {"zero_stage": 2}}},
    )
    compute = client.fine_tuning.jobs.retrieve(job.id).model_extra["compute"]
    assert compute["processes"] == 2 and compute["deepspeed"]["zero_stage"] == 2
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=file.id,
            hyperparameters={"batch_size": 8},
            extra_body={"compute": {"processes": 3}},
        )
    assert bad.value.body["param"] == "method.post_block.hyperparameters.batch_size"


def test_chat_completions_with_steering_strength(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "2+2="}]
    answer = client.chat.completions.create(
        model="tiny-llama",
        messages=messages,
        temperature=0,
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        stream=True,
        extra_body={"steering_strength": 0.5},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == answer.choices[0].message.content
    assert [m.id for m in client.models.list().data][:1] == ["smollm2-135m-instruct"]


# -- pause and resume, with a worker running the job's training for real ------------------------


@pytest.fixture
def trained_api(tmp_path: Path) -> Iterator[Api]:
    """The API, and settings a worker shares with it: a lease renewed every 0.3 s (a pause is
    seen at once), a checkpoint (and an evaluation) every 4 steps."""
    with running_api(
        tmp_path,
        auth="on",
        admin_key=ADMIN,
        lease_seconds=0.9,
        checkpoint_every_n_steps=4,
        torch_threads=1,
    ) as api:
        yield api


def _status(client: openai.OpenAI, job_id: str, wanted: str, timeout: float = 60) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status != wanted:
        assert time.monotonic() < deadline, f"still {job.status}, not {wanted}"
        time.sleep(0.02)
    return job


def _steps_after_resume(events: list[Any]) -> tuple[int, list[int], list[int]]:
    """From the events (oldest first) after "The job was resumed": the step the run resumed
    from, the steps re-reported from its checkpoint's saved state (before it reports that
    checkpoint again), and the steps it trained."""
    after = events[[e.message for e in events].index("The job was resumed") :]
    (start,) = [e for e in after if e.message.startswith("Training ")]
    reported: list[int] = []
    trained: list[int] = []
    target = reported
    for event in after:
        if event.message.startswith("Checkpoint saved at step") and target is reported:
            target = trained
        elif event.type == "metrics" and "train_loss" in (event.data or {}):
            target.append(int(event.data["step"]))
    return int(start.data["resumed_from_step"]), reported, trained


def test_a_running_job_paused_and_resumed_continues_from_its_checkpoint(
    trained_api: Api, tmp_path: Path
) -> None:
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    # The SDK's own retries on (2): a refusal that retrying cannot change must not be retried.
    client = openai.OpenAI(
        base_url=f"{trained_api.base_url}/v1", api_key=ADMIN, max_retries=2, http_client=http
    )
    with write_sums(tmp_path / "sums.jsonl").open("rb") as handle:
        file = client.files.create(file=handle, purpose="fine-tune")
    hyperparameters = {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.01}
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        validation_file=file.id,
        method={"type": "post_block", "post_block": {"hyperparameters": hyperparameters}},  # type: ignore[typeddict-item]
        seed=7,
    )
    worker, outcome = run_in_thread(trained_api.settings, job.id, "worker-a")
    _status(client, job.id, "running")

    # Asked while it starts: the pause reaches the engine within a lease renewal, at its first
    # steps, long before its last.
    assert client.fine_tuning.jobs.pause(job.id).status == "running"  # until it has stopped
    worker.join(timeout=60)
    assert outcome == {"result": "paused"}
    paused = _status(client, job.id, "paused")
    paused_at = paused.model_extra["progress"]["step"]  # type: ignore[index]
    total = paused.model_extra["progress"]["total_steps"]  # type: ignore[index]
    assert 1 <= paused_at < total
    newest = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    assert newest.step_number == paused_at
    assert newest.fine_tuned_model_checkpoint == f"{job.id}:ckpt-step-{paused_at}"
    assert newest.metrics.step == paused_at and newest.metrics.train_loss is not None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert messages[0] == "The job was paused" and "Pause requested" in messages
    with pytest.raises(openai.BadRequestError, match="is paused and cannot be paused"):
        client.fine_tuning.jobs.pause(job.id)

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    assert run_job(trained_api.settings, job.id, "worker-b") == "succeeded"  # its message
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model is not None
    events = list(reversed(client.fine_tuning.jobs.list_events(job.id, limit=200).data))
    resumed_from, reported, trained = _steps_after_resume(events)
    assert resumed_from == paused_at
    assert all(step <= paused_at for step in reported)  # its checkpoint's, told again
    assert trained == list(range(paused_at + 1, total + 1))  # not from step 1

    # Checkpoints (the engine keeps the last 2, every 4 steps): the losses at their step.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [total, total - 4]
    metrics = trained_api.client.get(
        f"/v1/fine_tuning/jobs/{job.id}/metrics", headers={"authorization": f"Bearer {ADMIN}"}
    ).json()["data"]
    for checkpoint in checkpoints:
        recorded = {m["name"]: m["value"] for m in metrics if m["step"] == checkpoint.step_number}
        assert checkpoint.metrics.train_loss == recorded["train_loss"]
        assert checkpoint.metrics.valid_loss == recorded["valid_loss"]
        assert checkpoint.metrics.train_mean_token_accuracy == recorded["train_mean_token_accuracy"]

    # A checkpoint downloads like an adapter, and resolves to an artifact serving can load.
    model_id = checkpoints[1].fine_tuned_model_checkpoint
    download = http.get(
        f"{trained_api.base_url}/v1/fine_tuning/jobs/{job.id}/checkpoints/{model_id}/content",
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert download.status_code == 200, download.text
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = sorted(m.name for m in tar.getmembers())
    prefix = f"{job.id}-ckpt-step-{total - 4}"
    assert names == [f"{prefix}/adapter_model.safetensors", f"{prefix}/steering_config.json"]
    with session_scope(trained_api.settings.resolved_database_url) as session:
        artifact = resolve_checkpoint_model(session, model_id, done.organization_id)
    assert (artifact.base_model, artifact.method, artifact.step) == (
        "tiny-llama",
        "post_block",
        total - 4,
    )
    assert artifact.sha256 == download.headers["x-content-sha256"]
    assert check_artifact(artifact.directory).config.method.type == "post_block"
    attached = load_artifact(load_model("tiny-llama"), artifact.directory, check_content_hash=True)
    assert attached.steering is not None

    # ... and is a model: read, and generated with, as its job's adapter is.
    read = client.models.retrieve(model_id)
    assert (read.id, read.model_extra["kind"], read.model_extra["base_model"]) == (
        model_id,
        "checkpoint",
        "tiny-llama",
    )
    prompt = "3+4="
    answer = client.completions.create(model=model_id, prompt=prompt, max_tokens=4, temperature=0)
    tokenizer = load_tokenizer("tiny-llama")
    ids = encode_text(tokenizer, prompt)
    expected = generate_greedy(attached.model, tokenizer, [ids], max_new_tokens=4)[0]
    assert answer.choices[0].text == expected
    base = client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=4, temperature=0)
    assert base.choices[0].text != expected  # the checkpoint's steering is what changed it
    with pytest.raises(openai.NotFoundError, match="ckpt-step-3"):
        client.completions.create(model=f"{job.id}:ckpt-step-3", prompt=prompt, max_tokens=1)

    # A finished job: each refusal is a 400 naming its status, sent once (not retried).
    for action in ("cancel", "pause", "resume"):
        before = len(sent)
        with pytest.raises(openai.BadRequestError, match="succeeded") as refused:
            getattr(client.fine_tuning.jobs, action)(job.id)
        assert refused.value.status_code == 400 and refused.value.code == "invalid_job_status"
        assert sent[before:] == [f"/v1/fine_tuning/jobs/{job.id}/{action}"]
