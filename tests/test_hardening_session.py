"""Hardening of the session: running handles, one on_message rule, safe confirmation text."""

from __future__ import annotations

import pytest
import trio

from trio_session import (
    Agent,
    EventsLagged,
    Message,
    ScriptedModel,
    ToolConfirmationRequired,
    open_session,
    tool,
)
from trio_session.models import Reply


async def test_handles_come_back_running_or_terminal(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["one", "two", "three"], delay=1)
    async with open_session(Agent(model)) as session:
        handle = await session.send("hi")
        assert handle.status == "running"
        await handle.wait()
        rendered = await session.render()
        assert rendered.status == "running"
        await rendered.wait()

        spawned = await session.spawn(Agent(ScriptedModel(["child"])), "go")
        assert spawned.status in ("running", "completed")
        await spawned.wait()


def test_confirmation_templates_refuse_lookups() -> None:
    async def delete(path: str) -> str:
        """Delete a file.

        Args:
            path: The file.
        """
        return "ok"

    for template in ("{path.__class__}", "{path[0]}", "{}", "{0}", "{path:{path}}"):
        with pytest.raises(ValueError, match="confirmation_message"):
            tool(delete, requires_confirmation=True, confirmation_message=template)
    ok = tool(delete, requires_confirmation=True, confirmation_message="Delete {path!r:>5}?")
    assert ok.confirmation_text({"path": "{x.__class__}"}) == "Delete '{x.__class__}'?"
    plain = tool(delete, requires_confirmation=True, confirmation_message="Delete {path}?")
    assert plain.confirmation_text({"path": "{a[0]} }{"}) == "Delete {a[0]} }{?"


async def test_confirmation_text_shows_braces_in_arguments_as_they_are() -> None:
    @tool(requires_confirmation=True, confirmation_message="Delete {path}?")
    async def delete(path: str) -> str:
        """Delete a file.

        Args:
            path: The file.
        """
        return "deleted"

    model = ScriptedModel([Reply(tool_calls=[("delete", {"path": "{path.__class__}"})]), "ok"])
    async with open_session(Agent(model, tools=[delete])) as session:
        handle = await session.send("go")
        seen: list[str] = []

        def answer(event: object) -> None:
            assert isinstance(event, ToolConfirmationRequired)
            seen.append(event.message)
            handle.submit_tool_result(event.tool_use_id, approved=True)

        handle.events.on("tool_confirmation_required", answer)
        await handle.result
    assert seen == ["Delete {path.__class__}?"]


class HookFailed(Exception):
    pass


def failing_sync(message: Message, session: object) -> None:
    if message.text.startswith("bad"):
        raise HookFailed(message.text)


async def failing_async(message: Message, session: object) -> None:
    await trio.lowlevel.checkpoint()
    if message.text.startswith("bad"):
        raise HookFailed(message.text)


async def test_a_sync_on_message_error_reaches_the_caller_on_every_path(
    autojump_clock: trio.abc.Clock,
) -> None:
    agent = Agent(ScriptedModel(["a", "b"], delay=1), on_message=failing_sync)
    async with open_session(agent) as session:
        with pytest.raises(HookFailed):
            await session.send("bad send")
        with pytest.raises(HookFailed):
            session.queue("bad queue")
        assert session.queued_messages == () and len(session.timeline) == 0
        handle = await session.send("good")
        with pytest.raises(HookFailed):
            handle.queue_message("bad while running")
        with pytest.raises(HookFailed):
            session.queue("bad queue while running")
        await handle.result
        assert [m.text for m in session.timeline] == ["good", "a"]
        assert not [e for e in handle.events.history if e.type == "message_queued"]


async def test_an_async_on_message_error_fails_the_delivering_execution_on_every_path(
    autojump_clock: trio.abc.Clock,
) -> None:
    agent = Agent(ScriptedModel(["a", "b", "c"], delay=1), on_message=failing_async)
    async with open_session(agent) as session:
        # send: the execution fails, the message stays queued.
        handle = await session.send("bad send")
        with pytest.raises(HookFailed):
            await handle.result
        assert handle.status == "failed"
        assert [m.text for m in session.queued_messages] == ["bad send"]
        assert len(session.timeline) == 0

    async with open_session(agent) as session:
        # queue while idle: nothing is only logged; the next execution fails.
        session.queue("bad idle")
        handle = await session.render()
        with pytest.raises(HookFailed):
            await handle.result
        assert [m.text for m in session.queued_messages] == ["bad idle"]

    async with open_session(
        Agent(ScriptedModel(["a", "b"], delay=1), on_message=failing_async)
    ) as s:
        # queue_message while running: the execution fails at the next boundary.
        handle = await s.send("good")
        handle.queue_message("bad running")
        with pytest.raises(HookFailed):
            await handle.result
        assert [m.text for m in s.queued_messages] == ["bad running"]
        assert s.timeline[0].text == "good"


async def test_late_joiners_learn_what_the_retention_bound_dropped() -> None:
    agent = Agent(ScriptedModel(["a long answer " * 20]))
    async with open_session(agent, max_buffered_events=5) as session:
        handle = await session.send("hi")
        await handle.wait()
        held = handle.events.history
        assert len(held) == 5
        # A fresh session's first execution starts at seq 1.
        late = handle.events.subscribe()
        with pytest.raises(EventsLagged) as info:
            late.receive_nowait()
        assert info.value.missed == held[0].seq - 1
        assert [late.receive_nowait().seq for _ in held] == [e.seq for e in held]

        resuming = handle.events.subscribe(after_seq=held[0].seq - 3)
        with pytest.raises(EventsLagged) as info:
            resuming.receive_nowait()
        assert info.value.missed == 2  # the dropped events between where it asked and held[0]
        assert [resuming.receive_nowait().seq for _ in held] == [e.seq for e in held]
