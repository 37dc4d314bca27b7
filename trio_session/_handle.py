"""Execution handles: what a caller holds while an execution runs.

A handle owns the execution's cancel scope (``abort()`` cancels it), its event
buffer, and its outcome. The status machine is

    pending -> running -> completed | failed | cancelled | error | aborted

and a terminal status never changes again: whatever the engine observes later,
``abort()`` wins if it came first.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Generator, Mapping
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    cast,
    final,
)

import trio

from ._errors import ExecutionAborted, ExecutionCancelled, ExecutionTimeout
from ._messages import Message, TextBlock, built_message, new_id, next_id
from ._result import SendResult
from ._subscription import end_with
from ._util import NoPublicConstructor

if TYPE_CHECKING:
    from ._buffer import EventBuffer, EventSubscription
    from ._events import Event

__all__ = [
    "ExecutionControl",
    "ExecutionHandle",
    "Outcome",
    "SessionExecutionHandle",
    "Status",
    "new_handle",
    "new_session_handle",
    "outcome_of",
]

R = TypeVar("R")

Status = Literal["pending", "running", "completed", "failed", "cancelled", "error", "aborted"]
TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "error", "aborted"})


class Outcome(Generic[R]):
    """The engine's side of one handle: its cancel scope and how it ends.

    The handle only reads it; the engine (and a timeout-bounding procedure)
    drives it. Made together with its handle by `new_handle` /
    `new_session_handle`.

    Attributes:
        scope: The execution's cancel scope; ``abort()`` cancels it.
        finished: Set once ``execution_end`` was published.
    """

    __slots__ = (
        "error",
        "error_tb",
        "finished",
        "reason",
        "scope",
        "status",
        "timeout_deadline",
        "value",
    )

    def __init__(self) -> None:
        self.status: Status = "pending"
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.value: R | None = None
        self.error: BaseException | None = None
        self.error_tb: TracebackType | None = None
        self.reason: str | None = None
        self.timeout_deadline = math.inf

    @property
    def done(self) -> bool:
        """Whether the status is terminal."""
        return self.status in TERMINAL

    def set_running(self) -> None:
        """The execution task started: ``pending`` becomes ``running``."""
        if self.status == "pending":
            self.status = "running"

    def abort(self, reason: str | None) -> None:
        """``handle.abort()``: status ``aborted`` at once, the scope cancelled."""
        if self.status in TERMINAL:
            return
        self.status = "aborted"
        self.reason = reason
        self.scope.cancel(reason=f"aborted: {reason}" if reason else "aborted")

    def cancel(self, reason: str) -> None:
        """Cancel from outside (session closed, parent ended): status ``cancelled``."""
        if self.status in TERMINAL:
            return
        self.status = "cancelled"
        self.reason = reason
        self.scope.cancel(reason=reason)

    def apply_timeout(self, seconds: float) -> None:
        """Bound the whole execution: it ends ``aborted`` with reason ``"timeout"``."""
        deadline = trio.current_time() + seconds
        if deadline < self.timeout_deadline:
            self.timeout_deadline = deadline
            self.scope.deadline = min(self.scope.deadline, deadline)

    def timed_out(self) -> bool:
        """Whether the timeout of `apply_timeout` has passed."""
        return trio.current_time() >= self.timeout_deadline

    def settle(
        self,
        status: Status,
        value: R | None = None,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> Status:
        """Record the outcome; an earlier terminal status (abort, cancel) wins.

        Returns the final status.
        """
        if self.status not in TERMINAL:
            self.status = status
            self.reason = reason
        final = self.status
        if final == "completed":
            self.value = value
        elif final == "aborted":
            self.error = (
                ExecutionTimeout() if self.reason == "timeout" else ExecutionAborted(self.reason)
            )
        elif final == "cancelled":
            self.error = ExecutionCancelled(self.reason)
        else:
            self.error = error
            self.error_tb = error.__traceback__ if error is not None else None
        return final

    def finish(self) -> None:
        """Wake every waiter; call after ``execution_end`` was published."""
        self.finished.set()

    def raise_or_return(self) -> R:
        """The value, or raise the error (what ``await handle.result`` does)."""
        if self.error is not None:
            raise self.error.with_traceback(self.error_tb)
        return cast(R, self.value)

    def iteration_error(self) -> BaseException | None:
        """What ``async for event in handle`` raises after ``execution_end``."""
        if self.status in ("failed", "error") and self.error is not None:
            return self.error.with_traceback(self.error_tb)
        return None

    async def end_iteration(self, subscription: EventSubscription) -> None:
        """The end of ``async for event in handle``, after ``execution_end``.

        Releases the loop's subscription, waits until the outcome is settled, and
        raises `iteration_error` if there is one.
        """
        subscription.close()
        finished = self.finished
        if not finished.is_set():
            await finished.wait()
        # Else no schedule point: the end was seen after a cancellation check,
        # and the engine sets `finished` before any subscriber can run.
        error = self.iteration_error()
        if error is not None:
            raise error from None


class ExecutionHandle(Generic[R], metaclass=NoPublicConstructor):
    """A running (or finished) execution: its status, events, result and abort.

    Handles are handed out by sessions (``await session.send(...)``); they
    have no public constructor.

    Attributes:
        trace_id: A unique id for tracing this execution across systems.
        events: The execution's `EventBuffer`; subscribe to it any number of times.

    Example:
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["Hi!"]))) as session:
        ...         handle = await session.send("hello")
        ...         print(sum([1 async for _ in handle]) > 2)
        ...         print((await handle.result).response)
        >>> trio.run(main)
        True
        Hi!
    """

    _made_by: ClassVar = "session.send(), render() or spawn()"

    def __init__(
        self, events: EventBuffer, outcome: Outcome[R], *, trace_id: str | None = None
    ) -> None:
        self.events: EventBuffer = events
        self.trace_id: str = trace_id or new_id()
        self._outcome = outcome

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.trace_id[:8]} status={self._outcome.status}>"

    @property
    def status(self) -> Status:
        """``pending``, ``running``, or the terminal status, which never changes."""
        return self._outcome.status

    @property
    def done(self) -> bool:
        """Whether the status is terminal."""
        return self._outcome.done

    @property
    def reason(self) -> str | None:
        """Why the execution was aborted or cancelled, if it was."""
        return self._outcome.reason

    @property
    def result(self) -> _Result[R]:
        """An awaitable of the outcome; await it any number of times, from any task.

        It gives the value when the execution completed, and otherwise raises:
        `ExecutionAborted` (`ExecutionTimeout` for a timeout), `ExecutionCancelled`,
        `ModelError`, or the exception that failed the execution.
        """
        return _Result(self._outcome)

    async def wait(self) -> None:
        """Wait until the execution finished and its last event was published.

        Never raises the execution's error.
        """
        await self._outcome.finished.wait()

    def abort(self, reason: str | None = None) -> None:
        """End the execution now: status becomes ``aborted`` at once.

        In-flight model streams and tools are cancelled, pending confirmations
        end, and ``execution_end`` (``status="aborted"``) still reaches every
        subscriber. Idempotent; does nothing on a terminal handle.
        """
        self._outcome.abort(reason)

    def __aiter__(self) -> AsyncIterator[Event]:
        """Iterate over every event, from the first to ``execution_end``.

        Each iteration opens its own replaying subscription. After
        ``execution_end`` it raises the execution's error if the status is
        ``failed`` or ``error``; otherwise it just ends.
        """
        # The subscription's own ``async for`` (every event there in one checkpoint,
        # cancellation seen at each), ending with what the outcome says.
        return end_with(self.events.subscribe(), self._outcome.end_iteration)


def new_handle(
    events: EventBuffer, *, trace_id: str | None = None
) -> tuple[ExecutionHandle[Any], Outcome[Any]]:
    """A pending handle over ``events`` and the outcome that settles it."""
    outcome: Outcome[Any] = Outcome()
    return ExecutionHandle._create(events, outcome, trace_id=trace_id), outcome


def outcome_of(handle: ExecutionHandle[R]) -> Outcome[R]:
    """The outcome behind a handle (a procedure's timeout bounds it)."""
    return handle._outcome


class _Result(Generic[R]):
    """The awaitable behind ``handle.result``."""

    __slots__ = ("_outcome",)

    def __init__(self, outcome: Outcome[R]) -> None:
        self._outcome = outcome

    def __await__(self) -> Generator[Any, None, R]:
        return self._wait().__await__()

    async def _wait(self) -> R:
        await self._outcome.finished.wait()
        return self._outcome.raise_or_return()


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


@final
class SessionExecutionHandle(ExecutionHandle[SendResult]):
    """The handle of one execution of a session (``send``, ``render``, ``spawn``).

    Sessions hand these out; there is no public constructor.

    Attributes:
        session_id: The session it runs in.
        execution_id: Its own id; also on every one of its events.
    """

    def __init__(
        self,
        events: EventBuffer,
        outcome: Outcome[SendResult],
        *,
        session_id: str,
        execution_id: str,
        control: ExecutionControl,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(events, outcome, trace_id=trace_id)
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


def new_session_handle(
    events: EventBuffer, *, session_id: str, execution_id: str, control: ExecutionControl
) -> tuple[SessionExecutionHandle, Outcome[SendResult]]:
    """A pending session handle and the outcome the engine settles it with."""
    outcome: Outcome[SendResult] = Outcome()
    handle = SessionExecutionHandle._create(
        events, outcome, session_id=session_id, execution_id=execution_id, control=control
    )
    return handle, outcome


def as_message(message: object, where: str) -> Message:
    """Accept a `Message` or a str (a user message); refuse anything else."""
    if isinstance(message, Message):
        return message
    if isinstance(message, str):
        # What Message("user", message) makes, without re-checking what is known valid.
        return built_message("user", (TextBlock(message),), next_id())
    raise TypeError(f"{where}() takes a Message or a str, got {type(message).__name__}")
