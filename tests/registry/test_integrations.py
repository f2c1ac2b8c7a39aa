"""A job's integration blocks, the packages they need and the MLflow tracking URIs a server
allows: the rules the API applies at creation and the worker again before it logs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.integrations import (
    TRACKER_PACKAGES,
    IntegrationBlock,
    IntegrationRefused,
    TrackerPackage,
    allowed_tracking_uri,
    check_package,
    package_installed,
    stored_integrations,
)

PARAM = "integrations.0.mlflow.tracking_uri"


def _allowed(uri: str | None, root: Path, hosts: list[str] | None = None) -> str:
    return allowed_tracking_uri(uri, file_root=root, allowed_hosts=hosts, param=PARAM)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (None, ""),
        ("file://{root}", ""),
        ("file://{root}/team/a", "team/a"),
        ("file:///{root}/team/./b/../c", "team/c"),
        ("file://localhost{root}/x", "x"),
        ("{root}/plain-path", "plain-path"),
        ("file:relative/runs", "relative/runs"),
        ("file://{root}/with%20space", "with space"),
    ],
)
def test_local_stores_under_the_root_are_allowed(tmp_path: Path, uri: str | None, expected: str):
    root = tmp_path / "mlflow"
    given = None if uri is None else uri.format(root=root)
    assert _allowed(given, root) == (root / expected).resolve().as_uri()


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc",
        "file://{root}/../elsewhere",
        "file://{root}-sibling/x",
        "/tmp",
        "file:../../outside",
        "file://otherhost/{root}",
        "sqlite:///{root}/mlflow.db",
        "postgresql://db/mlflow",
        "databricks",
        "databricks://profile",
        "ftp://host/x",
        "https://user:secret@mlflow.example.com",
        "http://",
        "http://host:notaport",
    ],
)
def test_other_uris_are_refused_naming_the_field(tmp_path: Path, uri: str) -> None:
    root = tmp_path / "mlflow"
    with pytest.raises(IntegrationRefused) as refused:
        _allowed(uri.format(root=root), root)
    assert refused.value.param == PARAM and PARAM in str(refused.value)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "mlflow"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(IntegrationRefused, match="must be under"):
        _allowed(f"file://{root}/escape/runs", root)


def test_servers_are_allowed_unless_the_operator_names_them(tmp_path: Path) -> None:
    root = tmp_path / "mlflow"
    assert _allowed("http://10.0.0.5:5000", root) == "http://10.0.0.5:5000"
    hosts = ["mlflow.internal", "10.0.0.5:5000"]
    assert _allowed("https://MLflow.internal/x", root, hosts) == "https://MLflow.internal/x"
    assert _allowed("http://10.0.0.5:5000", root, hosts) == "http://10.0.0.5:5000"
    for uri in ("http://10.0.0.5:6000", "http://169.254.169.254/latest"):
        with pytest.raises(IntegrationRefused, match="STEER_MLFLOW_ALLOWED_HOSTS"):
            _allowed(uri, root, hosts)


def test_blocks_are_openai_shaped_and_echoed_as_given() -> None:
    given = {"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}
    block = IntegrationBlock.model_validate(given)
    assert block.config.project == "p"  # type: ignore[union-attr]
    assert stored_integrations([block]) == [given]


@pytest.mark.parametrize(
    ("given", "mentions"),
    [
        ({"type": "comet"}, "unknown integration type 'comet'"),
        ({"type": "wandb"}, "wandb: the 'wandb' integration needs its block"),
        ({"type": "wandb", "wandb": {}}, "project"),
        ({"type": "wandb", "wandb": {"project": "p", "bogus": 1}}, "bogus"),
        ({"type": "wandb", "wandb": {"project": "p"}, "mlflow": {}}, "mlflow: given"),
        ({"type": "wandb", "wandb": {"project": "p\x00"}}, "NUL"),
        ({"type": "wandb", "wandb": {"project": "\ud800"}}, "surrogate"),
        ({"type": "mlflow", "mlflow": {"tags": {"k": 1}}}, "string"),
    ],
)
def test_invalid_blocks_are_refused(given: dict[str, object], mentions: str) -> None:
    with pytest.raises(ValidationError, match=mentions):
        IntegrationBlock.model_validate(given)


def test_a_missing_package_is_refused_naming_the_integration_and_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    absent = {"wandb": TrackerPackage(module="steer_no_such_tracker_module", extra="wandb")}
    with pytest.raises(IntegrationRefused) as refused:
        check_package("wandb", "integrations.0.type", absent)
    assert refused.value.param == "integrations.0.type"
    assert refused.value.code == "integration_not_installed"
    assert "'wandb'" in str(refused.value) and "steering-service[wandb]" in str(refused.value)

    for tracker, package in TRACKER_PACKAGES.items():  # installed here (scripts/setup.sh)
        assert package_installed(package.module), tracker
        check_package(tracker, "integrations.0.type")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # hidden: `import mlflow` would fail
    assert not package_installed("mlflow")
    with pytest.raises(IntegrationRefused, match=r"steering-service\[mlflow\]"):
        check_package("mlflow", "integrations.0.type")
