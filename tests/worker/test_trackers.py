"""Experiment trackers through a real job: created over HTTP with its ``integrations``, trained
by ``run_job`` (tiny-llama), and read back with each tracker's own reader: the W&B run's
``.wandb`` log with ``wandb leet inspect`` (W&B's offline reader; no network), the MLflow store
with ``MlflowClient``. What they hold equals the job's metrics route. A tracker that fails warns
once and the job goes on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.integrations import WandbConfig
from registry.settings import Settings
from tests.api.conftest import free_port, running_api
from tests.api.helpers import JOBS, Api
from tests.steering_core.train_helpers import write_sums
from worker.runner import run_job
from worker.trackers.base import StepMetrics, TrackedJob
from worker.trackers.wandb_tracker import WandbTracker

HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.01}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: the settings say offline
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server that is down fails now
    with running_api(
        tmp_path,
        wandb_mode="offline",
        mlflow_file_root=tmp_path / "mlruns",
        checkpoint_every_n_steps=4,  # and a validation every 4 steps
        torch_threads=1,
    ) as handle:
        yield handle


def _job(api: Api, tmp_path: Path, integrations: list[dict[str, Any]], **hp: Any) -> str:
    file_id = api.upload_ok(write_sums(tmp_path / "sums.jsonl").read_bytes())["id"]
    hyperparameters = {**HYPERPARAMETERS, **hp}
    response = api.client.post(
        JOBS,
        json={
            "model": "tiny-llama",
            "training_file": file_id,
            "validation_file": file_id,
            "method": {"type": "post_block", "post_block": {"hyperparameters": hyperparameters}},
            "integrations": integrations,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _route_metrics(api: Api, job_id: str) -> dict[str, list[tuple[int, float]]]:
    """The metrics route, as each metric's (step, value) history."""
    rows = api.client.get(f"{JOBS}/{job_id}/metrics").json()["data"]
    history: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        history.setdefault(row["name"], []).append((row["step"], row["value"]))
    return history


def _events(api: Api, job_id: str) -> list[dict[str, Any]]:
    return list(api.client.get(f"{JOBS}/{job_id}/events", params={"limit": 500}).json()["data"])


def _integration(event: dict[str, Any]) -> str | None:
    return (event["data"] or {}).get("integration")


def _tracker_warnings(api: Api, job_id: str) -> list[dict[str, Any]]:
    """The warnings about the job's trackers (not admission's: no worker has registered)."""
    return [e for e in _events(api, job_id) if e["level"] == "warning" and _integration(e)]


def _tracker_event(api: Api, job_id: str, integration: str) -> dict[str, Any]:
    events = _events(api, job_id)
    (event,) = [e for e in events if e["level"] == "info" and _integration(e) == integration]
    return event


def _wandb_inspect(run_dir: str, *options: str) -> str:
    """W&B's own reader of a run's transaction log (``wandb leet inspect``), as JSON."""
    return subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *options, run_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _wandb_records(run_dir: str) -> list[dict[str, Any]]:
    """Every record of the run's log, in order (one JSON object a line)."""
    return [json.loads(line) for line in _wandb_inspect(run_dir).splitlines() if line.strip()]


def _mlflow(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_a_job_logs_to_wandb_offline_and_to_mlflow(api: Api, tmp_path: Path) -> None:
    store = api.settings.resolved_mlflow_file_root / "team"
    job_id = _job(
        api,
        tmp_path,
        [
            {"type": "wandb", "wandb": {"project": "steer-tests", "tags": ["tiny"]}},
            {
                "type": "mlflow",
                "mlflow": {
                    "tracking_uri": store.as_uri(),
                    "experiment_name": "steer-tests",
                    "tags": {"team": "a"},
                },
            },
        ],
    )
    assert run_job(api.settings, job_id, "worker-trackers") == "succeeded"
    route = _route_metrics(api, job_id)
    assert {"train_loss", "valid_loss", "learning_rate"} <= set(route)
    total = api.client.get(f"{JOBS}/{job_id}").json()["progress"]["total_steps"]
    assert [step for step, _ in route["train_loss"]] == list(range(1, total + 1))
    assert not _tracker_warnings(api, job_id)

    # W&B: the offline run directory named by the job's event, read by W&B's own reader.
    wandb_event = _tracker_event(api, job_id, "wandb")
    run_dir = wandb_event["data"]["run_dir"]
    assert wandb_event["data"]["run_id"] == job_id and wandb_event["data"]["mode"] == "offline"
    assert Path(run_dir).is_relative_to(api.settings.jobs_dir / job_id)
    assert f"wandb sync {run_dir}" in wandb_event["message"]
    records = _wandb_records(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert (run["run_id"], run["project"], run["display_name"]) == (job_id, "steer-tests", job_id)
    assert run["tags"] == ["tiny"]
    config = run["config"]["update"]
    assert config["hyperparameters"]["learning_rate"] == 0.01  # as the job was created
    assert (config["model"], config["method"]["type"]) == ("tiny-llama", "post_block")
    logged: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record["type"] == "history":
            item = record["history"]["item"]
            for name, value in item.items():
                if not name.startswith("_"):
                    logged.setdefault(name, []).append((item["_step"], value))
        if record["type"] == "config":
            config = {**config, **record["config"]["update"]}
    assert logged == route
    summary = json.loads(_wandb_inspect(run_dir, "--summary"))
    assert (summary["state"], summary["exit_code"]) == ("finished", 0)
    job = api.client.get(f"{JOBS}/{job_id}").json()
    assert summary["summary"]["job"]["status"] == "succeeded"
    assert summary["summary"]["job"]["fine_tuned_model"] == job["fine_tuned_model"]
    assert summary["config"]["run"]["n_examples"] == 48  # what the engine reported at start

    # MLflow: the file store, read by MLflow's own client.
    mlflow_event = _tracker_event(api, job_id, "mlflow")
    client = _mlflow(store.as_uri())
    experiment = client.get_experiment_by_name("steer-tests")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == mlflow_event["data"]["run_id"]
    assert (found.info.status, found.info.run_name) == ("FINISHED", job_id)
    params = found.data.params
    assert params["hyperparameters.learning_rate"] == "0.01"
    assert (params["model"], params["method.type"], params["run.n_examples"]) == (
        "tiny-llama",
        "post_block",
        "48",
    )
    tags = found.data.tags
    assert (tags["steer.job_id"], tags["team"], tags["steer.status"]) == (job_id, "a", "succeeded")
    for name, history in route.items():
        points = client.get_metric_history(found.info.run_id, name)
        assert sorted((m.step, m.value) for m in points) == history, name


def test_a_tracker_whose_server_is_down_warns_once_and_the_job_succeeds(
    api: Api, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    job_id = _job(api, tmp_path, [{"type": "mlflow", "mlflow": {"tracking_uri": down}}], n_epochs=1)
    assert run_job(api.settings, job_id, "worker-trackers") == "succeeded"
    (warning,) = _tracker_warnings(api, job_id)
    assert warning["data"]["integration"] == "mlflow"
    assert warning["message"].startswith("MLflow integration could not start")
    assert "the job goes on without it" in warning["message"]
    assert _route_metrics(api, job_id)["train_loss"]


def test_a_tracker_failing_mid_run_warns_once(api: Api, tmp_path: Path) -> None:
    store = api.settings.resolved_mlflow_file_root
    job_id = _job(api, tmp_path, [{"type": "mlflow", "mlflow": {}}], n_epochs=6)  # 72 steps
    outcome: dict[str, str] = {}
    worker = threading.Thread(
        target=lambda: outcome.update(result=run_job(api.settings, job_id, "worker-trackers"))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not [e for e in _events(api, job_id) if (e["data"] or {}).get("integration")]:
        assert worker.is_alive() and time.monotonic() < deadline, "the tracker never opened"
        time.sleep(0.05)
    run_id = _tracker_event(api, job_id, "mlflow")["data"]["run_id"]
    (run_dir,) = store.glob(f"*/{run_id}")
    shutil.rmtree(run_dir)  # the store loses the run: every later call fails
    worker.join(timeout=120)
    assert outcome == {"result": "succeeded"}, "the job ended before the store lost its run"
    (warning,) = _tracker_warnings(api, job_id)
    assert warning["message"].startswith("MLflow integration failed logging")
    assert run_id in warning["data"]["error"]


def test_wandb_goes_offline_when_its_server_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``STEER_WANDB_MODE=auto`` with an API key: online only when W&B's server answers (here a
    local port where nothing listens stands for it: nothing leaves the machine)."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    settings = Settings(data_dir=tmp_path / "data", wandb_dir=tmp_path / "wandb-runs")
    tracker = WandbTracker(WandbConfig(project="p"), settings, tmp_path / "job")
    job = TrackedJob(
        job_id="ftjob-unreached", model="tiny-llama", method_type="post_block", config={}
    )
    opened = tracker.open(job)
    tracker.log_metrics([StepMetrics(step=1, values={"train_loss": 0.5})])
    tracker.close({"status": "succeeded"}, "succeeded")
    assert (opened.level, opened.data["mode"]) == ("warning", "offline")
    assert "not reachable" in opened.message
    run_dir = opened.data["run_dir"]
    assert Path(run_dir).parent == tmp_path / "wandb-runs" / "wandb"
    history = [r["history"]["item"] for r in _wandb_records(run_dir) if r["type"] == "history"]
    assert [(h["_step"], h["train_loss"]) for h in history] == [(1, 0.5)]
