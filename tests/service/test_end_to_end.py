"""The service end to end, through real HTTP, real Celery workers and the engine subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from tests.service.harness import ROOT, running_service
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow

LOGITS_SCRIPT = """
import sys, torch
from steering_core.artifact.store import load_artifact
from steering_core.model.loading import load_model
ids = torch.tensor([[5, 17, 40, 63, 90, 12]])
out = []
for path in sys.argv[2:]:
    attached = load_artifact(load_model(sys.argv[1]), path)
    with torch.no_grad():
        out.append(attached.model(input_ids=ids).logits)
with torch.no_grad():
    out.append(load_model(sys.argv[1])(input_ids=ids).logits)
torch.save(out, sys.argv[1].replace('/', '_') + '.pt')
"""


@pytest.mark.parametrize("backend", ["embedded", "redis_postgres"])
def test_upload_train_download_load(tmp_path: Path, backend: str) -> None:
    with running_service(tmp_path, backend) as service:
        service.start_worker("w1")
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=48))
        assert file["status"] == "processed" and file["n_examples"] == 48
        job = service.create_job(
            model="tiny-llama",
            training_file=file["id"],
            suffix="sums",
            method={
                "type": "post_block",
                "post_block": {
                    "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate": 0.01}
                },
            },
        )
        assert job["status"] == "queued"
        done = service.wait_for(job["id"], {"succeeded", "failed", "cancelled"})
        assert done["status"] == "succeeded", done
        statuses = [
            e["data"]["status"]
            for e in service.events(job["id"])
            if e["data"] and "status" in e["data"]
        ]
        assert statuses == ["running", "succeeded"]
        assert done["fine_tuned_model"].startswith("adapter-")
        assert done["trained_tokens"] > 0 and done["progress"]["percent"] == 100.0
        checkpoints = service.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
        # 48 rows, batch 8, accumulation 2, 2 epochs = 6 steps; a checkpoint every 4 steps
        assert [c["step_number"] for c in checkpoints["data"]] == [4]
        metrics_csv = service.http.get(f"/v1/files/{done['result_files'][0]}/content").text
        header, first, *_ = metrics_csv.splitlines()
        assert header == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
        assert first.startswith("1,")

        adapter = service.http.get(f"/v1/adapters/{done['fine_tuned_model']}").json()
        assert adapter["reference"] == "sums@1" and adapter["base_model"] == "tiny-llama"
        archive = service.http.get("/v1/adapters/sums@1/content")
        assert archive.status_code == 200
        download = tmp_path / "download"
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            tar.extractall(download, filter="data")
        downloaded = download / "sums-v1"
        assert sorted(p.name for p in downloaded.iterdir()) == [
            "adapter_model.safetensors",
            "steering_config.json",
        ]
        single = service.http.get(
            "/v1/adapters/sums@1/content", params={"file": "steering_config.json"}
        )
        assert single.content == (downloaded / "steering_config.json").read_bytes()

        # The job's own copy is gone once the adapter store holds it (only the listed
        # checkpoints' adapters stay in the job's directory): compare with the stored copy.
        job_dir = service.data_dir / "jobs" / job["id"]
        assert not (job_dir / "run" / "adapter").exists()
        assert (job_dir / "run" / "checkpoints" / "step-000004" / "adapter").is_dir()
        worker_artifact = service.data_dir / "adapters" / done["fine_tuned_model"]
        subprocess.run(
            [
                sys.executable,
                "-c",
                LOGITS_SCRIPT,
                "tiny-llama",
                str(downloaded),
                str(worker_artifact),
            ],
            cwd=tmp_path,
            check=True,
            env={**service.env, "PYTHONPATH": str(ROOT)},
        )
        from_download, from_worker, base = torch.load(tmp_path / "tiny-llama.pt")
        assert torch.equal(from_download, from_worker)
        assert not torch.equal(from_download, base)


def test_cancel_a_running_job(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded") as service:
        service.start_worker("w1")
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=64))
        job = service.create_job(
            model="tiny-llama",
            training_file=file["id"],
            method={"type": "post_block", "post_block": {"hyperparameters": {"n_epochs": 500}}},
        )
        deadline = time.monotonic() + 120
        while (service.job(job["id"])["progress"]["step"] or 0) < 2:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)
        started = time.monotonic()
        response = service.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        done = service.wait_for(job["id"], {"cancelled", "failed", "succeeded"}, timeout=10)
        assert done["status"] == "cancelled" and time.monotonic() - started < 10
        spec = str(service.data_dir / "jobs" / job["id"] / "spec.json")
        time.sleep(0.5)
        alive = subprocess.run(["pgrep", "-f", spec], capture_output=True, text=True)
        assert alive.stdout.strip() == "", "the training subprocess outlived the cancel"
        again = service.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_job_status"


def test_two_workers_six_jobs_each_runs_once(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres") as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=16))
        jobs = [
            service.create_job(
                model="tiny-llama", training_file=file["id"], method={"type": "post_block"}
            )
            for _ in range(6)
        ]
        service.start_worker("w1")
        service.start_worker("w2")
        owners = set()
        for job in jobs:
            done = service.wait_for(job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
            assert done["status"] == "succeeded", done
            assert done["progress"]["attempts"] == 1
            starts = [
                e for e in service.events(job["id"]) if e["message"].startswith("Job started on")
            ]
            assert len(starts) == 1, starts
            owners.add(starts[0]["message"].split(" on ")[1].split(" ")[0])
        assert len(owners) == 2, f"both workers should have run jobs: {owners}"


def test_gpu_job_is_never_taken_by_a_cpu_worker(tmp_path: Path) -> None:
    with running_service(tmp_path, "redis_postgres") as service:
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=16))
        # Before any worker registers a GPU job is accepted (once a CPU-only worker has, a GPU
        # job is refused at creation: no worker could ever run it).
        gpu_job = service.create_job(model="tiny-llama", training_file=file["id"], gpus=1)
        service.start_worker("cpu-only")
        cpu_job = service.create_job(model="tiny-llama", training_file=file["id"])
        assert service.wait_for(cpu_job["id"], {"succeeded"}, timeout=120)["status"] == "succeeded"
        time.sleep(2)
        still = service.job(gpu_job["id"])
        assert still["status"] == "queued" and still["progress"]["attempts"] == 0
        refused = service.http.post(
            "/v1/fine_tuning/jobs",
            json={"model": "tiny-llama", "training_file": file["id"], "gpus": 1},
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "compute.gpus"


def test_training_token_quota_fails_the_job_before_training(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded", quota_max_training_tokens="100") as service:
        service.start_worker("w1")
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=48))
        job = service.create_job(model="tiny-llama", training_file=file["id"])
        done = service.wait_for(job["id"], {"succeeded", "failed", "cancelled"})
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "quota_exceeded"
        assert "max_training_tokens quota of 100" in done["error"]["message"]
        assert done["progress"]["attempts"] == 1 and not done["progress"]["step"]
        assert done["fine_tuned_model"] is None
        assert service.http.get("/v1/adapters").json()["data"] == []


def test_json_logs_carry_the_job_id(tmp_path: Path) -> None:
    import json

    with running_service(tmp_path, "embedded", log_format="json") as service:
        service.start_worker("w1")
        file = service.upload(write_sums(tmp_path / "train.jsonl", n=16))
        job = service.create_job(model="tiny-llama", training_file=file["id"])
        assert service.wait_for(job["id"], {"succeeded", "failed"})["status"] == "succeeded"
        service.job(job["id"])
        api_lines = service.log_paths["api"].read_text().splitlines()
        entries = [json.loads(line) for line in api_lines if line.strip()]  # every line is JSON
        requests = [e for e in entries if e["logger"] == "steer.api.requests"]
        assert any(
            e.get("job_id") == job["id"] and e["http"]["route"] == "/v1/fine_tuning/jobs/{job_id}"
            for e in requests
        ), requests[-5:]
        worker_json = [
            json.loads(line)
            for line in service.worker_log("w1").splitlines()
            if line.startswith("{")
        ]
        assert any(e.get("job_id") == job["id"] for e in worker_json), worker_json[-5:]
