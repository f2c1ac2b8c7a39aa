"""`steer up` with no settings runs a CPU job of two ranks out of the box (2 CPU slots)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.harness import ROOT, free_port
from tests.steering_core.train_helpers import write_sums

pytestmark = pytest.mark.slow


def _start_steer_up(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """``steer up`` with no settings but its data directory; (process, URL) once it serves."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEER_")}
    env["STEER_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "steer.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("steer up did not serve")
        time.sleep(0.3)


def test_steer_up_runs_a_two_process_cpu_job(tmp_path: Path) -> None:
    proc, url = _start_steer_up(tmp_path)
    try:
        data = write_sums(tmp_path / "train.jsonl", n=16)
        with data.open("rb") as handle:
            file = httpx.post(
                f"{url}/v1/files", data={"purpose": "fine-tune"}, files={"file": handle}
            ).json()
        hp = {"batch_size": 4, "max_steps": 4}
        job = httpx.post(
            f"{url}/v1/fine_tuning/jobs",
            json={
                "model": "tiny-llama",
                "training_file": file["id"],
                "method": {"type": "post_block", "post_block": {"hyperparameters": hp}},
                "compute": {"processes": 2},
            },
        ).json()
        deadline = time.monotonic() + 180
        while (done := httpx.get(f"{url}/v1/fine_tuning/jobs/{job['id']}").json())["status"] in (
            "validating_files",
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, done
            time.sleep(0.5)
        assert done["status"] == "succeeded", done
        compute = done["compute"]
        assert (compute["world_size"], compute["backend"], compute["cpu_slots"]) == (
            2,
            "deepspeed",
            [0, 1],
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_sigterm_of_steer_up_stops_its_workers(tmp_path: Path) -> None:
    proc, _ = _start_steer_up(tmp_path)  # serving: uvicorn has its signal handlers
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    workers = found.stdout.split()
    try:
        assert workers, "steer up started no worker"
        proc.send_signal(signal.SIGTERM)  # the process alone, as a service manager does
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived steer up"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
