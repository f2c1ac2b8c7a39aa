"""A ``dpo`` job through the whole service: preference files uploaded over HTTP, a Celery worker
training through the engine subprocess, the adapter downloaded and checked: it prefers the
preferred answers, and with it switched off the model is the untouched base, exactly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from steering_core.artifact.store import load_artifact
from steering_core.data.formats import parse_jsonl
from steering_core.methods.base import LossContext, get_method_handler
from steering_core.methods.dpo.handler import answer_log_probs, tokenize_preferences
from steering_core.methods.registry import parse_method
from steering_core.model.loading import build_tiny_tokenizer, load_model
from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters
from tests.service.harness import running_service
from tests.steering_core.train_helpers import assert_prefers_the_preferred, write_preferences

pytestmark = pytest.mark.slow


def _margins(logps: torch.Tensor) -> torch.Tensor:
    pairs = logps.shape[0] // 2
    return logps[:pairs] - logps[pairs:]


def test_a_dpo_job_trains_a_steering_adapter_end_to_end(tmp_path: Path) -> None:
    pairs = write_preferences(tmp_path / "pairs.jsonl", n=32)
    held_out = write_preferences(tmp_path / "held_out.jsonl", n=8, seed=1)
    with running_service(tmp_path, "embedded") as service:
        service.start_worker("w1")
        training = service.upload(pairs)
        validation = service.upload(held_out)
        assert training["format"] == validation["format"] == "preference"
        job = service.create_job(
            model="tiny-llama",
            training_file=training["id"],
            validation_file=validation["id"],
            suffix="prefers",
            seed=7,
            method={
                "type": "dpo",
                "dpo": {
                    "hyperparameters": {
                        "beta": 1.0,
                        "n_epochs": 8,
                        "batch_size": 8,
                        "gradient_accumulation_steps": 1,
                        "learning_rate": 0.03,
                    }
                },
            },
        )
        done = service.wait_for(job["id"], {"succeeded", "failed", "cancelled"})
        assert done["status"] == "succeeded", done
        adapter = service.http.get(f"/v1/adapters/{done['fine_tuned_model']}").json()
        assert adapter["method"]["type"] == "post_block"
        assert adapter["metrics"]["peak_host_memory_mib"] > 100  # a model loaded in the engine
        assert adapter["metrics"]["peak_device_memory_mib"] is None  # a CPU job
        report = adapter["strength_report"]
        assert report is not None and report["points"][0]["strength"] == 0.0
        assert report["points"][0]["kl"] == 0.0 and report["items"] == 8
        archive = service.http.get("/v1/adapters/prefers@1/content")
        assert archive.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            tar.extractall(tmp_path / "download", filter="data")

    rows = tokenize_preferences(parse_jsonl(pairs), build_tiny_tokenizer(), max_seq_length=256)
    handler = get_method_handler("dpo")
    batch = handler.collate(list(rows.rows), rows.pad_token_id)
    base = load_model("tiny-llama").eval()
    attached = load_artifact(load_model("tiny-llama"), tmp_path / "download" / "prefers-v1")
    attached.model.eval()
    hp = resolve_hyperparameters("dpo", Hyperparameters(beta=1.0), n_examples=len(rows))
    objective = handler.training_loss(
        attached,
        LossContext(
            method=parse_method({"type": "dpo"}), hyperparameters=hp, load_base_model=lambda: base
        ),
    )
    with torch.no_grad():
        base_logps = answer_log_probs(base, batch)
        policy_logps = answer_log_probs(attached.model, batch)
    # the reference of a trained adapter is the untouched base model, exactly, in fp32
    assert torch.equal(objective.reference_log_probs(attached.model, batch), base_logps)
    trained, untouched = _margins(policy_logps), _margins(base_logps)
    assert_prefers_the_preferred(trained, untouched)
