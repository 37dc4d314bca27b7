"""``seq`` reservations: a crash never lets a restored session reuse a number handed out.

A session with a store saves ``last_seq`` a block ahead of the numbers it hands out; the
copies of a spawned child's events are numbered in the parent's ``seq`` too, so a child
that streams thousands of events inside one tool call must keep that reservation ahead.
"""

from __future__ import annotations

import trio
import trio.testing

from trio_session import (
    Agent,
    MemoryStore,
    Reply,
    ScriptedModel,
    SessionSnapshot,
    ToolContext,
    open_session,
    tool,
)

CHILD_EVENTS = 3000


async def test_a_child_streaming_thousands_of_events_keeps_the_reservation_ahead() -> None:
    store = MemoryStore()
    crashed: list[tuple[int, SessionSnapshot | None]] = []

    @tool
    async def research(ctx: ToolContext) -> str:
        """Ask a chatty child."""
        # One text delta per character: thousands of forwarded events in this one call.
        child_agent = Agent(ScriptedModel(["x" * CHILD_EVENTS], chunk_size=1))
        child = await ctx.spawn(child_agent, "go")
        response: str = (await child.result).response
        # A crash here: what the store holds is all a new process would have.
        crashed.append((ctx.session.snapshot().last_seq, await store.load(ctx.session.id)))
        return response

    model = ScriptedModel([Reply(tool_calls=[("research", {})]), "done"])
    async with open_session(Agent(model, tools=[research]), session_id="s", store=store) as s:
        handle = await s.send("go")
        await handle.result
        forwarded = [e for e in handle.events.history if e.spawn_path]
    assert len(forwarded) > CHILD_EVENTS
    [(handed_out, stored)] = crashed
    assert stored is not None
    assert handed_out >= max(e.seq for e in forwarded)
    assert stored.last_seq >= handed_out, "numbers were handed out above the stored reservation"

    # The restored session continues above every number the crashed one handed out.
    restored_store = MemoryStore()
    await restored_store.save(stored)
    async with open_session(
        Agent(ScriptedModel(["again"])), session_id="s", store=restored_store
    ) as restored:
        again = await restored.send("after the crash")
        await again.result
        assert min(e.seq for e in again.events.history) > handed_out


async def test_a_tool_emitting_thousands_of_events_keeps_the_reservation_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    crashed: list[tuple[int, SessionSnapshot | None]] = []

    @tool
    async def chatty(ctx: ToolContext) -> str:
        """Report progress often."""
        for i in range(CHILD_EVENTS):
            ctx.emit("progress", i)
            await trio.sleep(0.001)
        crashed.append((ctx.session.snapshot().last_seq, await store.load(ctx.session.id)))
        return "ok"

    model = ScriptedModel([Reply(tool_calls=[("chatty", {})]), "done"])
    async with open_session(Agent(model, tools=[chatty]), session_id="s", store=store) as s:
        await (await s.send("go")).result
    [(handed_out, stored)] = crashed
    assert stored is not None
    assert stored.last_seq >= handed_out, "numbers were handed out above the stored reservation"
