"""The recorder: each engine event kind writes its rows and its event, through the real registry
(SQLite and PostgreSQL), in the words users and the dashboard read."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta

import pytest

from registry.db import session_scope
from registry.errors import LeaseLost
from registry.models import Checkpoint
from registry.progress import metrics_of
from registry.settings import Settings
from steering_core.engine.events import (
    CheckpointEvent,
    EndEvent,
    ErrorEvent,
    EvalEvent,
    StartEvent,
    StepEvent,
    TrainingEvent,
)
from tests.registry.helpers import utc
from tests.worker.helpers import events_of, expire_lease, job_row
from worker.leased_job import LeasedJob
from worker.recorder import RECORDS, EventRecorder


def _start(**overrides: object) -> StartEvent:
    fields: dict[str, object] = {
        "total_steps": 6,
        "n_epochs": 2,
        "batch_size": 8,
        "n_examples": 48,
        "trainable_parameters": 1536,
        "trainable_percent": 3.4285714,
        "backend": "torch",
    }
    return StartEvent.model_validate({**fields, **overrides})


def _step(step: int = 2, loss: float = 1.23456, **overrides: object) -> StepEvent:
    fields: dict[str, object] = {
        "step": step,
        "total_steps": 6,
        "epoch": 0,
        "loss": loss,
        "learning_rate": 0.01,
        "grad_norm": 0.5,
        "tokens_per_second": 1000.0,
        "trained_tokens": 100 * step,
        "eta_seconds": 30.0,
    }
    return StepEvent.model_validate({**fields, **overrides})


def _new_events(leased: LeasedJob, before: int) -> list[tuple[str, str, str, object]]:
    events = events_of(leased.url, leased.job_id)[before:]
    return [(e.message, e.level, e.type, e.data) for e in events]


def _metrics(leased: LeasedJob) -> list[tuple[int, str, float]]:
    with session_scope(leased.url) as session:
        return [(m.step, m.name, m.value) for m in metrics_of(session, leased.job_id)]


def test_every_event_kind_has_a_record_function_or_needs_no_row() -> None:
    (union, _field) = typing.get_args(TrainingEvent)
    kinds = {event.model_fields["event"].default for event in typing.get_args(union)}
    assert {"start", "step", "eval", "checkpoint", "end"} <= set(RECORDS)
    assert kinds == set(RECORDS) | {"error"}  # an error fails the job, at the finisher


@pytest.mark.parametrize("resumed", [0, 4])
def test_start_sets_the_total_and_tells_the_plan(leased: LeasedJob, resumed: int) -> None:
    before = len(events_of(leased.url, leased.job_id))
    event = _start(resumed_from_step=resumed)
    EventRecorder(leased).record(event)

    job = job_row(leased.url, leased.job_id)
    assert job.total_steps == 6
    # The job left both "auto": the engine's numbers replace it, for later attempts too.
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": 8}
    message = "Training 48 examples for 6 steps (1,536 trainable parameters, 3.429%) on 1 rank"
    message += " (torch)"
    if resumed:
        message += ", resumed from step 4"
    chosen = {"n_examples": 48, "n_epochs": 2, "batch_size": 8}
    assert _new_events(leased, before) == [
        (message, "info", "message", event.model_dump(mode="json")),
        (
            "Chosen for 48 training examples (auto): n_epochs=2, batch_size=8",
            "info",
            "message",
            chosen,
        ),
    ]
    assert _metrics(leased) == []

    # Told once: the next attempt's start finds the numbers in the job.
    EventRecorder(leased).record(event)
    assert len(_new_events(leased, before)) == 3


def test_a_step_records_progress_metrics_and_an_event(leased: LeasedJob) -> None:
    before = len(events_of(leased.url, leased.job_id))
    recorder = EventRecorder(leased)
    started = datetime.now(UTC)
    recorder.record(_step())

    job = job_row(leased.url, leased.job_id)
    assert (job.current_step, job.total_steps, job.trained_tokens) == (2, 6, 200)
    eta = utc(job.estimated_finish) - started
    assert timedelta(seconds=29) < eta < timedelta(seconds=35)
    assert _metrics(leased) == [
        (2, "train_loss", 1.23456),
        (2, "learning_rate", 0.01),
        (2, "tokens_per_second", 1000.0),
    ]
    data = {
        "step": 2,
        "train_loss": 1.23456,
        "learning_rate": 0.01,
        "tokens_per_second": 1000.0,
        "total_steps": 6,
    }
    assert _new_events(leased, before) == [
        ("Step 2/6: training loss=1.2346", "info", "metrics", data)
    ]

    # A resumed run repeats the step: its metrics are replaced, its event told again.
    recorder.record(_step(loss=0.5, eta_seconds=None))
    assert _metrics(leased) == [
        (2, "train_loss", 0.5),
        (2, "learning_rate", 0.01),
        (2, "tokens_per_second", 1000.0),
    ]
    assert job_row(leased.url, leased.job_id).estimated_finish is None
    assert [message for message, *_ in _new_events(leased, before)] == [
        "Step 2/6: training loss=1.2346",
        "Step 2/6: training loss=0.5000",
    ]


def test_token_accuracies_are_metrics_beside_the_losses(leased: LeasedJob) -> None:
    recorder = EventRecorder(leased)
    before = len(events_of(leased.url, leased.job_id))
    recorder.record(_step(mean_token_accuracy=0.25))
    recorder.record(EvalEvent(step=2, validation_loss=0.75, validation_mean_token_accuracy=0.5))
    assert _metrics(leased) == [
        (2, "train_loss", 1.23456),
        (2, "train_mean_token_accuracy", 0.25),
        (2, "learning_rate", 0.01),
        (2, "tokens_per_second", 1000.0),
        (2, "valid_loss", 0.75),
        (2, "valid_mean_token_accuracy", 0.5),
    ]
    messages = [(message, data) for message, _, _, data in _new_events(leased, before)]
    assert messages[0][0] == "Step 2/6: training loss=1.2346, token accuracy=0.2500"
    assert messages[0][1]["train_mean_token_accuracy"] == 0.25  # type: ignore[index]
    assert messages[1] == (
        "Step 2: validation loss=0.75, token accuracy=0.5000",
        {"step": 2, "valid_loss": 0.75, "valid_mean_token_accuracy": 0.5},
    )


def test_an_evaluation_records_the_validation_loss(leased: LeasedJob) -> None:
    recorder = EventRecorder(leased)
    recorder.record(_step())
    before = len(events_of(leased.url, leased.job_id))

    recorder.record(EvalEvent(step=2, validation_loss=0.75))
    job = job_row(leased.url, leased.job_id)
    assert (job.current_step, job.total_steps, job.trained_tokens) == (2, 6, 200)
    assert job.estimated_finish is None
    assert (2, "valid_loss", 0.75) in _metrics(leased)

    # Without a loss (a generation-only evaluation) there is no metric, only the event.
    recorder.record(EvalEvent(step=4, metrics={"accuracy": 0.5}))
    assert job_row(leased.url, leased.job_id).current_step == 2
    assert [m for m in _metrics(leased) if m[1] == "valid_loss"] == [(2, "valid_loss", 0.75)]
    assert _new_events(leased, before) == [
        ("Step 2: validation loss=0.75", "info", "metrics", {"step": 2, "valid_loss": 0.75}),
        ("Step 4: validation loss=None", "info", "metrics", {"step": 4, "valid_loss": None}),
    ]


def test_a_checkpoint_is_a_row_and_an_event(leased: LeasedJob) -> None:
    before = len(events_of(leased.url, leased.job_id))
    recorder = EventRecorder(leased)
    recorder.record(CheckpointEvent(step=4, path="run/checkpoints/step-4"))
    recorder.record(CheckpointEvent(step=4, path="run/checkpoints/step-4-again"))  # resumed

    with session_scope(leased.url) as session:
        rows = session.query(Checkpoint).filter_by(job_id=leased.job_id).all()
        assert [(c.step, c.storage_path, c.metrics) for c in rows] == [
            (4, "run/checkpoints/step-4-again", {"step": 4})
        ]
    assert _new_events(leased, before) == [
        ("Checkpoint saved at step 4", "info", "message", None),
        ("Checkpoint saved at step 4", "info", "message", None),
    ]


def test_an_early_stop_is_told(leased: LeasedJob) -> None:
    recorder = EventRecorder(leased)
    recorder.record(_start(total_steps=40))
    before = len(events_of(leased.url, leased.job_id))
    recorder.record(
        EndEvent(
            status="early_stopped",
            step=12,
            final_loss=0.1,
            artifact="run/adapter",
            train_seconds=1.0,
            trained_tokens=600,
            restored_step=8,
        )
    )
    assert _new_events(leased, before) == [
        (
            "Early stopping at step 12 of 40: the validation loss stopped improving; the "
            "adapter of step 8, the lowest validation loss, is kept",
            "info",
            "message",
            {"step": 12, "total_steps": 40, "restored_step": 8},
        )
    ]


def test_an_error_is_kept_for_the_finisher_and_the_end_writes_nothing(leased: LeasedJob) -> None:
    before = len(events_of(leased.url, leased.job_id))
    recorder = EventRecorder(leased)
    error = ErrorEvent(error_type="user_error", message="too many tokens", code="quota_exceeded")
    recorder.record(error)
    recorder.record(
        EndEvent(
            status="succeeded",
            step=6,
            final_loss=0.1,
            artifact="run/adapter",
            train_seconds=1.0,
            trained_tokens=600,
        )
    )
    assert recorder.reported_error == error
    assert _new_events(leased, before) == []
    assert job_row(leased.url, leased.job_id).status == "running"


def test_a_worker_that_lost_its_lease_records_nothing(
    leased: LeasedJob, worker_settings: Settings
) -> None:
    expire_lease(leased.url, leased.job_id)
    successor = LeasedJob.claim(worker_settings, leased.job_id, "worker-next")
    assert successor is not None and successor.token == 2
    before = len(events_of(leased.url, leased.job_id))

    with pytest.raises(LeaseLost):
        EventRecorder(leased).record(_step())
    assert _metrics(leased) == []
    assert _new_events(leased, before) == []
    EventRecorder(successor).record(_step())
    assert len(_metrics(leased)) == 3
