"""The cluster (SPEC §14): real PostgreSQL, real Redis, real node processes.

Each test starts ``python -m trio_session serve --postgres ... --redis ...`` nodes on free
ports with the offline demo model (slow enough that a signal lands mid-answer) and a 1 s
lease, and polls them with bounded deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from _gateway_helpers import HTTPX_GENERATORS, SSE, Frame
from _postgres import postgres_dsn as postgres_dsn, postgres_server as postgres_server
from _redis import redis_server as redis_server, redis_url as redis_url

pytestmark = [pytest.mark.slow, *HTTPX_GENERATORS]

TOKEN = "cluster-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
LEASE_TTL = 1.0
DEADLINE = 60.0
"""Seconds any awaited condition on the real processes may take (a busy CI machine)."""

STORY = "tell me a long story"


@attrs.define
class Node:
    """One ``serve`` process of the cluster."""

    worker_id: str
    process: trio.Process
    base: str
    log: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, headers=AUTH, timeout=DEADLINE)


@attrs.define
class Cluster:
    dsn: str
    redis: str
    tmp: Path
    nodes: dict[str, Node] = attrs.Factory(dict)

    async def start(self, worker_id: str, *, speed: float = 0.05) -> Node:
        log = self.tmp / f"{worker_id}.log"
        stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            process = await trio.lowlevel.open_process(
                [
                    sys.executable, "-m", "trio_session", "serve",
                    "--postgres", self.dsn,
                    "--redis", self.redis,
                    "--worker-id", worker_id,
                    "--lease-ttl", str(LEASE_TTL),
                    "--port", "0",
                    "--token", TOKEN,
                    "--speed", str(speed),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        finally:
            os.close(stderr)
        assert process.stdout is not None
        line = b""
        with trio.fail_after(DEADLINE):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, f"node {worker_id} exited:\n{log.read_text()}"
                line += chunk
        url = line.decode().removeprefix("trio-session serving on ").strip()
        node = Node(worker_id, process, url.split("?")[0].rstrip("/"), log)
        self.nodes[worker_id] = node
        return node

    async def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.process.returncode is None:
                node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        for node in self.nodes.values():
            with trio.move_on_after(15) as waited:
                await node.process.wait()
            if waited.cancelled_caught:
                node.process.kill()
                await node.process.wait()


@pytest.fixture
async def cluster(postgres_dsn: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(postgres_dsn, redis_url, tmp_path)
    try:
        yield running
    finally:
        with trio.CancelScope(shield=True):
            await running.stop_all()


async def poll(check: Callable[[], Any], what: str) -> Any:
    """Call ``check`` (async) until it returns something true, within `DEADLINE`."""
    with trio.move_on_after(DEADLINE):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def stream(node: Node, session_id: str, **headers: str) -> AsyncIterator[SSE]:
    async with node.client() as client:
        client.timeout = httpx.Timeout(DEADLINE, read=None)
        async with SSE(client, f"/sessions/{session_id}/events", headers=headers) as sse:
            assert sse.response is not None
            assert sse.response.headers["x-trio-session-node"] == node.worker_id
            yield sse


async def until(sse: SSE, done: Callable[[Frame], bool]) -> list[Frame]:
    with trio.fail_after(DEADLINE):
        frames = await sse.until(done)
    assert frames and done(frames[-1]), "the stream ended early"
    return frames


async def _frames(sse: SSE) -> AsyncIterator[Frame]:
    """AG-UI frames up to the run's end."""
    while (frame := await sse.frame()) is not None:
        yield frame
        if frame.data["type"] in ("RUN_FINISHED", "RUN_ERROR"):
            return


def text_of(frames: list[Frame]) -> str:
    return "".join(f.data.get("delta", "") for f in frames if f.event == "content_delta")


async def test_posted_on_a_streamed_from_b_confirmed_on_c(cluster: Cluster) -> None:
    a, b, c = [await cluster.start(name, speed=0.001) for name in ("node-a", "node-b", "node-c")]
    async with a.client() as on_a, b.client() as on_b, c.client() as on_c:
        created = await on_a.post("/sessions", json={"session_id": "s1"})
        assert created.status_code == 201
        assert created.headers["x-trio-session-node"] == "node-a"
        again = await on_b.post("/sessions", json={"session_id": "s1"})
        assert again.status_code == 200
        assert again.headers["x-trio-session-node"] == "node-b"
        listed = await on_c.get("/sessions")
        assert listed.json() == {"sessions": ["s1"]}
        assert listed.headers["x-trio-session-node"] == "node-c"
        described = (await on_b.get("/sessions/s1")).json()
        assert described["node"] == "node-a"
        assert (await on_c.get("/sessions/nope")).status_code == 404

        async with stream(b, "s1") as events:
            sent = await on_a.post(
                "/sessions/s1/messages", json={"message": "remember to buy milk"}
            )
            assert sent.status_code == 202
            execution_id = sent.json()["execution_id"]
            frames = await until(events, lambda f: f.event == "tool_confirmation_required")
            tool_use_id = frames[-1].data["tool_use_id"]
            pending = (await on_c.get("/sessions/s1")).json()["pending_confirmations"]
            assert [p["tool_use_id"] for p in pending] == [tool_use_id]
            bad = await on_c.post(f"/sessions/s1/tool-results/{tool_use_id}", json={})
            assert bad.status_code == 400
            unknown = await on_c.post("/sessions/s1/tool-results/nope", json={"approved": True})
            assert unknown.status_code == 404
            answered = await on_c.post(
                f"/sessions/s1/tool-results/{tool_use_id}", json={"approved": True}
            )
            assert answered.status_code == 200, answered.text
            assert answered.headers["x-trio-session-node"] == "node-c"
            frames += await until(events, lambda f: f.event == "execution_end")
        seqs = [f.id for f in frames if f.id is not None]
        assert seqs == sorted(set(seqs))
        assert frames[-1].data["execution_id"] == execution_id
        assert frames[-1].data["status"] == "completed"
        results = [f for f in frames if f.event == "tool_result"]
        assert results and not results[0].data.get("is_error")
        state = (await on_c.get("/sessions/s1")).json()
        assert state["status"] == "idle"
        assert state["timeline"][0]["content"][0]["text"] == "remember to buy milk"

        # Replayed from Redis on yet another node, from a cursor: exactly what followed it.
        middle = seqs[len(seqs) // 2]
        async with stream(c, "s1", **{"last-event-id": str(middle)}) as replay:
            again_frames = await until(replay, lambda f: f.event == "execution_end")
        assert [f.id for f in again_frames] == [s for s in seqs if s > middle]

        # AG-UI on a node that does not hold the session: run on the holder, read from Redis.
        body = {
            "threadId": "s1",
            "runId": "run-1",
            "messages": [{"id": "agui-1", "role": "user", "content": "what is 2 + 3?"}],
            "state": {"theme": "dark"},
            "tools": [],
            "context": [],
            "forwardedProps": {},
        }
        async with SSE(on_c, "/ag-ui", method="POST", json=body) as agui:
            assert agui.response is not None
            assert agui.response.headers["x-trio-session-node"] == "node-c"
            with trio.fail_after(DEADLINE):
                kinds = [f.data["type"] async for f in _frames(agui)]
        assert kinds[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"]
        assert "TEXT_MESSAGE_CONTENT" in kinds and "TOOL_CALL_RESULT" in kinds
        assert kinds[-1] == "RUN_FINISHED"
        assert (await on_b.get("/sessions/s1")).json()["timeline"][-1]["role"] == "assistant"

        # Node A leaves cleanly: it lets go of its lease, and nobody holds the session.
        timeline = (await on_c.get("/sessions/s1")).json()["timeline"]
        a.process.terminate()
        with trio.fail_after(DEADLINE):
            assert await a.process.wait() == 0
        unheld = (await on_c.get("/sessions/s1")).json()
        assert unheld["node"] is None
        assert unheld["status"] == "idle"
        assert unheld["timeline"] == timeline
        assert unheld["last_seq"] >= seqs[-1]

        deleted = await on_b.delete("/sessions/s1")
        assert deleted.status_code == 204
        assert (await on_c.get("/sessions")).json() == {"sessions": []}
        assert (await on_c.get("/sessions/s1")).status_code == 404


async def test_kill_9_of_the_holder_mid_answer(cluster: Cluster) -> None:
    a, b, c = [await cluster.start(name) for name in ("node-a", "node-b", "node-c")]
    async with a.client() as on_a, b.client() as on_b:
        assert (await on_a.post("/sessions", json={"session_id": "s2"})).status_code == 201
        async with stream(b, "s2") as events:
            sent = await on_a.post("/sessions/s2/messages", json={"message": STORY})
            assert sent.status_code == 202
            orphan = sent.json()["execution_id"]
            before = await until(events, lambda f: f.event == "content_delta")
            before += [await events.frame() for _ in range(3)]  # type: ignore[misc]
            # A message queued while it runs: accepted (202), so it must survive.
            queued = await on_b.post(
                "/sessions/s2/messages", json={"message": "and then what is 6 * 7?"}
            )
            assert queued.status_code == 202
            assert queued.headers["x-trio-session-node"] == "node-b"
            before += await until(events, lambda f: f.event == "content_delta")
            a.process.kill()
            await a.process.wait()
            cursor = before[-1].id
            assert cursor is not None
            after = await until(
                events, lambda f: f.event == "execution_end" and f.data["execution_id"] != orphan
            )
        seen = [f.id for f in before + after if f.id is not None]
        assert seen == sorted(set(seen)), "no duplicate, in order"
        ends = [f for f in after if f.event == "execution_end"]
        assert ends[0].data["execution_id"] == orphan
        assert ends[0].data["status"] == "cancelled"
        assert ends[0].data["reason"] == "node lost"
        assert ends[-1].data["status"] == "completed"
        resumed = [f for f in after if f.event == "execution_start"]
        assert resumed and resumed[0].id is not None and resumed[0].id > ends[0].id  # type: ignore[operator]
        state = (await on_b.get("/sessions/s2")).json()
        assert state["node"] in ("node-b", "node-c")
        texts = [
            block.get("text", "")
            for message in state["timeline"]
            for block in message["content"]
            if message["role"] == "user"
        ]
        assert texts.count(STORY) == 1
        assert texts.count("and then what is 6 * 7?") == 1
        assert "42" in text_of(after)

        # A client that resumes on a surviving node gets what followed its cursor, once.
        async with stream(c, "s2", **{"last-event-id": str(cursor)}) as replay:
            replayed = await until(replay, lambda f: f.id == seen[-1])
        assert [f.id for f in replayed] == [s for s in seen if s > cursor]


async def test_pending_confirmation_survives_kill_9(cluster: Cluster) -> None:
    a, b, c = [await cluster.start(name, speed=0.001) for name in ("node-a", "node-b", "node-c")]
    async with a.client() as on_a, c.client() as on_c:
        assert (await on_a.post("/sessions", json={"session_id": "s3"})).status_code == 201
        async with stream(b, "s3") as events:
            sent = await on_a.post("/sessions/s3/messages", json={"message": "remember the keys"})
            assert sent.status_code == 202
            frames = await until(events, lambda f: f.event == "tool_confirmation_required")
            tool_use_id = frames[-1].data["tool_use_id"]
            a.process.kill()
            await a.process.wait()

            async def taken_over() -> Any:
                state = (await on_c.get("/sessions/s3")).json()
                return state if state.get("node") not in (None, "node-a") else None

            state = await poll(taken_over, "another node to take the session")
            assert [p["tool_use_id"] for p in state["pending_confirmations"]] == [tool_use_id]
            answered = await on_c.post(
                f"/sessions/s3/tool-results/{tool_use_id}", json={"approved": True}
            )
            assert answered.status_code == 200, answered.text
            frames += await until(
                events, lambda f: f.event == "execution_end" and f.data["status"] == "completed"
            )
        results = [f for f in frames if f.event == "tool_result"]
        assert results and not results[-1].data.get("is_error")
        seqs = [f.id for f in frames if f.id is not None]
        assert seqs == sorted(set(seqs))


async def test_a_paused_holder_is_fenced_out(cluster: Cluster) -> None:
    from trio_session.cluster import PostgresStore

    a, b = [await cluster.start(name) for name in ("node-a", "node-b")]
    async with a.client() as on_a, b.client() as on_b:
        assert (await on_a.post("/sessions", json={"session_id": "s4"})).status_code == 201
        async with stream(b, "s4") as events:
            sent = await on_a.post("/sessions/s4/messages", json={"message": STORY})
            orphan = sent.json()["execution_id"]
            await until(events, lambda f: f.event == "content_delta")
            async with PostgresStore(cluster.dsn) as store:
                token_a = await store.fence_of("s4")
            a.process.send_signal(signal.SIGSTOP)
            frames = await until(
                events, lambda f: f.event == "execution_end" and f.data["execution_id"] == orphan
            )
            assert frames[-1].data["reason"] == "node lost"
            a.process.send_signal(signal.SIGCONT)

            async def a_let_go() -> bool:
                # Once resumed, node A finds out its lease is gone and drops its copy.
                return "lost the lease of session 's4'" in a.log.read_text()

            await poll(a_let_go, "node A to find its lease lost")
            # Its last save, on the way out, was refused by PostgreSQL's fence.
            assert "FencedOut: session 's4': fenced at token" in a.log.read_text()
            frames += await until(
                events, lambda f: f.event == "execution_end" and f.data["status"] == "completed"
            )
        lost = next(i for i, f in enumerate(frames) if f.data.get("reason") == "node lost")
        late = [f for f in frames[lost + 1 :] if f.data["execution_id"] == orphan]
        assert late == [], "node A emitted nothing after it lost the lease"
        assert any(f.event == "execution_start" for f in frames[lost + 1 :])
        async with PostgresStore(cluster.dsn) as store:
            assert await store.fence_of("s4") > token_a
            snapshot = await store.load("s4")
        assert snapshot is not None
        state = (await on_b.get("/sessions/s4")).json()
        assert state["node"] == "node-b"
        assert [m["id"] for m in state["timeline"]] == [m.id for m in snapshot.timeline]
        finals = [f for f in frames if f.event == "message" and f.data["execution_id"] != orphan]
        assert finals and finals[-1].data["message"]["id"] == snapshot.timeline[-1].id


def test_cli_rejects_bad_cluster_options() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trio_session", "serve", *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )

    both = run("--db", "x.db", "--postgres", "postgresql://h/db", "--redis", "redis://h")
    assert both.returncode == 2
    assert "--db and --postgres/--redis exclude each other" in both.stderr
    half = run("--postgres", "postgresql://h/db")
    assert half.returncode == 2
    assert "needs both --postgres DSN and --redis URL" in half.stderr
    ttl = run("--postgres", "postgresql://h/db", "--redis", "redis://h", "--lease-ttl", "0")
    assert ttl.returncode == 2
    assert "--lease-ttl" in ttl.stderr
    assert json.dumps(both.stdout) == '""'


async def test_the_stream_is_trimmed_behind_a_durable_snapshot(
    postgres_dsn: str, redis_url: str
) -> None:
    from trio_session import Agent, ScriptedModel
    from trio_session.cluster import open_cluster_gateway
    from trio_session.cluster._redis import EventLog, open_redis

    agent = Agent(ScriptedModel(["x" * 50] * 2, chunk_size=1))
    async with (
        open_cluster_gateway(
            agent,
            postgres=postgres_dsn,
            redis=redis_url,
            worker_id="solo",
            lease_ttl=LEASE_TTL,
            port=0,
            token=TOKEN,
            max_buffered_events=10,
        ) as gateway,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", headers=AUTH, timeout=DEADLINE
        ) as client,
        open_redis(redis_url) as redis,
    ):
        assert (await client.post("/sessions", json={"session_id": "t1"})).status_code == 201
        log = EventLog(redis)
        for text in ("one", "two"):
            sent = (await client.post("/sessions/t1/messages", json={"message": text})).json()
            path = f"/sessions/t1/events?after_seq={sent['after_seq']}"
            async with SSE(client, path) as events:
                frames = await until(events, lambda f: f.event == "execution_end")
            assert frames[-1].data["execution_id"] == sent["execution_id"]
        last = await log.last_seq("t1")
        kept = await log.read("t1", after_seq=None, count=1000)
        # The first execution's events (all in the snapshot saved since) are gone but the
        # last 10 behind that save; everything after it is kept.
        assert kept[0][0] > 1
        assert kept[-1][0] == last
        assert [seq for seq, _ in kept] == list(range(kept[0][0], last + 1))


async def test_a_node_stopped_mid_answer_closes_cleanly(cluster: Cluster) -> None:
    a, b = [await cluster.start(name) for name in ("node-a", "node-b")]
    async with a.client() as on_a, b.client() as on_b:
        assert (await on_a.post("/sessions", json={"session_id": "s6"})).status_code == 201
        async with stream(b, "s6") as events:
            sent = await on_a.post("/sessions/s6/messages", json={"message": STORY})
            await until(events, lambda f: f.event == "content_delta")
            a.process.terminate()
            with trio.fail_after(DEADLINE):
                assert await a.process.wait() == 0
            frames = await until(events, lambda f: f.event == "execution_end")
        assert frames[-1].data["execution_id"] == sent.json()["execution_id"]
        assert frames[-1].data["status"] == "cancelled"
        # Saved and let go of: node B answers from storage, then runs it on demand.
        assert (await on_b.get("/sessions/s6")).json()["node"] is None
        again = await on_b.post("/sessions/s6/messages", json={"message": "what is 6 * 7?"})
        assert again.status_code == 202
        assert (await on_b.get("/sessions/s6")).json()["node"] == "node-b"
