"""The sans-I/O assembler on its own (no trio): SPEC §2's within-tick order of model events."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, strategies as st

from trio_session import ModelError, ReasoningBlock, TextBlock, ToolUseBlock, Usage
from trio_session._buffer import EventBuffer, publisher_of
from trio_session._engine import Assembler
from trio_session.models import (
    ErrorChunk,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
)
from trio_session.models._base import INVALID_JSON_KEY


class Recorder:
    """A publisher into an `EventBuffer` whose events read back as (type, own fields)."""

    def __init__(self) -> None:
        self.buffer = EventBuffer()
        self.publisher = publisher_of(self.buffer)

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                event.type,
                {
                    f.name: getattr(event, f.name)
                    for f in attrs.fields(type(event))
                    if f.name not in _STAMPS
                },
            )
            for event in self.buffer.history
        ]

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


_STAMPS = {"seq", "session_id", "execution_id", "tick", "timestamp", "spawn_path"}


_text = st.text(alphabet="abc ", min_size=0, max_size=4)


@st.composite
def _streams(draw: st.DrawFn) -> list[Any]:
    """A plausible provider stream: text, reasoning, tool calls (started or not), usage."""
    chunks: list[Any] = []
    for number in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["text", "reasoning", "tool", "bare_tool", "usage", "stop"]))
        if kind == "text":
            chunks.append(TextChunk(draw(_text)))
        elif kind == "reasoning":
            chunks.append(ReasoningChunk(draw(_text)))
        elif kind == "tool":
            call_id = f"call_{number}"
            chunks.append(ToolCallStartChunk(call_id, "t"))
            for delta in draw(st.lists(_text, max_size=3)):
                chunks.append(ToolCallDeltaChunk(call_id, delta))
            chunks.append(ToolCallChunk(call_id, "t", {"n": number}))
        elif kind == "bare_tool":
            chunks.append(ToolCallChunk(f"call_{number}", "t", {}))
        elif kind == "usage":
            chunks.append(UsageChunk(draw(st.integers(0, 9)), draw(st.integers(0, 9))))
        else:
            chunks.append(StopChunk(draw(st.sampled_from(["end_turn", "max_tokens"]))))
    return chunks


@given(_streams())
def test_events_follow_the_spec_order_and_rebuild_the_message(chunks: list[Any]) -> None:
    emit = Recorder()
    assembler = Assembler(emit.publisher, "model-x")
    for chunk in chunks:
        assembler.feed(chunk)
    assembled = assembler.finish()

    types = emit.types()
    assert types[0] == "message_start"
    assert emit.events[0][1] == {"model": "model-x", "message_id": assembled.message.id}
    assert types[-2:] == ["message_end", "message"]
    assert "message_start" not in types[1:] and types.count("message") == 1

    # Blocks: a content block's start/deltas/end are contiguous; deltas rebuild it.
    texts: dict[int, str] = {}
    open_index: int | None = None
    tool_started: dict[str, int] = {}
    tool_calls: dict[int, ToolUseBlock] = {}
    for event_type, fields in emit.events[1:-2]:
        if event_type == "content_start":
            assert open_index is None
            open_index = fields["block_index"]
            texts[open_index] = ""
        elif event_type in ("content_delta", "reasoning_delta"):
            assert open_index is not None and fields["block_index"] == open_index
            texts[open_index] += fields["delta"]
        elif event_type == "content_end":
            assert fields["block_index"] == open_index
            open_index = None
        elif event_type == "tool_call_start":
            assert open_index is None  # a tool call closes the open block first
            tool_started[fields["tool_use_id"]] = fields["block_index"]
        elif event_type == "tool_call_delta":
            assert fields["tool_use_id"] in tool_started
        elif event_type == "tool_call":
            index = tool_started.pop(fields["tool_use_id"])  # its start came first
            tool_calls[index] = ToolUseBlock(fields["tool_use_id"], fields["name"], fields["input"])
        else:
            pytest.fail(f"unexpected {event_type} inside the message")
    assert open_index is None and not tool_started

    content = assembled.message.content
    expected = [
        tool_calls[i] if i in tool_calls else texts[i] for i in sorted({*texts, *tool_calls})
    ]
    assert len(content) == len(expected)
    for block, want in zip(content, expected, strict=True):
        if isinstance(block, TextBlock | ReasoningBlock):
            assert block.text == want
        else:
            assert block == want
    assert assembled.calls == tuple(b for b in content if isinstance(b, ToolUseBlock))

    usage = [c for c in chunks if isinstance(c, UsageChunk)]
    assert assembled.usage.input_tokens == sum(c.input_tokens for c in usage)
    assert assembled.usage.output_tokens == sum(c.output_tokens for c in usage)
    assert assembled.usage.ticks == 1
    stops = [c.reason for c in chunks if isinstance(c, StopChunk)]
    default = "tool_use" if assembled.calls else "end_turn"
    assert assembled.stop_reason == (stops[-1] if stops else default)
    assert emit.events[-1][1]["message"] == assembled.message


def test_an_error_chunk_raises_and_fail_publishes_it() -> None:
    emit = Recorder()
    assembler = Assembler(emit.publisher, None)
    assembler.feed(TextChunk("par"))
    with pytest.raises(ModelError) as info:
        assembler.feed(ErrorChunk("overloaded", code="overloaded", retryable=True))
    assembler.fail(info.value)
    assert emit.types() == ["message_start", "content_start", "content_delta", "error"]
    assert emit.events[-1][1] == {"message": "overloaded", "code": "overloaded", "retryable": True}


def test_a_non_chunk_is_refused_with_the_model_name() -> None:
    assembler = Assembler(Recorder().publisher, "m1")
    with pytest.raises(TypeError, match=r"model 'm1' streamed a non-chunk: 42"):
        assembler.feed(42)


def _usage_of(*chunks: Any) -> Any:
    assembler = Assembler(Recorder().publisher, None)
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.finish().usage


def test_valid_usage_sums_build_the_usage_the_constructor_would() -> None:
    usage = _usage_of(UsageChunk(3, 2, 1, 0), UsageChunk(4, 1, 0, 2))
    assert usage == Usage(7, 3, 10, ticks=1, cache_read_tokens=1, cache_write_tokens=2)
    assert _usage_of(TextChunk("x")) == Usage(ticks=1, unreported_ticks=1)


@pytest.mark.parametrize(
    ("chunks", "error", "message"),
    [
        ([UsageChunk(1.5, 2)], TypeError, "Usage.input_tokens must be an int, got float"),  # type: ignore[arg-type]
        ([UsageChunk(1, -2)], ValueError, "Usage.output_tokens must not be negative, got -2"),
        ([UsageChunk(1, 2, 0, -1)], ValueError, "Usage.cache_write_tokens must not be negative"),
        ([UsageChunk(1, 2, "3")], TypeError, "unsupported operand"),  # type: ignore[arg-type]
    ],
)
def test_a_models_invalid_usage_counts_are_still_refused(
    chunks: list[UsageChunk], error: type[Exception], message: str
) -> None:
    # UsageChunk checks nothing: the tick's sums are checked, with Usage's own messages.
    with pytest.raises(error, match=message):
        _usage_of(*chunks)


def test_a_call_input_that_is_not_an_object_is_kept_as_text() -> None:
    emit = Recorder()
    assembler = Assembler(emit.publisher, None)
    assembler.feed(ToolCallChunk("c1", "f", [1, 2]))  # type: ignore[arg-type]
    assembler.feed(ToolCallChunk("c2", "f", {1: "x"}))  # type: ignore[dict-item]
    assembler.feed(ToolCallChunk("c3", "f", MappingProxyType({"a": 1})))
    calls = assembler.finish().calls
    assert [c.input for c in calls] == [
        {INVALID_JSON_KEY: "[1, 2]"},
        {INVALID_JSON_KEY: '{"1": "x"}'},
        {"a": 1},
    ]
