"""Starting the service's processes for a benchmark: a free loopback port, and waiting until an
API answers ``/health``."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


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
