"""Resources closed on every path (SQLite connections), and an abort during ``on_message``."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing
from _snapshots import snap

from trio_session import (
    Agent,
    MemoryStore,
    Message,
    ScriptedModel,
    Session,
    SQLiteStore,
    TrioSessionError,
    open_session,
)

needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc"
)


def open_files(path: Path) -> list[str]:
    """The descriptors of this process open on the database ``path`` (or its -wal/-shm)."""
    gc.collect()
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target in names:
            found.append(target)
    return found


@needs_proc
async def test_a_session_on_a_path_closes_its_database(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with open_session(Agent(ScriptedModel(["hi"])), session_id="s", store=path) as session:
        await (await session.send("hello")).result
        assert open_files(path)  # the check sees a connection when there is one
    assert open_files(path) == []


@needs_proc
async def test_a_session_failing_in_its_block_closes_its_database(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with pytest.raises(KeyError):
        async with open_session(Agent(ScriptedModel([])), session_id="s", store=path):
            raise KeyError("boom")
    assert open_files(path) == []


@needs_proc
async def test_a_failed_open_closes_its_connection(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(TrioSessionError, match="layout version 99"):
        async with open_session(Agent(ScriptedModel([])), session_id="s", store=path):
            pass  # pragma: no cover
    assert open_files(path) == []


@needs_proc
async def test_a_cancelled_open_leaves_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with trio.CancelScope() as scope:
        scope.cancel()
        async with open_session(Agent(ScriptedModel([])), session_id="s", store=path):
            pass  # pragma: no cover
    assert scope.cancelled_caught
    assert open_files(path) == []


@needs_proc
async def test_a_cancelled_close_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.save(snap())
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    assert open_files(path) == []


@needs_proc
async def test_close_is_bounded_and_the_late_call_closes_the_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout=0.5)
    await store.save(snap())
    # Another connection holds the write lock: the store's next save waits in
    # its worker thread for busy_timeout (real seconds), then fails.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    failed: list[BaseException] = []
    done = trio.Event()

    async def save() -> None:
        try:
            await store.save(snap(state={"v": 2}))
        except sqlite3.OperationalError as exc:
            failed.append(exc)
        finally:
            done.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(save)
            await trio.testing.wait_all_tasks_blocked()
            with caplog.at_level(logging.WARNING, logger="trio_session"):
                # The virtual clock runs out the bound while the worker still waits.
                await store.aclose()
            assert not done.is_set()
            assert "its worker closes it" in caplog.text
            await done.wait()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(failed) == 1
    assert "locked" in str(failed[0])
    assert open_files(path) == []


# -- an abort while an async on_message hook runs ------------------------------------


class Gate:
    """An async ``on_message`` hook that waits forever for the messages named ``held``."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.entered = trio.Event()
        self.ran: list[str] = []

    async def __call__(self, message: Message, session: Session) -> None:
        self.ran.append(message.text)
        if message.text in self.held:
            self.entered.set()
            await trio.sleep_forever()


async def test_an_abort_during_the_inputs_hook_commits_the_input(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate("first queued")
    store = MemoryStore()
    agent = Agent(ScriptedModel(["never asked", "answered"], delay=1), on_message=gate)
    async with open_session(agent, session_id="s", store=store) as session:
        session.queue("first queued")
        session.queue("second queued")
        handle = await session.send("hello")
        await gate.entered.wait()
        handle.abort("stop")
        await handle.wait()
        assert handle.status == "aborted"
        # Committed in the order they came, as without an async hook; the hook of
        # "second queued" never ran (dropped: no coroutine is left unawaited).
        assert [m.text for m in session.timeline] == ["first queued", "second queued", "hello"]
        assert session.queued_messages == ()
        assert gate.ran == ["first queued"]
        events = [e.type for e in handle.events.history]
        assert events.count("entry_committed") == 3
        assert "tick_start" not in events
        stored = await store.load("s")
        assert stored is not None
        assert [m.text for m in stored.timeline] == [m.text for m in session.timeline]
        # The next execution does not deliver them again.
        second = await session.send("again")
        await second.result
        assert [m.text for m in session.timeline][3:] == ["again", "never asked"]
    gc.collect()


async def test_an_abort_during_a_queued_messages_hook_leaves_it_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate("late")
    agent = Agent(ScriptedModel(["a", "b", "c"], delay=1), on_message=gate)
    async with open_session(agent) as session:
        handle = await session.send("good")
        async for event in handle:
            if event.type == "tick_start":
                break
        handle.queue_message("late")
        handle.queue_message("later")
        # The gate holds "late" at the first tick boundary.
        await gate.entered.wait()
        handle.abort("stop")
        await handle.wait()
        assert handle.status == "aborted"
        # The first tick is committed; the messages of the boundary were not
        # delivered: they wait for the next execution, which answers them.
        assert [m.text for m in session.timeline] == ["good", "a"]
        assert [m.text for m in session.queued_messages] == ["late", "later"]
        assert "message_delivered" not in [e.type for e in handle.events.history]
        gate.held.clear()
        second = await session.render()
        await second.result
        assert [m.text for m in session.timeline] == ["good", "a", "late", "later", "b"]
        # "later"'s hook ran once, in the execution that delivered it.
        assert gate.ran == ["good", "late", "later"]
