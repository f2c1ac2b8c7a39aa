"""The serving benchmarks' shared parts: an API process in its own data directory, adapters
registered in it as a worker would, the client load (concurrent greedy chat completions with a
status reader beside them), and the per-round ratios the reports give.

Used by ``benchmarks/serving/run.py`` (CPU, SmolLM2-135M) and the ``serving`` section of
``benchmarks/gpu/run.py`` (one GPU, a 1B-shaped Llama)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_api import free_port, wait_until_healthy


def python_path(code: Path) -> str:
    """``code`` first, then whatever this process was given (the GPU machine's wheels)."""
    inherited = os.environ.get("PYTHONPATH")
    return f"{code}{os.pathsep}{inherited}" if inherited else str(code)


def register(
    data_dir: Path, artifacts: list[Path], code: Path, base_model: str, *, env: dict | None = None
) -> None:
    """Store and register ``artifacts`` as ``bench0@1``, ``bench1@1``, ... (post-block adapters
    of ``base_model``) as a worker does, with the code of the API that will serve them."""
    script = f"""
from pathlib import Path
from registry.adapters import create_adapter
from registry.db import session_scope
from registry.migrate import upgrade
from registry.settings import Settings
from registry.storage import store_artifact
settings = Settings(data_dir=Path({str(data_dir)!r}))
settings.ensure_dirs()
upgrade(settings.resolved_database_url)
for index, source in enumerate({[str(a) for a in artifacts]!r}):
    with session_scope(settings.resolved_database_url) as session:
        row = create_adapter(session, tenant_id="default", name=f"bench{{index}}",
            base_model={base_model!r}, method={{"type": "post_block"}}, storage_path="pending",
            sha256="", bytes=0, files={{}}, trainable_parameters=None, metrics=None)
        stored = store_artifact(Path(source), settings.adapters_dir / row.id)
        row.storage_path, row.sha256 = row.id, stored.sha256
        row.bytes, row.files = stored.bytes, stored.files
"""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": python_path(code)}
    subprocess.run([sys.executable, "-c", script], cwd=code, env=environment, check=True)


class Api:
    """``steer api`` of ``code`` on a free port, in ``data_dir`` (embedded SQLite)."""

    def __init__(
        self,
        name: str,
        code: Path,
        data_dir: Path,
        env: dict[str, str] | None = None,
        start_timeout: float = 180.0,
    ):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "STEER_DATA_DIR": str(data_dir),
            "STEER_GENERATION_MAX_BATCH": "64",
            **(env or {}),
            "PYTHONPATH": python_path(code),
        }
        self.log_path = data_dir / "api.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "steer.cli", "api", "--port", str(self.port)],
            cwd=code,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until_healthy(
            self.url,
            timeout=start_timeout,
            process=self.process,
            what=f"{name} API ({self.log_path})",
        )

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def log_tail(self, characters: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-characters:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def body(model: str, client: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "user", "content": f"Write a short story about the number {client}."}
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


async def load(
    url: str, models: list[str], seconds: float, max_tokens: int, status: str | None
) -> dict[str, Any]:
    """``len(models)`` clients, each sending its model's requests back to back until the time
    is up; the answers in flight then are awaited and counted. With ``status`` (a job id), a
    reader polls that job every 50 ms meanwhile."""
    latencies: list[float] = []
    tokens = 0
    reads: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=len(models) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=1800, limits=limits) as http:

        async def client(index: int, model: str) -> None:
            nonlocal tokens
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                response = await http.post(
                    "/v1/chat/completions", json=body(model, index, max_tokens)
                )
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)
                tokens += response.json()["usage"]["completion_tokens"]

        async def reader() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                (await http.get(f"/v1/fine_tuning/jobs/{status}")).raise_for_status()
                reads.append(time.perf_counter() - sent)
                await asyncio.sleep(0.05)

        tasks = [client(i, m) for i, m in enumerate(models)]
        if status is not None:
            tasks.append(reader())
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "tokens": tokens,
        "seconds": round(wall, 2),
        "tokens_per_second": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": p99(latencies),
        "status_reads": reads,
    }


async def idle_reads(url: str, seconds: float, status: str) -> list[float]:
    """Status reads every 50 ms with no generation load: the reference for ``load``'s."""
    reads = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            (await http.get(f"/v1/fine_tuning/jobs/{status}")).raise_for_status()
            reads.append(time.perf_counter() - sent)
            await asyncio.sleep(0.05)
    return reads


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def status_job(url: str, model: str = "tiny-llama") -> str:
    """A queued job to read the status of (no worker runs it)."""
    line = b'{"prompt": "1+1=", "completion": "2"}\n' * 20
    with httpx.Client(base_url=url, timeout=60) as http:
        upload = http.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", line)}
        )
        upload.raise_for_status()
        job = http.post(
            "/v1/fine_tuning/jobs", json={"model": model, "training_file": upload.json()["id"]}
        )
        job.raise_for_status()
        return str(job.json()["id"])


def warm(url: str, models: list[str]) -> None:
    """One one-token request per model: the base model and each adapter loaded."""
    with httpx.Client(base_url=url, timeout=600) as http:
        for model in models:
            http.post("/v1/chat/completions", json=body(model, 0, 1)).raise_for_status()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def level_row(level: int, runs: dict[str, list[dict[str, Any]]], idle: list[list[float]]) -> dict:
    """One level's medians over rounds, and the per-round ratios: adapters / base, adapters /
    baseline (where run), and the status p99 under load / idle (where measured)."""
    row: dict[str, Any] = {"level": level}
    for kind, kind_runs in runs.items():
        if kind_runs:
            row[kind] = {
                "tokens_per_second": statistics.median(r["tokens_per_second"] for r in kind_runs),
                "p50_s": statistics.median(r["p50_s"] for r in kind_runs),
                "p99_s": statistics.median(r["p99_s"] for r in kind_runs),
                "rounds": len(kind_runs),
            }
    paired = list(zip(runs["adapters"], runs["base"], strict=False))
    if paired:
        row["adapters_over_base"] = summary(
            [a["tokens_per_second"] / b["tokens_per_second"] for a, b in paired]
        )
    if runs.get("baseline"):
        row["adapters_over_baseline"] = summary(
            [
                a["tokens_per_second"] / b["tokens_per_second"]
                for a, b in zip(runs["adapters"], runs["baseline"], strict=False)
            ]
        )
    if idle:
        loaded = [p99(r["status_reads"]) for r in runs["adapters"][: len(idle)]]
        quiet = [p99(reads) for reads in idle]
        row["status_p99_loaded_over_idle"] = summary(
            [a / b for a, b in zip(loaded, quiet, strict=True)]
        )
        row["status_p99_ms"] = {
            "loaded": statistics.median(loaded) * 1000,
            "idle": statistics.median(quiet) * 1000,
        }
    return row
