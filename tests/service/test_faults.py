"""Faults injected into the real service (Redis, PostgreSQL, Celery workers, the API, the disk):
no job is lost, none runs twice, results are recorded once, and each failure says why.

Each test writes its figures through ``tests.reliability_record.record``; the script
``benchmarks/reliability/run.py`` turns them into ``benchmarks/reliability/results.md``.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load

from tests.reliability_record import record
from tests.service.harness import Service, running_service
from tests.service.servers import private_postgres, private_redis
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}
# 64 rows, batch 8, accumulation 2: 4 steps an epoch. tiny-llama does ~50 steps/s on one core.
LONG_JOB = {
    "model": "tiny-llama",
    "seed": 11,
    "method": {
        "type": "post_block",
        "post_block": {"hyperparameters": {"n_epochs": 75, "batch_size": 8}},
    },
}
LONG_STEPS = 300
FAST = {
    "lease_seconds": "4",
    "reconcile_every_seconds": "1",
    "checkpoint_every_n_steps": "50",
}


def _step(service: Service, job_id: str) -> int:
    return int(service.job(job_id)["progress"]["step"] or 0)


def _adapter_tensors(service: Service, adapter_id: str) -> dict[str, torch.Tensor]:
    archive = service.http.get(f"/v1/adapters/{adapter_id}/content")
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".safetensors"))
        handle = tar.extractfile(member)
        assert handle is not None
        return load(handle.read())


def _adapters_of(service: Service, job_id: str) -> list[dict[str, Any]]:
    rows = service.http.get("/v1/adapters", params={"limit": 100}).json()["data"]
    return [a for a in rows if a.get("job_id") == job_id]


def _overlapping_runs(service: Service, job_id: str) -> bool:
    """Whether an attempt started while the previous one was still open (not requeued)."""
    open_attempt = False
    for event in service.events(job_id):
        if event["message"].startswith("Job started on"):
            if open_attempt:
                return True
            open_attempt = True
        elif "was requeued" in event["message"]:
            open_attempt = False
    return False


def _tally(service: Service, job_ids: list[str]) -> dict[str, int]:
    """Measured at the end of a fault test: jobs left in no final state (lost), and jobs whose
    result was registered twice or whose attempts overlapped (run twice)."""
    lost = sum(1 for job_id in job_ids if service.job(job_id)["status"] not in FINAL)
    twice = sum(
        1
        for job_id in job_ids
        if len(_adapters_of(service, job_id)) > 1 or _overlapping_runs(service, job_id)
    )
    return {"jobs": len(job_ids), "lost": lost, "run_twice": twice}


def test_worker_killed_mid_job_resumes_from_its_checkpoint_and_matches(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres", **FAST) as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        service.start_worker("w1")
        reference = service.create_job(training_file=file["id"], **LONG_JOB)
        reference = service.wait_for(reference["id"], FINAL, timeout=240)
        assert reference["status"] == "succeeded", reference

        job = service.create_job(training_file=file["id"], **LONG_JOB)
        service.wait_until(
            "a checkpoint and a few steps more", lambda: _step(service, job["id"]) > 60
        )
        killed_at = time.monotonic()
        service.kill_worker("w1")
        service.wait_until(
            "the training subprocess to die with its worker",
            lambda: not service.training_processes(job["id"]),
            timeout=10,
        )
        service.start_worker("w2")
        service.wait_until(
            "the job to run again", lambda: len(service.started_on(job["id"])) == 2, timeout=60
        )
        recovery = time.monotonic() - killed_at
        done = service.wait_for(job["id"], FINAL, timeout=240)
        assert done["status"] == "succeeded", done
        assert done["progress"]["attempts"] == 2
        assert [owner.split("@")[0] for owner in service.started_on(job["id"])] == ["w1", "w2"]
        resumed = [e for e in service.events(job["id"]) if "resumed from step" in e["message"]]
        assert len(resumed) == 1 and resumed[0]["data"]["resumed_from_step"] >= 50, resumed

        # the resumed run ends where the uninterrupted one did: the engine is deterministic on
        # CPU and resume restores weights, optimizer, scheduler and RNG state exactly
        mine = _adapter_tensors(service, done["fine_tuned_model"])
        theirs = _adapter_tensors(service, reference["fine_tuned_model"])
        assert mine.keys() == theirs.keys()
        worst = max(float((mine[k] - theirs[k]).abs().max()) for k in mine)
        assert worst <= 1e-6, worst
        assert len(_adapters_of(service, job["id"])) == 1
        metrics = service.http.get(f"/v1/files/{done['result_files'][0]}/content").text
        rows = csv.DictReader(io.StringIO(metrics))  # OpenAI's wide CSV, one row a step
        trained = [int(row["step"]) for row in rows if row["train_loss"]]
        assert trained == list(range(1, LONG_STEPS + 1))
        tally = _tally(service, [reference["id"], job["id"]])
    record(
        "worker_kill_9",
        injected=1,
        **tally,
        recovery_seconds=round(recovery, 1),
        detail=f"resumed from step {resumed[0]['data']['resumed_from_step']}; "
        f"max |adapter - uninterrupted| = {worst:.1e}",
    )


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres", max_attempts="2", **FAST) as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        job = service.create_job(training_file=file["id"], **LONG_JOB)
        for attempt, name in enumerate(("w1", "w2"), start=1):
            service.start_worker(name)
            service.wait_until(
                f"attempt {attempt}", lambda a=attempt: len(service.started_on(job["id"])) == a
            )
            service.wait_until("a step", lambda: _step(service, job["id"]) > 0)
            service.kill_worker(name)
        time.sleep(4.5)  # the lease runs out
        service.reconcile()
        failed = service.job(job["id"])
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "worker_lost"
        assert "2 attempts" in failed["error"]["message"], failed["error"]
        service.start_worker("w3")  # a healthy worker does not pick it up again
        time.sleep(4)
        again = service.job(job["id"])
        assert again["status"] == "failed" and again["progress"]["attempts"] == 2
        assert len(service.started_on(job["id"])) == 2
        tally = _tally(service, [job["id"]])
    record(
        "worker_kill_9_repeated",
        injected=2,
        **tally,
        recovery_seconds=None,
        detail="failed with worker_lost after max_attempts=2",
    )


def test_a_job_outlasting_the_visibility_timeout_runs_once(tmp_path: Path) -> None:
    settings = {**FAST, "lease_seconds": "15", "broker_visibility_timeout": "2"}
    with running_service(tmp_path, "redis_postgres", **settings) as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        service.start_worker("w1")
        job = service.create_job(training_file=file["id"], **LONG_JOB)
        service.wait_until("the job to start", lambda: service.started_on(job["id"]))
        service.start_worker("w2")  # idle: it is the one Redis re-delivers the message to
        done = service.wait_for(job["id"], FINAL, timeout=240)
        assert done["status"] == "succeeded", done
        assert done["progress"]["attempts"] == 1
        assert len(service.started_on(job["id"])) == 1
        assert len(_adapters_of(service, job["id"])) == 1
        skipped = sum(
            log.count(f"job {job['id']}: not claimable")
            for log in (service.worker_log("w1"), service.worker_log("w2"))
        )
        assert skipped >= 1, "the message was never re-delivered: the test proved nothing"
        tally = _tally(service, [job["id"]])
    record(
        "visibility_timeout_redelivery",
        injected=skipped,
        **tally,
        recovery_seconds=None,
        detail=f"{skipped} re-deliveries found the job held and did nothing",
    )


def test_redis_restart_loses_messages_but_no_job(tmp_path: Path) -> None:
    with (
        private_redis() as broker,
        running_service(
            tmp_path, "embedded", broker_url=broker.url, requeue_stale_after_seconds="3", **FAST
        ) as service,
    ):
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        service.start_worker("w1")
        running = service.create_job(training_file=file["id"], **LONG_JOB)
        service.wait_until("the first job to start", lambda: service.started_on(running["id"]))
        waiting = [
            service.create_job(training_file=file["id"], model="tiny-llama") for _ in range(2)
        ]
        assert broker.queued_messages() >= 1
        broker.kill()
        broker.start()
        restarted_at = time.monotonic()
        assert broker.queued_messages() == 0  # their messages are gone
        service.start_worker("w2")  # a free worker: the lost jobs run as soon as re-sent

        def lost_jobs_started() -> bool:
            return all(service.started_on(job["id"]) for job in waiting)

        service.wait_until("the lost jobs to run", lost_jobs_started, timeout=120)
        recovery = time.monotonic() - restarted_at
        for job in [running, *waiting]:
            done = service.wait_for(job["id"], FINAL, timeout=240)
            assert done["status"] == "succeeded", done
            assert len(service.started_on(job["id"])) == 1
            assert len(_adapters_of(service, job["id"])) == 1
        tally = _tally(service, [job["id"] for job in [running, *waiting]])
    record(
        "redis_restart",
        injected=1,
        **tally,
        recovery_seconds=round(recovery, 1),
        detail="all messages lost; the reconciler re-sent the queued jobs",
    )


def test_postgres_restart_gives_503_then_recovers(tmp_path: Path) -> None:
    with (
        private_postgres() as database,
        private_redis() as broker,
        running_service(
            tmp_path,
            "embedded",
            database_url=database.url,
            broker_url=broker.url,
            **{**FAST, "lease_seconds": "30"},
        ) as service,
    ):
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        service.start_worker("w1")
        job = service.create_job(training_file=file["id"], **LONG_JOB)
        service.wait_until("a few steps", lambda: _step(service, job["id"]) > 20)
        database.stop()
        stopped_at = time.monotonic()
        during = [
            service.http.get(f"/v1/fine_tuning/jobs/{job['id']}"),
            service.http.get("/v1/files"),
            service.http.post(
                "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": file["id"]}
            ),
        ]
        health = service.http.get("/health")
        time.sleep(3)
        database.start()
        for response in during:
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "database_unavailable" and "retry" in error["message"]
        assert health.status_code == 503 and health.json()["database"] == "unavailable"

        def answers() -> bool:
            return service.http.get(f"/v1/fine_tuning/jobs/{job['id']}").status_code == 200

        service.wait_until("the API to recover", answers, timeout=30)
        recovery = time.monotonic() - stopped_at
        done = service.wait_for(job["id"], FINAL, timeout=240)
        assert done["status"] == "succeeded", (done, service.worker_log("w1")[-3000:])
        assert done["progress"]["attempts"] == 1  # the worker waited for the database
        assert "database unreachable, retrying" in service.worker_log("w1")
        metrics = service.http.get(f"/v1/files/{done['result_files'][0]}/content").text
        rows = csv.DictReader(io.StringIO(metrics))  # OpenAI's wide CSV, one row a step
        trained = [int(row["step"]) for row in rows if row["train_loss"]]
        assert trained == list(range(1, LONG_STEPS + 1))
        assert (
            len(service.http.get("/v1/fine_tuning/jobs").json()["data"]) == 1
        )  # the 503 POST stored nothing
        tally = _tally(service, [job["id"]])
    record(
        "postgres_restart",
        injected=1,
        **tally,
        recovery_seconds=round(recovery, 1),
        detail="API answered 503 database_unavailable meanwhile; the worker retried its writes",
    )


def test_api_restart_loses_nothing(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres", **FAST) as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        service.start_worker("w1")
        headers = {"Idempotency-Key": "restart-test-1"}
        body = {"training_file": file["id"], **LONG_JOB}
        first = service.http.post("/v1/fine_tuning/jobs", json=body, headers=headers)
        assert first.status_code == 200
        job = first.json()
        service.wait_until("the job to start", lambda: service.started_on(job["id"]))
        before = {
            path: service.http.get(path).json()["data"]
            for path in ("/v1/files", "/v1/fine_tuning/jobs")
        }
        service.kill_api()
        killed_at = time.monotonic()
        service.start_api()
        recovery = time.monotonic() - killed_at
        after = {path: service.http.get(path).json()["data"] for path in before}
        assert [r["id"] for r in after["/v1/files"]] == [r["id"] for r in before["/v1/files"]]
        assert [r["id"] for r in after["/v1/fine_tuning/jobs"]] == [job["id"]]
        retry = service.http.post("/v1/fine_tuning/jobs", json=body, headers=headers)
        assert retry.status_code == 200 and retry.json()["id"] == job["id"]
        assert retry.headers.get("idempotent-replayed") == "true"
        done = service.wait_for(job["id"], FINAL, timeout=240)
        assert done["status"] == "succeeded" and done["progress"]["attempts"] == 1
        assert len(service.http.get("/v1/fine_tuning/jobs").json()["data"]) == 1
        tally = _tally(service, [job["id"]])
    record(
        "api_kill_9",
        injected=1,
        **tally,
        recovery_seconds=round(recovery, 1),
        detail="idempotent retry after the restart returned the first job",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs to fill needs root")
def test_disk_full_fails_the_job_and_registers_no_partial_artifact(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres", **FAST) as service:
        store = service.data_dir / "adapters"
        store.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(store)], check=True)
        try:
            filler = store / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            try:  # fill it: the next write anywhere in the store fails with ENOSPC
                with pytest.raises(OSError) as full:
                    while True:
                        os.write(fd, b"\0" * 4096)
                assert full.value.errno == errno.ENOSPC
            finally:
                os.close(fd)
            file = service.upload(write_sums(tmp_path / "train.jsonl", n=16))
            service.start_worker("w1")
            job = service.create_job(training_file=file["id"], model="tiny-llama")
            done = service.wait_for(job["id"], FINAL, timeout=120)
            assert done["status"] == "failed", done
            assert done["error"]["code"] == "artifact_write_failed"
            assert "No space left on device" in done["error"]["message"]
            assert done["fine_tuned_model"] is None
            assert service.http.get("/v1/adapters").json()["data"] == []
            assert sorted(p.name for p in store.iterdir()) == ["filler"]  # no partial copy

            filler.unlink()  # space again: the service is fine
            second = service.create_job(training_file=file["id"], model="tiny-llama")
            assert service.wait_for(second["id"], FINAL, timeout=120)["status"] == "succeeded"
            tally = _tally(service, [job["id"], second["id"]])
        finally:
            service.stop()
            subprocess.run(["umount", str(store)], check=False)
    record(
        "disk_full",
        injected=1,
        **tally,
        recovery_seconds=None,
        detail="failed with artifact_write_failed; no adapter row, no partial files",
    )
