"""The events of an execution's stream.

Every event is a frozen attrs instance of a `StreamEvent` subclass; its
``type`` is a class-level constant. The common fields are stamped by the
publisher (`EventBuffer`), so user code builds events with only their own
fields: ``buf.emit("custom", name="progress", data=0.5)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeAlias

import attrs

from ._messages import ContentBlock, Message
from ._result import SendResult
from ._usage import Usage
from .models._base import ModelRequest

__all__ = [
    "EVENT_CLASSES",
    "Event",
    "ContentDelta",
    "ContentEnd",
    "ContentStart",
    "CustomEvent",
    "EntryCommitted",
    "ErrorEvent",
    "ExecutionEnd",
    "ExecutionStart",
    "MessageDelivered",
    "MessageEnd",
    "MessageEvent",
    "MessageQueued",
    "MessageStart",
    "ModelRequestEvent",
    "ReasoningDelta",
    "ResultEvent",
    "SpawnEnd",
    "SpawnStart",
    "StreamEvent",
    "TickEnd",
    "TickRetry",
    "TickStart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolConfirmationRequired",
    "ToolConfirmationResult",
    "ToolResultEvent",
    "ToolResultStart",
]


@attrs.frozen(kw_only=True)
class StreamEvent:
    """Base class of every event.

    Attributes:
        type: The event's type name, a class-level constant.
        seq: Position in the session's stream: 1, 2, 3 ... without gaps.
        session_id: The session that emitted it.
        execution_id: The execution it belongs to.
        tick: The tick during which it was emitted (0 before the first tick).
        timestamp: ``time.time()`` at emission.
        spawn_path: Empty for the session's own events; for a forwarded child
            event, the spawn ids of the forwarding chain, outermost first.
    """

    type: ClassVar[str] = ""
    seq: int = 0
    session_id: str = ""
    execution_id: str = ""
    tick: int = 0
    timestamp: float = attrs.field(factory=time.time)
    spawn_path: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ExecutionStart(StreamEvent):
    """The first event of every execution."""

    type: ClassVar[Literal["execution_start"]] = "execution_start"
    parent_execution_id: str | None = None


@attrs.frozen(kw_only=True)
class TickStart(StreamEvent):
    """A tick (one model call and its tool calls) begins."""

    type: ClassVar[Literal["tick_start"]] = "tick_start"


@attrs.frozen(kw_only=True)
class ModelRequestEvent(StreamEvent):
    """The compiled input of this tick's model call."""

    type: ClassVar[Literal["model_request"]] = "model_request"
    request: ModelRequest


@attrs.frozen(kw_only=True)
class MessageStart(StreamEvent):
    """The model began streaming its reply.

    ``message_id`` is the id the tick's assistant message will be committed with.
    """

    type: ClassVar[Literal["message_start"]] = "message_start"
    model: str | None = None
    message_id: str | None = None


@attrs.frozen(kw_only=True)
class ContentStart(StreamEvent):
    """A content block of the reply begins (``block_type``: ``"text"``, ``"reasoning"``)."""

    type: ClassVar[Literal["content_start"]] = "content_start"
    block_index: int
    block_type: str


@attrs.frozen(kw_only=True)
class ContentDelta(StreamEvent):
    """A piece of text of block ``block_index``."""

    type: ClassVar[Literal["content_delta"]] = "content_delta"
    block_index: int
    delta: str


@attrs.frozen(kw_only=True)
class ContentEnd(StreamEvent):
    """Block ``block_index`` is complete."""

    type: ClassVar[Literal["content_end"]] = "content_end"
    block_index: int


@attrs.frozen(kw_only=True)
class ReasoningDelta(StreamEvent):
    """A piece of reasoning text of block ``block_index``."""

    type: ClassVar[Literal["reasoning_delta"]] = "reasoning_delta"
    block_index: int
    delta: str


@attrs.frozen(kw_only=True)
class ToolCallStart(StreamEvent):
    """The model started a tool call."""

    type: ClassVar[Literal["tool_call_start"]] = "tool_call_start"
    tool_use_id: str
    name: str
    block_index: int


@attrs.frozen(kw_only=True)
class ToolCallDelta(StreamEvent):
    """A piece of a tool call's JSON arguments."""

    type: ClassVar[Literal["tool_call_delta"]] = "tool_call_delta"
    tool_use_id: str
    delta: str


@attrs.frozen(kw_only=True)
class ToolCall(StreamEvent):
    """A complete tool call, arguments parsed."""

    type: ClassVar[Literal["tool_call"]] = "tool_call"
    tool_use_id: str
    name: str
    input: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class MessageEnd(StreamEvent):
    """The model's reply stream ended."""

    type: ClassVar[Literal["message_end"]] = "message_end"
    stop_reason: str
    usage: Usage = attrs.field(factory=Usage)


@attrs.frozen(kw_only=True)
class MessageEvent(StreamEvent):
    """The tick's complete assistant message."""

    type: ClassVar[Literal["message"]] = "message"
    message: Message
    stop_reason: str
    usage: Usage = attrs.field(factory=Usage)


@attrs.frozen(kw_only=True)
class ErrorEvent(StreamEvent):
    """The model provider reported an error."""

    type: ClassVar[Literal["error"]] = "error"
    message: str
    code: str = "model_error"
    retryable: bool = False


@attrs.frozen(kw_only=True)
class ToolResultStart(StreamEvent):
    """A tool call is about to be handled (confirmed, then run)."""

    type: ClassVar[Literal["tool_result_start"]] = "tool_result_start"
    tool_use_id: str
    name: str


@attrs.frozen(kw_only=True)
class ToolConfirmationRequired(StreamEvent):
    """A tool call waits for approval; answer with ``handle.submit_tool_result``."""

    type: ClassVar[Literal["tool_confirmation_required"]] = "tool_confirmation_required"
    tool_use_id: str
    name: str
    input: Mapping[str, Any]
    message: str


@attrs.frozen(kw_only=True)
class ToolConfirmationResult(StreamEvent):
    """A confirmation was answered (by a person, the policy hook, or a timeout)."""

    type: ClassVar[Literal["tool_confirmation_result"]] = "tool_confirmation_result"
    tool_use_id: str
    approved: bool
    reason: str | None = None
    modified_arguments: Mapping[str, Any] | None = None
    always: bool = False


@attrs.frozen(kw_only=True)
class ToolResultEvent(StreamEvent):
    """A tool call's result."""

    type: ClassVar[Literal["tool_result"]] = "tool_result"
    tool_use_id: str
    name: str
    content: tuple[ContentBlock, ...]
    is_error: bool = False


@attrs.frozen(kw_only=True)
class MessageQueued(StreamEvent):
    """A message was queued into the running execution."""

    type: ClassVar[Literal["message_queued"]] = "message_queued"
    message: Message


@attrs.frozen(kw_only=True)
class MessageDelivered(StreamEvent):
    """A queued message entered the conversation at this tick."""

    type: ClassVar[Literal["message_delivered"]] = "message_delivered"
    message_id: str


@attrs.frozen(kw_only=True)
class EntryCommitted(StreamEvent):
    """A message was committed to the session timeline at ``index``."""

    type: ClassVar[Literal["entry_committed"]] = "entry_committed"
    message: Message
    index: int


@attrs.frozen(kw_only=True)
class TickEnd(StreamEvent):
    """A tick ended; ``should_continue`` says whether another follows."""

    type: ClassVar[Literal["tick_end"]] = "tick_end"
    usage: Usage = attrs.field(factory=Usage)
    stop_reason: str = ""
    should_continue: bool = False


@attrs.frozen(kw_only=True)
class SpawnStart(StreamEvent):
    """A child session started; its events follow, forwarded."""

    type: ClassVar[Literal["spawn_start"]] = "spawn_start"
    spawn_id: str
    child_session_id: str
    child_execution_id: str
    origin_tool_use_id: str | None = None


@attrs.frozen(kw_only=True)
class SpawnEnd(StreamEvent):
    """A child session's execution ended."""

    type: ClassVar[Literal["spawn_end"]] = "spawn_end"
    spawn_id: str
    child_session_id: str
    status: str
    response: str | None = None
    usage: Usage = attrs.field(factory=Usage)


@attrs.frozen(kw_only=True)
class CustomEvent(StreamEvent):
    """An event of user code, emitted by a tool or a hook."""

    type: ClassVar[Literal["custom"]] = "custom"
    name: str
    data: Any = None


@attrs.frozen(kw_only=True)
class ResultEvent(StreamEvent):
    """The execution completed; the result follows only on success."""

    type: ClassVar[Literal["result"]] = "result"
    result: SendResult


@attrs.frozen(kw_only=True)
class TickRetry(StreamEvent):
    """The tick's model call failed with a retryable error and the tick will run again.

    The tick's partial output (the model events since its ``model_request``) is discarded:
    none of it is committed. After ``delay`` seconds the same request is sent again, and a new
    ``model_request`` and its model events follow, within the same tick.

    Attributes:
        attempt: The attempt that failed, from 1.
        delay: Seconds until the next attempt.
        error: The error's message.
        code: The error's code (``"overloaded"``, ``"rate_limit"``, ...).
    """

    type: ClassVar[Literal["tick_retry"]] = "tick_retry"
    attempt: int
    delay: float
    error: str
    code: str = "model_error"


@attrs.frozen(kw_only=True)
class ExecutionEnd(StreamEvent):
    """The last event of every execution, on every path."""

    type: ClassVar[Literal["execution_end"]] = "execution_end"
    status: str
    reason: str | None = None
    error: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    new_messages: tuple[Message, ...] = ()


Event: TypeAlias = (
    ExecutionStart
    | TickStart
    | ModelRequestEvent
    | MessageStart
    | ContentStart
    | ContentDelta
    | ContentEnd
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCall
    | MessageEnd
    | MessageEvent
    | ErrorEvent
    | ToolResultStart
    | ToolConfirmationRequired
    | ToolConfirmationResult
    | ToolResultEvent
    | MessageQueued
    | MessageDelivered
    | EntryCommitted
    | TickEnd
    | SpawnStart
    | SpawnEnd
    | CustomEvent
    | ResultEvent
    | TickRetry
    | ExecutionEnd
)
"""Any event the library emits; it narrows on ``event.type == "content_delta"`` and the like."""

EVENT_CLASSES: dict[str, type[StreamEvent]] = {
    cls.type: cls for cls in StreamEvent.__subclasses__()
}
"""Every event class, by its ``type``."""
