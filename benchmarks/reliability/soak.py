"""Chaos soak: the real service under steady load while faults are injected at random, then
every accepted job is checked against the invariants the fault tests check one at a time.

    python benchmarks/reliability/soak.py [--minutes 20] [--seed N] [--out PREFIX]

What runs: a private PostgreSQL and a private Redis (``tests/service/servers.py``), ``steer
migrate``, ``steer api --processes 2`` and two ``steer worker`` processes, over a temporary data
directory, with a short lease (4 s), a reconciler round every second, a checkpoint every 20
steps and queued jobs re-sent after 5 s without a worker taking them.

The load, for ``--minutes``: one submitter keeps a few jobs unfinished at once (tiny-llama,
post_block / lora / reft / joint / full, 12 to 200 steps); some carry an ``Idempotency-Key`` and
are retried at once (and again after an error), which must answer the first job; some are
cancelled at a random moment. A few reader threads poll job status, events, the job list and
the adapter list. Every request's wall time, latency and answer are recorded.

The faults, one at a time every 30-90 s (``--fault-interval``): ``kill -9`` of a random worker
(a replacement is started), ``kill -9`` of the API's process group (then restarted), Redis
killed and restarted empty (its messages lost), PostgreSQL stopped for a few seconds. Each
fault's window runs from its start to its recovery plus a grace (10 s).

At the end the load stops, every accepted job is waited for, the service is stopped, and the
registry (the private PostgreSQL) and the data directory are checked: no job lost, one final
state each, no job run twice (events, and a sampler of live training processes), one verified
adapter per success, no orphan files or processes, idempotent retries answered the first job,
acknowledged cancels won, and no API error outside the fault windows. The results go to
``PREFIX.json`` (raw) and ``PREFIX.md`` (the report); by default
``benchmarks/reliability/soak.{json,md}``. The exit status is 1 when an invariant does not hold;
the working folder (the data directory with every service log under ``data/logs``, and the
servers' folders) is then kept, as with ``--keep``. A quick check that everything works:

    python benchmarks/reliability/soak.py --minutes 3 --fault-interval 15 35 --out /tmp/soak

The whole soak holds ``benchmarks.timing_lock.timing()`` (the background study pauses, so the
latencies measure the service). Needs root (PostgreSQL runs as the ``postgres`` user), the
PostgreSQL binaries and ``redis-server``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import heapq
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, select  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from benchmarks.timing_lock import timing  # noqa: E402
from registry.jobs import REQUEUED_MESSAGE  # noqa: E402
from registry.models import Adapter, File, Job, JobEvent  # noqa: E402
from steering_core.artifact.check import check_artifact  # noqa: E402
from tests.service.harness import base_env, free_port  # noqa: E402
from tests.service.servers import PrivatePostgres, PrivateRedis, private_postgres, private_redis  # noqa: E402
from tests.steering_core.train_helpers import write_sums  # noqa: E402

FINAL = {"succeeded", "failed", "cancelled"}
METHODS = ["post_block", "lora", "reft", "joint", "full"]
FAULT_KINDS = ["worker", "api", "redis", "postgres"]
SETTINGS = {
    "STEER_LEASE_SECONDS": "4",
    "STEER_RECONCILE_EVERY_SECONDS": "1",
    "STEER_CHECKPOINT_EVERY_N_STEPS": "20",
    "STEER_REQUEUE_STALE_AFTER_SECONDS": "5",
    "STEER_TORCH_THREADS": "1",
}
ROWS = 64  # batch 8, accumulation 2: 4 optimizer steps an epoch
STEPS_PER_EPOCH = 4
GRACE_SECONDS = 10.0
TRANSPORT_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "ReadError",
    "ReadTimeout",
    "WriteError",
    "WriteTimeout",
    "RemoteProtocolError",
    "PoolTimeout",
}
# Which answers a fault explains while its window is open.
EXPLAINED = {
    "api": lambda outcome: outcome in TRANSPORT_ERRORS,
    "postgres": lambda outcome: outcome == 503,
    "redis": lambda outcome: False,
    "worker": lambda outcome: False,
}
JOB_IN_SPEC = re.compile(r"/jobs/(ftjob-[0-9a-f]+)/spec\.json")


def now() -> float:
    return time.time()


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    cmdline: str


def process_table() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = Proc(
            pid=int(entry),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            state=fields[0],
            cmdline=raw.replace(b"\0", b" ").decode(errors="replace").strip(),
        )
    return table


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def descendants(pid: int, table: dict[int, Proc] | None = None) -> list[Proc]:
    table = table or process_table()
    children: dict[int, list[Proc]] = collections.defaultdict(list)
    for proc in table.values():
        children[proc.ppid].append(proc)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def training_processes(jobs_dir: Path, table: dict[int, Proc] | None = None) -> list[Proc]:
    """Live engine processes (``steering_core.cli train``) of this soak's jobs."""
    table = table or process_table()
    return [
        p
        for p in table.values()
        if p.state not in ("Z", "X")
        and "steering_core.cli" in p.cmdline
        and str(jobs_dir) in p.cmdline
    ]


def processes_with_env(marker: bytes) -> list[Proc]:
    """Live processes whose environment holds ``marker`` (this soak's STEER_DATA_DIR=...)."""
    found = []
    for pid, proc in process_table().items():
        if pid == os.getpid() or proc.state in ("Z", "X"):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(proc)
    return found


# -- the service ----------------------------------------------------------------------------


class Service:
    """``steer api`` and ``steer worker`` processes over one data directory, each in its own
    process group (so a kill reaches all of it and nothing is left behind on exit)."""

    def __init__(self, env: dict[str, str], data_dir: Path, api_processes: int):
        self.env, self.data_dir, self.api_processes = env, data_dir, api_processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.RLock()
        self.api: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.groups: list[int] = []  # every process group started, for the final cleanup
        self.worker_count = 0

    def _spawn(self, label: str, *args: str) -> subprocess.Popen:
        path = self.data_dir / "logs" / f"{label}.log"
        path.parent.mkdir(exist_ok=True)
        with path.open("a") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "steer.cli", *args],
                cwd=ROOT,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.groups.append(proc.pid)
        return proc

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "steer.cli", "migrate"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"steer migrate failed: {result.stderr}")

    def start_api(self, timeout: float = 90) -> float:
        """Start the API; returns when it answers a registry read (the time it took)."""
        started = time.monotonic()
        with self.lock:
            self.api = self._spawn(
                f"api-{len(self.groups)}",
                "api",
                "--port",
                str(self.port),
                "--processes",
                str(self.api_processes),
            )
        if not self.wait_answering(timeout):
            raise RuntimeError(f"the API did not come up in {timeout}s")
        return time.monotonic() - started

    def wait_answering(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/v1/fine_tuning/jobs", params={"limit": 1}).status_code == 200:
                        return True
                time.sleep(0.2)
        return False

    def kill_api(self) -> None:
        """SIGKILL the API's whole process group (uvicorn's supervisor and its workers)."""
        with self.lock:
            api = self.api
            self.api = None
        if api is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            p.pgid == api.pid and p.state not in ("Z", "X") for p in process_table().values()
        ):
            time.sleep(0.1)

    def start_worker(self) -> str:
        with self.lock:
            self.worker_count += 1
            name = f"w{self.worker_count}@soak"
            self.workers[name] = self._spawn(
                f"worker-{name.split('@')[0]}", "worker", "--name", name, "--loglevel", "info"
            )
            return name

    def live_groups(self) -> set[int]:
        """The process groups started here that still have a live process of this service (a
        group id whose processes are all gone is never signalled: it could be reused)."""
        ours = {p.pgid for p in processes_with_env(self.marker)}
        return {pgid for pgid in self.groups if pgid in ours}

    @property
    def marker(self) -> bytes:
        return f"STEER_DATA_DIR={self.env['STEER_DATA_DIR']}".encode()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every process group (a warm shutdown), then SIGKILL what is left."""
        with self.lock:
            self.api, self.workers = None, {}
        for pgid in self.live_groups():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.live_groups():
            time.sleep(0.2)
        for pgid in self.live_groups():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


# -- recording ------------------------------------------------------------------------------


@dataclass
class Request:
    kind: str
    start: float
    latency: float
    outcome: int | str  # HTTP status, or the transport error's class name


@dataclass
class Fault:
    kind: str
    start: float
    detail: dict[str, Any] = field(default_factory=dict)
    recovered: float | None = None
    recovery_seconds: float | None = None

    @property
    def window(self) -> tuple[float, float]:
        return (self.start, (self.recovered or now()) + GRACE_SECONDS)


class Soak:
    def __init__(
        self,
        args: argparse.Namespace,
        service: Service,
        db: Engine,
        redis: PrivateRedis,
        postgres: PrivatePostgres,
        training_file: str,
    ):
        self.args, self.service, self.db = args, service, db
        self.redis, self.postgres = redis, postgres
        self.training_file = training_file
        self.rng = random.Random(args.seed)  # the submitter's
        self.fault_rng = random.Random(args.seed + 1)  # the injector's
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.unexpected_exits: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}  # job id -> what was asked
        self.known_status: dict[str, str] = {}
        self.failed_submits: list[dict[str, Any]] = []
        self.idempotent: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []
        self.cancel_queue: list[tuple[float, str]] = []
        self.overlap_samples: list[dict[str, Any]] = []
        self.max_training_processes = 0
        self.orphans_after_worker_kill: list[dict[str, Any]] = []
        self.stop_load = threading.Event()
        self.stop_faults = threading.Event()
        self.stop_all = threading.Event()

    # -- HTTP ------------------------------------------------------------------------------
    def call(self, client: httpx.Client, kind: str, method: str, path: str, **kwargs: Any):
        start, began = now(), time.monotonic()
        response = None
        try:
            response = client.request(method, path, **kwargs)
            outcome: int | str = response.status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with self.lock:
            self.requests.append(Request(kind, start, time.monotonic() - began, outcome))
        return outcome, response

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.service.url, timeout=self.args.request_timeout)

    # -- the load ---------------------------------------------------------------------------
    def job_body(self) -> dict[str, Any]:
        method = self.rng.choice(METHODS)
        epochs = self.rng.randint(3, 50)
        body: dict[str, Any] = {
            "model": "tiny-llama",
            "training_file": self.training_file,
            "seed": self.rng.randint(0, 2**31 - 1),
            "method": {"type": method, method: {"hyperparameters": {"n_epochs": epochs}}},
        }
        if self.rng.random() < 0.3:
            body["suffix"] = f"soak-{method}"
        return body

    def unfinished(self) -> int:
        with self.lock:
            return sum(1 for s in self.known_status.values() if s not in FINAL)

    def accept(self, job: dict[str, Any], body: dict[str, Any], key: str | None) -> None:
        method = body["method"]["type"]
        with self.lock:
            if job["id"] not in self.accepted:
                self.accepted[job["id"]] = {
                    "method": method,
                    "steps": body["method"][method]["hyperparameters"]["n_epochs"]
                    * STEPS_PER_EPOCH,
                    "accepted_at": now(),
                    "idempotency_key": key,
                }
                self.known_status[job["id"]] = job["status"]
        if self.rng.random() < self.args.cancel_fraction:
            with self.lock:
                heapq.heappush(self.cancel_queue, (now() + self.rng.uniform(0, 20), job["id"]))

    def submitter(self) -> None:
        with self.client() as client:
            while not self.stop_load.is_set():
                if self.unfinished() >= self.args.backlog:
                    self.stop_load.wait(0.5)
                    continue
                body = self.job_body()
                if self.rng.random() < self.args.idempotent_fraction:
                    self.submit_keyed(client, body)
                else:
                    outcome, response = self.call(
                        client, "submit", "POST", "/v1/fine_tuning/jobs", json=body
                    )
                    if outcome == 200:
                        self.accept(response.json(), body, None)
                    else:
                        self.failed_submits.append({"at": now(), "outcome": outcome})
                self.stop_load.wait(self.rng.uniform(0.2, 2.0))

    def submit_keyed(self, client: httpx.Client, body: dict[str, Any]) -> None:
        """POST with an Idempotency-Key until a 200 (a client retrying errors), then once more
        at once: every 200 must name the same job, the repeat marked as replayed."""
        key = f"soak-{uuid.uuid4().hex}"
        headers = {"Idempotency-Key": key}
        record: dict[str, Any] = {"key": key, "answers": [], "first_id": None}
        deadline = time.monotonic() + 120

        def post(kind: str) -> tuple[int | str, httpx.Response | None]:
            outcome, response = self.call(
                client, kind, "POST", "/v1/fine_tuning/jobs", json=body, headers=headers
            )
            answer: dict[str, Any] = {"kind": kind, "outcome": outcome, "at": now()}
            if outcome == 200:
                answer["id"] = response.json()["id"]
                answer["replayed"] = response.headers.get("idempotent-replayed") == "true"
            record["answers"].append(answer)
            return outcome, response

        for kind in ("submit", "submit_retry"):
            delay = 0.5
            while time.monotonic() < deadline and not self.stop_all.is_set():
                outcome, response = post(kind)
                if outcome == 200:
                    if kind == "submit":
                        record["first_id"] = response.json()["id"]
                        self.accept(response.json(), body, key)
                    break
                if isinstance(outcome, int) and 400 <= outcome < 500:
                    break  # a refusal: retrying the same request cannot help
                time.sleep(delay)
                delay = min(delay * 2, 5)
            if record["first_id"] is None:
                self.failed_submits.append({"at": now(), "outcome": "keyed: no 200", "key": key})
                break
        with self.lock:
            self.idempotent.append(record)

    def reader(self, index: int) -> None:
        rng = random.Random(self.args.seed * 100 + index)
        with self.client() as client:
            while not self.stop_load.is_set():
                with self.lock:
                    ids = list(self.accepted)
                    open_ids = [j for j in ids if self.known_status.get(j) not in FINAL]
                roll = rng.random()
                if ids and roll < 0.5:
                    job_id = rng.choice(open_ids or ids)
                    outcome, response = self.call(
                        client, "get_job", "GET", f"/v1/fine_tuning/jobs/{job_id}"
                    )
                    if outcome == 200:
                        with self.lock:
                            self.known_status[job_id] = response.json()["status"]
                elif ids and roll < 0.7:
                    job_id = rng.choice(open_ids or ids)
                    self.call(
                        client,
                        "get_events",
                        "GET",
                        f"/v1/fine_tuning/jobs/{job_id}/events",
                        params={"limit": 20},
                    )
                elif roll < 0.85:
                    self.call(
                        client, "list_jobs", "GET", "/v1/fine_tuning/jobs", params={"limit": 20}
                    )
                else:
                    self.call(client, "list_adapters", "GET", "/v1/adapters", params={"limit": 20})
                self.stop_load.wait(rng.uniform(0.15, 0.6))

    def canceller(self) -> None:
        with self.client() as client:
            while not self.stop_load.is_set():
                with self.lock:
                    due = self.cancel_queue[0][0] <= now() if self.cancel_queue else False
                    job_id = heapq.heappop(self.cancel_queue)[1] if due else None
                if job_id is None:
                    self.stop_load.wait(0.2)
                    continue
                outcome, response = self.call(
                    client, "cancel", "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel"
                )
                with self.lock:
                    self.cancels.append({"job": job_id, "at": now(), "outcome": outcome})
                    if outcome == 200:
                        self.known_status[job_id] = response.json()["status"]

    def sampler(self) -> None:
        """Every half second: the live training processes, by job. Two at once for one job is
        a job running twice, whatever the events say."""
        jobs_dir = self.service.data_dir / "jobs"
        while not self.stop_all.wait(0.5):
            procs = training_processes(jobs_dir)
            self.max_training_processes = max(self.max_training_processes, len(procs))
            by_job: dict[str, list[Proc]] = collections.defaultdict(list)
            for proc in procs:
                if match := JOB_IN_SPEC.search(proc.cmdline):
                    by_job[match.group(1)].append(proc)
            for job_id, group in by_job.items():
                if len(group) > 1:
                    with self.lock:
                        self.overlap_samples.append(
                            {"job": job_id, "at": now(), "pids": [p.pid for p in group]}
                        )

    def monitor(self) -> None:
        """A worker or API process that exits without being killed by the injector is a
        finding: record it, with its log's tail, and start a replacement."""
        while not self.stop_all.wait(1.0):
            with self.service.lock:
                dead = [(n, p) for n, p in self.service.workers.items() if p.poll() is not None]
                for name, _ in dead:
                    del self.service.workers[name]
                api_dead = self.service.api is not None and self.service.api.poll() is not None
                api_rc = self.service.api.returncode if api_dead else None
                if api_dead:
                    self.service.api = None
            for name, proc in dead:
                self.unexpected_exits.append(
                    {
                        "process": name,
                        "at": now(),
                        "returncode": proc.returncode,
                        "log_tail": self.log_tail(f"worker-{name.split('@')[0]}"),
                    }
                )
                log(f"!! worker {name} exited on its own (rc {proc.returncode}); replacing it")
                self.service.start_worker()
            if api_dead:
                self.unexpected_exits.append(
                    {"process": "api", "at": now(), "returncode": api_rc, "log_tail": ""}
                )
                log(f"!! the API exited on its own (rc {api_rc}); restarting it")
                with contextlib.suppress(RuntimeError):
                    self.service.start_api()

    def log_tail(self, label: str, chars: int = 3000) -> str:
        path = self.service.data_dir / "logs" / f"{label}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- the faults -------------------------------------------------------------------------
    def injector(self) -> None:
        deck: list[str] = []
        lo, hi = self.args.fault_interval
        while not self.stop_faults.wait(self.fault_rng.uniform(lo, hi)):
            if not deck:
                deck = list(self.args.faults)
                self.fault_rng.shuffle(deck)
            kind = deck.pop()
            fault = Fault(kind, now())
            with self.lock:
                self.faults.append(fault)
            log(f"fault {len(self.faults)}: {kind}")
            try:
                getattr(self, f"fault_{kind}")(fault)
            except Exception as exc:  # record and go on: the soak reports it
                fault.detail["injector_error"] = f"{type(exc).__name__}: {exc}"
                log(f"!! fault {kind} raised: {traceback.format_exc()}")
            finally:
                if fault.recovered is None:
                    fault.recovered = now()
                fault.recovery_seconds = round(fault.recovered - fault.start, 2)
            log(f"   recovered in {fault.recovery_seconds}s {fault.detail}")

    def db_query(self, fn: Callable[[Any], Any], default: Any = None) -> Any:
        try:
            with self.db.connect() as connection:
                return fn(connection)
        except Exception:
            return default

    def started_count(self, job_id: str) -> int:
        return self.db_query(
            lambda c: len(
                c.execute(
                    select(JobEvent.seq).where(
                        JobEvent.job_id == job_id, JobEvent.message.like("Job started on%")
                    )
                ).all()
            ),
            0,
        )

    def job_statuses(self, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        rows = self.db_query(
            lambda c: c.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all(), []
        )
        return dict(rows)

    def fault_worker(self, fault: Fault) -> None:
        with self.service.lock:
            name = self.fault_rng.choice(sorted(self.service.workers))
            proc = self.service.workers.pop(name)
        held = self.db_query(
            lambda c: [
                r[0]
                for r in c.execute(
                    select(Job.id).where(Job.lease_owner.like(f"{name}:%"), Job.status == "running")
                ).all()
            ],
            [],
        )
        starts = {job_id: self.started_count(job_id) for job_id in held}
        children = [p for p in descendants(proc.pid) if p.state not in ("Z", "X")]
        fault.detail.update(worker=name, held_jobs=held, children=len(children))
        proc.kill()
        proc.wait()
        # the training subprocess dies with its worker (PR_SET_PDEATHSIG)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p.pid) for p in children):
            time.sleep(0.1)
        left = [p for p in children if alive(p.pid)]
        if left:
            self.orphans_after_worker_kill.append(
                {"worker": name, "at": now(), "processes": [p.cmdline for p in left]}
            )
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        time.sleep(self.fault_rng.uniform(0, 3))
        fault.detail["replacement"] = self.service.start_worker()

        def resumed() -> bool:
            statuses = self.job_statuses(held)
            return all(statuses.get(j) in FINAL or self.started_count(j) > starts[j] for j in held)

        self.wait_for(fault, resumed, timeout=120, what="held jobs running again")

    def fault_api(self, fault: Fault) -> None:
        self.service.kill_api()
        down = self.fault_rng.uniform(0, 2)
        fault.detail["down_seconds"] = round(down, 1)
        time.sleep(down)
        self.service.start_api()
        fault.recovered = now()

    def fault_redis(self, fault: Fault) -> None:
        queued = self.db_query(
            lambda c: [r[0] for r in c.execute(select(Job.id).where(Job.status == "queued")).all()],
            [],
        )
        fault.detail["queued_jobs"] = len(queued)
        fault.detail["messages_lost"] = self.redis.queued_messages()
        self.redis.kill()
        down = self.fault_rng.uniform(1, 5)
        fault.detail["down_seconds"] = round(down, 1)
        time.sleep(down)
        self.redis.start()

        def drained() -> bool:
            statuses = self.job_statuses(queued)
            return all(statuses.get(j, "queued") != "queued" for j in queued)

        self.wait_for(fault, drained, timeout=180, what="the jobs queued at the kill taken")

    def fault_postgres(self, fault: Fault) -> None:
        self.postgres.stop()
        down = self.fault_rng.uniform(2, 8)
        fault.detail["down_seconds"] = round(down, 1)
        time.sleep(down)
        self.postgres.start()
        if self.service.wait_answering(60):
            fault.recovered = now()
        else:
            fault.detail["not_recovered"] = "the API did not answer within 60 s"

    def wait_for(self, fault: Fault, check: Callable[[], bool], timeout: float, what: str) -> None:
        fault.detail["recovery_is"] = what
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                fault.recovered = now()
                return
            time.sleep(0.25)
        fault.detail["not_recovered"] = f"{what}: not within {timeout:.0f}s"

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        background = [
            threading.Thread(target=self.sampler, daemon=True),
            threading.Thread(target=self.monitor, daemon=True),
        ]
        load = [
            threading.Thread(target=self.submitter, daemon=True),
            threading.Thread(target=self.canceller, daemon=True),
            *(
                threading.Thread(target=self.reader, args=(i,), daemon=True)
                for i in range(self.args.readers)
            ),
        ]
        injector = threading.Thread(target=self.injector, daemon=True)
        for thread in [*background, *load, injector]:
            thread.start()
        load_started = now()
        end = load_started + self.args.minutes * 60
        try:
            while now() < end:
                time.sleep(min(5.0, max(0.0, end - now())))
                if int(now() - load_started) % 60 < 5:
                    log(
                        f"load: {len(self.accepted)} jobs accepted, {self.unfinished()} open, "
                        f"{len(self.requests)} requests, {len(self.faults)} faults"
                    )
        finally:
            self.stop_faults.set()
            injector.join(timeout=300)  # the fault in progress recovers first
            self.stop_load.set()
            for thread in load:
                thread.join(timeout=150)
        load_ended = now()
        log(f"load stopped: {len(self.accepted)} jobs accepted; draining")
        drained = self.drain()
        drain_ended = now()
        return {
            "load_started": load_started,
            "load_ended": load_ended,
            "drain_ended": drain_ended,
            "drained": drained,
        }

    def drain(self) -> bool:
        """Wait for every job in the registry (accepted or not) to finish."""
        deadline = time.monotonic() + self.args.drain_minutes * 60
        last = None
        while time.monotonic() < deadline:
            rows = self.db_query(lambda c: c.execute(select(Job.id, Job.status)).all(), None)
            if rows is not None:
                open_jobs = [r for r in rows if r[1] not in FINAL]
                missing = set(self.accepted) - {r[0] for r in rows}
                if not open_jobs and not missing:
                    return True
                if len(open_jobs) != last:
                    log(f"drain: {len(open_jobs)} jobs not finished")
                    last = len(open_jobs)
            time.sleep(2)
        return False


# -- invariants -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(requests: list[Request]) -> dict[str, Any]:
    """Latency percentiles of the answered requests (an error, often a fast refusal, would
    flatter them), and the errors counted apart."""
    latencies = [r.latency * 1000 for r in requests if ok(r)]
    errors = [r for r in requests if not ok(r)]
    return {
        "count": len(requests),
        "p50_ms": _round(percentile(latencies, 50)),
        "p90_ms": _round(percentile(latencies, 90)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(max(latencies) if latencies else None),
        "errors": len(errors),
        "error_rate": round(len(errors) / len(requests), 4) if requests else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def ok(request: Request) -> bool:
    if isinstance(request.outcome, str):
        return False
    if 200 <= request.outcome < 300:
        return True
    return request.kind == "cancel" and request.outcome == 409  # the job had finished


def windows_of(request: Request, faults: list[Fault]) -> list[Fault]:
    end = request.start + request.latency
    return [f for f in faults if request.start <= f.window[1] and end >= f.window[0]]


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_registry(soak: Soak, data_dir: Path) -> dict[str, Any]:
    """Everything read from the registry and the data directory after the service stopped."""
    with Session(soak.db) as session:
        jobs = {j.id: j for j in session.scalars(select(Job))}
        events: dict[str, list[Any]] = collections.defaultdict(list)
        for e in session.scalars(select(JobEvent).order_by(JobEvent.seq)):
            events[e.job_id].append(e)
        adapters = list(session.scalars(select(Adapter)))
        files = list(session.scalars(select(File)))
        session.expunge_all()
    return {"jobs": jobs, "events": events, "adapters": adapters, "files": files}


def overlapping_attempts(job_events: list[Any]) -> list[str]:
    """Like tests/service/test_faults.py's ``_overlapping_runs``: an attempt that started while
    the previous one was open (no requeue in between). Returns the offending messages."""
    open_attempt, offending, previous = False, [], None
    for event in job_events:
        if event.message.startswith("Job started on"):
            if open_attempt:
                offending.append(f"{previous!r} then {event.message!r}")
            open_attempt, previous = True, event.message
        elif event.message == REQUEUED_MESSAGE:
            open_attempt = False
    return offending


def invariants(
    soak: Soak, data_dir: Path, reg: dict[str, Any], procs: dict[str, Any], requests: dict[str, Any]
) -> list[dict[str, Any]]:
    jobs, events = reg["jobs"], reg["events"]
    accepted = soak.accepted
    results: list[dict[str, Any]] = []

    def add(name: str, description: str, offenders: list[Any], checked: int) -> None:
        results.append(
            {
                "name": name,
                "description": description,
                "ok": not offenders,
                "checked": checked,
                "offenders": offenders[:50],
                "offender_count": len(offenders),
            }
        )

    lost = [j for j in accepted if j not in jobs or jobs[j].status not in FINAL]
    add(
        "no_job_lost",
        "every accepted job (a 200 to POST /v1/fine_tuning/jobs) is in the "
        "registry in a final state",
        [{"job": j, "status": jobs[j].status if j in jobs else "missing"} for j in lost],
        len(accepted),
    )

    unfinished = [j for j, row in jobs.items() if row.status not in FINAL]
    add(
        "registry_jobs_final",
        "every job in the registry, accepted or not (a POST whose answer "
        "was lost), is in a final state",
        unfinished,
        len(jobs),
    )

    one_final = []
    for job_id in accepted:
        finals = [
            e.data["status"]
            for e in events.get(job_id, [])
            if e.data and e.data.get("status") in FINAL
        ]
        row = jobs.get(job_id)
        if len(finals) != 1 or row is None or finals[0] != row.status or row.finished_at is None:
            one_final.append(
                {"job": job_id, "final_events": finals, "status": row.status if row else None}
            )
    add(
        "one_final_state",
        "each accepted job reached exactly one final state (one final-status "
        "event, matching its row, with finished_at)",
        one_final,
        len(accepted),
    )

    twice = []
    for job_id in jobs:
        offending = overlapping_attempts(events.get(job_id, []))
        if offending:
            twice.append(
                {
                    "job": job_id,
                    "overlaps": offending,
                    "events": [
                        f"{e.created_at.isoformat()} {e.message}"
                        for e in events[job_id]
                        if e.type == "message"
                    ][-30:],
                }
            )
    add(
        "never_ran_twice_events",
        "no attempt started while another was open (events 'Job started on' / requeued)",
        twice,
        len(jobs),
    )

    samples = collections.defaultdict(list)
    for s in soak.overlap_samples:
        samples[s["job"]].append(s)
    sampled = [
        {
            "job": j,
            "samples": len(v),
            "first": iso(v[0]["at"]),
            "last": iso(v[-1]["at"]),
            "pids": sorted({p for s in v for p in s["pids"]}),
        }
        for j, v in samples.items()
    ]
    add(
        "never_ran_twice_processes",
        "no sample (every 0.5 s) saw two live training processes for one job",
        sampled,
        len(jobs),
    )

    adapters_by_job: dict[str | None, list[Any]] = collections.defaultdict(list)
    for a in reg["adapters"]:
        adapters_by_job[a.job_id].append(a)
    adapter_problems = []
    for job_id, row in jobs.items():
        mine = adapters_by_job.get(job_id, [])
        if row.status == "succeeded":
            if len(mine) != 1 or row.fine_tuned_model != mine[0].id:
                adapter_problems.append(
                    {
                        "job": job_id,
                        "adapters": [a.id for a in mine],
                        "fine_tuned_model": row.fine_tuned_model,
                    }
                )
        elif mine:
            adapter_problems.append(
                {"job": job_id, "status": row.status, "adapters": [a.id for a in mine]}
            )
    add(
        "one_adapter_per_success",
        "every succeeded job has exactly one adapter (its fine_tuned_model); no other job has one",
        adapter_problems,
        len(jobs),
    )

    store = data_dir / "adapters"
    bad_artifacts = []
    for a in reg["adapters"]:
        directory = store / a.storage_path
        problem = None
        if not directory.is_dir():
            problem = "directory missing"
        else:
            # in the order storage.store_artifact hashes them (sorted paths)
            on_disk = {
                str(p.relative_to(directory)): p
                for p in sorted(directory.rglob("*"))
                if p.is_file()
            }
            if set(on_disk) != set(a.files):
                problem = f"files {sorted(on_disk)} != row {sorted(a.files)}"
            else:
                sums = {name: sha256_file(path) for name, path in on_disk.items()}
                wrong = [n for n in sums if sums[n] != a.files[n]]
                overall = hashlib.sha256(
                    "".join(f"{k}:{v}\n" for k, v in sums.items()).encode()
                ).hexdigest()
                if wrong:
                    problem = f"sha256 differs: {wrong}"
                elif overall != a.sha256:
                    problem = "overall sha256 differs"
                elif sum(p.stat().st_size for p in on_disk.values()) != a.bytes:
                    problem = "size differs"
                else:
                    try:
                        check_artifact(directory)
                    except Exception as exc:
                        problem = f"artifact check: {exc}"
        if problem:
            bad_artifacts.append({"adapter": a.id, "job": a.job_id, "problem": problem})
    add(
        "adapters_verify",
        "every adapter's files match the sha256s in its row and pass the "
        "artifact check (steering_core.artifact.check)",
        bad_artifacts,
        len(reg["adapters"]),
    )

    files_dir = data_dir / "files"
    rows = {f.storage_path for f in reg["files"]}
    on_disk = {str(p.relative_to(files_dir)) for p in files_dir.rglob("*") if p.is_file()}
    adapter_dirs = {p.name for p in store.iterdir()} if store.is_dir() else set()
    adapter_rows = {a.storage_path for a in reg["adapters"]}
    job_dirs = (
        {p.name for p in (data_dir / "jobs").iterdir()} if (data_dir / "jobs").is_dir() else set()
    )
    orphans = (
        [f"files/{p}" for p in sorted(on_disk - rows)]
        + [f"adapters/{p}" for p in sorted(adapter_dirs - adapter_rows)]
        + [f"jobs/{p}" for p in sorted(job_dirs - set(jobs))]
    )
    add(
        "no_orphan_files",
        "no content file without a files row, no adapter-store directory "
        "without an adapter row, no job directory without a job",
        orphans,
        len(on_disk) + len(adapter_dirs) + len(job_dirs),
    )
    missing = [f"files/{p}" for p in sorted(rows - on_disk)]
    result_files = [
        (j, fid)
        for j, row in jobs.items()
        if row.status == "succeeded"
        for fid in (row.result_files or [])
    ]
    file_ids = {f.id for f in reg["files"]}
    missing += [
        f"job {j}: result file {fid} has no row" for j, fid in result_files if fid not in file_ids
    ]
    add(
        "no_missing_files",
        "every files row has its content on disk; every succeeded job's result file exists",
        missing,
        len(rows) + len(result_files),
    )

    add(
        "no_orphan_processes",
        "no training process outlived its killed worker (10 s), none "
        "ran once every job had finished, no service process outlived the shutdown",
        [
            *soak.orphans_after_worker_kill,
            *procs["training_after_drain"],
            *procs["left_after_shutdown"],
        ],
        len(soak.faults) + 2,
    )

    idem = []
    for record in soak.idempotent:
        ids = {a["id"] for a in record["answers"] if a.get("id")}
        retries = [a for a in record["answers"] if a["kind"] == "submit_retry" and a.get("id")]
        if (
            len(ids) > 1
            or (record["first_id"] and not retries)
            or any(not a["replayed"] for a in retries)
        ):
            idem.append(record)
    add(
        "idempotent_retries",
        "every 200 for one Idempotency-Key named the same job; the "
        "repeat was answered (Idempotent-Replayed: true)",
        idem,
        sum(1 for r in soak.idempotent if r["first_id"]),
    )

    acked = [c for c in soak.cancels if c["outcome"] == 200]
    lost_cancels = [
        {"job": c["job"], "status": jobs[c["job"]].status if c["job"] in jobs else None}
        for c in acked
        if c["job"] not in jobs or jobs[c["job"]].status != "cancelled"
    ]
    add(
        "acknowledged_cancels_win",
        "every cancel answered 200 ended cancelled",
        lost_cancels,
        len(acked),
    )

    add(
        "no_api_errors_outside_faults",
        "no error answer (neither 2xx nor a 409 to cancelling a "
        "finished job) outside the fault windows",
        requests["unexplained_outside"],
        requests["outside_count"],
    )
    add(
        "errors_in_windows_explained",
        "inside a fault window, only the errors that fault "
        "explains: connection errors while the API is down, 503 while PostgreSQL is",
        requests["unexplained_inside"],
        requests["inside_count"],
    )
    add(
        "no_unexpected_exits",
        "no worker or API process exited without being killed",
        [
            {k: v for k, v in e.items() if k != "log_tail"} | {"log_tail": e["log_tail"][-800:]}
            for e in soak.unexpected_exits
        ],
        len(soak.service.groups),
    )
    return results


def request_report(soak: Soak, load_started: float, load_ended: float) -> dict[str, Any]:
    faults = soak.faults
    inside, outside = [], []
    unexplained_inside, unexplained_outside = [], []
    by_kind: dict[str, dict[str, list[Request]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    errors_by_place: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in soak.requests:
        hit = windows_of(r, faults)
        if hit:
            inside.append(r)
            by_kind[r.kind]["during"].append(r)
            for f in {f.kind for f in hit}:
                by_kind[r.kind][f"during_{f}"].append(r)
            if not ok(r):
                errors_by_place["during"][f"{r.kind} {r.outcome}"] += 1
                if not any(EXPLAINED[f.kind](r.outcome) for f in hit):
                    unexplained_inside.append(
                        {
                            "kind": r.kind,
                            "outcome": r.outcome,
                            "at": iso(r.start),
                            "faults": sorted({f.kind for f in hit}),
                        }
                    )
        else:
            outside.append(r)
            by_kind[r.kind]["outside"].append(r)
            if not ok(r):
                errors_by_place["outside"][f"{r.kind} {r.outcome}"] += 1
                unexplained_outside.append(
                    {
                        "kind": r.kind,
                        "outcome": r.outcome,
                        "at": iso(r.start),
                        "latency_s": round(r.latency, 2),
                    }
                )
    # the seconds of load inside and outside the windows, merged
    spans = sorted((max(f.window[0], load_started), min(f.window[1], load_ended)) for f in faults)
    covered, cursor = 0.0, load_started
    for a, b in spans:
        a = max(a, cursor)
        if b > a:
            covered += b - a
            cursor = b
    return {
        "inside_count": len(inside),
        "outside_count": len(outside),
        "seconds_in_windows": round(covered, 1),
        "seconds_of_load": round(load_ended - load_started, 1),
        "all": {"during": summary(inside), "outside": summary(outside)},
        "by_kind": {
            k: {place: summary(rs) for place, rs in sorted(v.items())}
            for k, v in sorted(by_kind.items())
        },
        "errors": {place: dict(c.most_common()) for place, c in errors_by_place.items()},
        "unexplained_inside": unexplained_inside,
        "unexplained_outside": unexplained_outside,
    }


def job_report(soak: Soak, reg: dict[str, Any]) -> dict[str, Any]:
    jobs, events = reg["jobs"], reg["events"]
    by_state: collections.Counter = collections.Counter()
    by_method: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failed_codes: collections.Counter = collections.Counter()
    attempts: collections.Counter = collections.Counter()
    resumed = 0
    for job_id, asked in soak.accepted.items():
        row = jobs.get(job_id)
        status = row.status if row else "missing"
        by_state[status] += 1
        by_method[asked["method"]][status] += 1
        if row is not None:
            attempts[row.attempts] += 1
            if row.status == "failed":
                failed_codes[(row.error or {}).get("code", "?")] += 1
            if any("resumed from step" in e.message for e in events.get(job_id, [])):
                resumed += 1
    failures = [
        {"job": j, "method": soak.accepted[j]["method"], "error": jobs[j].error}
        for j in soak.accepted
        if j in jobs and jobs[j].status == "failed"
    ]
    acked = sum(1 for c in soak.cancels if c["outcome"] == 200)
    return {
        "accepted": len(soak.accepted),
        "in_registry": len(jobs),
        "not_acknowledged_in_registry": sorted(set(jobs) - set(soak.accepted)),
        "by_state": dict(by_state),
        "by_method": {m: dict(c) for m, c in sorted(by_method.items())},
        "failed_by_code": dict(failed_codes),
        "failures": failures[:30],
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "resumed_from_checkpoint": resumed,
        "steps_asked": sum(a["steps"] for a in soak.accepted.values()),
        "cancel_requests": len(soak.cancels),
        "cancels_acknowledged": acked,
        "cancels_refused_finished": sum(1 for c in soak.cancels if c["outcome"] == 409),
        "idempotent_submissions": sum(1 for r in soak.idempotent if r["first_id"]),
        "idempotent_retried_after_error": sum(
            1
            for r in soak.idempotent
            if any(a["kind"] == "submit" and a["outcome"] != 200 for a in r["answers"])
            and r["first_id"]
        ),
        # the first POST's answer was lost, but it had created the job: the retry found it
        "idempotent_replayed_lost_answer": sum(
            1
            for r in soak.idempotent
            if any(a["kind"] == "submit" and a.get("replayed") for a in r["answers"])
        ),
        "submissions_without_answer": len(soak.failed_submits),
        "adapters": len(reg["adapters"]),
    }


# -- the report -----------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    cfg, jobs, req = result["config"], result["jobs"], result["requests"]
    inv = result["invariants"]
    passed = sum(1 for i in inv if i["ok"])
    out = [
        "# Chaos soak",
        "",
        f"Generated by `python benchmarks/reliability/soak.py --minutes {cfg['minutes']:g} "
        f"--seed {cfg['seed']}` on {result['date']} ({result['machine']}), holding the timing "
        "lock. Private PostgreSQL 15 and Redis, `steer api --processes "
        f"{cfg['api_processes']}`, {cfg['workers']} `steer worker` processes, tiny-llama jobs on "
        f"CPU; lease {SETTINGS['STEER_LEASE_SECONDS']} s, reconciler every "
        f"{SETTINGS['STEER_RECONCILE_EVERY_SECONDS']} s, checkpoint every "
        f"{SETTINGS['STEER_CHECKPOINT_EVERY_N_STEPS']} steps, stale queued jobs re-sent after "
        f"{SETTINGS['STEER_REQUEUE_STALE_AFTER_SECONDS']} s. A fault every "
        f"{cfg['fault_interval'][0]:g}-{cfg['fault_interval'][1]:g} s; a fault's window runs "
        f"from its start to its recovery + {GRACE_SECONDS:g} s.",
        "",
        f"**Invariants: {passed}/{len(inv)} hold. Jobs lost: "
        f"{next(i['offender_count'] for i in inv if i['name'] == 'no_job_lost')}.**",
        "",
        "## Jobs",
        "",
        f"{jobs['accepted']} jobs accepted in {req['seconds_of_load'] / 60:.1f} minutes of load "
        f"({jobs['steps_asked']} optimizer steps asked); drained in "
        f"{result['timeline']['drain_seconds']:.0f} s"
        + ("" if result["timeline"]["drained"] else " (**drain timed out**)")
        + ".",
        "",
        "| method | " + " | ".join(sorted(FINAL)) + " | other |",
        "|---|" + "---|" * (len(FINAL) + 1),
    ]
    for method, states in jobs["by_method"].items():
        other = sum(v for k, v in states.items() if k not in FINAL)
        out.append(
            f"| {method} | "
            + " | ".join(str(states.get(s, 0)) for s in sorted(FINAL))
            + f" | {other} |"
        )
    total = jobs["by_state"]
    out.append(
        "| **all** | "
        + " | ".join(f"**{total.get(s, 0)}**" for s in sorted(FINAL))
        + f" | **{sum(v for k, v in total.items() if k not in FINAL)}** |"
    )
    out += [
        "",
        f"- attempts per job: {jobs['attempts']}; {jobs['resumed_from_checkpoint']} resumed "
        "from a checkpoint",
        f"- failed, by code: {jobs['failed_by_code'] or 'none'}",
        f"- cancels sent: {jobs['cancel_requests']} ({jobs['cancels_acknowledged']} acknowledged, "
        f"{jobs['cancels_refused_finished']} refused as already finished)",
        f"- with an Idempotency-Key: {jobs['idempotent_submissions']} "
        f"({jobs['idempotent_retried_after_error']} needed a retry after an error, "
        f"{jobs['idempotent_replayed_lost_answer']} of which had created the job already: "
        "the retry was answered with it)",
        f"- POSTs that got no 200 (not retried, or keyed and out of time): "
        f"{jobs['submissions_without_answer']}; jobs in the registry never acknowledged: "
        f"{len(jobs['not_acknowledged_in_registry'])}",
        f"- adapters registered: {jobs['adapters']}; most training processes at once: "
        f"{result['max_training_processes']}",
        "",
        "## Faults",
        "",
        "| # | fault | at (s into load) | recovery s | what recovery means | details |",
        "|---|---|---|---|---|---|",
    ]
    meaning = {
        "worker": "the killed worker's job running again elsewhere (or finished)",
        "api": "the restarted API answering a registry read",
        "redis": "every job queued at the kill taken by a worker",
        "postgres": "the API answering a registry read again",
    }
    start = result["timeline"]["load_started"]
    for i, f in enumerate(result["faults"], 1):
        detail = ", ".join(f"{k}={v}" for k, v in f["detail"].items() if k not in ("recovery_is",))
        out.append(
            f"| {i} | {f['kind']} | {f['start'] - start:.0f} | {f['recovery_seconds']} | "
            f"{meaning[f['kind']]} | {detail} |"
        )
    recoveries: dict[str, list[float]] = collections.defaultdict(list)
    for f in result["faults"]:
        recoveries[f["kind"]].append(f["recovery_seconds"])
    by_kind = "; ".join(
        f"{kind} {len(values)} (recovery median {statistics.median(values):.1f} s, "
        f"max {max(values):.1f} s)"
        for kind, values in sorted(recoveries.items())
    )
    not_recovered = [f for f in result["faults"] if "not_recovered" in f["detail"]]
    out += [
        "",
        f"{len(result['faults'])} faults: {by_kind or 'none'}. The windows cover "
        f"{req['seconds_in_windows']:.0f} s of the {req['seconds_of_load']:.0f} s of load."
        + (f" **{len(not_recovered)} did not recover in time.**" if not_recovered else ""),
        "",
        "## Requests",
        "",
        "Latency in ms, of the requests answered without error; an error is any answer but a 2xx "
        "(or a 409 to cancelling a finished job), a connection error included. `during X`: the "
        "requests that overlapped the window of a fault of kind X.",
        "",
        "| requests | where | count | p50 | p90 | p99 | max | errors | error rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, where: str, s: dict[str, Any]) -> str:
        rate = "-" if s["error_rate"] is None else f"{100 * s['error_rate']:.2f}%"
        return (
            f"| {label} | {where} | {s['count']} | {s['p50_ms']} | {s['p90_ms']} | "
            f"{s['p99_ms']} | {s['max_ms']} | {s['errors']} | {rate} |"
        )

    for place in ("outside", "during"):
        out.append(row("**all**", place, req["all"][place]))
    for kind, places in req["by_kind"].items():
        for place in ["outside", "during", *sorted(p for p in places if p.startswith("during_"))]:
            if place in places:
                out.append(row(kind, place.replace("during_", "during "), places[place]))
    out += [
        "",
        "Errors outside the windows: "
        + (", ".join(f"{k}: {v}" for k, v in req["errors"].get("outside", {}).items()) or "none")
        + ".",
        "Errors during the windows: "
        + (", ".join(f"{k}: {v}" for k, v in req["errors"].get("during", {}).items()) or "none")
        + ".",
        "",
        "## Invariants",
        "",
        "| invariant | holds | checked | offenders | what |",
        "|---|---|---|---|---|",
    ]
    for i in inv:
        out.append(
            f"| {i['name']} | {'yes' if i['ok'] else '**NO**'} | {i['checked']} | "
            f"{i['offender_count']} | {i['description']} |"
        )
    failing = [i for i in inv if not i["ok"]]
    if failing:
        out += ["", "### Offenders", ""]
        for i in failing:
            out.append(f"- **{i['name']}**:")
            for o in i["offenders"][:10]:
                out.append(f"  - `{json.dumps(o, default=str)[:600]}`")
    if result["unexpected_exits"]:
        out += ["", "## Processes that exited on their own", ""]
        for e in result["unexpected_exits"]:
            out.append(f"- {e['process']} at {iso(e['at'])}, exit code {e['returncode']}")
    out += [
        "",
        "## What was lost",
        "",
        (
            f"{next(i['offender_count'] for i in inv if i['name'] == 'no_job_lost')} of "
            f"{jobs['accepted']} accepted jobs lost; "
            f"{next(i['offender_count'] for i in inv if i['name'] == 'never_ran_twice_events')} "
            "run twice (events); "
            f"{next(i['offender_count'] for i in inv if i['name'] == 'one_adapter_per_success')} "
            "with a missing or extra adapter; "
            f"{next(i['offender_count'] for i in inv if i['name'] == 'adapters_verify')} "
            "adapters that do not verify; "
            f"{next(i['offender_count'] for i in inv if i['name'] == 'no_orphan_files')} "
            "orphan files."
        ),
        "",
    ]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "reliability" / "soak",
        help="writes PREFIX.json and PREFIX.md",
    )
    parser.add_argument(
        "--fault-interval",
        type=float,
        nargs=2,
        default=(30.0, 90.0),
        metavar=("MIN", "MAX"),
        help="seconds between faults (uniform)",
    )
    parser.add_argument(
        "--faults", default=",".join(FAULT_KINDS), help=f"comma-separated, among {FAULT_KINDS}"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--readers", type=int, default=3, help="status-reading client threads")
    parser.add_argument("--backlog", type=int, default=4, help="unfinished jobs kept at once")
    parser.add_argument("--idempotent-fraction", type=float, default=0.3)
    parser.add_argument("--cancel-fraction", type=float, default=0.15)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--drain-minutes", type=float, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULT_KINDS)
    if unknown or not args.faults:
        parser.error(f"unknown faults {sorted(unknown)}")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)

    log("waiting for the timing lock")
    with timing():
        # One folder for the data directory and the private servers' folders (tempfile's
        # default while the soak runs): nothing else's clean-up of /tmp/steer-* reaches them.
        root = Path(tempfile.mkdtemp(prefix="chaos-soak-"))
        root.chmod(0o755)  # PostgreSQL runs as its own user, in a folder below this one
        log(f"timing lock held; working under {root}")
        failed: list[str] | None = None
        default_tempdir, tempfile.tempdir = tempfile.tempdir, str(root)
        try:
            failed = run_soak(args, root / "data")
        finally:
            tempfile.tempdir = default_tempdir
            if args.keep or failed is None or failed:
                log(f"kept {root} (service logs under data/logs/)")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def run_soak(args: argparse.Namespace, data_dir: Path) -> list[str]:
    """Start everything, run the load and the faults, check; the invariants that failed."""
    data_dir.mkdir()
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(private_postgres())
        redis = stack.enter_context(private_redis())
        env = base_env(data_dir)
        env.update(SETTINGS)
        env.update({"STEER_DATABASE_URL": postgres.url, "STEER_BROKER_URL": redis.url})
        service = Service(env, data_dir, args.api_processes)
        stack.callback(service.stop)
        marker = f"STEER_DATA_DIR={data_dir}".encode()
        stack.callback(lambda: [_kill(p.pid) for p in processes_with_env(marker)])
        db = create_engine(postgres.url, pool_pre_ping=True, pool_size=3)
        stack.callback(db.dispose)
        service.migrate()
        service.start_api()
        with httpx.Client(base_url=service.url, timeout=60) as client:
            path = write_sums(data_dir / "train.jsonl", n=ROWS)
            with path.open("rb") as handle:
                upload = client.post(
                    "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, handle)}
                )
            upload.raise_for_status()
        for _ in range(args.workers):
            service.start_worker()
        soak = Soak(args, service, db, redis, postgres, upload.json()["id"])
        log(f"service up at {service.url}; load for {args.minutes:g} minutes")
        try:
            timeline = soak.run()
            time.sleep(5)  # a finished job's training process is gone by now
            leftover = training_processes(data_dir / "jobs")
            training_after_drain = [{"after_drain": p.cmdline} for p in leftover]
        finally:
            soak.stop_load.set()
            soak.stop_faults.set()
            soak.stop_all.set()
            log("stopping the service")
            service.stop()
        left = processes_with_env(marker)
        left_after_shutdown = [{"after_shutdown": p.cmdline} for p in left]
        for p in left:
            _kill(p.pid)
        reg = check_registry(soak, data_dir)
        requests = request_report(soak, timeline["load_started"], timeline["load_ended"])
        checks = invariants(
            soak,
            data_dir,
            reg,
            {
                "training_after_drain": training_after_drain,
                "left_after_shutdown": left_after_shutdown,
            },
            requests,
        )
        timeline["drain_seconds"] = round(timeline["drain_ended"] - timeline["load_ended"], 1)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "config": {
                "minutes": args.minutes,
                "seed": args.seed,
                "workers": args.workers,
                "api_processes": args.api_processes,
                "readers": args.readers,
                "backlog": args.backlog,
                "idempotent_fraction": args.idempotent_fraction,
                "cancel_fraction": args.cancel_fraction,
                "faults": args.faults,
                "fault_interval": list(args.fault_interval),
                "grace_seconds": GRACE_SECONDS,
                "settings": SETTINGS,
            },
            "timeline": timeline,
            "jobs": job_report(soak, reg),
            "faults": [
                {
                    "kind": f.kind,
                    "start": f.start,
                    "recovered": f.recovered,
                    "recovery_seconds": f.recovery_seconds,
                    "window": list(f.window),
                    "detail": f.detail,
                }
                for f in soak.faults
            ],
            "unexpected_exits": soak.unexpected_exits,
            "max_training_processes": soak.max_training_processes,
            "requests": requests,
            "invariants": checks,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        md_path.write_text(render(result))
        log(f"wrote {json_path} and {md_path}")
        failed = [i["name"] for i in checks if not i["ok"]]
        log(f"invariants that do not hold: {failed}" if failed else "every invariant holds")
        return failed


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
