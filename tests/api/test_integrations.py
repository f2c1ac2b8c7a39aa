"""A job's ``integrations`` at creation: echoed as given (OpenAI's shape), and every refusal a
400 naming the field: an unknown type, a tracker whose package is not installed, a second one
of a type, an MLflow tracking URI this server does not allow."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.conftest import running_api
from tests.api.helpers import JOBS, Api, assert_error

WANDB = {"type": "wandb", "wandb": {"project": "steer", "name": "run", "tags": ["a", "b"]}}


@pytest.fixture(scope="module")
def tracked_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("integrations")
    with running_api(root, mlflow_file_root=root / "mlruns") as api:
        yield api


@pytest.fixture(scope="module")
def training_file(tracked_api: Api) -> str:
    return str(tracked_api.upload_ok()["id"])


def _create(api: Api, file_id: str, integrations: Any) -> Any:
    body = {"model": "tiny-llama", "training_file": file_id, "integrations": integrations}
    return api.client.post(JOBS, json=body)


def test_integrations_are_stored_and_echoed_as_given(tracked_api: Api, training_file: str):
    root = tracked_api.settings.resolved_mlflow_file_root
    mlflow = {
        "type": "mlflow",
        "mlflow": {"tracking_uri": f"file://{root}/team", "experiment_name": "e", "tags": {}},
    }
    created = _create(tracked_api, training_file, [WANDB, mlflow])
    assert created.status_code == 200, created.text
    assert created.json()["integrations"] == [WANDB, mlflow]
    job = tracked_api.client.get(f"{JOBS}/{created.json()['id']}").json()
    assert job["integrations"] == [WANDB, mlflow]
    listed = tracked_api.client.get(JOBS).json()["data"][0]
    assert listed["integrations"] == [WANDB, mlflow]

    none = _create(tracked_api, training_file, None).json()
    assert none["integrations"] == []


def test_the_openai_sdk_sends_and_reads_a_wandb_integration(tracked_api: Api, training_file: str):
    client = openai.OpenAI(base_url=f"{tracked_api.base_url}/v1", api_key="x", max_retries=0)
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        integrations=[WANDB],  # type: ignore[list-item]
    )
    (integration,) = job.integrations or []
    assert integration.type == "wandb" and integration.wandb.project == "steer"
    assert integration.wandb.tags == ["a", "b"]


@pytest.mark.parametrize(
    ("integrations", "param", "mentions"),
    [
        ([{"type": "comet", "comet": {}}], "integrations.0.type", ("'comet'", "wandb", "mlflow")),
        ([{"type": "wandb"}], "integrations.0", ("wandb", "block")),
        ([{"type": "wandb", "wandb": {}}], "integrations.0.wandb.project", ("project",)),
        ([WANDB, WANDB], "integrations.1.type", ("second", "wandb")),
        ("wandb", "integrations", ("integrations",)),
        (
            [{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc/mlruns"}}],
            "integrations.0.mlflow.tracking_uri",
            ("/etc/mlruns", "STEER_MLFLOW_FILE_ROOT"),
        ),
        (
            [{"type": "mlflow", "mlflow": {"tracking_uri": "sqlite:////tmp/m.db"}}],
            "integrations.0.mlflow.tracking_uri",
            ("sqlite",),
        ),
        (
            [WANDB, {"type": "mlflow", "mlflow": {"tracking_uri": "databricks"}}],
            "integrations.1.mlflow.tracking_uri",
            ("not a uri",),
        ),
    ],
)
def test_refusals_are_400_naming_the_field(
    tracked_api: Api, training_file: str, integrations: Any, param: str, mentions: tuple[str, ...]
) -> None:
    response = _create(tracked_api, training_file, integrations)
    assert_error(response, 400, param=param, mentions=mentions)


@pytest.mark.parametrize(("tracker", "block"), [("wandb", WANDB), ("mlflow", {"type": "mlflow"})])
def test_a_tracker_not_installed_on_the_server_is_refused_naming_its_extra(
    tracked_api: Api,
    training_file: str,
    monkeypatch: pytest.MonkeyPatch,
    tracker: str,
    block: dict[str, Any],
) -> None:
    block = {**block, tracker: block.get(tracker, {})}
    # The API serves from this process: hidden here, the package cannot be imported there.
    monkeypatch.setitem(sys.modules, tracker, None)
    response = _create(tracked_api, training_file, [block])
    assert_error(
        response,
        400,
        param="integrations.0.type",
        code="integration_not_installed",
        mentions=(f"'{tracker}'", f"steering-service[{tracker}]"),
    )
    monkeypatch.undo()
    assert _create(tracked_api, training_file, [block]).status_code == 200


def test_an_operator_can_name_the_mlflow_servers(tmp_path: Path) -> None:
    with running_api(tmp_path, mlflow_allowed_hosts=["mlflow.internal:5000"]) as api:
        file_id = str(api.upload_ok()["id"])

        def uri(value: str) -> Any:
            return _create(api, file_id, [{"type": "mlflow", "mlflow": {"tracking_uri": value}}])

        assert uri("http://mlflow.internal:5000").status_code == 200
        assert_error(
            uri("http://169.254.169.254"),
            400,
            param="integrations.0.mlflow.tracking_uri",
            mentions=("169.254.169.254", "STEER_MLFLOW_ALLOWED_HOSTS"),
        )
