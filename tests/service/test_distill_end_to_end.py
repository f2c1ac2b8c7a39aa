"""A ``distill`` job through the whole service: a LoRA trained by one job, then distilled into
a post-block adapter by another that names the first job as its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.harness import running_service
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}


def test_a_lora_job_distilled_into_a_post_block_adapter(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded") as service:
        service.start_worker("w1")
        data = service.upload(write_sums(tmp_path / "train.jsonl", n=48))
        hyperparameters = {"n_epochs": 4, "batch_size": 8, "learning_rate": 0.02}
        teacher = service.create_job(
            model="tiny-llama",
            training_file=data["id"],
            suffix="teacher",
            seed=7,
            method={"type": "lora", "lora": {"hyperparameters": hyperparameters}},
        )
        taught = service.wait_for(teacher["id"], FINAL)
        assert taught["status"] == "succeeded", taught
        student = service.create_job(
            model="tiny-llama",
            training_file=data["id"],
            suffix="student",
            seed=7,
            method={
                "type": "distill",
                "distill": {
                    "source": teacher["id"],
                    "trains": {"site": {"layers": [1, 2]}},
                    "hyperparameters": {**hyperparameters, "learning_rate": 0.05},
                },
            },
        )
        assert student["method"]["distill"]["source"] == taught["fine_tuned_model"]
        done = service.wait_for(student["id"], FINAL)
        assert done["status"] == "succeeded", done
        losses = [
            float(line.split(",")[1])
            for line in service.http.get(
                f"/v1/files/{done['result_files'][0]}/content"
            ).text.splitlines()[1:]
        ]
        assert losses[-1] < losses[0], losses
        adapter = service.http.get("/v1/adapters/student@1").json()
        assert adapter["method"]["type"] == "post_block"
        assert adapter["method"]["site"]["layers"] == [1, 2]
        assert adapter["trained_by"] == {
            "method": "distill",
            "source": taught["fine_tuned_model"],
        }
        lora = service.http.get("/v1/adapters/teacher@1").json()
        assert lora["trained_by"] == {"method": "lora"}
        assert "trained_by" not in adapter["metrics"]
