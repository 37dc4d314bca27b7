"""RecordingModel / ReplayModel: a recorded session replays offline, identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import collect, narrow

from trio_session import (
    Agent,
    Event,
    ExecutionAborted,
    ExecutionEnd,
    Model,
    ModelError,
    ModelRequest,
    Reply,
    ScriptedModel,
    SessionExecutionHandle,
    StreamEvent,
    Tool,
    ToolConfirmationRequired,
    ToolContext,
    converter,
    open_session,
    tool,
)
from trio_session.testing import RecordingModel, ReplayMismatch, ReplayModel


@tool
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


def delegate_to(helper: Model) -> Tool:
    @tool(requires_confirmation=True)
    async def delegate(ctx: ToolContext, question: str) -> str:
        """Ask a helper.

        Args:
            question: What to ask.
        """
        child: SessionExecutionHandle = await ctx.spawn(Agent(helper, name="helper"), question)
        return (await child.result).response

    return delegate


def provider() -> ScriptedModel:
    """The parent's three replies, and the helper's one (its request has no tools)."""
    replies: list[str | Reply] = [
        Reply("Adding.", tool_calls=[("add", {"a": 2, "b": 3})], reasoning="think"),
        Reply("Asking.", tool_calls=[("delegate", {"question": "and 6*7?"})]),
        "2+3 is 5 and the helper says 42.",
    ]

    def answer(request: ModelRequest) -> str | Reply:
        return "helper says 42" if not request.tools else replies.pop(0)

    return ScriptedModel([answer] * 4, chunk_size=4)


# Ids and clocks that differ between two runs of the same conversation.
VOLATILE = {"id", "message_id", "timestamp", "session_id", "execution_id", "child_session_id"}
VOLATILE |= {"child_execution_id", "spawn_id", "spawn_path", "parent_execution_id"}


def payload(event: StreamEvent) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(converter.unstructure(event))


async def run(model: Model, message: str = "What is 2+3?", **agent: Any) -> list[Event]:
    """One execution; the helper child spawned by ``delegate`` shares the model."""
    agent.setdefault("tools", [add, delegate_to(model)])
    async with open_session(Agent(model, system="Be brief.", **agent)) as session:
        handle = await session.send(message)

        def approve(event: StreamEvent) -> None:
            assert isinstance(event, ToolConfirmationRequired)
            handle.submit_tool_result(event.tool_use_id, approved=True)

        handle.events.on("tool_confirmation_required", approve)
        return await collect(handle)


async def test_a_recorded_session_replays_with_identical_events(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    recorded = await run(RecordingModel(provider(), path))
    assert recorded[-1].type == "execution_end" and recorded[-1].status == "completed"
    assert len(path.read_text().splitlines()) == 4  # the parent's three calls, the helper's one

    replay = ReplayModel(path)
    replayed = await run(replay)

    assert [payload(e) for e in replayed] == [payload(e) for e in recorded]
    assert {"tool_result", "spawn_start", "reasoning_delta"} <= {e.type for e in replayed}
    assert replay.unused == 0
    assert replay.name == "scripted"


async def test_a_changed_request_fails_with_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    await run(RecordingModel(provider(), path))

    async with open_session(Agent(ReplayModel(path), system="Be brief.", tools=[add])) as session:
        handle = await session.send("What is 2+4?")
        with pytest.raises(ReplayMismatch) as caught:
            await handle.result
    assert handle.status == "failed"
    text = str(caught.value)
    assert "the request of tick 1 matches no unused recording" in text
    lines = text.splitlines()
    assert any(line.startswith("-") and '"What is 2+3?"' in line for line in lines)
    assert any(line.startswith("+") and '"What is 2+4?"' in line for line in lines)
    # The delegate tool is missing from the request too: its schema is in the diff.
    assert any(line.startswith("-") and '"delegate"' in line for line in lines)
    assert isinstance(caught.value, AssertionError)


async def test_exact_matching_ignores_message_ids_only(tmp_path: Path) -> None:
    path = tmp_path / "hello.jsonl"
    await run(RecordingModel(ScriptedModel(["Hi."]), path), "hello", tools=[])
    assert [e.type for e in await run(ReplayModel(path), "hello", tools=[])][-1] == "execution_end"
    # Message metadata is part of the request, unlike the message's id.
    with pytest.raises(ReplayMismatch, match=r'\+   "metadata": \{\n\+    "x": 1'):
        async with open_session(Agent(ReplayModel(path), system="Be brief.")) as session:
            await (await session.send("hello", metadata={"x": 1})).result


async def test_tick_matching_ignores_everything_but_the_tick(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    await run(RecordingModel(provider(), path))

    replayed = await run(ReplayModel(path, match="tick"), "Something else entirely")
    end = narrow(replayed[-1], ExecutionEnd)
    assert end.status == "completed"

    # A request for another tick than the next recording's is refused.
    model = ReplayModel(path, match="tick")
    with pytest.raises(ReplayMismatch, match="is for tick 1, the request is for tick 2"):
        async for _ in model.stream(ModelRequest("x", (), tick=2)):
            pass


async def test_used_up_recordings_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    await run(RecordingModel(ScriptedModel(["Hi."]), path), "hello", tools=[])
    model = ReplayModel(path)
    await run(model, "hello", tools=[])
    async with open_session(Agent(model, system="Be brief.")) as session:
        with pytest.raises(ReplayMismatch, match="1 recordings, all used"):
            await (await session.send("hello")).result


async def test_a_model_error_is_recorded_and_raised_again(tmp_path: Path) -> None:
    path = tmp_path / "error.jsonl"
    failing = ScriptedModel([ModelError("bad key", code="authentication")])
    with pytest.raises(ModelError):
        await run_result(RecordingModel(failing, path))
    with pytest.raises(ModelError) as caught:
        await run_result(ReplayModel(path))
    assert caught.value.code == "authentication"
    assert not caught.value.retryable


async def run_result(model: Model) -> object:
    async with open_session(Agent(model)) as session:
        return await (await session.send("hi")).result


async def test_an_aborted_stream_replays_up_to_the_abort(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "aborted.jsonl"

    async def abort_after_three_deltas(model: Model) -> list[Event]:
        async with open_session(Agent(model)) as session:
            handle = await session.send("tell me a story")
            deltas = 0

            def count(_event: StreamEvent) -> None:
                nonlocal deltas
                deltas += 1
                if deltas == 3:
                    handle.abort("enough")

            handle.events.on("content_delta", count)
            with pytest.raises(ExecutionAborted):
                await handle.result
            return await collect(handle)

    slow = ScriptedModel(["once upon a time there was " * 20], chunk_size=5, delay=1.0)
    recorded = await abort_after_three_deltas(RecordingModel(slow, path))
    replayed = await abort_after_three_deltas(ReplayModel(path))
    assert [payload(e) for e in replayed] == [payload(e) for e in recorded]
    assert narrow(replayed[-1], ExecutionEnd).status == "aborted"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"model": "m"}\n')
    with pytest.raises(ValueError, match="match must be"):
        ReplayModel(path, match="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"x\.jsonl:1: invalid"):
        ReplayModel(path)
    with pytest.raises(TypeError, match="inner must be a Model"):
        RecordingModel(object(), path)  # type: ignore[arg-type]
