"""Shared helpers for the session and engine tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from trio_session import (
    ContentBlock,
    Event,
    ExecutionHandle,
    JsonBlock,
    Message,
    StreamEvent,
    TextBlock,
    tool,
)

T = TypeVar("T")


async def collect(handle: ExecutionHandle[Any]) -> list[Event]:
    """Every event of an execution, through execution_end (errors swallowed)."""
    events: list[Event] = []
    async with handle.events.subscribe() as subscription:
        async for event in subscription:
            assert isinstance(event, Event), event
            events.append(event)
    return events


def types_of(events: Sequence[StreamEvent]) -> list[str]:
    return [event.type for event in events]


def assert_transcript_integrity(timeline: Sequence[Message]) -> None:
    """No tool_use without its tool_result right after it, ever."""
    answered: set[str] = set()
    for message in timeline:
        for block in message.tool_results:
            answered.add(block.tool_use_id)
    for message in timeline:
        for use in message.tool_uses:
            assert use.tool_use_id in answered, f"unanswered tool_use {use.tool_use_id}"
    for i, message in enumerate(timeline):
        if message.tool_uses:
            assert i + 1 < len(timeline), "tool_use at the end of the timeline"
            following = {b.tool_use_id for b in timeline[i + 1].tool_results}
            assert {b.tool_use_id for b in message.tool_uses} <= following


def assert_well_formed(events: Sequence[StreamEvent]) -> None:
    """One execution's stream: starts, ends once, gapless seq, ordered ticks."""
    assert events, "no events"
    assert events[0].type == "execution_start"
    assert events[-1].type == "execution_end"
    assert sum(1 for e in events if e.type == "execution_end" and not e.spawn_path) == 1
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    own = [e for e in events if not e.spawn_path]
    # Within a tick: tick_start < model events < message < tools < commits < tick_end.
    order = {
        "tick_start": 0,
        "model_request": 1,
        "message_start": 1,
        "content_start": 1,
        "content_delta": 1,
        "content_end": 1,
        "reasoning_delta": 1,
        "tool_call_start": 1,
        "tool_call_delta": 1,
        "tool_call": 1,
        "message_end": 1,
        "error": 1,
        "message": 2,
        "tool_result_start": 3,
        "tool_confirmation_required": 3,
        "tool_confirmation_result": 3,
        "tool_result": 3,
        "entry_committed": 4,
        "message_delivered": 4,
        "tick_end": 5,
    }
    rank = -1
    for event in own:
        if event.type == "tick_start":
            rank = 0
            continue
        if event.type in order and rank >= 0:
            r = order[event.type]
            assert r >= rank, f"{event.type} after rank {rank} in tick {event.tick}"
            rank = r
        if event.type == "tick_end":
            rank = -1


def text_of(block: ContentBlock) -> str:
    """The text of a block the test expects to be a `TextBlock`."""
    assert isinstance(block, TextBlock), block
    return block.text


def data_of(block: ContentBlock) -> Any:
    """The data of a block the test expects to be a `JsonBlock`."""
    assert isinstance(block, JsonBlock), block
    return block.data


def narrow(value: object, cls: type[T]) -> T:
    """``value``, asserted to be a ``cls`` (an event of a known type, say)."""
    assert isinstance(value, cls), value
    return value


def narrow_all(values: Iterable[object], cls: type[T]) -> list[T]:
    """Every one of ``values``, each asserted to be a ``cls``."""
    return [narrow(value, cls) for value in values]


# The confirmation tests' tool (tests/test_confirmation.py, tests/test_durable_confirmations.py):
# each of them clears `deleted` before every test.
deleted: list[str] = []


@tool(requires_confirmation=True, confirmation_message="Delete {path}?")
async def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: Which file.
    """
    deleted.append(path)
    return f"deleted {path}"
