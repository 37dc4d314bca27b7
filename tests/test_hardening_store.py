"""Hardening of persistence: retried saves, StoreError, seq high-water mark, save order."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from _helpers import narrow

from trio_session import (
    Agent,
    ExecutionEnd,
    MemoryStore,
    Message,
    ScriptedModel,
    SessionExecutionHandle,
    SessionSnapshot,
    SnapshotError,
    SQLiteStore,
    StoreError,
    ToolResultBlock,
    ToolUseBlock,
    TrioSessionError,
    open_session,
    user,
)


class FlakyStore(MemoryStore):
    """Fails the first ``failures`` saves, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def save(self, snapshot: SessionSnapshot) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk hiccup")
        await super().save(snapshot)


class SlowStore(MemoryStore):
    """Every save takes ``seconds`` (longer than any bound when huge)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.slow = True

    async def save(self, snapshot: SessionSnapshot) -> None:
        if self.slow:
            await trio.sleep(self.seconds)
        await super().save(snapshot)


async def test_a_failed_save_is_retried(autojump_clock: trio.abc.Clock) -> None:
    store = FlakyStore(failures=2)
    async with open_session(Agent(ScriptedModel(["hi"])), session_id="s", store=store) as s:
        result = await (await s.send("hello")).result
    assert result.response == "hi"
    snapshot = await store.load("s")
    assert snapshot is not None and [m.text for m in snapshot.timeline] == ["hello", "hi"]


async def test_a_store_slower_than_any_bound_fails_loudly_and_loses_nothing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SlowStore(10_000)
    caplog.set_level(logging.WARNING, logger="trio_session")
    with pytest.raises(StoreError) as raised:
        async with open_session(Agent(ScriptedModel(["hi"])), session_id="s", store=store) as s:
            handle = await s.send("hello")
            with pytest.raises(StoreError) as failed:
                await handle.result
            assert handle.status == "failed"
            assert isinstance(failed.value, TrioSessionError)
            assert isinstance(failed.value.__cause__, TimeoutError)
            # Nothing lost: in memory, the user's input is still there.
            assert [m.text for m in s.timeline] == ["hello"]
            ends = [e for e in handle.events.history if isinstance(e, ExecutionEnd)]
            assert ends[-1].status == "failed" and "StoreError" in (ends[-1].error or "")
    # The close save is cut off too, and says so (the block raised StoreError).
    assert raised.value.session_id == "s"
    assert any("cut off" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    # Once the store is fast again, a save writes everything that was kept.
    store.slow = False
    async with open_session(Agent(ScriptedModel(["again"])), session_id="s", store=store) as s:
        assert [m.text for m in s.timeline] == []  # nothing was ever stored
        await (await s.send("x")).result


async def test_the_next_save_writes_what_a_failed_one_could_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = FlakyStore(failures=0)
    agent = Agent(ScriptedModel(["one", "two"]))
    async with open_session(agent, session_id="s", store=store) as s:
        store.failures = 100
        handle = await s.send("first")
        with pytest.raises(StoreError) as failed:
            await handle.result
        assert isinstance(failed.value.__cause__, OSError)
        assert [m.text for m in s.timeline] == ["first"]
        store.failures = 0
        await (await s.send("second")).result
    snapshot = await store.load("s")
    assert snapshot is not None
    # The save after "first" failed before the model was called; nothing of it is lost.
    assert [m.text for m in snapshot.timeline] == ["first", "second", "one"]


async def test_the_end_save_happens_before_execution_end(autojump_clock: trio.abc.Clock) -> None:
    seen: list[tuple[str, object]] = []
    handles: list[SessionExecutionHandle] = []

    class Watching(MemoryStore):
        async def save(self, snapshot: SessionSnapshot) -> None:
            await trio.sleep(1)
            await super().save(snapshot)
            status = handles[0].status if handles else None
            seen.append(("save", (len(snapshot.timeline), status)))

    async with open_session(
        Agent(ScriptedModel(["hi"])), session_id="s", store=Watching()
    ) as session:
        handle = await session.send("hello")
        handles.append(handle)
        handle.events.on(
            "execution_end", lambda e: seen.append(("end", narrow(e, ExecutionEnd).status))
        )
        await handle.result
    # The save covering the answer came before execution_end, the status not yet settled.
    assert seen.index(("save", (2, "running"))) < seen.index(("end", "completed"))


async def test_seq_is_never_reused_after_a_crash(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    # A long tick: many events after the tick's first save, and no clean close.
    model = ScriptedModel(["x" * 3000], chunk_size=1)
    crashed = MemoryStore()
    handed_out = 0
    async with open_session(Agent(model), session_id="s", store=store) as session:
        handle = await session.send("go")
        await handle.wait()
        handed_out = handle.events.history[-1].seq
        # What a crash right after execution_end would have left behind.
        stored = await store.load("s")
        assert stored is not None
        await crashed.save(stored)
    assert handed_out > 3000
    assert stored.last_seq >= handed_out
    async with open_session(
        Agent(ScriptedModel(["more"])), session_id="s", store=crashed
    ) as restored:
        handle = await restored.send("again")
        await handle.wait()
        assert handle.events.history[0].seq > handed_out


async def test_a_clean_close_stores_the_exact_last_seq(tmp_path: Path) -> None:
    store = MemoryStore()
    async with open_session(Agent(ScriptedModel(["hi"])), session_id="s", store=store) as s:
        handle = await s.send("hello")
        await handle.wait()
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.last_seq == handle.events.history[-1].seq


def _broken(kind: str) -> tuple[Message, ...]:
    call = Message("assistant", [ToolUseBlock("c1", "calc", {})])
    answer = Message("tool", [ToolResultBlock("c1", "calc", "2")])
    if kind == "tool_use without tool_result":
        return (user("q"), call, Message("assistant", "no answer"))
    if kind == "tool_use at the end":
        return (user("q"), call)
    return (user("q"), answer)


BROKEN = ["tool_use without tool_result", "tool_use at the end", "tool_result without tool_use"]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "s.db")


async def test_a_broken_timeline_raises_snapshot_error_and_is_kept(store: Any) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(store, SQLiteStore):
            await stack.enter_async_context(store)
        for kind in BROKEN:
            sid = kind.replace(" ", "-")
            await store.save(
                SessionSnapshot(
                    session_id=sid, timeline=_broken(kind), created_at=0.0, updated_at=0.0
                )
            )
            with pytest.raises(SnapshotError, match="tool_") as raised:
                await store.load(sid)
            assert raised.value.session_id == sid
            with pytest.raises(SnapshotError):
                async with open_session(Agent(ScriptedModel([])), session_id=sid, store=store):
                    pass  # pragma: no cover
            assert sid in await store.list()


async def test_open_session_checks_the_timeline_of_any_store() -> None:
    class Lenient(MemoryStore):
        async def load(self, session_id: str) -> SessionSnapshot | None:
            return SessionSnapshot(
                session_id=session_id,
                timeline=_broken("tool_use at the end"),
                created_at=0.0,
                updated_at=0.0,
            )

    with pytest.raises(SnapshotError) as raised:
        async with open_session(Agent(ScriptedModel([])), session_id="mine", store=Lenient()):
            pass  # pragma: no cover
    assert raised.value.session_id == "mine"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
async def test_a_damaged_database_file_raises_snapshot_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteStore(path) as good:
        for i in range(30):
            await good.save(
                SessionSnapshot(
                    session_id="s",
                    timeline=[user(f"message {i} " * 50)] * (i + 1),
                    created_at=0.0,
                    updated_at=0.0,
                )
            )
    data = path.read_bytes()
    path.write_bytes(b"not a database at all " * 100 if damage == "garbage" else data[:-4096])
    for extra in ("-wal", "-shm"):
        (tmp_path / f"chat.db{extra}").unlink(missing_ok=True)
    before = path.read_bytes()
    with pytest.raises(SnapshotError) as raised:
        async with open_session(Agent(ScriptedModel([])), session_id="s", store=SQLiteStore(path)):
            pass  # pragma: no cover
    assert raised.value.session_id == "s"
    assert not isinstance(raised.value, sqlite3.Error)
    assert path.read_bytes() == before


async def test_open_session_opens_and_closes_a_store_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with open_session(Agent(ScriptedModel(["hi"])), session_id="me", store=path) as s:
        await (await s.send("hello")).result
    async with open_session(
        Agent(ScriptedModel(["again"])), session_id="me", store=str(path)
    ) as restored:
        assert [m.text for m in restored.timeline] == ["hello", "hi"]
    # Closed: nothing holds the file (a second store opens it with no warning).
    async with SQLiteStore(path) as store:
        assert await store.list() == ["me"]


async def test_stores_are_async_context_managers(tmp_path: Path) -> None:
    async with MemoryStore() as memory, SQLiteStore(tmp_path / "x.db") as sqlite:
        for store in (memory, sqlite):
            async with open_session(Agent(ScriptedModel(["ok"])), store=store) as s:
                await (await s.send("q")).result
            assert len(await store.list()) == 1
    with pytest.raises(trio.ClosedResourceError):
        await sqlite.list()
