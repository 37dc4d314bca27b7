"""A finished execution leaves no reference cycle: refcounting alone frees it (issue 10).

The collector is disabled around each run, so whatever is still alive after
the last reference went is held by a cycle (or by something that should not
hold it).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from trio_session import (
    Agent,
    EventBuffer,
    Reply,
    ScriptedModel,
    SessionClosed,
    UnknownToolUse,
    open_session,
    tool,
)


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_buffer_nobody_holds_is_freed_by_refcounting(no_gc: None) -> None:
    buffer = EventBuffer(session_id="s", execution_id="e")
    event = buffer.emit("custom", name="n", data=1)
    ref = weakref.ref(buffer)
    del buffer
    assert ref() is None
    assert event.seq == 1  # the event itself lives on with whoever holds it


async def test_a_finished_execution_nobody_holds_is_freed_by_refcounting(no_gc: None) -> None:
    model = ScriptedModel([Reply(tool_calls=[("add", {"a": 1, "b": 2})]), "three", "again"])
    async with open_session(Agent(model, tools=[add])) as session:
        handle = await session.send("1 + 2?")
        seen = [event.type async for event in handle]
        assert seen[-1] == "execution_end" and "tool_result" in seen
        assert (await handle.result).response == "three"
        handle_ref = weakref.ref(handle)
        buffer_ref = weakref.ref(handle.events)
        event_ref = weakref.ref(handle.events.history[-1])
        del handle
        # The session keeps its last execution (``current_execution``) until the next.
        assert handle_ref() is not None
        await (await session.send("again")).result
        assert handle_ref() is None
        assert buffer_ref() is None
        assert event_ref() is None


async def test_a_finished_handle_still_works_without_its_engine(no_gc: None) -> None:
    model = ScriptedModel(["first", "second"])
    async with open_session(Agent(model)) as session:
        handle = await session.send("hello")
        result = await handle.result
        await (await session.send("next")).result  # the first is no longer current
        # Everything a caller can still do with a finished handle:
        assert handle.done and handle.status == "completed"
        assert (await handle.result) is result
        assert handle.current_tick == 1
        late = [event.type async for event in handle]  # replayed to a late reader
        assert late[0] == "execution_start" and late[-1] == "execution_end"
        with pytest.raises(UnknownToolUse):
            handle.submit_tool_result("nope", approved=True)
        with pytest.raises(TypeError, match="queue_message"):
            handle.queue_message(42)  # type: ignore[arg-type]
        handle.queue_message("after the end")
        assert [m.text for m in session.queued_messages] == ["after the end"]


async def test_a_closed_session_nobody_holds_is_freed_by_refcounting_with_its_history(
    no_gc: None,
) -> None:
    model = ScriptedModel([Reply(tool_calls=[("add", {"a": 1, "b": 2})]), "three"] * 3)
    async with open_session(Agent(model, tools=[add])) as session:
        for _ in range(3):
            handle = await session.send("1 + 2?")
            async for _ in handle:
                pass
        assert session.current_execution is handle
        first = session.timeline[0]
        session_ref = weakref.ref(session)
        handle_ref = weakref.ref(handle)
        message_ref = weakref.ref(first)
    # The session, its last handle and its history go with the last reference (no
    # cycle keeps them for the collector, whose full passes a long history slows);
    # the model's recorded requests refer to the history too.
    del session, handle, first, model
    assert session_ref() is None
    assert handle_ref() is None
    assert message_ref() is None


async def test_a_finished_handle_of_a_freed_session_says_so() -> None:
    async with open_session(Agent(ScriptedModel(["hi"]))) as session:
        handle = await session.send("hello")
        await handle.result
    del session
    gc.collect()
    with pytest.raises(SessionClosed, match="is gone"):
        handle.queue_message("later")
