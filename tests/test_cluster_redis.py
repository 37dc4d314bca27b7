"""The cluster's Redis primitives against a real redis-server: EventLog, Lease, Commands."""

from __future__ import annotations

import gc
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from _redis import (
    RedisServer,
    info,
    redis_server as redis_server,
    redis_url as redis_url,
    wait_until,
)

from trio_session.cluster import FencedOut
from trio_session.cluster._lease import Lease
from trio_session.cluster._redis import (
    CommandFailed,
    Commands,
    EventLog,
    Redis,
    RedisUnavailable,
    SeqConflict,
    Workers,
    open_redis,
)

# coredis 6.9 leaves anyio memory streams unclosed when a connection's setup fails or is cut
# off; their ResourceWarning comes whenever the garbage collector runs, in whichever test runs
# then. So each test here collects its own garbage at its end, and ignores just those.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_coredis_garbage() -> Iterator[None]:
    yield
    gc.collect()


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _blocked_clients(url: str) -> int:
    return int(info(_port(url), "clients")["blocked_clients"])


async def _wait_blocked(url: str, count: int) -> None:
    async def reached() -> bool:
        return await _blocked_clients(url) == count

    await wait_until(reached)


async def _acquired(lease: Lease, session_id: str, worker_id: str) -> int:
    token = await lease.acquire(session_id, worker_id, ttl=30.0)
    assert token is not None
    return token


async def _entry_ids(redis: Redis, key: str) -> list[bytes]:
    ids: list[bytes] = []
    for entry in await redis.xrange(key):
        assert isinstance(entry.identifier, bytes)
        ids.append(entry.identifier)
    return ids


# --- the event log ------------------------------------------------------------------------------


@asynccontextmanager
async def _monitor(port: int) -> AsyncIterator[list[bytes]]:
    """Redis's MONITOR over a raw socket: the lines it printed while the block ran."""
    lines: list[bytes] = []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"MONITOR\r\n")
        buffer = b""
        while b"\r\n" not in buffer:
            buffer += await stream.receive_some()
        assert buffer.startswith(b"+OK"), buffer
        buffer = buffer.split(b"\r\n", 1)[1]
        yield lines
        # MONITOR shows commands in the order Redis ran them: read up to our end marker.
        while b'"monitor-end"' not in buffer:
            buffer += await stream.receive_some()
        lines.extend(line for line in buffer.split(b"\r\n") if line)


async def test_append_is_one_round_trip_and_ids_are_seq_0(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log, lease = EventLog(redis), Lease(redis)
        token = await _acquired(lease, "s1", "node-a")
        await log.append("s1", [(1, b"warm-up")], token=token)  # loads the script once
        batch = [(seq, f"event {seq}".encode()) for seq in range(2, 52)]
        async with _monitor(_port(redis_url)) as lines:
            await log.append("s1", batch, token=token)
            await redis.echo(b"monitor-end")
        from_client = [line for line in lines if b" lua] " not in line]
        from_script = [line for line in lines if b" lua] " in line]
        assert len(from_client) == 2, from_client  # the EVALSHA, then our ECHO marker
        assert b'"evalsha"' in from_client[0].lower()
        assert sum(b'"xadd"' in line.lower() for line in from_script) == 50
        ids = await _entry_ids(redis, log.key("s1"))
        assert ids == [f"{seq}-0".encode() for seq in range(1, 52)]
        assert await log.last_seq("s1") == 51


async def test_read_after_seq_and_from_the_oldest_retained(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log = EventLog(redis)
        token = await _acquired(Lease(redis), "s1", "node-a")
        assert await log.read("s1", after_seq=None) == []
        assert await log.last_seq("s1") == 0
        await log.append("s1", [(seq, f"e{seq}") for seq in range(1, 11)], token=token)
        everything = await log.read("s1", after_seq=None)
        assert everything == [(seq, f"e{seq}".encode()) for seq in range(1, 11)]
        assert await log.read("s1", after_seq=7) == [(8, b"e8"), (9, b"e9"), (10, b"e10")]
        assert await log.read("s1", after_seq=0, count=2) == [(1, b"e1"), (2, b"e2")]
        assert await log.read("s1", after_seq=10) == []
        assert await log.trimmed_seq("s1") == 0
        await log.trim("s1", below_seq=6)
        assert await log.trimmed_seq("s1") == 5  # a reader after seq 3 missed 4 and 5
        assert [seq for seq, _ in await log.read("s1", after_seq=None)] == [6, 7, 8, 9, 10]
        assert [seq for seq, _ in await log.read("s1", after_seq=2)] == [6, 7, 8, 9, 10]
        assert await log.read("other", after_seq=None) == []


async def test_trim_keeps_the_entries_at_and_above_below_seq(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log = EventLog(redis)
        token = await _acquired(Lease(redis), "s1", "node-a")
        await log.append("s1", [(seq, b"x") for seq in range(1, 6)], token=token)
        await log.trim("s1", below_seq=3)
        assert await _entry_ids(redis, log.key("s1")) == [b"3-0", b"4-0", b"5-0"]
        await log.trim("s1", below_seq=3)  # idempotent
        assert len(await _entry_ids(redis, log.key("s1"))) == 3
        assert await log.trimmed_seq("s1") == 2
        await log.trim("s1", below_seq=1)
        await log.trim("s1", below_seq=0)
        assert len(await _entry_ids(redis, log.key("s1"))) == 3
        await log.trim("s1", below_seq=100)
        assert await _entry_ids(redis, log.key("s1")) == []
        assert await log.trimmed_seq("s1") == 5
        # The stream remembers its last id: seq never goes back, even after a full trim.
        assert await log.last_seq("s1") == 5
        with pytest.raises(SeqConflict, match="not above the stream's last id 5-0"):
            await log.append("s1", [(5, b"again")], token=token)
        await log.append("s1", [(6, b"next")], token=token)
        assert await log.read("s1", after_seq=None) == [(6, b"next")]


async def test_a_blocking_read_is_woken_by_an_append(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log = EventLog(redis)
        token = await _acquired(Lease(redis), "s1", "node-a")
        await log.append("s1", [(1, b"first")], token=token)
        got: list[list[tuple[int, bytes]]] = []

        async def reader() -> None:
            got.append(await log.read("s1", after_seq=1, block=math.inf))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await _wait_blocked(redis_url, 1)
            assert got == []
            await log.append("s1", [(2, b"second"), (3, b"third")], token=token)
        assert got == [[(2, b"second"), (3, b"third")]]


async def test_a_cancel_scope_aborts_a_blocking_read_at_the_server(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log = EventLog(redis)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def reader() -> None:
                with scope:
                    await log.read("s1", after_seq=None, block=math.inf)
                    raise AssertionError("the read returned without data")

            nursery.start_soon(reader)
            await _wait_blocked(redis_url, 1)
            scope.cancel()
        assert scope.cancelled_caught
        # The blocked XREAD's connection was closed, not left blocked on the server ...
        await _wait_blocked(redis_url, 0)
        # ... and the pool goes on working, blocking reads included.
        token = await _acquired(Lease(redis), "s1", "node-a")
        await log.append("s1", [(1, b"after")], token=token)
        assert await log.read("s1", after_seq=None, block=5.0) == [(1, b"after")]


async def test_blocking_readers_wait_their_turn_and_never_starve_the_lease(
    redis_url: str,
) -> None:
    # A pool of 6: RESERVED_CONNECTIONS (4) stay for short commands, 2 for blocking reads.
    async with open_redis(redis_url, max_connections=6, pool_timeout=5.0) as redis:
        log, lease = EventLog(redis), Lease(redis)
        got: list[list[tuple[int, bytes]]] = []

        async def reader() -> None:
            got.append(await log.read("s1", after_seq=None, block=math.inf))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(reader)
            await _wait_blocked(redis_url, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert await _blocked_clients(redis_url) == 2  # the other three wait for a slot
            # The short commands still have their connections.
            token = await _acquired(lease, "s1", "node-a")
            assert await lease.renew("s1", "node-a", token, ttl=30.0)
            await log.append("s1", [(1, b"wake")], token=token)
        assert got == [[(1, b"wake")]] * 5


async def test_a_blocking_read_with_a_bound_returns_empty_when_nothing_comes(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as redis:
        assert await EventLog(redis).read("s1", after_seq=None, block=0.05) == []


async def test_stale_or_duplicate_seq_is_refused_and_nothing_is_written(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        log = EventLog(redis)
        token = await _acquired(Lease(redis), "s1", "node-a")
        await log.append("s1", [(1, b"a"), (2, b"b"), (3, b"c")], token=token)
        with pytest.raises(SeqConflict, match="seq 3 is not above the stream's last id 3-0"):
            await log.append("s1", [(3, b"dup")], token=token)
        with pytest.raises(SeqConflict, match="seq 2 is not above"):
            await log.append("s1", [(2, b"stale"), (4, b"new")], token=token)
        with pytest.raises(ValueError, match="seqs must rise, but seq 4 follows 5"):
            await log.append("s1", [(5, b"x"), (4, b"y")], token=token)
        with pytest.raises(ValueError, match="seq must be at least 1"):
            await log.append("s1", [(0, b"x")], token=token)
        with pytest.raises(TypeError, match="payload must be bytes or str"):
            await log.append("s1", [(4, 42)], token=token)  # type: ignore[list-item]
        with pytest.raises(SeqConflict, match="seq 2 is not above"):
            await log.append("s1", [(2, b"b"), (3, b"other")], token=token)
        assert await log.read("s1", after_seq=None) == [(1, b"a"), (2, b"b"), (3, b"c")]
        await log.append("s1", [(4, b"d")], token=token)
        assert await log.last_seq("s1") == 4


async def test_re_sending_a_written_batch_is_safe(redis_url: str) -> None:
    """A retry after a lost reply: the very same batch again is accepted, not written twice."""
    async with open_redis(redis_url) as redis:
        log, lease = EventLog(redis), Lease(redis)
        token = await _acquired(lease, "s1", "node-a")
        batch: list[tuple[int, bytes | str]] = [(1, b"a"), (2, "b")]
        await log.append("s1", batch, token=token)
        await log.append("s1", batch, token=token)
        await log.append("s1", batch[1:], token=token)
        assert await log.read("s1", after_seq=None) == [(1, b"a"), (2, b"b")]
        # ... but not once the lease moved on.
        await lease.release("s1", "node-a", token)
        await _acquired(lease, "s1", "node-b")
        with pytest.raises(FencedOut):
            await log.append("s1", batch, token=token)


async def test_a_fenced_append_is_refused_after_another_node_took_the_lease(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as redis:
        log, lease = EventLog(redis), Lease(redis)
        with pytest.raises(FencedOut, match="the fence is 0, this writer's token is 1"):
            await log.append("s1", [(1, b"nobody holds it")], token=1)
        old = await _acquired(lease, "s1", "node-a")
        await log.append("s1", [(1, b"a")], token=old)
        # node-a's lease runs out (as if paused past its expiry); node-b takes it.
        await redis.delete(["trio-session:s1:lease"])
        new = await _acquired(lease, "s1", "node-b")
        assert new > old
        with pytest.raises(FencedOut) as raised:
            await log.append("s1", [(2, b"stale writer")], token=old)
        assert raised.value.session_id == "s1"
        assert "nothing was written" in str(raised.value)
        assert await log.read("s1", after_seq=None) == [(1, b"a")]
        assert await log.last_seq("s1") == 1
        await log.append("s1", [(2, b"b")], token=new)
        assert await log.read("s1", after_seq=1) == [(2, b"b")]


# --- leases ----------------------------------------------------------------------------------


async def test_lease_acquire_holder_renew_release(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        assert await lease.holder("s1") is None
        assert await lease.fence("s1") == 0
        token = await lease.acquire("s1", "node-a", ttl=30.0)
        assert token == 1
        assert await lease.holder("s1") == "node-a"
        assert await lease.acquire("s1", "node-b", ttl=30.0) is None
        assert await lease.acquire("s1", "node-a", ttl=30.0) is None  # held, even by itself
        assert await lease.renew("s1", "node-a", token, ttl=60.0)
        assert 30_000 < await redis.pttl("trio-session:s1:lease") <= 60_000
        assert not await lease.renew("s1", "node-b", token, ttl=60.0)
        assert not await lease.renew("s1", "node-a", token + 1, ttl=60.0)
        await lease.release("s1", "node-a", token)
        assert await lease.holder("s1") is None
        assert not await lease.renew("s1", "node-a", token, ttl=60.0)
        # Other sessions are independent.
        assert await lease.acquire("s2", "node-b", ttl=30.0) == 1


async def test_a_lease_expires_in_redis_time_and_is_then_lost(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        token = await lease.acquire("s1", "node-a", ttl=0.2)
        assert token is not None

        async def expired() -> bool:
            return await lease.holder("s1") is None

        await wait_until(expired, within=5.0)
        assert not await lease.renew("s1", "node-a", token, ttl=10.0)
        successor = await lease.acquire("s1", "node-b", ttl=10.0)
        assert successor == token + 1
        assert await lease.holder("s1") == "node-b"


async def test_fencing_tokens_rise_across_holders(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        tokens: list[int] = []
        for worker in ["node-a", "node-b", "node-a", "node-c"]:
            token = await _acquired(lease, "s1", worker)
            tokens.append(token)
            await lease.release("s1", worker, token)
        assert tokens == [1, 2, 3, 4]
        assert await lease.fence("s1") == 4
        # A Redis that lost its counter cannot hand out a token below Postgres's fence.
        await redis.delete(["trio-session:s1:fence"])
        assert await lease.acquire("s1", "node-a", ttl=30.0, fence_floor=4) == 5


async def test_only_the_holder_releases_the_lease(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        token = await _acquired(lease, "s1", "node-a")
        await lease.release("s1", "node-b", token)
        assert await lease.holder("s1") == "node-a"
        await lease.release("s1", "node-a", token + 1)
        assert await lease.holder("s1") == "node-a"
        await lease.release("s1", "node-a", token)
        assert await lease.holder("s1") is None
        # A former holder's late release does not free its successor's lease.
        successor = await _acquired(lease, "s1", "node-b")
        await lease.release("s1", "node-a", token)
        assert await lease.holder("s1") == "node-b"
        assert successor == token + 1


async def test_keep_renews_the_lease_past_its_ttl(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        token = await lease.acquire("s1", "node-a", ttl=0.3)
        assert token is not None
        with trio.move_on_after(1.0):  # real time: Redis's clock runs the lease
            await lease.keep("s1", "node-a", token, ttl=0.3)
        assert await lease.holder("s1") == "node-a"
        assert await lease.acquire("s1", "node-b", ttl=1.0) is None


async def test_keep_raises_fenced_out_when_another_node_takes_the_lease(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as redis:
        lease = Lease(redis)
        token = await _acquired(lease, "s1", "node-a")
        lost = pytest.RaisesExc(FencedOut, match="was lost: it expired or another node took it")
        with pytest.RaisesGroup(lost):
            async with trio.open_nursery() as nursery:
                await nursery.start(lease.keep, "s1", "node-a", token, 0.3)
                await redis.delete(["trio-session:s1:lease"])  # as if it had expired
                assert await lease.acquire("s1", "node-b", ttl=30.0) == token + 1


async def test_keep_gives_the_lease_up_when_redis_is_gone(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    try:
        async with open_redis(server.url) as redis:
            lease = Lease(redis)
            token = await lease.acquire("s1", "node-a", ttl=0.3)
            assert token is not None
            server.kill()
            with pytest.raises(FencedOut, match="could not be renewed before it expires"):
                await lease.keep("s1", "node-a", token, ttl=0.3)
    finally:
        server.stop()


# --- commands --------------------------------------------------------------------------------


async def _echo(command: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"echo": command["op"], "command_id": command["command_id"]}


async def test_commands_call_and_serve_round_trip(redis_url: str) -> None:
    async with open_redis(redis_url) as redis, trio.open_nursery() as nursery:
        commands = Commands(redis)
        await nursery.start(commands.serve, "s1", _echo)
        reply = await commands.call("s1", {"op": "send", "text": "hi"}, timeout=10.0)
        assert reply["echo"] == "send"
        assert isinstance(reply["command_id"], str) and len(reply["command_id"]) == 32
        own = await commands.call("s1", {"op": "abort", "command_id": "c-7"}, timeout=10.0)
        assert own == {"echo": "abort", "command_id": "c-7"}
        # A handled command leaves the stream; its reply was collected.
        assert await redis.xlen(commands.key("s1")) == 0
        nursery.cancel_scope.cancel()


async def test_a_command_sent_while_nobody_serves_is_handled_by_the_next_server(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as redis:
        commands = Commands(redis)
        with pytest.raises(TimeoutError, match="stays queued for the next server"):
            await commands.call("s1", {"op": "queue", "command_id": "early"}, timeout=0.1)
        seen: list[Mapping[str, Any]] = []

        async def handler(command: Mapping[str, Any]) -> Mapping[str, Any]:
            seen.append(command)
            return {"ok": True}

        replies: list[Mapping[str, Any]] = []
        async with trio.open_nursery() as nursery:
            replied = trio.Event()

            async def caller() -> None:
                replies.append(await commands.call("s1", {"op": "send"}, timeout=30.0))
                replied.set()

            nursery.start_soon(caller)
            await _wait_blocked(redis_url, 1)  # the command is queued; its caller waits
            await nursery.start(commands.serve, "s1", handler)
            await replied.wait()
            nursery.cancel_scope.cancel()
        assert replies == [{"ok": True}]
        assert [command["op"] for command in seen] == ["queue", "send"]
        assert seen[0]["command_id"] == "early"


async def test_call_times_out_when_nobody_serves(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        with pytest.raises(TimeoutError, match=r"no reply to command \w+ within 0.05 s"):
            await Commands(redis).call("s1", {"op": "send"}, timeout=0.05)


async def test_a_cancelled_call_stops_waiting_at_the_server(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        commands = Commands(redis)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def caller() -> None:
                with scope:
                    await commands.call("s1", {"op": "send"}, timeout=60.0)

            nursery.start_soon(caller)
            await _wait_blocked(redis_url, 1)
            scope.cancel()
        assert scope.cancelled_caught
        await _wait_blocked(redis_url, 0)


async def test_a_serve_cancelled_mid_command_leaves_it_for_the_next_server(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as redis:
        commands = Commands(redis)
        started = trio.Event()

        async def stuck(command: Mapping[str, Any]) -> Mapping[str, Any]:
            started.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        replies: list[Mapping[str, Any]] = []
        async with trio.open_nursery() as nursery:
            replied = trio.Event()

            async def caller() -> None:
                replies.append(await commands.call("s1", {"op": "confirm"}, timeout=30.0))
                replied.set()

            serving = trio.CancelScope()

            async def first_server() -> None:
                with serving:
                    await commands.serve("s1", stuck)

            nursery.start_soon(first_server)
            nursery.start_soon(caller)
            await started.wait()
            serving.cancel()  # the first holder goes away mid-command
            assert await redis.xlen(commands.key("s1")) == 1
            await nursery.start(commands.serve, "s1", _echo)
            await replied.wait()
            nursery.cancel_scope.cancel()
        assert replies[0]["echo"] == "confirm"


async def test_a_handler_error_reaches_the_caller_and_serve_goes_on(redis_url: str) -> None:
    async def picky(command: Mapping[str, Any]) -> Mapping[str, Any]:
        if command["op"] == "bad":
            raise KeyError("no such tool")
        return {"done": command["op"]}

    async with open_redis(redis_url) as redis, trio.open_nursery() as nursery:
        commands = Commands(redis)
        await nursery.start(commands.serve, "s1", picky)
        with pytest.raises(CommandFailed, match="failed: KeyError: 'no such tool'"):
            await commands.call("s1", {"op": "bad"}, timeout=10.0)
        assert await commands.call("s1", {"op": "good"}, timeout=10.0) == {"done": "good"}
        with pytest.raises(TypeError, match="the command is not JSON"):
            await commands.call("s1", {"op": object()}, timeout=10.0)
        nursery.cancel_scope.cancel()


async def test_a_fenced_out_handler_leaves_its_command_to_the_new_holder(
    redis_url: str,
) -> None:
    async def lost(command: Mapping[str, Any]) -> Mapping[str, Any]:
        raise FencedOut("s1", "another node holds the lease")

    async with open_redis(redis_url) as redis:
        commands = Commands(redis)
        with pytest.raises(TimeoutError):
            await commands.call("s1", {"op": "send", "command_id": "c-1"}, timeout=0.05)
        with pytest.raises(FencedOut, match="another node holds the lease"):
            await commands.serve("s1", lost)
        assert await redis.xlen(commands.key("s1")) == 1  # unanswered, still queued
        async with trio.open_nursery() as nursery:
            await nursery.start(commands.serve, "s1", _echo)
            reply = await commands.call("s1", {"op": "abort"}, timeout=10.0)
            assert reply["echo"] == "abort"
            nursery.cancel_scope.cancel()
        assert await redis.xlen(commands.key("s1")) == 0


# --- heartbeats ------------------------------------------------------------------------------


async def test_workers_beat_and_expire(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        workers = Workers(redis)
        await workers.beat("node-a", ttl=30.0)
        await workers.beat("node-b", ttl=0.1)
        assert "node-a" in await workers.alive()

        async def only_a() -> bool:
            return await workers.alive() == ["node-a"]

        await wait_until(only_a, within=5.0)
        await workers.gone("node-a")
        assert await workers.alive() == []


# --- errors that name the problem ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0", "must start with redis://"),
        ("127.0.0.1:6379", "must start with redis://"),
        ("redis:///0", "names no host"),
        ("redis://127.0.0.1:port/0", "not a Redis URL"),
    ],
)
async def test_a_wrong_url_is_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        async with open_redis(url):
            raise AssertionError("unreachable")


async def test_a_redis_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    server.stop()
    url = f"redis://:secret@127.0.0.1:{server.port}/0"
    with pytest.raises(RedisUnavailable, match="cannot use Redis at redis://:\\*\\*\\*@") as e:
        async with open_redis(url, connect_timeout=2.0):
            raise AssertionError("unreachable")
    assert "secret" not in str(e.value)
    assert str(server.port) in str(e.value)


async def test_a_redis_that_never_answers_is_a_clear_error(autojump_clock: object) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(
            RedisUnavailable, match=r"cannot use Redis at redis://127.0.0.1:\d+/0: "
        ):
            async with open_redis(f"redis://127.0.0.1:{port}/0", connect_timeout=1.0):
                raise AssertionError("unreachable")
        nursery.cancel_scope.cancel()


async def test_a_database_out_of_range_is_a_clear_error(redis_url: str) -> None:
    bad = redis_url.rsplit("/", 1)[0] + "/100000"
    with pytest.raises(RedisUnavailable, match="DB index is out of range"):
        async with open_redis(bad):
            raise AssertionError("unreachable")


async def test_a_cancel_scope_around_open_redis_cancels_its_block(redis_url: str) -> None:
    with trio.CancelScope() as scope:
        async with open_redis(redis_url) as redis:
            scope.cancel()
            await EventLog(redis).read("s1", after_seq=None, block=math.inf)
    assert scope.cancelled_caught


async def test_redis_restarting_between_calls_is_survived(tmp_path: Path) -> None:
    """Redis is gone: each call says so; it is back on its port: the same client works."""
    server = RedisServer.start(tmp_path)
    try:
        async with open_redis(server.url) as redis:
            lease = Lease(redis)
            assert await lease.acquire("s1", "node-a", ttl=30.0) == 1
            server.kill()
            with pytest.raises(RedisUnavailable, match="broke during acquiring the lease"):
                await lease.acquire("s1", "node-b", ttl=30.0)
            server = RedisServer.start(tmp_path, port=server.port)
            # No persistence: the fence is gone too, which is why acquire takes a floor.
            assert await lease.acquire("s1", "node-b", ttl=30.0, fence_floor=1) == 2
    finally:
        server.stop()


async def test_errors_of_the_block_pass_through_unwrapped(redis_url: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_redis(redis_url) as redis:
            await redis.ping()
            raise KeyError("mine")


async def test_losing_redis_during_a_blocking_read_is_a_clear_error(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    try:
        async with open_redis(server.url) as redis:
            log = EventLog(redis)
            raised: list[BaseException] = []

            async def reader() -> None:
                try:
                    await log.read("s1", after_seq=None, block=math.inf)
                except RedisUnavailable as exc:
                    raised.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await _wait_blocked(server.url, 1)
                server.kill()
            assert len(raised) == 1
            assert "session 's1': the Redis connection broke during an event log read" in str(
                raised[0]
            )
            with pytest.raises(RedisUnavailable, match="broke during an event log append"):
                await log.append("s1", [(1, b"x")], token=1)
    finally:
        server.stop()
