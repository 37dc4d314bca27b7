"""Child sessions: SPEC §6 (spawn)."""

from __future__ import annotations

import pytest
import trio
from _helpers import assert_well_formed, collect, narrow, text_of, types_of

from trio_session import (
    Agent,
    MaxSpawnDepth,
    Reply,
    ScriptedModel,
    SessionExecutionHandle,
    SpawnEnd,
    SpawnStart,
    ToolConfirmationRequired,
    ToolContext,
    open_session,
    tool,
)


def _research_agent(answer: str = "Paris is the capital.", **kw: object) -> Agent:
    return Agent(ScriptedModel([answer], chunk_size=4), name="researcher", **kw)  # type: ignore[arg-type]


@tool
async def research(ctx: ToolContext, question: str) -> str:
    """Ask a research agent.

    Args:
        question: What to find out.
    """
    child: SessionExecutionHandle = await ctx.spawn(_research_agent(), question)
    result = await child.result
    return result.response


async def test_spawned_child_events_are_forwarded_between_spawn_start_and_end() -> None:
    model = ScriptedModel(
        [Reply(tool_calls=[("research", {"question": "capital of France?"}, "t1")]), "Paris."]
    )
    async with open_session(Agent(model, tools=[research])) as session:
        handle = await session.send("Where?")
        result = await handle.result
        events = await collect(handle)
        assert session.children == ()
    assert result.response == "Paris."
    assert text_of(session.timeline[2].tool_results[0].content[0]) == "Paris is the capital."
    assert_well_formed(events)
    kinds = types_of(events)
    start, end = kinds.index("spawn_start"), kinds.index("spawn_end")
    spawn_start, spawn_end = narrow(events[start], SpawnStart), narrow(events[end], SpawnEnd)
    assert spawn_start.origin_tool_use_id == "t1"
    forwarded = events[start + 1 : end]
    assert forwarded, "child events were not forwarded"
    assert {e.spawn_path for e in forwarded} == {(spawn_start.spawn_id,)}
    assert {e.session_id for e in forwarded} == {spawn_start.child_session_id}
    assert {e.execution_id for e in forwarded} == {spawn_start.child_execution_id}
    assert forwarded[0].type == "execution_start" and forwarded[-1].type == "execution_end"
    assert forwarded[0].parent_execution_id == handle.execution_id
    # Forwarded copies are numbered in the parent's stream, without gaps.
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    assert spawn_end.status == "completed"
    assert spawn_end.response == "Paris is the capital."
    assert kinds.index("tool_result") > end


async def test_aborting_the_parent_cancels_the_child(autojump_clock: trio.abc.Clock) -> None:
    children: list[SessionExecutionHandle] = []

    @tool
    async def slow_research(ctx: ToolContext) -> str:
        """Research slowly."""
        child: SessionExecutionHandle = await ctx.spawn(
            Agent(ScriptedModel(["x " * 100], chunk_size=1, delay=1.0)), "go"
        )
        children.append(child)
        return (await child.result).response

    model = ScriptedModel([Reply(tool_calls=[("slow_research", {})])])
    async with open_session(Agent(model, tools=[slow_research])) as session:
        handle = await session.send("start")
        await trio.sleep(5)
        handle.abort("stop everything")
        await handle.wait()
    child = children[0]
    assert handle.status == "aborted"
    assert child.status == "cancelled"
    assert child.events.history[-1].type == "execution_end"
    kinds = types_of([e for e in handle.events.history if not e.spawn_path])
    assert kinds.index("spawn_end") < kinds.index("execution_end")


async def test_child_confirmation_is_answerable_through_the_parent() -> None:
    ran: list[str] = []

    @tool(requires_confirmation=True)
    def launch() -> str:
        """Launch."""
        ran.append("launch")
        return "launched"

    @tool
    async def delegate(ctx: ToolContext) -> str:
        """Delegate to a child that needs approval."""
        agent = Agent(
            ScriptedModel([Reply(tool_calls=[("launch", {}, "child_call")]), "child done"]),
            tools=[launch],
        )
        child: SessionExecutionHandle = await ctx.spawn(agent, "please launch")
        return (await child.result).response

    model = ScriptedModel([Reply(tool_calls=[("delegate", {})]), "all done"])
    async with open_session(Agent(model, tools=[delegate])) as session:
        handle = await session.send("go")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        assert event.tool_use_id == "child_call" and event.spawn_path
        handle.submit_tool_result("child_call", approved=True)
        assert (await handle.result).response == "all done"
    assert ran == ["launch"]


async def test_spawn_depth_is_limited() -> None:
    depths: list[int] = []
    refused: list[tuple[int, str]] = []

    @tool
    async def recurse(ctx: ToolContext, depth: int) -> str:
        """Spawn a child that recurses."""
        depths.append(depth)
        try:
            child: SessionExecutionHandle = await ctx.spawn(_recursive_agent(depth + 1), "deeper")
        except MaxSpawnDepth as exc:
            refused.append((depth, str(exc)))
            return "too deep"
        return (await child.result).response

    def _recursive_agent(depth: int) -> Agent:
        script: list[Reply | str] = [
            Reply(tool_calls=[("recurse", {"depth": depth})]),
            f"bottom from {depth}",
        ]
        return Agent(ScriptedModel(script), tools=[recurse], max_ticks=2)

    async with open_session(_recursive_agent(0)) as session:
        result = await session.send("start").result
    # The root is depth 0; ten children nest under it; the eleventh spawn is refused.
    assert depths == list(range(11))
    assert len(refused) == 1
    assert refused[0][0] == 10
    assert "limit is 10" in refused[0][1]
    assert result.response == "bottom from 0"


async def test_spawn_outside_a_tool_runs_in_the_session() -> None:
    async with open_session(Agent(ScriptedModel(["parent"]))) as session:
        child = await session.spawn(_research_agent("child answer"), "question")
        assert (await child.result).response == "child answer"
        assert child.session_id != session.id
    with pytest.raises(TypeError, match="Agent"):
        async with open_session(Agent(ScriptedModel([]))) as session:
            await session.spawn("not an agent")  # type: ignore[arg-type]
