"""A real Redis for the tests: ``/usr/bin/redis-server`` on 127.0.0.1, started and stopped here.

Fixtures (import them into a test module as ``from _redis import redis_url as redis_url``
and ``from _redis import redis_server as redis_server``):

- ``redis_server`` (session scope): one server for the whole test session, no persistence,
  in a temporary directory;
- ``redis_url``: a ``redis://`` URL of a database of its own for each test (flushed before
  and after).

`RedisServer.start` starts a private server too, for tests that kill it. `wait_until` polls a
real server with a bounded deadline; `info` reads ``INFO`` over a raw socket. The tests skip
only when redis-server is not installed.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

__all__ = ["RedisServer", "info", "redis_server", "redis_url", "wait_until"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
DATABASES = 256


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, *lines: bytes) -> bytes:
    """Send inline commands on a fresh connection; return what came back (one read each)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        out = b""
        for line in lines:
            sock.sendall(line + b"\r\n")
            out += sock.recv(1 << 20)
        return out


@attrs.define
class RedisServer:
    """A redis-server process on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None) -> RedisServer:
        """Start a server on ``port`` (a free one by default); wait until it answers."""
        if not Path(REDIS_SERVER).exists():
            pytest.skip("redis-server is not installed")
        port = port or _free_port()
        process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                str(DATABASES),
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(port, process, directory)
        deadline = time.monotonic() + 10
        while True:
            try:
                if _command(port, b"PING").startswith(b"+PONG"):
                    return server
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.02)

    def flush(self, db: int) -> None:
        _command(self.port, f"SELECT {db}".encode(), b"FLUSHDB")

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.process.kill()
        self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` of the server as a dict (blocked_clients, cmdstat_xadd, ...)."""
    raw = _command(port, f"INFO {section}".encode())
    fields: dict[str, str] = {}
    for line in raw.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            fields[name] = value
    return fields


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll a real server until ``condition()`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition did not hold within {within} s")
        await trio.sleep(0.01)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="trio-session-redis-") as directory:
        server = RedisServer.start(Path(directory))
        try:
            yield server
        finally:
            server.stop()


_databases = itertools.cycle(range(1, DATABASES))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    db = next(_databases)
    redis_server.flush(db)
    yield f"redis://127.0.0.1:{redis_server.port}/{db}"
    redis_server.flush(db)
