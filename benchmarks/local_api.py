"""Starting the service's processes for a benchmark: a free loopback port, waiting until an
API answers ``/health``, and ``steer`` processes over one fresh data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str, *, timeout: float = 60.0, process: subprocess.Popen | None = None, what: str = "API"
) -> None:
    """Poll ``{url}/health`` until it answers 200; RuntimeError when ``timeout`` passes first or
    ``process`` (the API's) exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start")
        time.sleep(0.2)


class LocalService:
    """``steer`` subcommands over one data directory, as a user runs them: one-shot commands
    (``run_once``), long-running processes (``spawn``: each in its own process group, its log in
    the data directory) and ``stop``, which ends every process spawned and what it started."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEER_")}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            self.env.pop(name, None)
        self.env.update({"STEER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **(env or {})})
        if os.environ.get("STEER_MODEL_CACHE_DIR"):
            self.env["STEER_MODEL_CACHE_DIR"] = os.environ["STEER_MODEL_CACHE_DIR"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def run_once(self, *args: str, timeout: float) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "steer.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"steer {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")

    def spawn(self, name: str, *args: str) -> None:
        log_file = (self.data_dir / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "steer.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() ends it and what it started
        )

    def stop(self, grace: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log_tails(self, chars: int = 2500) -> dict[str, str]:
        return {p.name: p.read_text()[-chars:] for p in sorted(self.data_dir.glob("*.log"))}
