"""What a job reports, read with the official ``openai`` package from a real API after a real
worker's training: mean token accuracies beside the losses (metrics, events, checkpoints),
validation at each epoch's end and at the job's own interval, the result file as OpenAI's CSV,
``"auto"`` epochs and batch size chosen from the data and echoed, and early stopping."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.api.conftest import running_api
from tests.api.helpers import Api
from tests.steering_core.train_helpers import write_sums
from worker.runner import run_job

ADMIN = "adm-results-0123456789"
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
RESULT_METRICS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)
# 16 training examples: "auto" is 7 epochs (100 examples seen at least) of batch 8 (the
# smallest auto batch); one micro-batch a step, so 2 steps an epoch and 14 in all.
N_EXAMPLES, AUTO_EPOCHS, AUTO_BATCH, TOTAL_STEPS = 16, 7, 8, 14
EVERY = 3  # the job's validation interval; the service's (its checkpoints') is 5
VALIDATED = sorted({*range(2, TOTAL_STEPS + 1, 2), *range(EVERY, TOTAL_STEPS + 1, EVERY)})


@dataclass
class Trained:
    api: Api
    client: openai.OpenAI
    queued: FineTuningJob  # as created, before the worker took it
    job: FineTuningJob  # succeeded
    validation_file: str


def _metrics(api: Api, job_id: str) -> dict[int, dict[str, float]]:
    """The job's metrics route, by step."""
    answer = api.client.get(
        f"/v1/fine_tuning/jobs/{job_id}/metrics", headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert answer.status_code == 200, answer.text
    by_step: dict[int, dict[str, float]] = {}
    for row in answer.json()["data"]:
        by_step.setdefault(row["step"], {})[row["name"]] = row["value"]
    return by_step


def _messages(client: openai.OpenAI, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=200).data]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One job trained by a real worker: 16 examples with "auto" epochs and batch size, a
    validation file, validation every 3 steps; the service checkpoints every 5 steps."""
    root = tmp_path_factory.mktemp("results")
    with running_api(
        root, auth="on", admin_key=ADMIN, checkpoint_every_n_steps=5, torch_threads=1
    ) as api:
        client = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=ADMIN, max_retries=0)
        with write_sums(root / "train.jsonl", n=N_EXAMPLES).open("rb") as handle:
            train = client.files.create(file=handle, purpose="fine-tune")
        with write_sums(root / "valid.jsonl", n=8, seed=1).open("rb") as handle:
            valid = client.files.create(file=handle, purpose="fine-tune")
        hyperparameters = {
            "eval_every_n_steps": EVERY,
            "gradient_accumulation_steps": 1,
            "learning_rate": 0.01,
        }
        queued = client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=train.id,
            validation_file=valid.id,
            method={"type": "post_block", "post_block": {"hyperparameters": hyperparameters}},  # type: ignore[typeddict-item]
            seed=7,
        )
        assert run_job(api.settings, queued.id, "worker-results") == "succeeded"
        job = client.fine_tuning.jobs.retrieve(queued.id)
        yield Trained(api, client, queued, job, valid.id)


def test_auto_epochs_and_batch_size_are_chosen_from_the_data_and_echoed(trained: Trained) -> None:
    before, after = trained.queued.hyperparameters, trained.job.hyperparameters
    assert (before.n_epochs, before.batch_size) == ("auto", "auto")  # not known before the start
    assert (after.n_epochs, after.batch_size) == (AUTO_EPOCHS, AUTO_BATCH)
    block = trained.job.method.model_extra["post_block"]["hyperparameters"]  # type: ignore[union-attr]
    assert (block["n_epochs"], block["batch_size"]) == (AUTO_EPOCHS, AUTO_BATCH)
    assert trained.job.model_extra["progress"]["total_steps"] == TOTAL_STEPS  # type: ignore[index]
    message = f"Chosen for {N_EXAMPLES} training examples (auto): n_epochs=7, batch_size=8"
    assert message in _messages(trained.client, trained.job.id)


def test_accuracies_beside_the_losses_in_metrics_events_and_checkpoints(trained: Trained) -> None:
    metrics = _metrics(trained.api, trained.job.id)
    assert sorted(metrics) == list(range(1, TOTAL_STEPS + 1))
    for values in metrics.values():
        assert 0.0 <= values["train_mean_token_accuracy"] <= 1.0
    # Validated at each epoch's end (every 2 steps) and every 3 steps (the job's interval wins
    # over the service's 5): the loss and the accuracy each time.
    for name in ("valid_loss", "valid_mean_token_accuracy"):
        assert [step for step, values in metrics.items() if name in values] == VALIDATED
    assert metrics[TOTAL_STEPS]["train_mean_token_accuracy"] > 0, "training taught something"

    messages = _messages(trained.client, trained.job.id)
    last = metrics[TOTAL_STEPS]
    assert (
        f"Step {TOTAL_STEPS}/{TOTAL_STEPS}: training loss={last['train_loss']:.4f}, "
        f"token accuracy={last['train_mean_token_accuracy']:.4f}"
    ) in messages
    assert any(
        m.startswith("Step 3: validation loss=") and "token accuracy=" in m for m in messages
    )

    checkpoints = trained.client.fine_tuning.jobs.checkpoints.list(trained.job.id).data
    assert [c.step_number for c in checkpoints] == [10, 5]  # the last 2, every 5 steps
    for checkpoint in checkpoints:
        recorded = metrics[checkpoint.step_number]
        shown = checkpoint.metrics
        assert shown.train_loss == recorded["train_loss"]
        assert shown.train_mean_token_accuracy == recorded["train_mean_token_accuracy"]
        assert shown.valid_loss == recorded.get("valid_loss")
        assert shown.valid_mean_token_accuracy == recorded.get("valid_mean_token_accuracy")
    assert checkpoints[0].metrics.valid_mean_token_accuracy is not None  # step 10 ends epoch 5
    assert checkpoints[1].metrics.valid_mean_token_accuracy is None  # nothing validated at 5


def test_the_result_file_is_openais_csv_of_the_metrics(trained: Trained) -> None:
    (file_id,) = trained.job.result_files
    assert trained.client.files.retrieve(file_id).purpose == "fine-tune-results"
    rows = list(csv.reader(io.StringIO(trained.client.files.content(file_id).text)))
    assert rows[0] == RESULT_COLUMNS
    metrics = _metrics(trained.api, trained.job.id)
    expected = [
        [step, *(values.get(name) for name in RESULT_METRICS)]
        for step, values in sorted(metrics.items())
    ]
    read = [[int(step), *(float(c) if c else None for c in cells)] for step, *cells in rows[1:]]
    assert read == expected  # one row a step; empty where nothing was validated


def test_early_stopping_stops_the_job_and_needs_a_validation_file(
    trained: Trained, tmp_path: Path
) -> None:
    client = trained.client
    with write_sums(tmp_path / "sums.jsonl").open("rb") as handle:
        train = client.files.create(file=handle, purpose="fine-tune")
    # A learning rate this high diverges: the validation loss gets worse, and the job stops.
    hyperparameters: dict[str, Any] = {
        "n_epochs": 10,
        "batch_size": 4,
        "learning_rate": 0.5,
        "lr_scheduler": "constant",
        "eval_every_n_steps": 2,
        "early_stopping_patience": 2,
        "strength_report": False,  # switched off: the adapter has none
    }
    method: Any = {"type": "post_block", "post_block": {"hyperparameters": hyperparameters}}
    patience_only: Any = {
        "type": "post_block",
        "post_block": {"hyperparameters": {"early_stopping_patience": 2}},
    }
    with pytest.raises(openai.BadRequestError) as refused:  # no validation file
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=train.id, method=patience_only
        )
    error: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    assert error["param"] == "method.post_block.hyperparameters.early_stopping_patience"
    assert "needs a validation_file" in error["message"]

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        validation_file=trained.validation_file,
        method=method,
        seed=7,
    )
    assert run_job(trained.api.settings, job.id, "worker-early") == "succeeded"
    done = client.fine_tuning.jobs.retrieve(job.id)
    progress: dict[str, int] = done.model_extra["progress"]  # type: ignore[index]
    assert done.status == "succeeded" and progress["step"] < progress["total_steps"]
    (stop,) = [m for m in _messages(client, job.id) if m.startswith("Early stopping")]
    assert stop.startswith(
        f"Early stopping at step {progress['step']} of {progress['total_steps']}"
    )
    assert "the lowest validation loss, is kept" in stop
    assert _adapter(trained, done.fine_tuned_model)["strength_report"] is None


def _adapter(trained: Trained, reference: str | None) -> dict[str, Any]:
    answer = trained.api.client.get(
        f"/v1/adapters/{reference}", headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_adapter_carries_its_strength_report(trained: Trained) -> None:
    """On by default with a validation file; bounded by 10% of the training time, so on this
    tiny run (a few seconds of training) it may stop after the first strengths, and says so."""
    adapter = _adapter(trained, trained.job.fine_tuned_model)
    report = adapter["strength_report"]
    assert report is not None and "strength_report" not in adapter["metrics"]
    points = report["points"]
    assert points and points[0]["strength"] == 0.0 and points[0]["kl"] == 0.0
    strengths = [p["strength"] for p in points]
    assert strengths == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5][: len(points)]
    assert report["complete"] == (len(points) == 7)
    assert (report["items"], report["task"]) == (8, "exact")  # the 8 validation records
    assert report["recommended_strength"] in strengths
    assert 0 < report["budget_seconds"] <= 0.1 * adapter["metrics"]["train_seconds"] + 0.01
