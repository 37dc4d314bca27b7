"""Hardening of the engine: malformed tool calls, and abort against a stream that never awaits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import hypothesis.strategies as st
import trio
from _helpers import assert_transcript_integrity
from hypothesis import HealthCheck, given, settings

from trio_session import Agent, ModelRequest, open_session, tool
from trio_session.models import (
    ModelChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
)


@tool
async def add(a: int, b: int) -> str:
    """Add two numbers.

    Args:
        a: First.
        b: Second.
    """
    return str(a + b)


class ChunkModel:
    """Streams the given chunk lists, one per request, then "done"."""

    name = "chunks"

    def __init__(self, turns: Sequence[Sequence[ModelChunk]]) -> None:
        self.turns = list(turns)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        turn = self.turns.pop(0) if self.turns else [TextChunk("done")]
        for chunk in turn:
            yield chunk


async def run_turn(chunks: Sequence[ModelChunk]) -> tuple[Any, ChunkModel, tuple[Any, ...]]:
    model = ChunkModel([chunks])
    async with open_session(Agent(model, tools=[add])) as session:
        result = await (await session.send("go")).result
        timeline = tuple(session.timeline)
    return result, model, timeline


def tool_messages(timeline: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    uses = [b for m in timeline for b in m.tool_uses]
    results = [b for m in timeline for b in m.tool_results]
    return uses, results


MALFORMED: list[tuple[str, list[ModelChunk]]] = [
    ("invalid json", [ToolCallStartChunk("c1", "add"), ToolCallDeltaChunk("c1", "{oops")]),
    ("truncated", [ToolCallStartChunk("c1", "add"), ToolCallDeltaChunk("c1", '{"a": 1, "b"')]),
    ("a list", [ToolCallStartChunk("c1", "add"), ToolCallDeltaChunk("c1", "[1, 2]")]),
    ("a string", [ToolCallStartChunk("c1", "add"), ToolCallDeltaChunk("c1", '"x"')]),
    ("no arguments", [ToolCallStartChunk("c1", "add")]),
    ("non-mapping input", [ToolCallChunk("c1", "add", [1, 2])]),  # type: ignore[arg-type]
    ("non-str keys", [ToolCallChunk("c1", "add", {1: 2})]),  # type: ignore[dict-item]
    ("None input", [ToolCallChunk("c1", "add", None)]),  # type: ignore[arg-type]
]


async def test_each_malformed_call_is_answered_with_an_error_and_the_model_told() -> None:
    for what, chunks in MALFORMED:
        result, model, timeline = await run_turn(chunks)
        uses, results = tool_messages(timeline)
        assert len(uses) == 1 and len(results) == 1, what
        assert results[0].is_error, what
        assert results[0].tool_use_id == uses[0].tool_use_id, what
        assert result.response == "done", what
        # The model's next request carries the error result.
        assert len(model.requests) == 2, what
        assert_transcript_integrity(timeline)


async def test_a_duplicated_tool_use_id_gets_a_fresh_id_and_an_error() -> None:
    chunks: list[ModelChunk] = [
        ToolCallChunk("same", "add", {"a": 1, "b": 2}),
        ToolCallChunk("same", "add", {"a": 3, "b": 4}),
    ]
    _, _, timeline = await run_turn(chunks)
    uses, results = tool_messages(timeline)
    assert len(uses) == 2 and len(results) == 2
    ids = [u.tool_use_id for u in uses]
    assert ids[0] == "same" and ids[1] != "same" and len(set(ids)) == 2
    by_id = {r.tool_use_id: r for r in results}
    assert not by_id["same"].is_error and by_id["same"].content[0].text == "3"
    assert by_id[ids[1]].is_error and "already used" in by_id[ids[1]].content[0].text
    assert_transcript_integrity(timeline)


async def test_streamed_arguments_without_a_final_chunk_are_used() -> None:
    chunks: list[ModelChunk] = [
        ToolCallStartChunk("c1", "add"),
        ToolCallDeltaChunk("c1", '{"a": 1, "b": 2}'),
    ]
    _, _, timeline = await run_turn(chunks)
    _, results = tool_messages(timeline)
    assert not results[0].is_error and results[0].content[0].text == "3"


ids = st.sampled_from(["a", "b", "c"])
argument_text = st.one_of(
    st.just('{"a": 1, "b": 2}'),
    st.just("{oops"),
    st.just('{"a": 1'),
    st.just("[1]"),
    st.just('"s"'),
    st.just(""),
    st.text(max_size=8),
)
chunk = st.one_of(
    st.builds(ToolCallStartChunk, ids, st.sampled_from(["add", "nope"])),
    st.builds(ToolCallDeltaChunk, ids, argument_text),
    st.builds(
        ToolCallChunk,
        ids,
        st.sampled_from(["add", "nope"]),
        st.one_of(
            st.just({"a": 1, "b": 2}),
            st.just({}),
            st.lists(st.integers(), max_size=2),
            st.text(max_size=3),
            st.none(),
            st.integers(),
        ),
    ),
    st.builds(TextChunk, st.text(max_size=3)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turn=st.lists(chunk, max_size=8))
def test_malformed_tool_call_sequences_keep_every_call(turn: list[ModelChunk]) -> None:
    async def main() -> None:
        result, model, timeline = await run_turn(turn)
        assert_transcript_integrity(timeline)
        uses, results = tool_messages(timeline)
        assert len({u.tool_use_id for u in uses}) == len(uses)
        assert sorted(u.tool_use_id for u in uses) == sorted(r.tool_use_id for r in results)
        # Every call the model opened is there (none dropped).
        opened = {c.tool_use_id for c in turn if isinstance(c, ToolCallStartChunk | ToolCallChunk)}
        assert opened <= {u.tool_use_id for u in uses}
        if opened:
            # The execution went on: the model saw the results and answered.
            assert result.response == "done" and len(model.requests) == 2
        for use in uses:
            json.dumps(dict(use.input))  # committed input stays JSON-able

    trio.run(main)


class NeverAwaits:
    """A model whose stream yields chunks forever without awaiting."""

    name = "busy"

    def __init__(self) -> None:
        self.sent = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        while True:
            self.sent += 1
            yield TextChunk("x")


async def test_abort_stops_a_model_that_never_awaits() -> None:
    model = NeverAwaits()
    async with open_session(Agent(model)) as session:
        handle = await session.send("go")
        # The caller gets to run again only if the engine yields mid-stream.
        await trio.lowlevel.checkpoint()
        handle.abort("stop")
        await handle.wait()
        assert handle.status == "aborted"
        assert model.sent < 1000
        assert handle.events.history[-1].type == "execution_end"


async def test_a_listener_aborting_mid_stream_takes_effect() -> None:
    model = NeverAwaits()
    async with open_session(Agent(model)) as session:
        handle = await session.send("go")
        handle.events.on("content_delta", lambda e: handle.abort("enough"))
        await handle.wait()
        assert handle.status == "aborted"
        assert model.sent <= 200
