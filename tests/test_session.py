"""Sessions and the tick engine: SPEC §2, §4, §6 and §8, by their public API."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import (
    assert_transcript_integrity,
    assert_well_formed,
    collect,
    data_of,
    narrow,
    narrow_all,
    text_of,
    types_of,
)

from trio_session import (
    Agent,
    CustomEvent,
    Event,
    EventsLagged,
    ExecutionAborted,
    ExecutionCancelled,
    ExecutionEnd,
    ExecutionTimeout,
    InvalidToolArguments,
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    ModelRequestEvent,
    Reply,
    ScriptedModel,
    SendResult,
    SessionClosed,
    SessionExecutionHandle,
    TextBlock,
    TextChunk,
    TickContext,
    TickResult,
    ToolContext,
    ToolResultBlock,
    UnknownTool,
    UsageChunk,
    open_session,
    tool,
    user,
)


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


async def test_send_streams_and_completes() -> None:
    agent = Agent(ScriptedModel(["Hello there"]), system="Be kind.")
    async with open_session(agent) as session:
        handle = await session.send("Hi")
        result = await handle.result
        events = await collect(handle)
    assert isinstance(result, SendResult)
    assert result.response == "Hello there"
    assert result.stop_reason == "end_turn"
    assert handle.status == "completed"
    assert [m.role for m in result.new_messages] == ["user", "assistant"]
    assert types_of(events) == [
        "execution_start",
        "entry_committed",
        "tick_start",
        "model_request",
        "message_start",
        "content_start",
        "content_delta",
        "content_end",
        "message_end",
        "message",
        "entry_committed",
        "tick_end",
        "result",
        "execution_end",
    ]
    assert_well_formed(events)
    assert events[0].seq == 1
    assert {e.session_id for e in events} == {session.id}
    assert {e.execution_id for e in events} == {handle.execution_id}
    request = narrow(events[3], ModelRequestEvent).request
    assert request.system == "Be kind."
    assert [m.text for m in request.messages] == ["Hi"]
    end = events[-1]
    assert end.type == "execution_end"
    assert end.status == "completed" and end.new_messages == result.new_messages
    assert session.status == "closed"


async def test_tool_loop_commits_use_and_result_together() -> None:
    model = ScriptedModel([Reply("Adding.", tool_calls=[("add", {"a": 2, "b": 3})]), "It is 5."])
    async with open_session(Agent(model, tools=[add])) as session:
        handle = await session.send("What is 2 + 3?")
        result = await handle.result
        events = await collect(handle)
        timeline = list(session.timeline)
    assert result.response == "It is 5."
    assert [m.role for m in timeline] == ["user", "assistant", "tool", "assistant"]
    tool_result = timeline[2].tool_results[0]
    assert data_of(tool_result.content[0]) == 5 and not tool_result.is_error
    assert_transcript_integrity(timeline)
    assert_well_formed(events)
    # The second request carries the tool result; model events carry their real tick.
    assert model.requests[1].messages[-1].role == "tool"
    assert model.requests[1].tick == 2
    deltas = [e for e in events if e.type == "content_delta"]
    assert [e.tick for e in deltas] == [1, 2]
    assert [e.tick for e in events if e.type == "tick_end"] == [1, 2]
    assert result.usage.ticks == 2


async def test_seq_is_gapless_across_executions() -> None:
    async with open_session(Agent(ScriptedModel(["one", "two"]))) as session:
        first = await session.send("a")
        await first.wait()
        second = await session.send("b")
        await second.wait()
        events = await collect(first) + await collect(second)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert session.usage.ticks == 2


async def test_tool_errors_become_results_the_model_can_act_on() -> None:
    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("kaboom")

    model = ScriptedModel(
        [
            Reply(tool_calls=[("nope", {}), ("add", {"a": "x", "b": 1}), ("explode", {})]),
            "Sorry.",
        ]
    )
    async with open_session(Agent(model, tools=[add, explode])) as session:
        result = await session.send("go").result
        results = session.timeline[2].tool_results
    assert result.response == "Sorry."
    assert [r.is_error for r in results] == [True, True, True]
    assert "Unknown tool 'nope'" in text_of(results[0].content[0])
    assert "add" in text_of(results[0].content[0])
    assert "a" in text_of(results[1].content[0])
    assert "kaboom" in text_of(results[2].content[0])


async def test_tool_calls_run_concurrently_with_a_bound_and_keep_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    running = 0
    peak = 0

    @tool
    async def slow(n: int) -> int:
        """Sleep n seconds."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(10 - n)
        running -= 1
        return n

    calls = [("slow", {"n": n}) for n in range(6)]
    model = ScriptedModel([Reply(tool_calls=calls), "done"])
    agent = Agent(model, tools=[slow], max_tool_concurrency=3)
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        events = await collect(handle)
    assert peak == 3
    results = session_results = [data_of(r.content[0]) for r in _last_tool_message(events)]
    assert results == list(range(6)) == session_results
    starts = [e for e in events if e.type == "tool_result_start"]
    assert len(starts) == 6


def _last_tool_message(events: Sequence[Event]) -> tuple[ToolResultBlock, ...]:
    committed = [e.message for e in events if e.type == "entry_committed"]
    return next(m for m in reversed(committed) if m.role == "tool").tool_results


async def test_abort_during_model_stream(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["a long answer " * 20], chunk_size=5, delay=1.0)
    async with open_session(Agent(model)) as session:
        handle = await session.send("hi")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            await deltas.receive()
            handle.abort("user pressed stop")
            assert handle.status == "aborted"
            assert handle.done
        with pytest.raises(ExecutionAborted) as info:
            await handle.result
        assert info.value.reason == "user pressed stop"
        events = await collect(handle)
        # Sticky: nothing can change a terminal status.
        handle.abort("again")
        assert handle.status == "aborted"
        assert [m.role for m in session.timeline] == ["user"]
        assert session.status == "idle"
    assert_well_formed(events)
    end = events[-1]
    assert end.type == "execution_end"
    assert end.status == "aborted" and end.reason == "user pressed stop"
    assert "result" not in types_of(events)


async def test_abort_cancels_running_tool_at_once_and_answers_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    cleaned = trio.Event()
    started = trio.Event()

    @tool
    async def forever() -> str:
        """Never returns."""
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cleaned.set()
        return "unreachable"

    model = ScriptedModel([Reply("working", tool_calls=[("forever", {})])])
    async with open_session(Agent(model, tools=[forever])) as session:
        handle = await session.send("go")
        await started.wait()
        before = trio.current_time()
        handle.abort()
        await handle.wait()
        assert trio.current_time() == before
        assert cleaned.is_set()
        timeline = list(session.timeline)
    assert [m.role for m in timeline] == ["user", "assistant", "tool"]
    assert timeline[2].tool_results[0].is_error
    assert_transcript_integrity(timeline)
    assert_well_formed(await collect(handle))


async def test_with_timeout_aborts_with_reason_timeout(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["slow " * 50], chunk_size=5, delay=1.0)
    async with open_session(Agent(model)) as session:
        handle = await session.send.with_timeout(3)("hi")
        with pytest.raises(ExecutionTimeout) as info:
            await handle.result
        assert isinstance(info.value, ExecutionAborted)
        assert isinstance(info.value, TimeoutError)
        assert handle.status == "aborted"
        events = await collect(handle)
    assert narrow(events[-1], ExecutionEnd).reason == "timeout"
    with pytest.raises(ExecutionTimeout):
        async with open_session(Agent(ScriptedModel(["x " * 50], chunk_size=2, delay=1))) as s:
            await s.send.with_timeout(2)("hi").result


async def test_model_error_sets_status_error_and_reaches_iterators_unwrapped() -> None:
    failure = ModelError("overloaded", code="overloaded", retryable=True)
    # Retries off: this is the error path itself (tick retries: tests/test_retry_output.py).
    agent = Agent(ScriptedModel([Reply("part", error=failure)]), retry=None)
    async with open_session(agent) as session:
        handle = await session.send("hi")
        seen = []
        with pytest.raises(ModelError) as info:
            async for event in handle:
                seen.append(event.type)
        assert info.value.code == "overloaded" and info.value.retryable
        with pytest.raises(ModelError):
            await handle.result
        assert handle.status == "error"
        assert [m.role for m in session.timeline] == ["user"]
    assert seen[-1] == "execution_end"
    assert "error" in seen


async def test_hook_failure_fails_the_execution_with_the_original_exception() -> None:
    def on_tick_end(result: TickResult) -> None:
        raise LookupError("hook bug")

    errors: list[BaseException] = []
    agent = Agent(ScriptedModel(["hi"]), on_tick_end=on_tick_end, on_error=errors.append)
    async with open_session(agent) as session:
        handle = await session.send("x")
        with pytest.raises(LookupError, match="hook bug"):
            await handle.result
        assert handle.status == "failed"
        assert session.status == "idle"
    assert len(errors) == 1 and isinstance(errors[0], LookupError)


async def test_setup_failure_does_not_leave_the_session_running() -> None:
    def build(ctx: TickContext) -> ModelRequest:
        raise ValueError("cannot build")

    model = ScriptedModel(["never"])
    async with open_session(Agent(model, build=build)) as session:
        handle = await session.send("x")
        with pytest.raises(ValueError, match="cannot build"):
            await handle.result
        assert session.status == "idle"
        assert_well_formed(await collect(handle))
        # And the session still works.
        model.add("works")
    async with open_session(Agent(ScriptedModel(["fine"]))) as session:
        assert (await session.send("y").result).response == "fine"


async def test_cancel_from_enclosing_scope_propagates(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["z " * 100], chunk_size=1, delay=1.0)
    handles = []
    with trio.move_on_after(5) as scope:
        async with open_session(Agent(model)) as session:
            handles.append(await session.send("go"))
            await handles[0].result
    assert scope.cancelled_caught
    handle = handles[0]
    assert handle.status == "cancelled"
    with pytest.raises(ExecutionCancelled):
        await handle.result
    assert_well_formed(handle.events.history)
    assert session.status == "closed"


async def test_close_during_run_cancels_and_closes(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["z " * 100], chunk_size=1, delay=1.0)
    async with open_session(Agent(model)) as session:
        handle = await session.send("go")
        await trio.sleep(3)
        await session.aclose()
        assert session.status == "closed"
        assert handle.status == "cancelled"
        assert handle.events.history[-1].type == "execution_end"
        with pytest.raises(SessionClosed):
            await session.send("more")
        with pytest.raises(SessionClosed):
            session.queue("more")
        with pytest.raises(SessionClosed):
            session.subscribe()
        with pytest.raises(SessionClosed):
            await session.dispatch("x", {})
        with pytest.raises(SessionClosed):
            session.snapshot()
        await session.aclose()  # idempotent
    assert session.status == "closed"


async def test_leaving_the_block_normally_waits_for_the_execution(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel(["a b c d"], chunk_size=2, delay=1.0)
    async with open_session(Agent(model)) as session:
        handle = await session.send("go")
    assert handle.status == "completed"
    assert session.status == "closed"


async def test_leaving_with_an_exception_cancels_and_reraises_unwrapped(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel(["a b c d"], chunk_size=1, delay=1.0)
    with pytest.raises(KeyError, match="mine"):
        async with open_session(Agent(model)) as session:
            handle = await session.send("go")
            raise KeyError("mine")
    assert handle.status == "cancelled"
    assert handle.events.history[-1].type == "execution_end"


async def test_send_while_running_joins_the_running_execution(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel(["first answer", "second answer"], chunk_size=3, delay=1.0)
    async with open_session(Agent(model)) as session:
        handle = await session.send("first")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            await deltas.receive()  # tick 1 is streaming
        again = await session.send("second")
        assert again is handle
        result = await handle.result
        events = await collect(handle)
    assert result.response == "second answer"
    assert [m.text for m in session.timeline] == [
        "first",
        "first answer",
        "second",
        "second answer",
    ]
    kinds = types_of(events)
    assert kinds.count("message_queued") == 1 and kinds.count("message_delivered") == 1
    assert kinds.count("tick_start") == 2
    assert_well_formed(events)
    # The second request saw the queued message.
    assert model.requests[1].messages[-1].text == "second"


async def test_queue_message_after_end_waits_for_next_execution() -> None:
    model = ScriptedModel(["one", "two"])
    async with open_session(Agent(model)) as session:
        handle = await session.send("hi")
        await handle.wait()
        handle.queue_message("later")
        assert [m.text for m in session.queued_messages] == ["later"]
        with pytest.raises(TypeError):
            handle.queue_message(42)  # type: ignore[arg-type]
        second = await session.render()
        assert second is not handle
        await second.result
        assert [m.text for m in session.timeline][-2:] == ["later", "two"]
        assert session.queued_messages == ()


async def test_queued_message_beyond_max_ticks_stays_on_the_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel(["answer"], chunk_size=2, delay=1.0)
    async with open_session(Agent(model, max_ticks=1)) as session:
        handle = await session.send("hi")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            await deltas.receive()  # tick 1 is streaming
        handle.queue_message("follow-up")
        result = await handle.result
        assert result.response == "answer"
        assert [m.text for m in session.queued_messages] == ["follow-up"]


async def test_render_while_running_updates_props_next_tick(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[Any] = []

    def build(ctx: TickContext) -> ModelRequest:
        seen.append(dict(ctx.props))
        return ctx.default_request()

    model = ScriptedModel([Reply("t1", tool_calls=[("add", {"a": 1, "b": 1})]), "t2"], delay=1)
    async with open_session(Agent(model, tools=[add], build=build)) as session:
        handle = await session.render({"mode": "a"})
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            await deltas.receive()  # tick 1 is streaming
        same = await session.render({"mode": "b"})
        assert same is handle
        await handle.result
    assert seen == [{"mode": "a"}, {"mode": "b"}]


async def test_interrupt_aborts_and_sends(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel(["long " * 30, "short"], chunk_size=2, delay=1.0)
    async with open_session(Agent(model)) as session:
        first = await session.send("tell me a story")
        await trio.sleep(2)
        second = await session.interrupt("stop, just say short", reason="changed my mind")
        assert first.status == "aborted" and first.reason == "changed my mind"
        assert second is not None and second is not first
        assert (await second.result).response == "short"
        assert await session.interrupt() is None
    assert [m.text for m in session.timeline] == [
        "tell me a story",
        "stop, just say short",
        "short",
    ]


async def test_dispatch_runs_tools_without_the_model() -> None:
    @tool(audience="user")
    def reset(ctx: ToolContext) -> str:
        """Reset the state."""
        ctx.state["reset"] = True
        return "reset"

    model = ScriptedModel(["ok"])
    async with open_session(Agent(model, tools=[add, reset])) as session:
        assert await session.dispatch("reset", {}) == (TextBlock("reset"),)
        assert session.state["reset"] is True
        blocks = await session.dispatch("add", {"a": 1, "b": 2})
        assert data_of(blocks[0]) == 3
        with pytest.raises(UnknownTool, match="nope"):
            await session.dispatch("nope", {})
        with pytest.raises(InvalidToolArguments):
            await session.dispatch("add", {"a": 1})
        await session.send("hi")
    assert [t.name for t in model.requests[0].tools] == ["add"]


async def test_session_subscribe_follows_executions_until_close() -> None:
    async with open_session(Agent(ScriptedModel(["one", "two"]))) as session:
        subscription = session.subscribe(types={"execution_start", "execution_end"})
        await (await session.send("a")).wait()
        await session.send("b")
    kinds = [event.type async for event in subscription]
    assert kinds == ["execution_start", "execution_end"] * 2


async def test_session_subscribe_after_seq_replays_what_is_held() -> None:
    async with open_session(Agent(ScriptedModel(["one"]))) as session:
        handle = await session.send("a")
        await handle.wait()
        last = handle.events.history[-1].seq
        later = session.subscribe(after_seq=last - 2)
        await session.aclose()
        seqs = [event.seq async for event in later]
    assert seqs == [last - 1, last]


async def test_two_readers_of_one_handle_see_identical_streams(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel(["a b c d e f"], chunk_size=1, delay=0.5)
    readers: list[list[int]] = [[], [], []]
    async with open_session(Agent(model)) as session:
        handle = await session.send("go")

        async def read(into: list[int]) -> None:
            async for event in handle:
                into.append(event.seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, readers[0])
            nursery.start_soon(read, readers[1])
            await trio.sleep(2)
            nursery.start_soon(read, readers[2])  # a late reader gets the full replay
    assert readers[0] == readers[1] == readers[2]
    assert readers[0] == [e.seq for e in handle.events.history]


async def test_on_message_runs_for_send_queue_and_queue_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[str] = []
    model = ScriptedModel(["r1", "r2", "r3"], chunk_size=1, delay=1)
    agent = Agent(model, on_message=lambda message, session: seen.append(message.text))
    async with open_session(agent) as session:
        session.queue("queued")
        assert seen == ["queued"]
        handle = await session.send("sent")
        handle.queue_message("injected")
        assert seen == ["queued", "sent", "injected"]
        await handle.result


async def test_metadata_and_max_ticks_of_send() -> None:
    model = ScriptedModel([Reply(tool_calls=[("add", {"a": 1, "b": 2})])] * 3)
    async with open_session(Agent(model, tools=[add])) as session:
        result = await session.send("go", max_ticks=2, metadata={"source": "cli"}).result
    assert result.stop_reason == "max_ticks"
    assert result.usage.ticks == 2
    assert session.timeline[0].metadata == {"source": "cli"}
    assert_transcript_integrity(session.timeline)


async def test_bad_input_is_refused_clearly() -> None:
    async with open_session(Agent(ScriptedModel(["x"]))) as session:
        with pytest.raises(TypeError, match="send"):
            await session.send(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"message\[1\]"):
            await session.send(["ok", 3])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="max_ticks"):
            await session.send("x", max_ticks=0)
        with pytest.raises(TypeError, match="props"):
            await session.render([1])  # type: ignore[arg-type]
        assert session.status == "idle" and list(session.timeline) == []
    with pytest.raises(TypeError, match="Agent"):
        async with open_session("agent"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="max_buffered_events"):
        async with open_session(Agent(ScriptedModel([])), max_buffered_events=0):
            pass


class _QuietModel:
    """Answers "ok" at once and records nothing (ScriptedModel keeps every request)."""

    name = "quiet"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield TextChunk("ok")
        yield UsageChunk(1, 1)


@pytest.mark.slow
async def test_memory_stays_flat_over_ten_thousand_executions() -> None:
    refs: list[weakref.ref[SessionExecutionHandle]] = []
    async with open_session(Agent(_QuietModel())) as session:
        for i in range(10_000):
            if i == 9_000:
                gc.collect()
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
            handle = await session.send("q")
            await handle.wait()
            if i % 50 == 0:
                refs.append(weakref.ref(handle))
            del handle
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        alive = [ref for ref in refs if ref() is not None]
        assert session.queued_messages == ()
        assert session.children == ()
        assert len(session.timeline) == 20_000
    # No finished handle is reachable; only the two new timeline messages of each
    # execution (~350 bytes each) remain.
    assert alive == []
    assert grown / 1_000 < 1_500, f"{grown / 1_000:.0f} bytes per execution"


async def test_timeline_is_read_only_and_messages_are_user_objects() -> None:
    async with open_session(Agent(ScriptedModel(["x"]))) as session:
        await session.send(user("hi", source="test")).result
        timeline = session.timeline
        assert isinstance(timeline[0], Message)
        assert timeline[0].metadata == {"source": "test"}
        with pytest.raises(TypeError):
            timeline[0] = user("no")  # type: ignore[index]


async def test_retention_bound_reports_lag_to_a_slow_subscriber() -> None:
    model = ScriptedModel(["abcdefghij" * 5], chunk_size=1)
    async with open_session(Agent(model), max_buffered_events=8) as session:
        handle = await session.send("go")
        slow = handle.events.subscribe()
        await handle.wait()
        assert len(handle.events) == 8
        with pytest.raises(EventsLagged) as info:
            await slow.receive()
        assert info.value.missed == handle.events.history[0].seq - 1
        rest = [event async for event in slow]
    assert [e.seq for e in rest] == [e.seq for e in handle.events.history]
    assert rest[-1].type == "execution_end"


async def test_tools_emit_custom_events_into_the_stream() -> None:
    @tool
    def progress(ctx: ToolContext) -> str:
        """Report progress."""
        ctx.emit("progress", {"done": 0.5})
        return "half"

    model = ScriptedModel([Reply(tool_calls=[("progress", {})]), "ok"])
    async with open_session(Agent(model, tools=[progress])) as session:
        handle = await session.send("go")
        custom = handle.events.subscribe(types={"custom"})
        await handle.result
        events = narrow_all([event async for event in custom], CustomEvent)
    assert [(e.name, e.data) for e in events] == [("progress", {"done": 0.5})]
    assert events[0].tick == 1
