"""``site.layers: "auto"`` through the service: the 400s that name the field, and what a job that
chose its layers leaves behind (its events, the adapter object, ``GET …/layers``), over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steering_core.engine.events import LayerSelectionEvent, StartEvent
from steering_core.engine.train import train
from steering_core.exit_codes import ExitCode
from steering_core.spec.training_spec import TrainingSpec
from tests.api.conftest import running_api
from tests.api.helpers import JOBS, Api, assert_error
from tests.api.test_dashboard_browser import browser, open_page, screenshot
from tests.steering_core.train_helpers import spec_dict, write_sums
from worker.finisher import finish_job
from worker.leased_job import LeasedJob
from worker.recorder import EventRecorder
from worker.supervisor import TrainingExit

__all__ = ["browser"]  # the module-scoped Chromium of the dashboard's tests

AUTO_SITE = {"layers": "auto", "max_layers": 2}


def _job(method: dict[str, Any], file_id: str) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, "method": method}


def _post_block_site(site: dict[str, Any]) -> dict[str, Any]:
    return {"type": "post_block", "post_block": {"site": site}}


@pytest.mark.parametrize(
    ("method", "param", "mentions"),
    [
        (_post_block_site({"layers": "auto"}), "method.post_block.site.layers", ("budget",)),
        (
            _post_block_site({"layers": "auto", "max_layers": 4}),
            "method.post_block.site.max_layers",
            ("3 decoder layers",),
        ),
        (
            _post_block_site({"layers": "auto", "max_parameters": 10}),
            "method.post_block.site.max_parameters",
            ("one layer's adapter",),
        ),
        (
            _post_block_site({"layers": "auto", "max_parameters": 10**9}),
            "method.post_block.site.max_parameters",
            ("all 3 layers",),
        ),
        (
            _post_block_site({"layers": [0], "max_layers": 1}),
            "method.post_block.site.max_layers",
            ('"auto" only',),
        ),
        (
            {"type": "joint", "joint": {"site": {"layers": "auto", "max_layers": 1}}},
            "method.joint.site.layers",
            ("not available",),
        ),
        (
            {"type": "reft", "reft": {"site": {"layers": "auto"}}},
            "method.reft.site.layers",
            ("not available",),
        ),
    ],
)
def test_auto_is_refused_naming_the_field(
    shared_api: Api,
    shared_file: str,
    method: dict[str, Any],
    param: str,
    mentions: tuple[str, ...],
) -> None:
    response = shared_api.create_job(_job(method, shared_file))
    assert_error(response, 400, param=param, mentions=mentions)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], Path]:
    """A tiny-llama run with ``layers: "auto"``: its events and its artifact."""
    root = tmp_path_factory.mktemp("auto_run")
    spec = spec_dict(
        write_sums(root / "train.jsonl"),
        method={"type": "post_block", "site": AUTO_SITE},
        hyperparameters={"max_steps": 2},
    )
    events: list[Any] = []

    class Collect:
        def emit(self, event: Any) -> None:
            events.append(event)

    result = train(TrainingSpec.model_validate(spec), root / "out", Collect())
    assert result.artifact_dir is not None
    return events, result.artifact_dir


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, auto_run: tuple[list[Any], Path]
) -> Iterator[tuple[Api, str, LayerSelectionEvent]]:
    """A job asked for ``"auto"`` through the API, its run recorded and its artifact registered
    as the worker does: the API, the job's id and the run's selection."""
    events, artifact = auto_run
    (selection,) = [e for e in events if isinstance(e, LayerSelectionEvent)]
    (start,) = [e for e in events if isinstance(e, StartEvent)]
    with running_api(tmp_path_factory.mktemp("recorded")) as api:
        job = api.job_ok(method=_post_block_site(AUTO_SITE))
        assert job["method"]["post_block"]["site"] == {"name": "block_output", **AUTO_SITE}
        leased = LeasedJob.claim(api.settings, job["id"], "worker-test")
        assert leased is not None
        recorder = EventRecorder(leased)
        recorder.record(start)
        recorder.record(selection)
        done = TrainingExit(returncode=ExitCode.OK, cancelled=False, stderr_tail=[])
        assert finish_job(api.settings, leased, artifact, done, None) == "succeeded"
        yield api, str(job["id"]), selection


def test_a_job_that_chose_its_layers_records_them(
    recorded: tuple[Api, str, LayerSelectionEvent],
) -> None:
    api, job_id, selection = recorded
    told = [
        e
        for e in api.get_json(f"{JOBS}/{job_id}/events", limit=100)["data"]
        if e["message"].startswith("Layer selection")
    ]
    (event,) = told
    chosen = selection.chosen
    assert f"layers {', '.join(map(str, chosen))} of 3" in event["message"]
    assert event["data"]["scores"] == selection.scores
    assert event["data"]["chosen"] == chosen

    adapter_id = api.get_json(f"{JOBS}/{job_id}")["fine_tuned_model"]
    adapter = api.get_json(f"/v1/adapters/{adapter_id}")
    assert adapter["method"]["site"] == {"name": "block_output", "layers": chosen}

    layers = api.get_json(f"/v1/adapters/{adapter_id}/layers")
    assert [entry["layer"] for entry in layers["layers"]] == chosen
    assert [entry["score"] for entry in layers["layers"]] == [
        selection.scores[layer] for layer in chosen
    ]
    picked = layers["selection"]
    assert (picked["chosen"], picked["max_layers"], picked["max_parameters"]) == (chosen, 2, None)
    assert picked["score"] == "first_order_loss_drop"
    assert picked["layers"] == [
        {"layer": layer, "score": score, "chosen": layer in chosen}
        for layer, score in enumerate(selection.scores)
    ]


@pytest.mark.slow
def test_the_adapter_page_plots_every_layers_score(
    recorded: tuple[Api, str, LayerSelectionEvent], browser: Any
) -> None:
    from playwright.sync_api import expect

    api, job_id, selection = recorded
    adapter_id = api.get_json(f"{JOBS}/{job_id}")["fine_tuned_model"]
    with open_page(browser) as (page, errors):
        page.goto(f"{api.base_url}/dashboard#/adapters/{adapter_id}")
        chart = page.get_by_test_id("layer-score-chart")
        expect(chart.locator("rect.bar")).to_have_count(len(selection.scores))
        highlighted = chart.locator('rect.bar[data-highlight="true"]')
        expect(highlighted).to_have_count(len(selection.chosen))
        layers = highlighted.evaluate_all("nodes => nodes.map(n => n.dataset.layer)")
        assert layers == [str(layer) for layer in selection.chosen]
        expect(chart).to_contain_text("max_layers 2")
        expect(page.locator('[data-testid="layer-norm-chart"] rect.bar')).to_have_count(
            len(selection.chosen)
        )
        screenshot(page, "adapter-layer-selection.png")
        assert errors == [], errors
