"""Hardening of persistence: retried saves, StoreError, seq high-water mark, save order."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from trio_session import (
    Agent,
    MemoryStore,
    ScriptedModel,
    SessionExecutionHandle,
    SessionSnapshot,
    StoreError,
    TrioSessionError,
    open_session,
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
            ends = [e for e in handle.events.history if e.type == "execution_end"]
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
        handle.events.on("execution_end", lambda e: seen.append(("end", e.status)))
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
