"""GET /v1/fine_tuning/jobs/{id}/metrics (the live series the dashboard plots) and
GET /v1/adapters/{ref}/layers (per-layer norms, computed without torch from safetensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from registry import jobs as jobs_repo
from registry import progress
from registry.db import session_scope
from tests.api.helpers import JOBS, Api, assert_error, register_adapter
from tests.steering_core.train_helpers import train_tiny_artifact


def test_metrics_series_by_step(api: Api) -> None:
    job = api.job_ok()
    assert api.get_json(f"{JOBS}/{job['id']}/metrics")["data"] == []
    with session_scope(api.settings.resolved_database_url) as session:
        row = jobs_repo.get_job(session, job["id"])
        for step, loss in ((1, 2.5), (2, 1.5)):
            progress.record_progress(
                session,
                row,
                step=step,
                total=2,
                trained_tokens=10 * step,
                eta_seconds=None,
                metrics={"train_loss": loss},
            )
        progress.record_progress(  # a repeated step (resume) replaces its value
            session,
            row,
            step=2,
            total=2,
            trained_tokens=20,
            eta_seconds=None,
            metrics={"train_loss": 1.25},
        )
    data = api.get_json(f"{JOBS}/{job['id']}/metrics")["data"]
    assert data == [
        {"step": 1, "name": "train_loss", "value": 2.5},
        {"step": 2, "name": "train_loss", "value": 1.25},
    ]
    assert_error(api.client.get(f"{JOBS}/ftjob-nope/metrics"), 404, code="not_found")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_artifact(tmp_path_factory.mktemp("trained"))


def test_adapter_layers(api: Api, trained: Path) -> None:
    files = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    row = register_adapter(api, "sums", files=files)
    body = api.get_json(f"/v1/adapters/{row['id']}/layers")
    assert body["site"] == "block_output" and body["kind"] == "nonlinear"
    tensors = load_file(trained / "adapter_model.safetensors")
    for entry in body["layers"]:
        expected = (
            sum(
                float(t.pow(2).sum())
                for k, t in tensors.items()
                if k.startswith(f"layers.{entry['layer']}.")
            )
            ** 0.5
        )
        assert entry["parameter_norm"] == pytest.approx(expected, rel=1e-6)
        assert 0 < entry["relative_shift"] < 10
        assert entry["relative_shift"] == pytest.approx(
            entry["shift_norm"] / entry["residual_norm"]
        )
    assert [e["layer"] for e in body["layers"]] == [0, 1, 2]
    assert api.get_json("/v1/adapters/sums@1/layers") == body
    assert_error(api.client.get("/v1/adapters/nope@1/layers"), 404, code="not_found")
