"""The service under load, on loopback: the real ``steer api`` on PostgreSQL and Redis.

    python benchmarks/service/run.py [--api-processes 2] [--clients 50] [--seconds 10]
    python benchmarks/service/run.py --auth    # with API keys, as in production (results-auth.*)
    python benchmarks/service/run.py --quick   # a smoke run in under a minute (results-quick.*)

Job creation and status reads are driven by ``wrk`` (Debian's ``wrk`` package: a C load
generator, so the client's own CPU does not eat the 2 cores the server shares with PostgreSQL
and Redis); without ``wrk`` on PATH, by an asyncio httpx client in this process
(``--load-generator httpx``), which on this machine costs the server about half its throughput.
The event fan-out and queue latency use httpx either way.

Measures: job creation latency (p50/p99) at N concurrent clients; status reads per second;
event-stream fan-out (K clients on one running job: every event reaches every client, and the
delivery lag); queue latency (submit -> running, with an idle worker). Creates a throwaway
PostgreSQL database and uses a Redis database index it flushes. Writes ``results.md`` and
``results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from local_api import free_port, wait_until_healthy  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"
TARGETS = {"create_p99_ms": 100.0, "reads_per_second": 1000.0, "queue_latency_s": 1.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def admin() -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True)


def sums_file(path: Path, n: int = 32) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}))
    path.write_text("\n".join(rows) + "\n")
    return path


def _cpu_of(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # gone since it was listed
            continue
        total += times.user + times.system
    return total


class CpuMeter:
    """Where a phase's CPU goes: the API processes, PostgreSQL, Redis, the load generator, and
    everything else on the machine, as CPU milliseconds per request. Their sum bounds the
    throughput: ``cores / total``. The load generator is this script (the httpx client) and its
    children that ended during the phase (wrk)."""

    def __init__(self, api_pid: int):
        self.api = psutil.Process(api_pid)
        self.redis = redis.Redis(host="127.0.0.1")

    def _redis_cpu(self) -> float:
        """Redis's own account (getrusage, in microseconds): a creation costs it well under a
        millisecond, below the 10 ms ticks of the per-process counters, so a short phase of
        those read as 0."""
        info = self.redis.info("cpu")
        return sum(float(info[k]) for k in info if k.startswith("used_cpu_") and "thread" not in k)

    def _groups(self) -> dict[str, float]:
        postgres = [
            process
            for process in psutil.process_iter(["name"])
            if (process.info["name"] or "") in ("postgres", "postmaster")
        ]
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        busy = psutil.cpu_times()
        return {
            "api": _cpu_of([self.api, *self.api.children(recursive=True)]),
            "postgres": _cpu_of(postgres),
            "redis": self._redis_cpu(),
            "load_generator": sum(usage.ru_utime + usage.ru_stime for usage in (children, own)),
            "machine": busy.user + busy.nice + busy.system + busy.irq + busy.softirq,
            "wall": time.monotonic(),
        }

    def __enter__(self) -> CpuMeter:
        self.start = self._groups()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._groups()

    def per_request(self, requests: int) -> dict[str, float]:
        spent = {k: self.end[k] - self.start[k] for k in self.start}
        wall = spent.pop("wall")
        machine = spent.pop("machine")
        spent["other"] = max(0.0, machine - sum(spent.values()))
        out = {k: round(1000 * v / max(1, requests), 2) for k, v in spent.items()}
        out["total"] = round(1000 * machine / max(1, requests), 2)
        out["cores_busy"] = round(machine / wall, 2)
        return out


def measured(stack: Stack, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load phase and add where its CPU went (``cpu_ms_per_request``)."""
    with CpuMeter(stack.procs[0].pid) as meter:
        result = phase()
    result["cpu_ms_per_request"] = meter.per_request(result["requests"])
    return result


class Stack:
    """migrate + api (+ a worker) as subprocesses of ``steer``."""

    def __init__(
        self, folder: Path, database: str, redis_db: int, processes: int = 1, auth: bool = False
    ):
        self.folder, self.port, self.processes = folder, free_port(), processes
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STEER_")},
            "STEER_DATA_DIR": str(folder / "data"),
            "STEER_DATABASE_URL": PG.format(database),
            "STEER_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "STEER_TORCH_THREADS": "1",
            "STEER_LOG_FORMAT": "json",
        }
        self.admin_key = None
        if auth:
            self.admin_key = f"bench-admin-{uuid.uuid4().hex}"
            self.env |= {"STEER_AUTH": "on", "STEER_ADMIN_KEY": self.admin_key}
        self.procs: list[subprocess.Popen] = []

    def tenant_headers(self) -> dict[str, str]:
        """Without auth, none; with it, a tenant's API key (checked against the registry on
        every request, as in production; the admin key is compared in memory)."""
        if self.admin_key is None:
            return {}
        admin = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=self.url, headers=admin, timeout=30) as client:
            tenant = client.post("/v1/admin/tenants", json={"name": "bench"}).json()
            key = client.post(
                f"/v1/admin/tenants/{tenant['id']}/api_keys", json={"name": "bench"}
            ).json()
        return {"Authorization": f"Bearer {key['key']}"}

    def steer(self, *args: str, wait: bool = False) -> subprocess.Popen:
        log = (self.folder / f"{args[0]}-{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "steer.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            if proc.wait() != 0:
                raise RuntimeError(f"steer {args[0]} failed")
        else:
            self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.steer("migrate", wait=True)
        self.steer("api", "--port", str(self.port), "--processes", str(self.processes))
        wait_until_healthy(self.url, timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def job_body(file_id: str) -> dict[str, Any]:
    """The job every phase creates: post-block on the tiny test model (never trained here but
    in the fan-out and queue-latency phases, where a worker runs)."""
    return {"model": "tiny-llama", "training_file": file_id, "method": {"type": "post_block"}}


def _latency_summary(
    clients: int, latencies: list[float], errors: int, wall: float, **extra: Any
) -> dict[str, Any]:
    """One httpx phase's answers: count, errors, p50/p99 and rate."""
    return {
        "clients": clients,
        **extra,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "per_second": round(len(latencies) / wall, 1),
        "load_generator": "httpx",
    }


async def job_creation(
    url: str, file_id: str, clients: int, per_client: int, headers: dict[str, str]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    body = job_body(file_id)
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers=headers
    ) as client:

        async def one_client() -> None:
            nonlocal errors
            for _ in range(per_client):
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/fine_tuning/jobs", json=body)
                    errors += response.status_code != 200
                except httpx.TransportError:  # counted, not fatal: the report shows them
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return _latency_summary(clients, latencies, errors, wall)


async def paced_creation(
    url: str, file_id: str, clients: int, rate: float, seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    """Open loop: ``clients`` clients, each creating a job every ``clients / rate`` seconds on
    its own schedule (random phase), whether or not its previous answer is in. Latency counts
    from the scheduled send, so time spent waiting behind a slow answer is not hidden."""
    latencies: list[float] = []
    errors = 0
    body = job_body(file_id)
    period = clients / rate
    limits = httpx.Limits(max_connections=4 * clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers=headers
    ) as client:
        start = time.perf_counter() + 0.1

        async def one(scheduled: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                response = await client.post("/v1/fine_tuning/jobs", json=body)
                errors += response.status_code != 200
            except httpx.TransportError:
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        schedule = [
            start + phase + k * period
            for phase in (random.uniform(0, period) for _ in range(clients))
            for k in range(max(1, int(seconds / period)))
        ]
        await asyncio.gather(*(one(t) for t in schedule))
        wall = time.perf_counter() - start
    return _latency_summary(clients, latencies, errors, wall, offered_per_second=rate)


async def status_reads(
    url: str, job_id: str, clients: int, seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    errors = 0
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers=headers
    ) as client:
        deadline = time.perf_counter() + seconds

        async def reader() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get(f"/v1/fine_tuning/jobs/{job_id}")
                    errors += response.status_code != 200
                except httpx.TransportError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(clients)))
        wall = time.perf_counter() - started
    return _latency_summary(clients, latencies, errors, wall)


async def fan_out(url: str, job_id: str, clients: int, headers: dict[str, str]) -> dict[str, Any]:
    """K clients stream one job's events to its end; each must see every event."""
    received: list[list[str]] = [[] for _ in range(clients)]
    async with httpx.AsyncClient(base_url=url, timeout=None, headers=headers) as client:

        async def follow(i: int) -> None:
            path = f"/v1/fine_tuning/jobs/{job_id}/events"
            async with client.stream("GET", path, params={"stream": "true"}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        received[i].append(line[4:])

        started = time.perf_counter()
        await asyncio.gather(*(follow(i) for i in range(clients)))
        wall = time.perf_counter() - started
    complete = all(r == received[0] for r in received) and bool(received[0])
    return {
        "clients": clients,
        "events_per_client": len(received[0]),
        "every_client_got_every_event_in_order": complete,
        "stream_seconds": round(wall, 1),
    }


def queue_latency(url: str, file_id: str, runs: int, headers: dict[str, str]) -> dict[str, Any]:
    latencies = []
    body = job_body(file_id)
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(runs):
            started = time.perf_counter()
            job = client.post("/v1/fine_tuning/jobs", json=body).json()
            while client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "queued":
                time.sleep(0.01)
            latencies.append(time.perf_counter() - started)
            while client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "running":
                time.sleep(0.1)
    return {
        "runs": runs,
        "p50_s": round(statistics.median(latencies), 3),
        "max_s": round(max(latencies), 3),
    }


WRK_POST = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(
    url: str,
    clients: int,
    seconds: float,
    headers: dict[str, str],
    script: Path | None = None,
) -> dict[str, Any]:
    """``wrk --latency``: its request rate, p50/p99 latency and error counts."""
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def latency(percent: str) -> float:
        line = next(x for x in out.splitlines() if x.strip().startswith(percent + "%"))
        value = line.split()[1]
        unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
        return round(float(value[: -len(unit)]) * units[unit], 1)

    requests = int(next(x for x in out.splitlines() if "requests in" in x).split()[0])
    non_2xx = sum(int(x.split(":")[1]) for x in out.splitlines() if x.strip().startswith("Non-2xx"))
    socket_errors = sum(
        int(part.split()[1])
        for x in out.splitlines()
        if x.strip().startswith("Socket errors")
        for part in x.split(":", 1)[1].split(",")
    )
    rate = float(next(x for x in out.splitlines() if x.startswith("Requests/sec")).split()[1])
    return {
        "clients": clients,
        "requests": requests,
        "errors": non_2xx + socket_errors,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "per_second": round(rate, 1),
        "load_generator": "wrk",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs-per-client", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream-clients", type=int, default=20)
    parser.add_argument("--queue-runs", type=int, default=5)
    parser.add_argument("--api-processes", type=int, default=1, help="steer api --processes")
    parser.add_argument(
        "--load-generator",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=100.0,
        help="creations/s offered by the clients together in the open-loop phase",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="STEER_AUTH=on: every request carries a tenant's API key; writes results-auth.*",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="8 clients, 2 s phases, 2 queue runs, 3 stream clients; writes results-quick.*",
    )
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.queue_runs, args.stream_clients = 8, 2.0, 2, 3
        args.paced_rate = 16.0
        # 120 creations: PostgreSQL's share (about 1.4 ms each) then spans some 17 of the 10 ms
        # ticks that per-process CPU is counted in; with 40 it read 0 now and then
        args.jobs_per_client = 15
    database = f"steer_bench_{uuid.uuid4().hex[:8]}"
    redis_db = 14
    redis.Redis(host="127.0.0.1", db=redis_db).flushdb()
    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            stack = Stack(Path(folder), database, redis_db, args.api_processes, args.auth)
            stack.start()
            try:
                headers = stack.tenant_headers()
                with httpx.Client(base_url=stack.url, timeout=60, headers=headers) as client:
                    data = sums_file(Path(folder) / "train.jsonl")
                    with data.open("rb") as handle:
                        file_id = client.post(
                            "/v1/files", data={"purpose": "fine-tune"}, files={"file": handle}
                        ).json()["id"]
                print("job creation ...", flush=True)
                body = job_body(file_id)
                script = Path(folder) / "create.lua"
                script.write_text(WRK_POST.format(body=json.dumps(body)))
                results["job_creation"] = measured(
                    stack,
                    lambda: (
                        wrk(
                            f"{stack.url}/v1/fine_tuning/jobs",
                            args.clients,
                            args.seconds,
                            headers,
                            script,
                        )
                        if args.load_generator == "wrk"
                        else asyncio.run(
                            job_creation(
                                stack.url, file_id, args.clients, args.jobs_per_client, headers
                            )
                        )
                    ),
                )
                print(results["job_creation"], flush=True)
                print("paced job creation ...", flush=True)
                results["paced_creation"] = asyncio.run(
                    paced_creation(
                        stack.url, file_id, args.clients, args.paced_rate, args.seconds, headers
                    )
                )
                print(results["paced_creation"], flush=True)
                with httpx.Client(base_url=stack.url, headers=headers) as client:
                    some_job = client.get("/v1/fine_tuning/jobs").json()["data"][0]["id"]
                print("status reads ...", flush=True)
                reads_url = f"{stack.url}/v1/fine_tuning/jobs/{some_job}"
                results["status_reads"] = measured(
                    stack,
                    lambda: (
                        wrk(reads_url, args.clients, args.seconds, headers)
                        if args.load_generator == "wrk"
                        else asyncio.run(
                            status_reads(stack.url, some_job, args.clients, args.seconds, headers)
                        )
                    ),
                )
                print(results["status_reads"], flush=True)
                # cancel what is left queued, so the worker starts idle
                with psycopg.connect(
                    host="127.0.0.1", user="postgres", dbname=database, autocommit=True
                ) as connection:
                    connection.execute(
                        "UPDATE jobs SET status = 'cancelled', cancel_requested = true "
                        "WHERE status = 'queued'"
                    )
                redis.Redis(host="127.0.0.1", db=redis_db).flushdb()
                stack.steer("worker", "--name", "bench@local", "--no-reconciler")
                time.sleep(8)  # the worker starts (imports, connects)
                print("queue latency ...", flush=True)
                results["queue_latency"] = queue_latency(
                    stack.url, file_id, args.queue_runs, headers
                )
                print(results["queue_latency"], flush=True)
                print("event fan-out ...", flush=True)
                with httpx.Client(base_url=stack.url, timeout=60, headers=headers) as client:
                    job = client.post(
                        "/v1/fine_tuning/jobs",
                        json={
                            "model": "tiny-llama",
                            "training_file": file_id,
                            "method": {
                                "type": "post_block",
                                "post_block": {
                                    "hyperparameters": {"n_epochs": 3 if args.quick else 20}
                                },
                            },
                        },
                    ).json()
                results["event_fan_out"] = asyncio.run(
                    fan_out(stack.url, job["id"], args.stream_clients, headers)
                )
                print(results["event_fan_out"], flush=True)
            finally:
                stack.stop()
    finally:
        with admin() as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
            connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
        redis.Redis(host="127.0.0.1", db=redis_db).flushdb()
    results["api_processes"] = args.api_processes
    results["auth"] = args.auth
    results["quick"] = args.quick
    write(results)
    return 0


def write(results: dict[str, Any]) -> None:
    suffix = "" if results["api_processes"] == 1 else f"-{results['api_processes']}-processes"
    if results["auth"]:
        suffix += "-auth"
    if results["quick"]:
        suffix += "-quick"
    (HERE / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    create, reads = results["job_creation"], results["status_reads"]
    paced = results["paced_creation"]
    queue, fan = results["queue_latency"], results["event_fan_out"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    lines = [
        "# The service under load",
        "",
        "`python benchmarks/service/run.py"
        + ("" if results["api_processes"] == 1 else f" --api-processes {results['api_processes']}")
        + (" --auth" if results["auth"] else "")
        + (" --quick" if results["quick"] else "")
        + f"` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, {os.cpu_count()} cores shared by the server, PostgreSQL, Redis "
        f"and the load generator; `steer api --processes {results['api_processes']}`, JSON logs "
        "on, "
        + (
            "`STEER_AUTH=on`: every request carries a tenant's API key, looked up in the registry)."
            if results["auth"]
            else "`STEER_AUTH=off`, the local default: no API key lookups)."
        ),
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| job creation, {create['clients']} concurrent clients, {create['requests']} requests | "
        f"p50 {create['p50_ms']} ms, p99 {create['p99_ms']} ms ({create['per_second']}/s, "
        f"{create['errors']} errors) | p99 < {TARGETS['create_p99_ms']:.0f} ms: "
        f"{verdict(create['p99_ms'] < TARGETS['create_p99_ms'])} |",
        f"| job creation, {paced['clients']} clients offering {paced['offered_per_second']:g}/s "
        f"together (open loop), {paced['requests']} requests | p50 {paced['p50_ms']} ms, p99 "
        f"{paced['p99_ms']} ms ({paced['per_second']}/s, {paced['errors']} errors) | (not the "
        f"target's setup) p99 < {TARGETS['create_p99_ms']:.0f} ms at this pace: "
        f"{'yes' if paced['p99_ms'] < TARGETS['create_p99_ms'] else 'no'} |",
        f"| status reads, {reads['clients']} concurrent clients | {reads['per_second']}/s "
        f"(p50 {reads['p50_ms']} ms, p99 {reads['p99_ms']} ms, {reads['errors']} errors) | "
        f"> {TARGETS['reads_per_second']:.0f}/s: "
        f"{verdict(reads['per_second'] > TARGETS['reads_per_second'])} |",
        f"| queue latency (submit -> running, idle worker), {queue['runs']} jobs | "
        f"median {queue['p50_s']} s, max {queue['max_s']} s | < {TARGETS['queue_latency_s']:.0f} "
        f"s: {verdict(queue['max_s'] < TARGETS['queue_latency_s'])} |",
        f"| event stream fan-out, {fan['clients']} clients on one running job | "
        f"{fan['events_per_client']} events each; all clients got all, in order: "
        f"{fan['every_client_got_every_event_in_order']} | every event to every client |",
        "",
        f"Load generator: {create['load_generator']} for creation and reads; httpx for the "
        "fan-out and the queue latency.",
        "",
        f"The bound for creation latency: {create['clients']} clients each waiting for its answer "
        "keep that many requests in flight, so the mean latency is clients / throughput "
        f"(Little's law): {create['clients']} / {create['per_second']}/s = "
        f"{1000 * create['clients'] / create['per_second']:.0f} ms. A p99 under "
        f"{TARGETS['create_p99_ms']:.0f} ms at {create['clients']} clients needs more than "
        f"{create['clients'] / TARGETS['create_p99_ms'] * 1000:.0f} creations/s. The open-loop "
        "row is the same clients at a set pace below that saturation (each sends on its own "
        "schedule, latency counted from the scheduled send): the latency a client sees when "
        "the service is busy but not overrun.",
        *cpu_table(create, reads),
    ]
    (HERE / f"results{suffix}.md").write_text("\n".join(lines))


def cpu_table(create: dict[str, Any], reads: dict[str, Any]) -> list[str]:
    """Where each request's CPU went, and the throughput that cost allows on this machine."""
    cores = os.cpu_count() or 1
    groups = [
        ("api", "API processes"),
        ("postgres", "PostgreSQL"),
        ("redis", "Redis"),
        ("load_generator", "load generator"),
        ("other", "other processes"),
        ("total", "**all, machine-wide**"),
    ]
    phases = [("job creation", create), ("status read", reads)]
    lines = [
        "",
        "## Where the CPU goes",
        "",
        "CPU milliseconds per request, from the processes' CPU times before and after each "
        f"phase. On {cores} cores, a request that costs T ms of CPU in all caps throughput at "
        f"{cores} x 1000 / T per second.",
        "",
        "| CPU ms per request | " + " | ".join(name for name, _ in phases) + " |",
        "|---|" + "---:|" * len(phases),
    ]
    for key, label in groups:
        row = [f"{phase['cpu_ms_per_request'][key]:.2f}" for _, phase in phases]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    busy = [f"{phase['cpu_ms_per_request']['cores_busy']:.2f}" for _, phase in phases]
    lines.append(f"| cores busy (of {cores}) | " + " | ".join(busy) + " |")
    bounds = [
        f"{cores * 1000 / max(phase['cpu_ms_per_request']['total'], 1e-9):.0f}/s"
        for _, phase in phases
    ]
    lines.append("| throughput bound, cores x 1000 / all | " + " | ".join(bounds) + " |")
    return lines


if __name__ == "__main__":
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
