"""Run the real service for tests: ``steer migrate``, ``steer api`` and ``steer worker`` as
subprocesses over a fresh registry (SQLite or PostgreSQL) and broker (filesystem or Redis)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.db_fixtures import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, env: dict[str, str], data_dir: Path):
        self.env, self.data_dir = env, data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.log_paths: dict[str, Path] = {}
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def steer(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        log_path = self.data_dir / f"{args[0]}-{len(self.procs)}.log"
        self.log_paths[args[0] + ("" if args[0] != "worker" else ":" + args[2])] = log_path
        log = open(log_path, "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "steer.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def run_once(self, *args: str) -> str:
        """``steer ARGS`` to completion (``migrate``, ``reconcile``); its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "steer.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def migrate(self) -> None:
        self.run_once("migrate")

    def start_api(self) -> None:
        self.api = self.steer("api", "--port", str(self.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"API did not come up: {self.logs()}")

    def kill_api(self) -> None:
        self.api.kill()
        self.api.wait()

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker process (its training subprocess dies with it: PDEATHSIG)."""
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait()

    def reconcile(self) -> str:
        """``steer reconcile``: one reconciler round, as its own process."""
        return self.run_once("reconcile")

    def worker_log(self, name: str) -> str:
        return self.log_paths[f"worker:{name}@test"].read_text()

    def start_worker(self, name: str, *extra: str) -> subprocess.Popen:
        proc = self.steer("worker", "--name", f"{name}@test", "--loglevel", "info", *extra)
        self.workers[name] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.data_dir.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.http.close()

    # -- client helpers --------------------------------------------------------------------
    def upload(self, path: Path) -> dict:
        with path.open("rb") as handle:
            response = self.http.post(
                "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, handle)}
            )
        assert response.status_code == 200, response.text
        return response.json()

    def create_job(self, **body: Any) -> dict:
        response = self.http.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json()

    def wait_for(self, job_id: str, statuses: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.3)
        raise AssertionError(f"{job_id} still {job['status']} after {timeout}s\n{self.logs()}")

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def training_processes(self, job_id: str) -> list[str]:
        spec = str(self.data_dir / "jobs" / job_id / "spec.json")
        found = subprocess.run(["pgrep", "-f", spec], capture_output=True, text=True)
        return found.stdout.split()

    def started_on(self, job_id: str) -> list[str]:
        """The workers that claimed the job, in order (one per attempt)."""
        return [
            e["message"].split(" on ")[1].split(" ")[0]
            for e in self.events(job_id)
            if e["message"].startswith("Job started on")
        ]

    def events(self, job_id: str) -> list[dict]:
        response = self.http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})
        return list(reversed(response.json()["data"]))


def base_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("STEER_"):
            del env[key]
    env.update(
        {
            "STEER_DATA_DIR": str(data_dir),
            "STEER_CHECKPOINT_EVERY_N_STEPS": "4",
            "STEER_LEASE_SECONDS": "15",
            "STEER_RECONCILE_EVERY_SECONDS": "2",
            "STEER_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def running_service(tmp_path: Path, backend: str, **settings: str) -> Iterator[Service]:
    """A migrated registry and a running API; start workers with ``service.start_worker``."""
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    env = base_env(data_dir)
    env.update({f"STEER_{k.upper()}": v for k, v in settings.items()})
    with ExitStack() as stack:
        if backend == "redis_postgres":
            env["STEER_DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
            db = random.randint(1, 15)
            env["STEER_BROKER_URL"] = f"redis://127.0.0.1:6379/{db}"
            _flush_redis(db)
            stack.callback(_flush_redis, db)
        service = Service(env, data_dir)
        stack.callback(service.stop)
        service.migrate()
        service.start_api()
        yield service


def _flush_redis(db: int) -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
