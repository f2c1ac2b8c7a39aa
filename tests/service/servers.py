"""Private Redis and PostgreSQL servers for fault tests: real servers on free ports that a test
may stop, kill and restart without touching the machine's shared ones (or other tests)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis

from tests.service.harness import free_port

PG_BIN = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])


class PrivateRedis:
    """``redis-server`` without persistence: a restart loses every message, as in production
    without AOF."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server and every message it held are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def queued_messages(self) -> int:
        client = redis.Redis(host="127.0.0.1", port=self.port)
        keys = list(client.scan_iter())
        return sum(int(client.llen(key)) for key in keys if client.type(key) == b"list")


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    folder = Path(tempfile.mkdtemp(prefix="steer-redis-"))
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb, trust auth), run as the ``postgres`` user."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.data = folder / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/steer"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            text=True,
        )

    def init(self) -> None:
        shutil.chown(self.folder, "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust")
        self.start()
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute("CREATE DATABASE steer")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a real restart."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    folder = Path(tempfile.mkdtemp(prefix="steer-pg-"))
    server = PrivatePostgres(folder)
    server.init()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
