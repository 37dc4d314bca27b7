"""Durable confirmations (SPEC §7): a pending tick survives a restart and is answered after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import assert_transcript_integrity, assert_well_formed, delete_file, deleted

from trio_session import (
    Agent,
    InvalidToolArguments,
    MemoryStore,
    PendingConfirmation,
    Reply,
    ScriptedModel,
    Session,
    SessionExecutionHandle,
    SessionSnapshot,
    SessionStore,
    SQLiteStore,
    StoreError,
    StreamEvent,
    ToolConfirmationRequired,
    ToolResultEvent,
    UnknownToolUse,
    open_session,
    tool,
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    deleted.clear()


class Recording:
    """A real store that also keeps, in order, every snapshot it saved."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.saved: list[SessionSnapshot] = []

    async def save(self, snapshot: SessionSnapshot) -> None:
        await self.inner.save(snapshot)
        self.saved.append(snapshot)

    async def load(self, session_id: str) -> SessionSnapshot | None:
        return await self.inner.load(session_id)

    async def delete(self, session_id: str) -> None:
        await self.inner.delete(session_id)

    async def list(self) -> list[str]:
        return await self.inner.list()


OpenStore = Callable[[str], AbstractAsyncContextManager[SessionStore]]


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """``open_store(name)``: the store called ``name``, as one process after another opens it."""
    memory: dict[str, MemoryStore] = {}

    @asynccontextmanager
    async def opener(name: str) -> AsyncIterator[SessionStore]:
        if request.param == "memory":
            yield memory.setdefault(name, MemoryStore())
            return
        async with SQLiteStore(tmp_path / f"{name}.db") as store:
            yield store

    return opener


def _calls(*paths: str) -> list[tuple[str, dict[str, Any], str]]:
    return [("delete_file", {"path": p}, f"call_{i + 1}") for i, p in enumerate(paths)]


def _agent(*script: str | Reply, max_tool_concurrency: int = 8) -> Agent:
    return Agent(
        ScriptedModel(list(script)), tools=[delete_file], max_tool_concurrency=max_tool_concurrency
    )


async def _crash_while_pending(
    open_store: OpenStore, *paths: str, graceful: bool = False
) -> tuple[int, str]:
    """A first process asks to delete ``paths`` and dies while every call is pending.

    The second process's store is ``"after"``: a copy of what the first one's
    store held when the last confirmation event was observed (a kill: nothing
    runs after it), or with ``graceful`` the first store itself after
    ``aclose()`` (a shutdown). Returns the first process's last seq and its
    execution id.
    """
    agent = _agent(Reply("Deleting.", tool_calls=_calls(*paths)), "unused")
    async with open_store("before") as inner:
        store = Recording(inner)
        async with open_session(agent, session_id="s", store=store) as session:
            at_emit: list[SessionSnapshot] = []

            def saw(event: StreamEvent) -> None:
                # Runs as the event is published: the store had it already.
                at_emit.append(store.saved[-1])

            session_events = session.subscribe(types={"tool_confirmation_required"})
            handle = await session.send("clean up")
            handle.events.on("tool_confirmation_required", saw)
            async with session_events:
                for i in range(len(paths)):
                    event = await session_events.receive()
                    assert isinstance(event, ToolConfirmationRequired)
                    on_disk = await store.load("s")
                    assert on_disk is not None
                    assert on_disk.pending_message is not None
                    assert [b.tool_use_id for b in on_disk.pending_message.tool_uses] == [
                        f"call_{n + 1}" for n in range(len(paths))
                    ]
                    listed = {p.tool_use_id for p in on_disk.pending_confirmations}
                    assert event.tool_use_id in listed
                    assert len(listed) >= i + 1
            for snapshot, n in zip(at_emit, range(1, len(paths) + 1), strict=True):
                assert len(snapshot.pending_confirmations) >= n
            # The pending tick is not in the timeline: it keeps transcript integrity.
            assert [m.role for m in session.timeline] == ["user"]
            last_seq = session.last_seq
            if not graceful:
                async with open_store("after") as after:
                    crashed = await store.load("s")
                    assert crashed is not None
                    await after.save(crashed)
            await session.aclose()
    assert deleted == []
    return last_seq, handle.execution_id


@asynccontextmanager
async def _open_after(
    open_store: OpenStore, agent: Agent, graceful: bool = False
) -> AsyncIterator[tuple[Session, SessionStore]]:
    """The second process: the session ``s`` opened again from its store."""
    async with (
        open_store("before" if graceful else "after") as store,
        open_session(agent, session_id="s", store=store) as session,
    ):
        yield session, store


async def _all_events(handle: SessionExecutionHandle) -> list[StreamEvent]:
    """Every event of the execution, through ``execution_end``."""
    async with handle.events.subscribe() as subscription:
        return [event async for event in subscription]


async def _tool_result(handle: SessionExecutionHandle, tool_use_id: str) -> None:
    """Until the execution published the result of ``tool_use_id``."""
    async with handle.events.subscribe(types={"tool_result"}) as results:
        async for event in results:
            if isinstance(event, ToolResultEvent) and event.tool_use_id == tool_use_id:
                return
    raise AssertionError(f"no tool_result for {tool_use_id}")


def _results(timeline: Sequence[Any]) -> list[tuple[str, bool, str]]:
    return [
        (b.tool_use_id, b.is_error, "".join(c.text for c in b.content))
        for m in timeline
        for b in m.tool_results
    ]


async def _nothing_pending(store: SessionStore) -> None:
    stored = await store.load("s")
    assert stored is not None
    assert stored.pending_message is None
    assert stored.pending_confirmations == ()
    assert_transcript_integrity(stored.timeline)


@pytest.mark.parametrize("graceful", [False, True], ids=["killed", "closed"])
async def test_approved_after_a_restart(open_store: OpenStore, graceful: bool) -> None:
    last_seq, first_execution = await _crash_while_pending(open_store, "/tmp/a", graceful=graceful)
    agent = _agent("Deleted it.")
    async with _open_after(open_store, agent, graceful) as (session, store):
        listed = session.pending_confirmations
        assert [(p.tool_use_id, p.name, p.input, p.message) for p in listed] == [
            ("call_1", "delete_file", {"path": "/tmp/a"}, "Delete /tmp/a?")
        ]
        assert isinstance(listed[0], PendingConfirmation)
        assert listed[0].execution_id == first_execution
        assert listed[0].created_at > 0
        assert session.status == "idle" and session.current_execution is None

        session.submit_tool_result("call_1", approved=True)
        handle = session.current_execution
        assert handle is not None and session.status == "running"
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_1", approved=True)
        result = await handle.result
        events = await _all_events(handle)
        assert result.response == "Deleted it."
        assert deleted == ["/tmp/a"]
        assert_well_formed(events)
        assert min(e.seq for e in events) > last_seq
        kinds = [e.type for e in events]
        assert "tool_confirmation_required" not in kinds  # asked once, before the restart
        assert kinds.count("tool_confirmation_result") == 1
        assert [(m.role, m.text) for m in session.timeline] == [
            ("user", "clean up"),
            ("assistant", "Deleting."),
            ("tool", ""),
            ("assistant", "Deleted it."),
        ]
        assert _results(session.timeline) == [("call_1", False, "deleted /tmp/a")]
        assert_transcript_integrity(session.timeline)
        assert session.pending_confirmations == ()
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_1", approved=True)
        # The model saw the answered tick.
        assert isinstance(agent.model, ScriptedModel)
        request = agent.model.requests[0]
        assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
        await _nothing_pending(store)
    assert deleted == ["/tmp/a"]  # never run twice


async def test_denied_after_a_restart(open_store: OpenStore) -> None:
    await _crash_while_pending(open_store, "/tmp/a")
    async with _open_after(open_store, _agent("Kept it.")) as (session, store):
        session.submit_tool_result("call_1", approved=False, reason="keep it")
        handle = session.current_execution
        assert handle is not None
        assert (await handle.result).response == "Kept it."
        assert deleted == []
        [(tool_use_id, is_error, text)] = _results(session.timeline)
        assert (tool_use_id, is_error) == ("call_1", True)
        assert "denied" in text and "keep it" in text
        await _nothing_pending(store)


async def test_modified_arguments_after_a_restart(open_store: OpenStore) -> None:
    await _crash_while_pending(open_store, "/etc/passwd")
    async with _open_after(open_store, _agent("Deleted the safe one.")) as (session, store):
        with pytest.raises(InvalidToolArguments, match="path"):
            session.submit_tool_result("call_1", approved=True, modified_arguments={})
        with pytest.raises(TypeError):
            session.submit_tool_result("call_1", approved="yes")  # type: ignore[arg-type]
        # Nothing consumed, nothing started.
        assert session.current_execution is None and session.status == "idle"
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_1"]
        session.submit_tool_result(
            "call_1", approved=True, modified_arguments={"path": "/tmp/safe"}
        )
        handle = session.current_execution
        assert handle is not None
        await handle.result
        events = await _all_events(handle)
        answer = next(e for e in events if e.type == "tool_confirmation_result")
        assert answer.modified_arguments == {"path": "/tmp/safe"}
        assert deleted == ["/tmp/safe"]
        assert _results(session.timeline) == [("call_1", False, "deleted /tmp/safe")]
        await _nothing_pending(store)


async def test_an_unknown_id_starts_nothing(open_store: OpenStore) -> None:
    await _crash_while_pending(open_store, "/tmp/a")
    async with _open_after(open_store, _agent("Deleted it.")) as (session, _):
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_9", approved=True)
        assert session.current_execution is None
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_1"]
        session.submit_tool_result("call_1", approved=True)
        handle = session.current_execution
        assert handle is not None
        await handle.result
    assert deleted == ["/tmp/a"]


async def test_two_calls_of_one_tick_after_a_restart(open_store: OpenStore) -> None:
    await _crash_while_pending(open_store, "/tmp/a", "/tmp/b")
    async with _open_after(open_store, _agent("Half done.")) as (session, store):
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_1", "call_2"]
        session.submit_tool_result("call_2", approved=False, reason="not b")
        handle = session.current_execution
        assert handle is not None
        await _tool_result(handle, "call_2")
        await trio.testing.wait_all_tasks_blocked()
        # The tick waits for its other call; nothing is committed meanwhile.
        assert not handle.done
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_1"]
        assert [m.role for m in session.timeline] == ["user"]
        on_disk = await store.load("s")
        assert on_disk is not None
        assert [p.tool_use_id for p in on_disk.pending_confirmations] == ["call_1"]
        # A second submit for the same id, through the running execution.
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_2", approved=True)
        session.submit_tool_result("call_1", approved=True)
        assert (await handle.result).response == "Half done."
        assert deleted == ["/tmp/a"]
        results = _results(session.timeline)
        assert [(r[0], r[1]) for r in results] == [("call_1", False), ("call_2", True)]
        assert "not b" in results[1][2]
        # Both results in one tool message right after the assistant's.
        assert [m.role for m in session.timeline] == ["user", "assistant", "tool", "assistant"]
        assert_transcript_integrity(session.timeline)
        await _nothing_pending(store)


async def test_a_restarted_execution_that_dies_leaves_the_rest_pending(
    open_store: OpenStore,
) -> None:
    await _crash_while_pending(open_store, "/tmp/a", "/tmp/b", graceful=True)
    async with _open_after(open_store, _agent(), graceful=True) as (session, _):
        session.submit_tool_result("call_1", approved=True)
        handle = session.current_execution
        assert handle is not None
        await _tool_result(handle, "call_1")
        assert deleted == ["/tmp/a"]
        # The process goes down again before call_2 is answered.
        await session.aclose()
    async with _open_after(open_store, _agent("Done."), graceful=True) as (session, store):
        # call_1 was answered (and ran): it is never asked, nor run, again.
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_2"]
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_1", approved=True)
        session.submit_tool_result("call_2", approved=True)
        handle = session.current_execution
        assert handle is not None
        await handle.result
        assert deleted == ["/tmp/a", "/tmp/b"]
        [lost, ran] = _results(session.timeline)
        assert lost[:2] == ("call_1", True)
        assert "lost when the session restarted" in lost[2]
        assert ran == ("call_2", False, "deleted /tmp/b")
        assert_transcript_integrity(session.timeline)
        await _nothing_pending(store)


async def test_send_after_a_restart_answers_the_pending_tick_first(open_store: OpenStore) -> None:
    await _crash_while_pending(open_store, "/tmp/a")
    agent = _agent("Deleted it, and hello.")
    async with _open_after(open_store, agent) as (session, store):
        handle = await session.send("hello")
        assert [p.tool_use_id for p in session.pending_confirmations] == ["call_1"]
        session.submit_tool_result("call_1", approved=True)
        await handle.result
        assert [(m.role, m.text) for m in session.timeline] == [
            ("user", "clean up"),
            ("assistant", "Deleting."),
            ("tool", ""),
            ("user", "hello"),
            ("assistant", "Deleted it, and hello."),
        ]
        assert_transcript_integrity(session.timeline)
        await _nothing_pending(store)


async def test_an_abort_while_pending_is_not_resurrected(open_store: OpenStore) -> None:
    agent = _agent(Reply("Deleting.", tool_calls=_calls("/tmp/a")), "unused")
    async with open_store("before") as store:
        async with open_session(agent, session_id="s", store=store) as session:
            handle = await session.send("clean up")
            async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
                await sub.receive()
            handle.abort("changed my mind")
            await handle.wait()
            assert handle.status == "aborted"
            # The tick is committed with the call denied, as any tick cut short.
            assert [m.role for m in session.timeline] == ["user", "assistant", "tool"]
            assert session.pending_confirmations == ()
            await _nothing_pending(store)
        async with open_session(_agent(), session_id="s", store=store) as session:
            assert session.pending_confirmations == ()
            with pytest.raises(UnknownToolUse):
                session.submit_tool_result("call_1", approved=True)
    assert deleted == []


async def test_an_answer_is_saved_before_the_tool_runs(open_store: OpenStore) -> None:
    started = trio.Event()
    release = trio.Event()

    @tool(requires_confirmation=True)
    async def slow_delete(path: str) -> str:
        """Delete a file slowly.

        Args:
            path: Which file.
        """
        started.set()
        await release.wait()
        return f"deleted {path}"

    agent = Agent(
        ScriptedModel([Reply(tool_calls=[("slow_delete", {"path": "/a"}, "call_1")]), "Done."]),
        tools=[slow_delete],
    )
    async with (
        open_store("before") as store,
        open_session(agent, session_id="s", store=store) as session,
    ):
        handle = await session.send("go")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            await sub.receive()
        handle.submit_tool_result("call_1", approved=True)
        await started.wait()
        on_disk = await store.load("s")
        assert on_disk is not None
        # Answered: a crash now never lets the same answer run the tool again.
        assert on_disk.pending_confirmations == ()
        assert on_disk.pending_message is not None
        release.set()
        await handle.result
        await _nothing_pending(store)


async def test_without_a_store_nothing_outlives_the_session() -> None:
    agent = _agent(Reply("Deleting.", tool_calls=_calls("/tmp/a")), "Done.")
    async with open_session(agent) as session:
        handle = await session.send("clean up")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            await sub.receive()
        [pending] = session.pending_confirmations
        assert (pending.tool_use_id, pending.execution_id) == ("call_1", handle.execution_id)
        session.submit_tool_result("call_1", approved=True)
        assert (await handle.result).response == "Done."
        assert session.pending_confirmations == ()
        assert session.snapshot().pending_message is None
        with pytest.raises(UnknownToolUse):
            session.submit_tool_result("call_1", approved=True)
    assert deleted == ["/tmp/a"]


class FullDisk(MemoryStore):
    """A real memory store whose disk fills up just when a confirmation is saved."""

    async def save(self, snapshot: SessionSnapshot) -> None:
        if snapshot.pending_confirmations:
            raise OSError("no space left on device")
        await super().save(snapshot)


async def test_a_pending_tick_that_cannot_be_saved_fails_the_execution(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = FullDisk()
    agent = _agent(Reply("Deleting.", tool_calls=_calls("/tmp/a")), "unused")
    async with open_session(agent, session_id="s", store=store) as session:
        handle = await session.send("clean up")
        events = await _all_events(handle)
        assert handle.status == "failed"
        with pytest.raises(StoreError):
            await handle.result
        # Never announced: nobody was asked for what could not be kept.
        assert "tool_confirmation_required" not in [e.type for e in events]
        assert session.pending_confirmations == ()
        assert [m.role for m in session.timeline] == ["user", "assistant", "tool"]
        assert_transcript_integrity(session.timeline)
        await _nothing_pending(store)
    assert deleted == []


async def test_the_store_lists_exactly_the_calls_asked(open_store: OpenStore) -> None:
    # One tool at a time: the second call is asked only once the first is answered.
    agent = _agent(
        Reply("Deleting.", tool_calls=_calls("/tmp/a", "/tmp/b")), "Done.", max_tool_concurrency=1
    )
    async with (
        open_store("before") as store,
        open_session(agent, session_id="s", store=store) as session,
    ):
        handle = await session.send("clean up")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as asked:
            seen: list[str] = []
            for _ in range(2):
                event = await asked.receive()
                assert isinstance(event, ToolConfirmationRequired)
                tool_use_id = event.tool_use_id
                seen.append(tool_use_id)
                on_disk = await store.load("s")
                assert on_disk is not None
                assert [p.tool_use_id for p in on_disk.pending_confirmations] == [tool_use_id]
                assert [p.tool_use_id for p in session.pending_confirmations] == [tool_use_id]
                session.submit_tool_result(tool_use_id, approved=True)
        assert sorted(seen) == ["call_1", "call_2"]
        assert (await handle.result).response == "Done."
        await _nothing_pending(store)
    assert sorted(deleted) == ["/tmp/a", "/tmp/b"]
