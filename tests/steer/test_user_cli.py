"""The user CLI (``steer files|jobs|adapters|generate``) as a subprocess against a real service
with a real worker: what the user sees, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steer.client import SteerClient
from tests.service.harness import ROOT, running_service
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow


def _steer(tmp: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "COLUMNS": "200"}
    env.pop("STEER_URL", None)
    if url:
        env["STEER_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "steer.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_job_from_the_command_line(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded") as service:
        service.start_worker("w1")
        configured = _steer(tmp_path, "configure", "--url", service.url)
        assert configured.returncode == 0, configured.stderr
        config = tmp_path / "config" / "steer" / "config.json"
        assert json.loads(config.read_text())["url"] == service.url
        assert oct(config.stat().st_mode & 0o777) == "0o600"

        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": 3}\n')
        refused = _steer(tmp_path, "files", "upload", str(bad))
        assert refused.returncode == 2
        assert "invalid file" in refused.stderr and "line 2" in refused.stderr

        data = write_sums(tmp_path / "train.jsonl", n=32)
        created = _steer(
            tmp_path,
            *("jobs", "create", "--model", "tiny-llama", "--file", str(data)),
            *("--method", "post_block", "--layers", "0-2", "--rank", "4", "--epochs", "2"),
            *("--batch-size", "8"),
            *("--suffix", "cli", "--watch"),
        )
        assert created.returncode == 0, created.stdout + created.stderr
        out = created.stdout
        assert "created ftjob-" in out
        assert "step 1/4" in out and "step 4/4" in out and "train loss" in out
        assert "succeeded: adapter cli@1 (adapter-" in out
        job_id = out.split("created ")[1].split(" ")[0]

        client = SteerClient(service.url)
        job = client.get_job(job_id)
        assert job["method"]["post_block"]["site"]["layers"] == [0, 1, 2]
        assert job["method"]["post_block"]["adapter"]["rank"] == 4
        listed = _steer(tmp_path, "jobs", "list")
        assert job_id in listed.stdout and "succeeded" in listed.stdout
        assert "cli@1" in _steer(tmp_path, "adapters", "list").stdout

        downloaded = _steer(tmp_path, "adapters", "download", "cli@1", "--out", str(tmp_path))
        assert downloaded.returncode == 0, downloaded.stderr
        assert (tmp_path / "cli-v1" / "adapter_model.safetensors").is_file()

        generated = _steer(
            tmp_path, "generate", "--model", "cli@1", "--prompt", "3+4=", "--max-tokens", "6"
        )
        assert generated.returncode == 0, generated.stderr
        expected = client.complete("cli@1", "3+4=", max_tokens=6, temperature=0)
        assert generated.stdout == expected + "\n"

        unknown = _steer(tmp_path, "jobs", "create", "--model", "gpt-4o", "--file", str(data))
        assert unknown.returncode == 2
        assert "model" in unknown.stderr and "gpt-4o" in unknown.stderr
        missing = _steer(tmp_path, "jobs", "get", "ftjob-nope")
        assert missing.returncode == 2 and "not_found" in missing.stderr


def test_a_failed_job_and_an_unreachable_server(tmp_path: Path) -> None:
    with running_service(tmp_path, "embedded", quota_max_training_tokens="50") as service:
        service.start_worker("w1")
        data = write_sums(tmp_path / "train.jsonl", n=32)
        result = _steer(
            tmp_path,
            "jobs",
            "create",
            "--model",
            "tiny-llama",
            "--file",
            str(data),
            "--watch",
            url=service.url,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "failed (quota_exceeded)" in result.stderr
        assert "max_training_tokens quota of 50" in result.stderr
    gone = _steer(tmp_path, "jobs", "list", url="http://127.0.0.1:9")
    assert gone.returncode == 2 and "cannot reach" in gone.stderr
    assert "Traceback" not in gone.stderr
