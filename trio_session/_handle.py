"""Execution handles: what a caller holds while an execution runs.

A handle owns the execution's cancel scope (``abort()`` cancels it), its event
buffer, and its outcome. The status machine is

    pending -> running -> completed | failed | cancelled | error | aborted

and a terminal status never changes again: whatever the engine observes later,
``abort()`` wins if it came first.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar, cast

import trio

from ._errors import ExecutionAborted, ExecutionCancelled, ExecutionTimeout
from ._messages import Message
from ._result import SendResult

if TYPE_CHECKING:
    from ._buffer import EventBuffer, EventSubscription
    from ._events import StreamEvent

__all__ = ["ExecutionControl", "ExecutionHandle", "SessionExecutionHandle", "Status"]

R = TypeVar("R")

Status = Literal["pending", "running", "completed", "failed", "cancelled", "error", "aborted"]
TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "error", "aborted"})


class ExecutionHandle(Generic[R]):
    """A running (or finished) execution: its status, events, result and abort.

    Attributes:
        trace_id: A unique id for tracing this execution across systems.
        events: The execution's `EventBuffer`; subscribe to it any number of times.

    Example:
        >>> async def main(session):  # doctest: +SKIP
        ...     handle = await session.send("hello")
        ...     async for event in handle:
        ...         print(event.type)
        ...     print((await handle.result).response)
    """

    def __init__(self, events: EventBuffer, *, trace_id: str | None = None) -> None:
        self.events: EventBuffer = events
        self.trace_id: str = trace_id or uuid.uuid4().hex
        self._status: Status = "pending"
        self._scope = trio.CancelScope()
        self._finished = trio.Event()
        self._value: R | None = None
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None
        self._reason: str | None = None
        self._timeout_deadline = math.inf

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.trace_id[:8]} status={self._status}>"

    @property
    def status(self) -> Status:
        """``pending``, ``running``, or the terminal status, which never changes."""
        return self._status

    @property
    def done(self) -> bool:
        """Whether the status is terminal."""
        return self._status in TERMINAL

    @property
    def reason(self) -> str | None:
        """Why the execution was aborted or cancelled, if it was."""
        return self._reason

    @property
    def result(self) -> _Result[R]:
        """An awaitable of the outcome; await it any number of times, from any task.

        It gives the value when the execution completed, and otherwise raises:
        `ExecutionAborted` (`ExecutionTimeout` for a timeout), `ExecutionCancelled`,
        `ModelError`, or the exception that failed the execution.
        """
        return _Result(self)

    async def wait(self) -> None:
        """Wait until the execution finished and its last event was published.

        Never raises the execution's error.
        """
        await self._finished.wait()

    def abort(self, reason: str | None = None) -> None:
        """End the execution now: status becomes ``aborted`` at once.

        In-flight model streams and tools are cancelled, pending confirmations
        end, and ``execution_end`` (``status="aborted"``) still reaches every
        subscriber. Idempotent; does nothing on a terminal handle.
        """
        if self._status in TERMINAL:
            return
        self._status = "aborted"
        self._reason = reason
        self._scope.cancel(reason=f"aborted: {reason}" if reason else "aborted")

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        """Iterate over every event, from the first to ``execution_end``.

        Each iteration opens its own replaying subscription. After
        ``execution_end`` it raises the execution's error if the status is
        ``failed`` or ``error``; otherwise it just ends.
        """
        return _HandleIterator(self, self.events.subscribe())

    # -- used by the engine -------------------------------------------------

    def _cancel(self, reason: str) -> None:
        """Cancel from outside (session closed, parent ended): status ``cancelled``."""
        if self._status in TERMINAL:
            return
        self._status = "cancelled"
        self._reason = reason
        self._scope.cancel(reason=reason)

    def _apply_timeout(self, seconds: float) -> None:
        """Bound the whole execution: it ends ``aborted`` with reason ``"timeout"``."""
        deadline = trio.current_time() + seconds
        if deadline < self._timeout_deadline:
            self._timeout_deadline = deadline
            self._scope.deadline = min(self._scope.deadline, deadline)

    def _timed_out(self) -> bool:
        return trio.current_time() >= self._timeout_deadline

    def _set_running(self) -> None:
        if self._status == "pending":
            self._status = "running"

    def _settle(
        self,
        status: Status,
        value: R | None = None,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> Status:
        """Record the outcome; an earlier terminal status (abort, cancel) wins.

        Returns the final status.
        """
        if self._status not in TERMINAL:
            self._status = status
            self._reason = reason
        final = self._status
        if final == "completed":
            self._value = value
        elif final == "aborted":
            self._error = (
                ExecutionTimeout() if self._reason == "timeout" else ExecutionAborted(self._reason)
            )
        elif final == "cancelled":
            self._error = ExecutionCancelled(self._reason)
        else:
            self._error = error
            self._error_tb = error.__traceback__ if error is not None else None
        return final

    def _finish(self) -> None:
        """Wake every waiter; call after ``execution_end`` was published."""
        self._finished.set()

    def _raise_or_return(self) -> R:
        if self._error is not None:
            raise self._error.with_traceback(self._error_tb)
        return cast(R, self._value)

    def _iteration_error(self) -> BaseException | None:
        if self._status in ("failed", "error") and self._error is not None:
            return self._error.with_traceback(self._error_tb)
        return None


class _Result(Generic[R]):
    """The awaitable behind ``handle.result``."""

    __slots__ = ("_handle",)

    def __init__(self, handle: ExecutionHandle[R]) -> None:
        self._handle = handle

    def __await__(self) -> Generator[Any, None, R]:
        return self._wait().__await__()

    async def _wait(self) -> R:
        await self._handle._finished.wait()
        return self._handle._raise_or_return()


class _HandleIterator(AsyncIterator["StreamEvent"]):
    """``async for event in handle``: one replaying subscription per loop."""

    def __init__(self, handle: ExecutionHandle[Any], subscription: EventSubscription) -> None:
        self._handle = handle
        self._subscription = subscription

    def __aiter__(self) -> _HandleIterator:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await self._subscription.receive()
        except trio.EndOfChannel:
            self._subscription.close()
            await self._handle.wait()
            error = self._handle._iteration_error()
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop iterating early and release the subscription."""
        await self._subscription.aclose()


class ExecutionControl(Protocol):
    """What a session execution handle asks of the running engine."""

    @property
    def current_tick(self) -> int: ...

    def queue_message(self, message: Message) -> None: ...

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None: ...


class SessionExecutionHandle(ExecutionHandle[SendResult]):
    """The handle of one execution of a session (``send``, ``render``, ``spawn``).

    Attributes:
        session_id: The session it runs in.
        execution_id: Its own id; also on every one of its events.
    """

    def __init__(
        self,
        events: EventBuffer,
        *,
        session_id: str,
        execution_id: str,
        control: ExecutionControl,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(events, trace_id=trace_id)
        self.session_id = session_id
        self.execution_id = execution_id
        self._control = control

    @property
    def current_tick(self) -> int:
        """The tick now running; 0 before the first."""
        return self._control.current_tick

    def queue_message(self, message: Message | str) -> None:
        """Inject a message into this execution at its next tick boundary.

        ``message_queued`` is emitted at once and the agent's ``on_message`` hook
        runs; the execution answers it in at least one more tick. If the
        execution has ended, or ``max_ticks`` leaves no tick to answer it, the
        message waits on the session for its next execution. It is never lost.

        Raises:
            TypeError: ``message`` is neither a `Message` nor a str.
        """
        self._control.queue_message(as_message(message, "queue_message"))

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None = None,
        reason: str | None = None,
        always: bool = False,
    ) -> None:
        """Answer a pending tool confirmation.

        Args:
            tool_use_id: The id from ``tool_confirmation_required``; confirmations
                of spawned children are answerable here too.
            approved: Run the tool (True) or deny it (False).
            modified_arguments: Replacement arguments, validated against the
                tool's schema before anything happens.
            reason: Why; a denial's reason is shown to the model.
            always: Remember this answer for this tool for the rest of the session.

        Raises:
            UnknownToolUse: No confirmation with that id is pending.
            InvalidToolArguments: ``modified_arguments`` do not fit the tool's
                schema; the confirmation stays pending.
        """
        if not isinstance(approved, bool):
            raise TypeError(f"approved must be a bool, got {type(approved).__name__}")
        if modified_arguments is not None and not isinstance(modified_arguments, Mapping):
            raise TypeError(
                f"modified_arguments must be a mapping, got {type(modified_arguments).__name__}"
            )
        self._control.submit_tool_result(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )


def as_message(message: object, where: str) -> Message:
    """Accept a `Message` or a str (a user message); refuse anything else."""
    if isinstance(message, Message):
        return message
    if isinstance(message, str):
        return Message("user", message)
    raise TypeError(f"{where}() takes a Message or a str, got {type(message).__name__}")
