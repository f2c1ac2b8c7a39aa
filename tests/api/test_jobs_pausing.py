"""Pause, resume and checkpoints over real HTTP, without a worker: a queued job pauses at once
and resumes with a new message; what a job's status refuses is a 400 naming that status; a
checkpoint's metrics come from the job's metric rows, and its artifact downloads verified.
(``tests/steer/test_openai_sdk.py`` pauses a running job with a real worker.)"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from registry.db import session_scope
from registry.jobs import get_job
from registry.progress import record_checkpoint, record_progress
from steering_core.engine.events import CheckpointEvent
from tests.api.helpers import JOBS, Api, assert_error
from tests.db_fixtures import add_file, add_job

ARTIFACT = {"steering_config.json": b'{"format": 1}', "adapter_model.safetensors": b"tensors"}


def _messages(api: Api, job_id: str) -> list[str]:
    return [e["message"] for e in api.get_json(f"{JOBS}/{job_id}/events", limit=100)["data"]]


def _sent(api: Api, job_id: str) -> int:
    """The job's messages waiting in the embedded (filesystem) broker."""
    folder = api.settings.broker_folder / "in"
    return sum(job_id in path.read_text(errors="replace") for path in folder.iterdir())


def test_a_queued_job_pauses_at_once_and_resumes_with_a_new_message(api: Api) -> None:
    job = api.job_ok()
    assert _sent(api, job["id"]) == 1

    paused = api.client.post(f"{JOBS}/{job['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused" and paused.json()["finished_at"] is None
    assert _messages(api, job["id"])[0] == "The job was paused"
    again = assert_error(
        api.client.post(f"{JOBS}/{job['id']}/pause"), 400, code="invalid_job_status"
    )
    assert "is paused" in again["message"] and again["type"] == "invalid_request_error"

    resumed = api.client.post(f"{JOBS}/{job['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "queued"
    assert _messages(api, job["id"])[0] == "The job was resumed"
    assert _sent(api, job["id"]) == 2  # a worker taking the first finds it held or done
    refused = assert_error(
        api.client.post(f"{JOBS}/{job['id']}/resume"), 400, code="invalid_job_status"
    )
    assert "is queued and cannot be resumed" in refused["message"]


def test_a_paused_job_is_cancelled_at_once_and_then_neither_pauses_nor_resumes(
    api: Api,
) -> None:
    job = api.job_ok()
    api.client.post(f"{JOBS}/{job['id']}/pause")
    cancelled = api.client.post(f"{JOBS}/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for action in ("pause", "resume", "cancel"):
        error = assert_error(
            api.client.post(f"{JOBS}/{job['id']}/{action}"), 400, code="invalid_job_status"
        )
        assert "cancelled" in error["message"], action


def test_a_resume_the_broker_cannot_take_is_left_to_the_reconciler(api: Api) -> None:
    job = api.job_ok()
    api.client.post(f"{JOBS}/{job['id']}/pause")
    waiting = api.settings.broker_folder / "in"
    shutil.rmtree(waiting)
    waiting.write_text("")  # a file where the broker keeps its messages: every send fails
    resumed = api.client.post(f"{JOBS}/{job['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    with session_scope(api.settings.resolved_database_url) as session:
        assert get_job(session, job["id"]).enqueued_at is None  # stale: the next round sends it


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_another_tenants_or_an_unknown_job_is_not_found(api: Api, action: str) -> None:
    with session_scope(api.settings.resolved_database_url) as session:
        theirs = add_job(session, "someone-else", add_file(session, "someone-else").id).id
    for job_id in (theirs, "ftjob-nope"):
        assert_error(api.client.post(f"{JOBS}/{job_id}/{action}"), 404, code="not_found")
    with session_scope(api.settings.resolved_database_url) as session:
        assert get_job(session, theirs).status == "queued"


# -- checkpoints -------------------------------------------------------------------------------


def _checkpoint(api: Api, job_id: str, step: int, artifact: bool = True) -> Path:
    """A checkpoint directory as the engine leaves it (with an adapter artifact, unless a method
    that trains the base weights wrote it), recorded as the worker records it."""
    directory = api.settings.jobs_dir / job_id / "run" / "checkpoints" / f"step-{step:06d}"
    directory.mkdir(parents=True)
    (directory / "trainer_state.json").write_text("{}")
    if artifact:
        (directory / "adapter").mkdir()
        for name, content in ARTIFACT.items():
            (directory / "adapter" / name).write_bytes(content)
    with session_scope(api.settings.resolved_database_url) as session:
        job = get_job(session, job_id)
        record_checkpoint(session, job, CheckpointEvent(step=step, path=str(directory)))
    return directory


def _losses(api: Api, job_id: str, step: int, **metrics: float) -> None:
    with session_scope(api.settings.resolved_database_url) as session:
        job = get_job(session, job_id)
        record_progress(
            session, job, step=step, total=8, trained_tokens=0, eta_seconds=None, metrics=metrics
        )


def test_checkpoint_metrics_are_the_losses_recorded_at_their_step(api: Api) -> None:
    job_id = api.job_ok()["id"]
    for step in (1, 2, 3, 4):
        _losses(api, job_id, step, train_loss=1.0 / step, learning_rate=0.01)
    _losses(api, job_id, 4, valid_loss=0.75)
    _losses(api, job_id, 4, train_loss=0.2)  # a resumed run's repeat of step 4 replaces it
    _checkpoint(api, job_id, 2)
    _checkpoint(api, job_id, 4)

    page = api.get_json(f"{JOBS}/{job_id}/checkpoints")
    assert [c["metrics"] for c in page["data"]] == [
        {
            "step": step,
            "train_loss": train,
            "valid_loss": valid,
            "train_mean_token_accuracy": None,
            "valid_mean_token_accuracy": None,
            "full_valid_loss": None,
            "full_valid_mean_token_accuracy": None,
        }
        for step, train, valid in ((4, 0.2, 0.75), (2, 0.5, None))
    ]
    assert [c["fine_tuned_model_checkpoint"] for c in page["data"]] == [
        f"{job_id}:ckpt-step-4",
        f"{job_id}:ckpt-step-2",
    ]


def test_a_checkpoint_downloads_by_id_or_model_id_with_its_files_verified(api: Api) -> None:
    job_id = api.job_ok()["id"]
    directory = _checkpoint(api, job_id, 4)
    (listed,) = api.get_json(f"{JOBS}/{job_id}/checkpoints")["data"]
    hashes = {name: hashlib.sha256(content).hexdigest() for name, content in ARTIFACT.items()}
    overall = hashlib.sha256(
        "".join(f"{name}:{hashes[name]}\n" for name in sorted(hashes)).encode()
    ).hexdigest()

    for reference in (listed["id"], listed["fine_tuned_model_checkpoint"]):
        response = api.client.get(f"{JOBS}/{job_id}/checkpoints/{reference}/content")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/gzip"
        assert response.headers["x-content-sha256"] == overall
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        assert members == {f"{job_id}-ckpt-step-4/{n}": c for n, c in ARTIFACT.items()}

    one = api.client.get(
        f"{JOBS}/{job_id}/checkpoints/{listed['id']}/content",
        params={"file": "adapter_model.safetensors"},
    )
    assert one.content == b"tensors"
    assert one.headers["x-content-sha256"] == hashes["adapter_model.safetensors"]
    missing = api.client.get(
        f"{JOBS}/{job_id}/checkpoints/{listed['id']}/content", params={"file": "nope"}
    )
    assert_error(missing, 404, param="file", code="not_found")

    (directory / "adapter" / "adapter_model.safetensors").write_bytes(b"tampered")
    corrupted = api.client.get(f"{JOBS}/{job_id}/checkpoints/{listed['id']}/content")
    assert_error(corrupted, 500, code="artifact_corrupted")


def test_what_is_not_a_downloadable_checkpoint_is_not_found(api: Api) -> None:
    job_id = api.job_ok()["id"]
    other_id = api.job_ok()["id"]
    _checkpoint(api, job_id, 4, artifact=False)  # as a ``full`` job's
    _checkpoint(api, other_id, 8)
    (other,) = api.get_json(f"{JOBS}/{other_id}/checkpoints")["data"]
    for reference, mentions in (
        (f"{job_id}:ckpt-step-4", "holds no adapter artifact"),
        (f"{job_id}:ckpt-step-5", "no such checkpoint"),
        (f"{other_id}:ckpt-step-8", "no such checkpoint"),  # another job's, by model id
        (other["id"], "no such checkpoint"),  # and by id
        ("ftckpt-nope", "no such checkpoint"),
    ):
        response = api.client.get(f"{JOBS}/{job_id}/checkpoints/{reference}/content")
        assert mentions in assert_error(response, 404, code="not_found")["message"], reference
    with session_scope(api.settings.resolved_database_url) as session:
        theirs = add_job(session, "someone-else", add_file(session, "someone-else").id).id
    _checkpoint(api, theirs, 4)
    response = api.client.get(f"{JOBS}/{theirs}/checkpoints/{theirs}:ckpt-step-4/content")
    assert_error(response, 404, code="not_found")
