"""HTTP/1.1 over a plain socket, for what an HTTP client library hides: a request whose body is
sent piece by piece (or never), and answers read while the body is still unsent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit


class RawConnection:
    """One connection to the API: send a request head and body pieces, read the answer."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        url = urlsplit(base_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        self.received = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_head(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send_chunks(self, pieces: Iterable[bytes]) -> int:
        """Send each piece as one chunk of a chunked body (never the closing chunk); return the
        bytes sent. Stops early when the server has closed the connection."""
        sent = 0
        try:
            for piece in pieces:
                self.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Everything received so far, once it contains ``marker``; a ``TimeoutError`` when it
        does not arrive within ``timeout`` seconds, an ``EOFError`` when the server closes."""
        deadline = time.monotonic() + timeout
        while marker not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{marker!r} not received in {timeout}s: {self.received[-300:]!r}"
                )
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise EOFError(f"closed before {marker!r}: {self.received[-300:]!r}")
            self.received += data
        return self.received

    def status(self, timeout: float = 10.0) -> int:
        """The answer's status code, read from its head."""
        head = self.read_until(b"\r\n\r\n", timeout)
        return int(head.split(b" ", 2)[1])

    def closed_within(self, timeout: float) -> bool:
        """Whether the server closes the connection (or ends its chunked body) in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received.endswith(b"0\r\n\r\n"):
                return True
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.received += data
        return False


def open_stream(base_url: str, path: str, headers: dict[str, str] | None = None) -> RawConnection:
    """A GET of an event stream, its head sent; read its status with ``status()``."""
    connection = RawConnection(base_url)
    connection.send_head("GET", path, {"Accept": "text/event-stream", **(headers or {})})
    return connection
