"""Jobs of several ranks through the real service: HTTP, a real Celery worker, torchrun and
DeepSpeed (gloo on CPU). The ranks split the global batch and reach the one-rank adapter; cancel
and a killed worker leave no rank behind; a failing rank fails the job with its own account;
devices are never shared between jobs."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load

from tests.service.harness import Service, running_service
from tests.steering_core.engine.test_distributed import write_ragged_answers
from tests.steering_core.train_helpers import write_sums
from worker.allocation import SlotAllocator

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}
TWO_RANKS = {"processes": 2, "deepspeed": {"zero_stage": 2}}


def _job_body(file_id: str, **hyperparameters: Any) -> dict[str, Any]:
    hp = {"batch_size": 4, "max_steps": 10, "learning_rate": 2e-2, **hyperparameters}
    return {
        "model": "tiny-llama",
        "training_file": file_id,
        "seed": 5,
        "method": {"type": "post_block", "post_block": {"hyperparameters": hp}},
    }


def _artifact(service: Service, job: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """The downloaded adapter's tensors and its ``steering_config.json``."""
    archive = service.http.get(f"/v1/adapters/{job['fine_tuned_model']}/content")
    assert archive.status_code == 200, archive.text
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                found[Path(member.name).name] = handle.read()
    return load(found["adapter_model.safetensors"]), json.loads(found["steering_config.json"])


def _adapter(service: Service, job: dict[str, Any]) -> dict[str, torch.Tensor]:
    return _artifact(service, job)[0]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _rank_pids(service: Service, job_id: str) -> dict[int, int]:
    """The job's live rank processes by rank (read from their environment)."""
    ranks: dict[int, int] = {}
    for pid in service.training_processes(job_id):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in variables and b"TORCHELASTIC_RUN_ID" in variables:
            ranks[int(variables[b"RANK"])] = int(pid)
    return ranks


@pytest.mark.parametrize("backend", ["embedded", "redis_postgres"])
def test_a_two_rank_deepspeed_job_matches_the_one_rank_job(tmp_path: Path, backend: str) -> None:
    with running_service(tmp_path, backend) as service:
        service.start_worker("w1")
        file = service.upload(write_ragged_answers(tmp_path / "train.jsonl"))
        one = service.create_job(**_job_body(file["id"]))
        two = service.create_job(**_job_body(file["id"]), compute=TWO_RANKS)
        one = service.wait_for(one["id"], FINAL, timeout=240)
        two = service.wait_for(two["id"], FINAL, timeout=240)
        assert one["status"] == two["status"] == "succeeded", (one, two)

        assert one["compute"]["world_size"] == 1 and one["compute"]["backend"] == "torch"
        ran = {k: two["compute"][k] for k in ("world_size", "backend", "zero_stage", "cpu_slots")}
        assert ran == {
            "world_size": 2,
            "backend": "deepspeed",
            "zero_stage": 2,
            "cpu_slots": [0, 1],
        }
        messages = [e["message"] for e in service.events(two["id"])]
        assert any("on 2 ranks (deepspeed, ZeRO 2)" in m for m in messages), messages
        manifest = _artifact(service, two)[1]["training_manifest"]["compute"]
        assert manifest == {"world_size": 2, "backend": "deepspeed", "zero_stage": 2}

        worst = _max_difference(_adapter(service, one), _adapter(service, two))
        assert worst <= 1e-5, worst


def test_kill_9_of_the_worker_leaves_no_rank_and_a_fresh_worker_resumes(tmp_path: Path) -> None:
    settings = {
        "lease_seconds": "4",
        "reconcile_every_seconds": "1",
        "checkpoint_every_n_steps": "20",
    }
    with running_service(tmp_path, "redis_postgres", **settings) as service:
        file = service.upload(write_ragged_answers(tmp_path / "train.jsonl"))
        body = {**_job_body(file["id"], max_steps=120), "compute": TWO_RANKS}
        service.start_worker("w1")
        reference = service.wait_for(service.create_job(**body)["id"], FINAL, timeout=300)
        assert reference["status"] == "succeeded", reference

        job = service.create_job(**body)
        service.wait_until(
            "a checkpoint and some steps more",
            lambda: int(service.job(job["id"])["progress"]["step"] or 0) > 30,
            timeout=240,
        )
        assert len(_rank_pids(service, job["id"])) == 2
        service.kill_worker("w1")
        service.wait_until(
            "every rank to die with the worker",
            lambda: not service.training_processes(job["id"]),
            timeout=10,
        )
        slots = SlotAllocator(service.data_dir / "devices", gpus=0, cpu_slots=2)
        # the kernel lets a slot's lock go once the last process holding it has exited, which
        # on a loaded machine can come a moment after the ranks are gone
        service.wait_until(
            "the job's slots to be released",
            lambda: slots.is_free("cpu", 0) and slots.is_free("cpu", 1),
            timeout=10,
        )

        service.start_worker("w2")
        done = service.wait_for(job["id"], FINAL, timeout=300)
        assert done["status"] == "succeeded", done
        assert done["progress"]["attempts"] == 2
        resumed = [e for e in service.events(job["id"]) if "resumed from step" in e["message"]]
        assert len(resumed) == 1 and resumed[0]["data"]["resumed_from_step"] >= 20, resumed
        assert resumed[0]["data"]["world_size"] == 2
        worst = _max_difference(_adapter(service, done), _adapter(service, reference))
        assert worst <= 1e-5, worst


def _long_two_rank_job_running(service: Service, tmp_path: Path) -> dict[str, Any]:
    """A 2-rank job far from its end, two steps in, on a worker started for it."""
    service.start_worker("w1")
    file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
    job = service.create_job(**_job_body(file["id"], max_steps=100000), compute=TWO_RANKS)
    service.wait_until(
        "two steps", lambda: int(service.job(job["id"])["progress"]["step"] or 0) >= 2
    )
    return job


def test_cancel_stops_every_rank_within_ten_seconds(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded") as service:
        job = _long_two_rank_job_running(service, tmp_path)
        assert len(_rank_pids(service, job["id"])) == 2
        started = time.monotonic()
        assert service.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200
        service.wait_until(
            "every rank to stop", lambda: not service.training_processes(job["id"]), timeout=10
        )
        assert time.monotonic() - started < 10
        assert service.wait_for(job["id"], FINAL, timeout=10)["status"] == "cancelled"


def test_a_rank_that_dies_fails_the_job_with_its_account(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded") as service:
        job = _long_two_rank_job_running(service, tmp_path)
        ranks = _rank_pids(service, job["id"])
        killed = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        done = service.wait_for(job["id"], FINAL, timeout=90)
        assert time.monotonic() - killed < 90
        assert done["status"] == "failed", done
        message = done["error"]["message"]
        assert "rank 1 of 2" in message and "SIGKILL" in message, message
        assert not service.training_processes(job["id"])


def test_gpu_jobs_never_share_a_device(tmp_path: Path) -> None:
    """A worker that pretends to have 3 GPUs (the ranks run on CPU) runs two jobs at once and
    hands each its own devices; a 4-GPU job is refused once it has registered."""
    with running_service(tmp_path, "redis_postgres") as service:
        service.start_worker("gpus", "--gpus", "3", "--cpu-slots", "0", "--concurrency", "2")
        service.wait_until(
            "the worker to register and start", lambda: " ready." in service.worker_log("gpus")
        )
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=32))
        body = _job_body(file["id"], max_steps=40)
        jobs = [service.create_job(**body, compute={"gpus": gpus}) for gpus in (2, 1, 2, 1)]
        done = [service.wait_for(job["id"], FINAL, timeout=300) for job in jobs]
        assert [j["status"] for j in done] == ["succeeded"] * 4, done

        spans = []
        for job in done:
            events = service.events(job["id"])
            start = next(e for e in events if e["message"].startswith("Running on worker"))
            end = next(e for e in events if "successfully completed" in e["message"])
            assert len(start["data"]["devices"]) == job["compute"]["gpus"]
            assert job["compute"]["devices"] == start["data"]["devices"]
            spans.append((start["created_at"], end["created_at"], set(start["data"]["devices"])))
        overlapping = [
            (a, b)
            for i, a in enumerate(spans)
            for b in spans[i + 1 :]
            if a[0] < b[1] and b[0] < a[1]
        ]
        assert overlapping, f"the worker ran two jobs at once: {spans}"
        assert all(not (a[2] & b[2]) for a, b in overlapping), spans

        too_big = service.http.post("/v1/fine_tuning/jobs", json={**body, "compute": {"gpus": 4}})
        assert too_big.status_code == 400, too_big.text
        assert too_big.json()["error"]["param"] == "compute.gpus"
