"""What one execution commits: its input, queued messages, ticks and usage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._buffer import Publisher, emitter
from .._events import EntryCommitted, MessageDelivered, MessageQueued
from .._messages import Message, built_message, next_id
from .._result import SendResult
from .._usage import NO_USAGE
from ._tick import Tick

if TYPE_CHECKING:
    from ._execution import ExecutionHost

__all__ = ["Transcript"]

_entry_committed = emitter(EntryCommitted)


class Transcript:
    """The messages an execution commits to its session's timeline, and its usage.

    Attributes:
        input: The messages the execution was started with, until committed.
        pending: Messages queued into the execution, delivered at the next tick boundary.
        accepting: Whether a queued message will still be answered (cleared past
            the last tick boundary and at the end).
        new_messages: Every message committed so far, in order.
        usage: Tokens and ticks so far.
        last_message: The latest non-empty assistant message.
        current: The tick in progress (or the last one).
    """

    def __init__(
        self, host: ExecutionHost, publisher: Publisher, messages: Sequence[Message]
    ) -> None:
        self.host = host
        self.publisher = publisher
        self.input = list(messages)
        self.pending: list[Message] = []
        self.accepting = True
        self.new_messages: list[Message] = []
        self.usage = NO_USAGE
        self.last_message: Message | None = None
        self.current: Tick | None = None

    def queue(self, message: Message) -> None:
        """Keep a message for the next tick boundary (``message_queued``)."""
        self.pending.append(message)
        self.publisher.emit(MessageQueued, message=message)

    def commit(self, message: Message) -> None:
        """Append to the session's timeline (``entry_committed``)."""
        index = self.host.timeline.append(message)
        self.new_messages.append(message)
        _entry_committed(self.publisher, message=message, index=index)

    def deliver(self, messages: Sequence[Message]) -> None:
        """Commit queued messages (``message_delivered`` before each)."""
        for message in messages:
            self.publisher.emit(MessageDelivered, message_id=message.id)
            self.commit(message)

    def take_pending(self) -> list[Message]:
        """Remove and return the queued messages."""
        pending, self.pending = self.pending, []
        return pending

    def return_pending(self) -> None:
        """Hand the queued messages back to the session for its next execution."""
        pending = self.take_pending()
        if pending:
            self.host.enqueue(pending)

    def commit_tick(self, state: Tick) -> None:
        """Commit the assistant message and its tool results together."""
        assert state.message is not None
        if state.message.content:
            self.commit(state.message)
            self.last_message = state.message
        if state.calls:
            blocks = tuple(r for r in state.results if r is not None)
            # Tool results the engine built, in a tool message: nothing to check again.
            self.commit(built_message("tool", blocks, next_id()))
        state.committed = True
        # The tick that waited for confirmation (if it was this one) is done waiting.
        self.host.clear_pending()
        self.usage = self.usage + state.usage
        self.host.usage = self.host.usage + state.usage

    def result(self, stop_reason: str, execution_id: str, output: Any = None) -> SendResult:
        """The execution's `SendResult` (``output``: its typed output, if any)."""
        last = self.last_message
        return SendResult(
            response=last.text if last is not None else "",
            message=last,
            new_messages=tuple(self.new_messages),
            usage=self.usage,
            stop_reason=stop_reason,
            session_id=self.host.id,
            execution_id=execution_id,
            output=output,
        )
