"""The offline models' chunk streams and the helpers they share (models/_base.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import given, strategies as st

from trio_session import Agent, Reply, ScriptedModel, Usage, open_session, tool
from trio_session.models import (
    ModelChunk,
    ModelRequest,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
)
from trio_session.models._base import estimate_usage, json_text

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.floats(), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_json)
def test_json_text_is_json_dumps(value: Any) -> None:
    assert json_text(value) == json.dumps(value)


def _circular() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    "value", [{"o": object()}, {(1, 2): 3}, _circular(), [_circular()], {"a": {1j}}]
)
def test_json_text_raises_what_json_dumps_raises(value: Any) -> None:
    with pytest.raises(Exception) as expected:
        json.dumps(value)
    with pytest.raises(type(expected.value)) as info:
        json_text(value)
    assert str(info.value) == str(expected.value)
    assert json_text({"after": "an error"}) == '{"after": "an error"}'


def test_estimate_usage_counts_the_arguments_json() -> None:
    request = ModelRequest("x" * 40, ())
    assert estimate_usage(request, "abcd", [{"a": 1}]) == UsageChunk(10, 3)


async def _chunks(model: ScriptedModel) -> list[ModelChunk]:
    return [chunk async for chunk in model.stream(ModelRequest(None, ()))]


async def test_scripted_stream_of_a_tool_call() -> None:
    model = ScriptedModel([Reply("ok", tool_calls=[("add", {"a": 1, "b": 2}, "c1")])])
    assert await _chunks(model) == [
        TextChunk("ok"),
        ToolCallStartChunk("c1", "add"),
        ToolCallDeltaChunk("c1", '{"a": 1, "b": 2}'),
        ToolCallChunk("c1", "add", {"a": 1, "b": 2}),
        UsageChunk(1, 4),  # "ok" and the arguments' 16 characters of JSON
        StopChunk("tool_use"),
    ]


async def test_scripted_stream_pieces_usage_and_stop_reason() -> None:
    model = ScriptedModel(
        [
            Reply("abcde", reasoning="xyz", usage=Usage(5, 6, cache_read_tokens=1)),
            Reply("", stop_reason="max_tokens"),
            Reply("last", stop_reason=""),
        ],
        chunk_size=2,
    )
    assert await _chunks(model) == [
        ReasoningChunk("xy"),
        ReasoningChunk("z"),
        TextChunk("ab"),
        TextChunk("cd"),
        TextChunk("e"),
        UsageChunk(5, 6, 1, 0),
        StopChunk("end_turn"),
    ]
    assert await _chunks(model) == [UsageChunk(1, 1), StopChunk("max_tokens")]
    assert (await _chunks(model))[-1] == StopChunk("end_turn")


class _Steps(trio.abc.Instrument):
    """Counts the current task's steps: how often it went through the scheduler."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def _steps_of(model: ScriptedModel) -> int:
    steps = _Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await _chunks(model)
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.steps


async def test_a_short_zero_delay_reply_does_not_visit_the_scheduler() -> None:
    assert await _steps_of(ScriptedModel([Reply("hi", tool_calls=[("f", {})])])) == 0
    assert await _steps_of(ScriptedModel(["x" * 130], chunk_size=1)) == 2  # every 64 chunks
    # With a delay, the first chunk still comes after a checkpoint.
    assert await _steps_of(ScriptedModel(["hi"], delay=0.001)) >= 1


async def test_a_zero_delay_reply_sees_cancellation_at_its_first_chunk() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        stream = ScriptedModel(["hi"]).stream(ModelRequest(None, ()))
        try:
            async for _ in stream:
                pytest.fail("a chunk was streamed inside a cancelled scope")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    assert scope.cancelled_caught


async def test_a_zero_latency_execution_still_lets_other_tasks_run_and_abort_it() -> None:
    # Neither the model (delay=0, short replies) nor the tool ever visits the scheduler:
    # the engine's own checkpoint, counted across ticks, is what lets the watcher run.
    @tool
    async def noop() -> str:
        """Do nothing."""
        return "ok"

    model = ScriptedModel([Reply(tool_calls=[("noop", {})])] * 400 + ["done"])
    async with open_session(Agent(model, tools=[noop], max_ticks=500)) as session:
        handle = await session.send("go")
        seen: list[int] = []

        async def watcher() -> None:
            while handle.current_tick < 50:
                seen.append(handle.current_tick)
                await trio.lowlevel.checkpoint()
            handle.abort("enough")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await handle.wait()
    assert handle.status == "aborted"
    # The watcher ran many times during the run, and the abort landed soon after tick 50.
    assert len(set(seen)) > 1
    assert 50 <= handle.current_tick < 80
