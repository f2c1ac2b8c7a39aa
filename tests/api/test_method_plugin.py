"""A method from another package: installed in a temporary directory, registered through the
``steering_service.methods`` entry points (no edit to this project), it appears in the API's
OpenAPI schema and ``GET /v1/methods``, is accepted by ``POST /v1/fine_tuning/jobs``, is offered
by ``steer jobs create --method``, and a worker trains it with the plugin's own loss."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.service.harness import ROOT, running_service, write_jsonl

PLUGIN = "l2_vector"

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "steer-l2-vector"
version = "0.0.1"

[tool.setuptools]
packages = ["steer_l2_vector"]

[project.entry-points."steering_service.methods"]
l2_vector = "steer_l2_vector:METHOD"
"""

DEFINITION = '''
"""A steering vector at the block output, trained with an L2 penalty on the vector."""
from typing import Literal

from pydantic import Field

from steering_core.spec.method_config import SiteConfig, StrictModel
from steering_core.methods.definition import AdapterSummary, MethodDefaults, MethodDefinition


class L2VectorMethod(StrictModel):
    type: Literal["l2_vector"] = "l2_vector"
    site: SiteConfig = SiteConfig()
    penalty: float = Field(default=0.1, ge=0.0, le=10.0)


METHOD = MethodDefinition(
    name="l2_vector",
    config=L2VectorMethod,
    defaults=MethodDefaults(learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0),
    description="A steering vector per layer with an L2 penalty on its norm.",
    handler="steer_l2_vector.handler:L2VectorHandler",
    data_formats=("prompt_completion",),
    site_field="site",
    summary=lambda config: AdapterSummary(adapter_kind="vector"),
)
'''

HANDLER = '''
"""The torch side: post-block vector adapters, plus the penalty in the loss."""
from steering_core.spec.method_config import AdapterConfig
from steering_core.methods.loss import causal_lm_loss
from steering_core.methods.base import AttachedMethod, MethodHandler
from steering_core.methods.steering_tensors import load_steering, save_steering
from steering_core.methods.post_block.handler import install_adapters


class L2VectorAttached(AttachedMethod):
    method_type = "l2_vector"

    def save_payload(self, out_dir):
        return [save_steering(self.steering, out_dir)]


class L2VectorHandler(MethodHandler):
    method_type = "l2_vector"

    def attach(self, model, config):
        self.penalty = config.penalty
        steering = install_adapters(model, config.site, AdapterConfig(kind="vector"))
        self.vectors = list(steering.parameters())
        return L2VectorAttached(config, model, steering)

    def load(self, model, config, artifact_dir):
        attached = self.attach(model, config)
        load_steering(attached.steering, artifact_dir)
        return attached

    def loss(self, forward, batch):
        penalty = sum((v.float() ** 2).sum() for v in self.vectors)
        return causal_lm_loss(forward, batch) + self.penalty * penalty
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin built and installed with pip into a directory of its own (``--target``)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    (source / "steer_l2_vector").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "steer_l2_vector" / "__init__.py").write_text(textwrap.dedent(DEFINITION))
    (source / "steer_l2_vector" / "handler.py").write_text(textwrap.dedent(HANDLER))
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert list(site.glob("steer_l2_vector-0.0.1.dist-info/entry_points.txt"))
    return site


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steer.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_method_installed_as_a_package_is_served_offered_and_trained(
    plugin_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(plugin_site))  # the API, CLI and worker processes
    with running_service(tmp_path, "sqlite") as service:
        schema = service.http.get("/openapi.json").json()["components"]["schemas"]
        assert PLUGIN in schema["MethodBlock"]["properties"]["type"]["enum"]
        block = schema["L2VectorBlock"]["properties"]
        assert {"site", "penalty", "hyperparameters"} <= set(block)
        methods = {m["id"]: m for m in service.http.get("/v1/methods").json()["data"]}
        assert set(methods) == {
            *("distill", "dpo", "full", "joint", "lora", "post_block", "reft"),
            PLUGIN,
        }
        assert methods[PLUGIN]["data_formats"] == ["prompt_completion"]
        assert methods[PLUGIN]["defaults"]["learning_rate"] == 1e-2

        # wide enough that the --method choices are not wrapped mid-name
        help_text = _cli({**service.env, "COLUMNS": "250"}, "jobs", "create", "--help").stdout
        assert PLUGIN in help_text

        rows = [{"prompt": f"{i} plus one is", "completion": f" {i + 1}"} for i in range(16)]
        train = service.upload(write_jsonl(tmp_path / "train.jsonl", rows))
        refused = service.http.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "tiny-llama",
                "training_file": train["id"],
                "method": {"type": PLUGIN, PLUGIN: {"penalty": -1}},
            },
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == f"method.{PLUGIN}.penalty"
        chat = [
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
        ]
        chat_file = service.upload(write_jsonl(tmp_path / "chat.jsonl", chat))
        wrong_format = service.http.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "tiny-llama",
                "training_file": chat_file["id"],
                "method": {"type": PLUGIN},
            },
        )
        assert wrong_format.status_code == 400, wrong_format.text
        assert "prompt_completion" in wrong_format.json()["error"]["message"]

        created = _cli(
            service.env,
            "jobs",
            "create",
            "--url",
            service.url,
            "--model",
            "tiny-llama",
            "--file",
            train["id"],
            "--method",
            PLUGIN,
            "--layers",
            "0-1",
            "--epochs",
            "1",
        )
        assert created.returncode == 0, created.stdout + created.stderr
        job_id = created.stdout.split()[1]
        job = service.job(job_id)
        assert job["method"]["type"] == PLUGIN
        assert job["method"][PLUGIN]["site"]["layers"] == [0, 1]

        service.start_worker("plugin")
        done = service.wait_for(job_id, {"succeeded", "failed", "cancelled"})
        assert done["status"] == "succeeded", (done, service.logs())
        adapter = service.http.get(f"/v1/adapters/{done['fine_tuned_model']}").json()
        assert adapter["method"]["type"] == PLUGIN
        layers = service.http.get(f"/v1/adapters/{done['fine_tuned_model']}/layers").json()
        assert [entry["layer"] for entry in layers["layers"]] == [0, 1]
        assert all(entry["parameter_norm"] > 0 for entry in layers["layers"])  # it trained
