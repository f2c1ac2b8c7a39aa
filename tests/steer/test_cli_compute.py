"""``steer jobs create`` with the compute flags, as a subprocess against a real API: the body it
sends is the job the service stores, and a refusal names the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from steer.client import SteerClient
from tests.api.conftest import running_api
from tests.service.harness import ROOT


def _steer(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "COLUMNS": "200"}
    env.pop("STEER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "steer.cli", "jobs", "create", "--url", url, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compute_flags_reach_the_stored_job(tmp_path: Path) -> None:
    with running_api(tmp_path) as api:
        file_id = api.upload_ok()["id"]
        recipe = tmp_path / "job.json"
        recipe.write_text('{"compute": {"deepspeed": {"offload_optimizer": true}}}')
        created = _steer(
            tmp_path,
            api.base_url,
            *("--model", "tiny-llama", "--file", file_id, "--recipe", str(recipe)),
            *("--gpus", "2", "--zero-stage", "2"),
        )
        assert created.returncode == 0, created.stdout + created.stderr
        job_id = created.stdout.split("created ")[1].split(" ")[0]
        assert SteerClient(api.base_url).get_job(job_id)["compute"] == {
            "gpus": 2,
            "processes": 2,
            "deepspeed": {"zero_stage": 2, "offload_optimizer": True, "offload_param": False},
        }

        refused = _steer(
            tmp_path,
            api.base_url,
            *("--model", "tiny-llama", "--file", file_id, "--method", "joint"),
            *("--gpus", "2", "--zero-stage", "3"),
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "(compute.deepspeed.zero_stage)" in refused.stderr
        assert "joint" in refused.stderr
