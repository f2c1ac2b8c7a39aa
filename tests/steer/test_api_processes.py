"""`steer api --processes N`: N uvicorn processes serve one port from the same settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service.harness import ROOT, free_port


def test_two_api_processes_serve_requests(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEER_")}
    env["STEER_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "steer.cli", "migrate"], cwd=ROOT, env=env, check=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "steer.cli", "api", "--port", str(port), "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        answers: list[int] = []
        while time.monotonic() < deadline and len(answers) < 20:
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code)
            except httpx.TransportError:
                time.sleep(0.3)
        assert answers[-20:] == [200] * 20
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2, children  # the two worker processes under uvicorn's manager
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
