"""SQLiteStore: the contract, plus what only a file on disk can get wrong."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing
from _profiles import examples
from _snapshots import conversation, snap, tick
from hypothesis import HealthCheck, given, settings, strategies as st

from trio_session import (
    JsonBlock,
    Message,
    SerializationError,
    SessionSnapshot,
    SnapshotError,
    SQLiteStore,
    TrioSessionError,
    Usage,
    assistant,
    user,
)
from trio_session.stores import SNAPSHOT_VERSION
from trio_session.testing import check_store


@contextlib.contextmanager
def raw(path: Path) -> Any:
    """A connection of the test's own, beside the store's."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, session_id: str) -> tuple[list[Any], list[Any]]:
    """Every stored byte of a session: its row and its message rows."""
    with raw(path) as conn:
        session = conn.execute(
            "SELECT * FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchall()
        messages = conn.execute(
            "SELECT * FROM messages WHERE session_id = ? ORDER BY idx", (session_id,)
        ).fetchall()
    return session, messages


# --- the contract -------------------------------------------------------------


async def test_check_store_on_one_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    await check_store(lambda: SQLiteStore(path))


async def test_check_store_on_a_new_file_each_time(tmp_path: Path) -> None:
    def make() -> SQLiteStore:
        return SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db")

    await check_store(make)


async def test_check_store_in_memory() -> None:
    await check_store(lambda: SQLiteStore(":memory:"))


async def test_restore_from_a_reopened_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    original = snap(
        timeline=conversation(30) + tick("t1"),
        queued_messages=(
            Message("user", "queued one", id="q1", metadata={"urgent": True}),
            user("queued two"),
        ),
        state={"count": 3, "nested": {"list": [1, "two", None], "é": "ü"}},
        usage=Usage(10, 20, 30, 4),
        last_seq=99,
    )
    async with SQLiteStore(path) as store:
        await store.save(original)
    async with SQLiteStore(path) as store:
        loaded = await store.load("s1")
        assert await store.list() == ["s1"]
    assert loaded == original
    assert [m.id for m in loaded.timeline] == [m.id for m in original.timeline]
    assert loaded.queued_messages[0].metadata == {"urgent": True}
    assert loaded.state["nested"] == {"list": [1, "two", None], "é": "ü"}


# --- the file -----------------------------------------------------------------


async def test_file_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.save(snap())
        with raw(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (2,)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"sessions", "messages"} <= tables


async def test_newer_file_layout_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE sessions (anything)")
        conn.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(TrioSessionError, match="layout version 99"):
        async with SQLiteStore(path):
            pass  # pragma: no cover
    assert path.read_bytes() == before


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "text.db"
    path.write_bytes(b"this is not a database, " * 100)
    store = SQLiteStore(path)
    with pytest.raises(SnapshotError, match="corrupt database file") as raised:
        await store.load("s1")
    assert raised.value.session_id == "s1"
    await store.aclose()
    assert path.read_bytes() == b"this is not a database, " * 100


def test_constructor_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="path"):
        SQLiteStore(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_timeout"):
        SQLiteStore("x.db", busy_timeout=-1)
    with pytest.raises(TypeError, match="busy_timeout"):
        SQLiteStore("x.db", busy_timeout="5")  # type: ignore[arg-type]


async def test_closed_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.save(snap())
    assert "open" in repr(store)
    await store.aclose()
    await store.aclose()
    assert "closed" in repr(store)
    assert store.path == str(tmp_path / "s.db")
    for call in (store.save(snap()), store.load("s1"), store.delete("s1"), store.list()):
        with pytest.raises(trio.ClosedResourceError):
            await call


async def test_unused_store_closes_cleanly(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "never.db")
    await store.aclose()
    assert not (tmp_path / "never.db").exists()


async def test_aclose_waits_for_a_running_save_even_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.load("warm-up")
    closed = trio.Event()

    async def close_in_a_cancelled_scope() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.aclose()
        closed.set()

    with raw(path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.save, snap(timeline=conversation(3)))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(close_in_a_cancelled_scope)
            await trio.testing.wait_all_tasks_blocked()
            assert not closed.is_set()
            blocker.execute("COMMIT")
    assert closed.is_set()
    with pytest.raises(trio.ClosedResourceError):
        await store.load("s1")
    async with SQLiteStore(path) as reopened:
        assert await reopened.load("s1") == snap(timeline=conversation(3))


# --- incremental saving ---------------------------------------------------------


def add_audit(path: Path) -> None:
    """Record every message row written or removed, behind the store's back."""
    with raw(path) as conn:
        conn.executescript(
            """
            CREATE TABLE audit (op TEXT, idx INTEGER);
            CREATE TRIGGER audit_insert AFTER INSERT ON messages
                BEGIN INSERT INTO audit VALUES ('insert', new.idx); END;
            CREATE TRIGGER audit_delete AFTER DELETE ON messages
                BEGIN INSERT INTO audit VALUES ('delete', old.idx); END;
            CREATE TRIGGER audit_update AFTER UPDATE ON messages
                BEGIN INSERT INTO audit VALUES ('update', old.idx); END;
            """
        )


def take_audit(path: Path) -> list[tuple[str, int]]:
    with raw(path) as conn:
        ops: list[tuple[str, int]]
        ops = conn.execute("SELECT op, idx FROM audit ORDER BY rowid").fetchall()
        conn.execute("DELETE FROM audit")
    return ops


async def test_save_after_a_tick_writes_only_the_new_messages(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        base = snap(timeline=conversation(100))
        await store.save(base)
        add_audit(path)
        session_row_before, _ = rows(path, "s1")

        grown = attrs.evolve(base, timeline=base.timeline + tick("t1"), state={"n": 1}, last_seq=12)
        await store.save(grown)
        assert take_audit(path) == [("insert", 100), ("insert", 101), ("insert", 102)]
        session_row_after, _ = rows(path, "s1")
        assert session_row_after != session_row_before
        assert await store.load("s1") == grown

        # Only the session's fields changed: no message row is touched.
        same = attrs.evolve(grown, state={"n": 2})
        await store.save(same)
        assert take_audit(path) == []
        assert await store.load("s1") == same

        # A rewrite replaces the messages.
        rewritten = attrs.evolve(grown, timeline=conversation(2, "new"))
        await store.save(rewritten)
        ops = take_audit(path)
        assert ops.count(("insert", 0)) == 1
        assert len([op for op in ops if op[0] == "delete"]) == 103
        assert await store.load("s1") == rewritten


async def test_save_repairs_rows_past_the_stored_count(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        base = snap(timeline=conversation(3))
        await store.save(base)
        with raw(path) as conn:
            conn.execute(
                "INSERT INTO messages VALUES ('s1', 3, 'stray', '{}'), ('s1', 7, 'stray2', '{}')"
            )
        grown = attrs.evolve(base, timeline=base.timeline + tick("t"))
        await store.save(grown)
        assert await store.load("s1") == grown


async def test_failed_save_rolls_back_the_whole_transaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        good = snap(timeline=conversation(5), state={"v": 1})
        await store.save(good)
        before = rows(path, "s1")
        # The bad message comes after good new ones and after the old rows
        # would have been deleted by the rewrite: all of it must roll back.
        for timeline in (
            good.timeline + tick("t") + (Message("user", [JsonBlock(object())]),),
            (*conversation(3, "x"), Message("user", [JsonBlock({"n": float("nan")})])),
        ):
            with pytest.raises(SerializationError):
                await store.save(attrs.evolve(good, timeline=timeline, state={"v": 2}))
            assert rows(path, "s1") == before
        assert await store.load("s1") == good


# --- corrupt and newer snapshots ----------------------------------------------

CORRUPTIONS = {
    "message body is not JSON": "UPDATE messages SET body = '{not json' WHERE idx = 1",
    "message body is not a message": (
        'UPDATE messages SET body = \'{"role": "robot", "content": []}\' WHERE idx = 0'
    ),
    "message body is a blob": "UPDATE messages SET body = x'00ff' WHERE idx = 2",
    "message id differs from its row": "UPDATE messages SET message_id = 'other' WHERE idx = 2",
    "a message row is missing": "DELETE FROM messages WHERE idx = 1",
    "an index is skipped": "UPDATE messages SET idx = 9 WHERE idx = 3",
    "message count is wrong": "UPDATE sessions SET message_count = 7",
    "message count is text": "UPDATE sessions SET message_count = 'many'",
    "state is not JSON": "UPDATE sessions SET state = 'garbage'",
    "state is not an object": "UPDATE sessions SET state = '[1, 2]'",
    "usage is invalid": "UPDATE sessions SET usage = '{\"ticks\": -1}'",
    "queued messages are invalid": 'UPDATE sessions SET queued = \'[{"role": "user"}]\'',
    "last_seq is negative": "UPDATE sessions SET last_seq = -5",
    "created_at is text": "UPDATE sessions SET created_at = 'yesterday'",
    "version is text": "UPDATE sessions SET version = 'one'",
    "version is zero": "UPDATE sessions SET version = 0",
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_corrupt_row_raises_and_is_left_untouched(tmp_path: Path, corruption: str) -> None:
    path = tmp_path / "s.db"
    healthy = snap("healthy", timeline=conversation(4))
    async with SQLiteStore(path) as store:
        await store.save(snap("s1", timeline=conversation(4), queued_messages=(user("q"),)))
        await store.save(healthy)
    with raw(path) as conn:
        conn.execute(
            CORRUPTIONS[corruption].replace("WHERE", "WHERE session_id = 's1' AND")
            if "WHERE" in CORRUPTIONS[corruption]
            else CORRUPTIONS[corruption] + " WHERE session_id = 's1'"
        )
    before = rows(path, "s1")

    async with SQLiteStore(path) as store:
        for _ in range(2):
            with pytest.raises(SnapshotError, match="corrupt") as info:
                await store.load("s1")
            assert info.value.session_id == "s1"
            assert "'s1'" in str(info.value)
        # The rest of the file is fine.
        assert await store.load("healthy") == healthy
        assert await store.list() == ["healthy", "s1"]
    assert rows(path, "s1") == before


@pytest.mark.parametrize("garbage_too", [False, True])
async def test_newer_version_row_raises_and_is_left_untouched(
    tmp_path: Path, garbage_too: bool
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.save(snap(timeline=conversation(3)))
    with raw(path) as conn:
        conn.execute("UPDATE sessions SET version = ?", (SNAPSHOT_VERSION + 1,))
        if garbage_too:
            # A newer format may store anything: it is still reported as newer.
            conn.execute("UPDATE sessions SET state = 'v2 format', message_count = 0")
            conn.execute("UPDATE messages SET body = 'v2 format'")
    before = rows(path, "s1")
    async with SQLiteStore(path) as store:
        with pytest.raises(SnapshotError, match="newer") as info:
            await store.load("s1")
        assert info.value.session_id == "s1"
        assert f"version {SNAPSHOT_VERSION + 1}" in str(info.value)
    assert rows(path, "s1") == before


# --- concurrency, cancellation, locking -----------------------------------------


async def test_concurrent_saves_from_many_tasks(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db") as store:
        expected: dict[str, SessionSnapshot] = {}

        async def session_task(name: str) -> None:
            snapshot = snap(name)
            for i in range(5):
                snapshot = attrs.evolve(snapshot, timeline=snapshot.timeline + tick(f"{name}{i}"))
                await store.save(snapshot)
            expected[name] = snapshot

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(session_task, f"task{n}")
        assert await store.list() == sorted(expected)
        for name, snapshot in expected.items():
            assert await store.load(name) == snapshot


async def test_save_waits_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.load("warm-up")
        with raw(path) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            done = trio.Event()

            async def save() -> None:
                await store.save(snap(timeline=conversation(2)))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(save)
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set()
                blocker.execute("COMMIT")
        assert await store.load("s1") == snap(timeline=conversation(2))


async def test_busy_timeout_zero_fails_fast_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path, busy_timeout=0) as store:
        with raw(path) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await store.save(snap(timeline=conversation(2)))
            blocker.execute("COMMIT")
        assert await store.load("s1") is None
        await store.save(snap(timeline=conversation(2)))
        assert await store.load("s1") == snap(timeline=conversation(2))


async def test_cancelled_midway_save_completes_whole(tmp_path: Path) -> None:
    """Cancelled while its transaction waits in the worker: it finishes, whole."""
    path = tmp_path / "s.db"
    old = snap(timeline=conversation(10), state={"v": "old"})
    new = attrs.evolve(old, timeline=old.timeline + tick("t"), state={"v": "new"}, last_seq=3)
    queued_behind = attrs.evolve(new, state={"v": "queued behind"})
    store = SQLiteStore(path)
    await store.save(old)
    outcome: dict[str, bool] = {}

    async def save(name: str, snapshot: SessionSnapshot, scope: trio.CancelScope) -> None:
        with scope:
            await store.save(snapshot)
            outcome[name] = True  # returned normally: it happened
            await trio.lowlevel.checkpoint()
        outcome[f"{name} cancelled"] = scope.cancelled_caught

    with raw(path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        first, second = trio.CancelScope(), trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(save, "first", new, first)
            await trio.testing.wait_all_tasks_blocked()
            # The first save is in its worker thread; the second queues on the lock.
            nursery.start_soon(save, "second", queued_behind, second)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            second.cancel()
            await trio.testing.wait_all_tasks_blocked()
            blocker.execute("COMMIT")
    await store.aclose()

    assert outcome == {"first": True, "first cancelled": True, "second cancelled": True}
    async with SQLiteStore(path) as reopened:
        assert await reopened.load("s1") == new


CHILD = """
import sys, trio
from trio_session import Message, SessionSnapshot, SQLiteStore

path, name, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)
    async with SQLiteStore(path) as store:
        snapshots = {
            f"{name}-{k}": SessionSnapshot(
                session_id=f"{name}-{k}", timeline=(), created_at=0, updated_at=0
            )
            for k in range(2)
        }
        for i in range(ticks):
            for sid, snapshot in snapshots.items():
                new = tuple(
                    Message(role, f"{sid} {i} {role}", id=f"{sid}-{i}-{role}")
                    for role in ("user", "assistant", "event")
                )
                snapshot = SessionSnapshot(
                    session_id=sid, timeline=snapshot.timeline + new,
                    state={"ticks": i + 1}, last_seq=i + 1, created_at=0, updated_at=i,
                )
                snapshots[sid] = snapshot
                await store.save(snapshot)
            if i % 10 == 0:
                for sid, snapshot in snapshots.items():
                    assert await store.load(sid) == snapshot, (sid, i)
                await store.list()
    print("done", flush=True)

trio.run(main)
"""


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # created by the children, both at once
    ticks = 60
    async with trio.open_nursery() as nursery:
        procs: list[trio.Process] = []
        for name in ("alpha", "beta"):
            proc = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-c", CHILD, str(path), name, str(ticks)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    check=True,
                )
            )
            procs.append(proc)
        # Both start together: they create the file at once, then their writes overlap.
        for proc in procs:
            assert proc.stdout is not None
            assert await read_line(proc.stdout) == b"ready\n"
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.send_all(b"go\n")
        for proc in procs:
            assert proc.stdout is not None
            assert await read_line(proc.stdout) == b"done\n"
    assert [proc.returncode for proc in procs] == [0, 0]

    async with SQLiteStore(path) as store:
        ids = await store.list()
        assert ids == ["alpha-0", "alpha-1", "beta-0", "beta-1"]
        for sid in ids:
            loaded = await store.load(sid)
            assert loaded is not None
            assert len(loaded.timeline) == 3 * ticks
            assert [m.id for m in loaded.timeline] == [
                f"{sid}-{i}-{role}" for i in range(ticks) for role in ("user", "assistant", "event")
            ]
            assert loaded.state == {"ticks": ticks}
            assert loaded.last_seq == ticks


OPENER = """
import sys, trio
from trio_session import SessionSnapshot, SQLiteStore

async def main():
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)
    async with SQLiteStore(sys.argv[1]) as store:
        await store.save(
            SessionSnapshot(session_id=sys.argv[2], timeline=(), created_at=0, updated_at=0)
        )

trio.run(main)
"""


async def test_processes_creating_one_new_file_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL races between processes; nobody may lose."""
    for round_ in range(3):
        path = tmp_path / f"new-{round_}.db"
        names = [f"p{k}" for k in range(4)]
        async with trio.open_nursery() as nursery:
            procs: list[trio.Process] = []
            for name in names:
                procs.append(
                    await nursery.start(
                        partial(
                            trio.run_process,
                            [sys.executable, "-c", OPENER, str(path), name],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            check=True,
                        )
                    )
                )
            for proc in procs:
                assert proc.stdout is not None
                assert await read_line(proc.stdout) == b"ready\n"
            for proc in procs:
                assert proc.stdin is not None
                await proc.stdin.send_all(b"go\n")
        async with SQLiteStore(path) as store:
            assert await store.list() == names


# --- property: any sequence of saves loads back as saved ------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 4)),
        st.tuples(st.just("truncate"), st.integers(0, 6)),
        st.tuples(st.just("replace_last"), st.just(0)),
        st.tuples(st.just("replace_first"), st.just(0)),
        st.tuples(st.just("state"), st.integers()),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
async def test_any_sequence_of_saves_loads_back(tmp_path: Path, ops: list[tuple[str, int]]) -> None:
    session_id = uuid.uuid4().hex
    snapshot = snap(session_id)
    counter = 0
    async with SQLiteStore(tmp_path / "property.db") as store:
        for op, arg in ops:
            timeline = snapshot.timeline
            if op == "append":
                timeline += tuple(user(f"m{counter + k}") for k in range(arg))
                counter += arg
            elif op == "truncate":
                timeline = timeline[:arg]
            elif op == "replace_last" and timeline:
                timeline = (*timeline[:-1], assistant("replaced"))
            elif op == "replace_first" and timeline:
                timeline = (user("new first"), *timeline[1:], assistant("appended"))
            state = {"value": arg} if op == "state" else snapshot.state
            snapshot = attrs.evolve(snapshot, timeline=timeline, state=state)
            await store.save(snapshot)
            assert await store.load(session_id) == snapshot


# --- durability and group commit ----------------------------------------------------------


def synchronous_of(store: SQLiteStore) -> list[int]:
    """``PRAGMA synchronous`` of the store's open connection (a list: one, or none).

    The setting belongs to a connection, not to the file, so the test asks the store's own
    connection (idle, since the store is between calls): found among the objects the store
    refers to, not by a walk of the whole heap, which took seconds in a big test process.
    """
    seen = gc.get_referents(store)
    seen += [ref for obj in seen for ref in gc.get_referents(obj)]  # its attributes
    return [
        obj.execute("PRAGMA synchronous").fetchone()[0]
        for obj in {id(obj): obj for obj in seen}.values()
        if isinstance(obj, sqlite3.Connection)
    ]


def wal_commits(path: Path) -> int:
    """How many transactions the file's write-ahead log holds: its commit frames."""
    wal = path.with_name(path.name + "-wal").read_bytes()
    if len(wal) < 32:
        return 0
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    commits = 0
    offset = 32
    while offset + 24 + page_size <= len(wal):
        frame = wal[offset : offset + 24]
        if frame[8:16] != salts:  # left over from before the log was restarted
            break
        commits += int.from_bytes(frame[4:8], "big") != 0  # a commit frame: the size after it
        offset += 24 + page_size
    return commits


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
async def test_durability_sets_the_connections_synchronous_pragma(
    tmp_path: Path, durability: Literal["normal", "full"], synchronous: int
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path, durability=durability) as store:
        await store.save(snap(timeline=conversation(2)))
        assert store.durability == durability
        assert synchronous_of(store) == [synchronous]
    async with SQLiteStore(path) as store:
        assert store.durability == "normal"
        assert synchronous_of(store) == [1]
        assert await store.load("s1") == snap(timeline=conversation(2))


@pytest.mark.parametrize("durability", ["fast", "FULL", None, 2])
def test_a_bad_durability_is_named(durability: Any) -> None:
    with pytest.raises(ValueError, match=f"durability .*{durability!r}"):
        SQLiteStore("x.db", durability=durability)


async def concurrent_saves(
    path: Path, store: SQLiteStore, snapshots: list[SessionSnapshot]
) -> tuple[dict[str, BaseException | None], int]:
    """Save ``snapshots`` at once, while another connection holds the write lock.

    The first save takes the lock's wait in its worker thread, the others queue behind it;
    then the lock is let go. Returns each session's outcome and the commits it took.
    """
    outcomes: dict[str, BaseException | None] = {}

    async def save(snapshot: SessionSnapshot) -> None:
        try:
            await store.save(snapshot)
        except Exception as exc:
            outcomes[snapshot.session_id] = exc
        else:
            outcomes[snapshot.session_id] = None

    before = wal_commits(path)
    with raw(path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(save, snapshots[0])
            await trio.testing.wait_all_tasks_blocked()  # in its thread, with the batch taken
            for snapshot in snapshots[1:]:
                nursery.start_soon(save, snapshot)
            await trio.testing.wait_all_tasks_blocked()
            blocker.execute("ROLLBACK")
    return outcomes, wal_commits(path) - before


async def test_concurrent_saves_share_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path, durability="full") as store:
        await store.save(snap("warm-up"))
        snapshots = [snap(f"s{i}", tick(str(i)), last_seq=i) for i in range(8)]
        outcomes, commits = await concurrent_saves(path, store, snapshots)
        assert outcomes == {f"s{i}": None for i in range(8)}
        # The first save alone, then the seven that queued behind it together.
        assert commits == 2
        for snapshot in snapshots:
            assert await store.load(snapshot.session_id) == snapshot
    async with SQLiteStore(path) as reopened:
        assert await reopened.list() == sorted(["warm-up", *(f"s{i}" for i in range(8))])


async def test_a_failing_save_in_a_batch_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    bad_message = Message("assistant", (JsonBlock({"bad": object()}),), id="bad")
    async with SQLiteStore(path) as store:
        stored = snap("s2", tick("old"))
        await store.save(stored)
        snapshots = [
            snap("s0", tick("0")),
            snap("s1", tick("1")),
            attrs.evolve(stored, timeline=stored.timeline + tick("new") + (bad_message,)),
            snap("s3", tick("3")),
            # The same session again, after its failed save: it starts from what is stored.
            attrs.evolve(stored, timeline=stored.timeline + tick("again"), last_seq=5),
        ]
        outcomes, commits = await concurrent_saves(path, store, snapshots[:4])
        assert commits == 2
        assert outcomes["s0"] is None and outcomes["s1"] is None and outcomes["s3"] is None
        assert isinstance(outcomes["s2"], TrioSessionError | TypeError | ValueError)
        assert await store.load("s2") == stored  # the failed save left it as it was
        for snapshot in (snapshots[0], snapshots[1], snapshots[3]):
            assert await store.load(snapshot.session_id) == snapshot
        await store.save(snapshots[4])
        assert await store.load("s2") == snapshots[4]


async def test_a_waiting_save_cancelled_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.save(snap("warm-up"))
        done: list[str] = []
        waiting = trio.CancelScope()

        async def save(snapshot: SessionSnapshot, scope: trio.CancelScope) -> None:
            with scope:
                await store.save(snapshot)
                done.append(snapshot.session_id)

        with raw(path) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(save, snap("first"), trio.CancelScope())
                await trio.testing.wait_all_tasks_blocked()  # its batch taken, in its thread
                nursery.start_soon(save, snap("cancelled"), waiting)
                nursery.start_soon(save, snap("last"), trio.CancelScope())
                await trio.testing.wait_all_tasks_blocked()
                waiting.cancel()
                await trio.testing.wait_all_tasks_blocked()
                # It left at once, while the first save still waits for the lock.
                assert waiting.cancelled_caught and done == []
                blocker.execute("ROLLBACK")
        assert sorted(done) == ["first", "last"]
        assert await store.list() == ["first", "last", "warm-up"]


async def test_saves_queued_when_the_store_closes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.save(snap("warm-up"))
    outcomes, _ = await concurrent_saves(path, store, [snap("first"), snap("second")])
    assert outcomes == {"first": None, "second": None}
    errors: list[BaseException] = []

    async def save(snapshot: SessionSnapshot) -> None:
        try:
            await store.save(snapshot)
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    with raw(path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(save, snap("in flight"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(save, snap("queued"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.aclose)
            await trio.testing.wait_all_tasks_blocked()
            blocker.execute("ROLLBACK")
    assert len(errors) == 1
    async with SQLiteStore(path) as reopened:
        assert await reopened.list() == ["first", "in flight", "second", "warm-up"]
