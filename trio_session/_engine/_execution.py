"""The tick loop of one execution.

An `Execution` is one ``send``/``render``/``spawn``: a task in its session's
nursery (or, for a child spawned by a tool, in the parent execution's nursery)
with its own nursery and cancel scope (the handle's). Each tick compiles the
model input, streams the model's reply into events, runs the requested tools
concurrently, commits the tick atomically, and decides whether to go on.

The engine knows its session only through `ExecutionHost`; it never imports
the session module.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, final

import trio

from .._agent import Agent
from .._buffer import EventBuffer, SeqCounter, emitter, publisher_of
from .._errors import ModelError, SessionClosed, StoreError
from .._events import (
    CustomEvent,
    ExecutionEnd,
    ExecutionStart,
    ResultEvent,
)
from .._handle import ExecutionControl, Status, new_session_handle
from .._messages import Message, new_id
from .._result import SendResult
from .._timeline import Timeline
from .._tools import Confirmations, ConfirmationWait, Decision
from .._tracing import NO_TRACE, start_execution
from .._usage import Usage
from ..stores._base import PendingConfirmation
from ._confirm import restore
from ._hooks import call_hook
from ._spawn import adopt
from ._tick import Tick
from ._ticks import run_ticks
from ._tool_calls import unfinished
from ._transcript import Transcript
from ._unwrap import bounded, logger, reraise, unwrap

__all__ = ["Execution", "ExecutionHost"]

_execution_start = emitter(ExecutionStart)
_execution_end = emitter(ExecutionEnd)
_result_event = emitter(ResultEvent)


class ExecutionHost(Protocol):
    """What an execution needs from the session it runs in."""

    id: str
    seq: SeqCounter
    timeline: Timeline
    state: dict[str, Any]
    usage: Usage
    max_buffered_events: int | None
    pending_message: Message | None
    """The assistant message of a tick waiting for confirmation (SPEC §7), if any."""
    pending_confirmations: tuple[PendingConfirmation, ...]
    """That tick's calls still waiting for an answer, as the store keeps them."""

    @property
    def owner(self) -> Any:
        """The session object, as hooks and tools see it."""
        ...

    def take_queued(self) -> list[Message]:
        """Remove and return the messages waiting on the session."""
        ...

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Keep messages on the session for its next execution (hooks already ran)."""
        ...

    def notify_message(self, message: Message) -> None:
        """Run the agent's ``on_message`` hook for a message entering the session.

        A sync hook runs now (its error reaches the caller, nothing queued);
        an async hook's awaitable waits for `message_hook`.
        """
        ...

    async def message_hook(self, message: Message) -> None:
        """Await the async ``on_message`` hook of ``message``, if one is pending."""
        ...

    def drop_message_hooks(self, messages: Sequence[Message]) -> None:
        """Close the pending async ``on_message`` hooks of ``messages`` unawaited."""
        ...

    def remembered(self, tool_name: str) -> Decision | None:
        """An ``always`` answer given earlier for this tool."""
        ...

    def remember(self, tool_name: str, decision: Decision) -> None:
        """Keep an ``always`` answer for the rest of the session."""
        ...

    def hold(self, message: Message, confirmation: PendingConfirmation) -> None:
        """Keep ``message``'s tick pending, and ``confirmation`` among its waiting calls."""
        ...

    def release(self, tool_use_id: str) -> None:
        """The call was answered: it no longer waits."""
        ...

    def clear_pending(self) -> None:
        """The pending tick was committed: nothing waits anymore."""
        ...

    @property
    def persistent(self) -> bool:
        """Whether ``save`` does anything (a store is configured)."""
        ...

    async def save(self) -> None:
        """Persist the session (after a tick's commit, at the end of an execution).

        Raises:
            StoreError: The store failed, after bounded retries.
        """
        ...

    async def reserve_seq(self) -> None:
        """Save a new ``seq`` high-water mark if the numbers handed out near the stored one."""
        ...

    def reserve_seq_soon(self) -> None:
        """Like `reserve_seq`, in the background: for numbers handed out between checkpoints."""
        ...

    def execution_finished(self, execution: Execution) -> None:
        """Called once, after ``execution_end`` was published."""
        ...


class Execution:
    """One execution of a session: the handle's engine side, and its lifecycle.

    Implements `ExecutionControl` for its `SessionExecutionHandle`, settles
    the handle through its `Outcome`, and runs the tick loop. The model
    stream is assembled by `Assembler`, a tick's tools run in `_tool_calls`
    (with `_confirm`), and spawned children are forwarded by `_spawn`.
    """

    def __init__(
        self,
        host: ExecutionHost,
        agent: Agent,
        *,
        messages: Sequence[Message] = (),
        props: Mapping[str, Any] | None = None,
        max_ticks: int | None = None,
        parent: Execution | None = None,
    ) -> None:
        self.host = host
        self.agent = agent
        self.id = new_id()
        self.parent = parent
        self.props: Mapping[str, Any] = dict(props or {})
        self.max_ticks = max_ticks if max_ticks is not None else agent.max_ticks
        self.buffer = EventBuffer(
            session_id=host.id,
            execution_id=self.id,
            max_buffered_events=host.max_buffered_events,
            seq=host.seq,
            reserved=True,
        )
        self.publisher = publisher_of(self.buffer)
        # The handle reaches the execution through a switch, turned to `_Ended`
        # at the end: no reference cycle outlives the execution.
        self.control = _Switch(self)
        self.handle, self.outcome = new_session_handle(
            self.buffer, session_id=host.id, execution_id=self.id, control=self.control
        )
        # A child shares its root's confirmations, so the root's handle answers them.
        self.confirmations: Confirmations = (
            parent.confirmations if parent is not None else Confirmations()
        )
        # What `pending_confirmations` lists, shared with the children like the above.
        self.asked: dict[str, PendingConfirmation] = parent.asked if parent is not None else {}
        # The restored confirmations not yet reached by their tick (registered already).
        self.restored: dict[str, ConfirmationWait] = {}
        self.resumed: Tick | None = None
        """The pending tick a restart left, run as this execution's first tick."""
        if parent is None and host.pending_message is not None:
            self.resumed = restore(self)
        self.transcript = Transcript(host, self.publisher, messages)
        self.current_tick = 0
        """The tick now running; 0 before the first."""
        self._nursery: trio.Nursery | None = None
        self.children: set[Execution] = set()
        self._started = False
        self.trace = NO_TRACE

    def __repr__(self) -> str:
        return f"<Execution {self.id[:8]} {self.handle.status} tick={self.current_tick}>"

    # -- ExecutionControl ---------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether ``execution_end`` was published."""
        return self.outcome.finished.is_set()

    @property
    def running(self) -> bool:
        """Whether the execution's nursery is open to children."""
        return self._nursery is not None and not self.buffer.closed

    @property
    def nursery(self) -> trio.Nursery:
        """The execution's own nursery (tools' children run here)."""
        if self._nursery is None:
            raise RuntimeError("the execution has not started")
        return self._nursery

    @property
    def usage(self) -> Usage:
        """Tokens and ticks of this execution so far."""
        return self.transcript.usage

    @property
    def accepting(self) -> bool:
        """Whether a queued message will still be answered by this execution."""
        return self.transcript.accepting and not self.handle.done

    def queue_message(self, message: Message) -> None:
        """Queue into this execution, or onto the session once it is past its last tick."""
        self.host.notify_message(message)
        self.accept(message)

    def accept(self, message: Message) -> None:
        """Take a message whose ``on_message`` hook already ran."""
        if self.accepting:
            self.transcript.queue(message)
        else:
            self.host.enqueue([message])

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None:
        """Answer a pending confirmation of this execution or of its children."""
        self.confirmations.submit(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )

    def pending_confirmations(self) -> tuple[PendingConfirmation, ...]:
        """The calls of this execution (and its children) waiting for an answer."""
        return tuple(p for i, p in self.asked.items() if i in self.confirmations)

    def update_props(self, props: Mapping[str, Any]) -> None:
        """New props, seen from the next tick on (``render()`` while running)."""
        self.props = dict(props)

    # -- spawn --------------------------------------------------------------

    def adopt(self, child: Execution, origin_tool_use_id: str | None) -> None:
        """Run ``child`` in this execution's nursery, forwarding its events here."""
        adopt(self, child, origin_tool_use_id)

    def emit_custom(self, name: str, data: Any) -> None:
        """Publish a ``custom`` event (what ``ToolContext.emit`` does)."""
        self.publisher.emit(CustomEvent, name=name, data=data)
        self.host.reserve_seq_soon()

    # -- the run ------------------------------------------------------------

    async def run(self) -> None:
        """Run the execution to its end.

        Every outcome is recorded on the handle; only `trio.Cancelled` from an
        enclosing scope (and KeyboardInterrupt / SystemExit) propagate, after
        ``execution_end`` was published.
        """
        if not self._started:
            self.start()
        self.outcome.set_running()
        with self.trace:
            try:
                status, value, error, reason = await self._run_guarded()
            except trio.Cancelled:
                # Shielded so the cancellation cannot cut the ending short; `_finish`
                # bounds each of its awaits (the save, the on_error hook).
                with trio.CancelScope(shield=True):
                    await self._finish("cancelled", None, None, self._outside_reason())
                raise
            except BaseException as exc:
                # Shielded: a cancellation arriving now must not replace ``exc``.
                with trio.CancelScope(shield=True):
                    await self._finish("failed", None, exc, None)
                raise
            await self._finish(status, value, error, reason)

    def start(self) -> None:
        """Publish ``execution_start``; called when the execution is scheduled.

        Publishing it before the task runs means that anything queued in
        between (``message_queued``) follows it in the stream. The handle is
        ``running`` from here on: the caller who gets it never sees ``pending``.
        """
        self._started = True
        self.outcome.set_running()
        # Started here, in the caller's context: a child spawned by a tool is
        # a child of that tool's span, and the handle has its trace id at once.
        self.trace = start_execution(
            agent=self.agent.name,
            model=self.agent.model,
            session_id=self.host.id,
            execution_id=self.id,
        )
        if self.trace.trace_id is not None:
            self.handle.trace_id = self.trace.trace_id
        _execution_start(
            self.publisher, parent_execution_id=self.parent.id if self.parent else None
        )

    def _outside_reason(self) -> str:
        return "parent execution ended" if self.parent is not None else "cancelled from outside"

    async def _run_guarded(
        self,
    ) -> tuple[Status, SendResult | None, BaseException | None, str | None]:
        try:
            with self.outcome.scope:
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        value = await run_ticks(self)
                        # Children and pending hook tasks end with their execution
                        # (usually there are none, and nothing to cancel).
                        if self.children:
                            self._end_children("parent execution ended")
                        if nursery.child_tasks:
                            nursery.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    reraise(unwrap(group))
                if self.agent.on_complete is not None:
                    await call_hook(self.agent.on_complete, value)
                return "completed", value, None, None
            # Only reached when the handle's scope absorbed a cancellation:
            # abort() or _cancel() already set the status; otherwise a timeout.
            return "aborted", None, None, "timeout" if self.outcome.timed_out() else None
        except ModelError as exc:
            return "error", None, exc, None
        except Exception as exc:
            return "failed", None, exc, None

    async def _finish(
        self,
        status: Status,
        value: SendResult | None,
        error: BaseException | None,
        reason: str | None,
    ) -> None:
        """Save, settle the handle and publish the last events, on every path."""
        self.transcript.accepting = False
        outcome = self.outcome
        # abort() and cancel() settle the status at once; the salvaged tick names it.
        ended = outcome.status if outcome.done else status
        if not self._keeps_pending(ended):
            self._salvage_tick(ended)
        self.transcript.return_pending()
        if self.host.persistent:
            # Before execution_end and the final status, so that a caller who saw
            # the end can rely on the session being stored.
            with trio.CancelScope(shield=True):
                try:
                    await self.host.save()
                except StoreError as exc:
                    # save() logged it; a completed execution is not completed anymore.
                    if status == "completed":
                        status, value, error, reason = "failed", None, exc, None
        final = outcome.settle(status, value, error, reason)
        failure = outcome.error
        if final in ("failed", "error") and failure is not None and self.agent.on_error is not None:
            with trio.CancelScope(shield=True), bounded("Agent.on_error"):
                try:
                    await call_hook(self.agent.on_error, failure)
                except Exception:
                    logger.exception("Agent.on_error raised while handling an error")
        if final == "completed":
            _result_event(self.publisher, result=outcome.value)
        failure = outcome.error if final in ("failed", "error") else None
        if self.trace is not NO_TRACE:
            self.trace.finish(
                final,
                self.transcript.usage,
                stop_reason=outcome.value.stop_reason if outcome.value is not None else None,
                error=failure,
                reason=outcome.reason,
            )
        _execution_end(
            self.publisher,
            status=final,
            reason=outcome.reason,
            error=f"{type(failure).__name__}: {failure}" if failure is not None else None,
            usage=self.transcript.usage,
            new_messages=tuple(self.transcript.new_messages),
        )
        outcome.finish()
        # The handle no longer refers to the execution, so a finished execution
        # nobody holds is freed by refcounting, with its buffer and events.
        self.control.target = _Ended(self.host, self.confirmations, self.current_tick)
        self.host.execution_finished(self)

    def _keeps_pending(self, status: Status) -> bool:
        """Whether the tick in flight stays pending in the store, uncommitted.

        A tick waiting for confirmation outlives its execution only when the
        execution was cancelled from outside (its session closed: the process
        is going down) and the session has a store: the next process restores
        it and answers it. Aborted or failed, it is committed like any tick
        cut short, its unanswered calls denied: it is never resurrected.
        """
        state = self.transcript.current or self.resumed
        host = self.host
        return (
            status == "cancelled"
            and host.persistent
            and bool(host.pending_confirmations)
            and state is not None
            and not state.committed
            and state.message is host.pending_message
        )

    def _salvage_tick(self, status: Status) -> None:
        """Commit a tick cut short after its model message was complete.

        The model's message and the tools that finished are kept; calls that
        did not finish get an error result, so no tool_use is left unanswered.
        """
        # A restored tick ended before it ran is ended the same way.
        state = self.transcript.current or self.resumed
        if state is None or state.committed or state.message is None:
            return
        unfinished(self, state, status)
        self.transcript.commit_tick(state)

    def _end_children(self, reason: str) -> None:
        for child in list(self.children):
            child.outcome.cancel(reason)


@final
class _Switch:
    """The `ExecutionControl` a handle holds: the execution, then `_Ended`."""

    __slots__ = ("target",)

    def __init__(self, target: ExecutionControl) -> None:
        self.target = target

    @property
    def current_tick(self) -> int:
        return self.target.current_tick

    def queue_message(self, message: Message) -> None:
        self.target.queue_message(message)

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None:
        self.target.submit_tool_result(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )


@final
class _Ended:
    """The `ExecutionControl` of a finished execution's handle.

    It does what `Execution` does once it ended (a queued message waits on
    the session; an answer goes to the confirmations, which know no pending
    call of a finished execution) without holding the execution.
    """

    __slots__ = ("_confirmations", "_host", "current_tick")

    def __init__(self, host: ExecutionHost, confirmations: Confirmations, tick: int) -> None:
        # Weak: the host keeps the last handle, which holds this (no reference cycle).
        self._host = weakref.ref(host)
        self._confirmations = confirmations
        self.current_tick = tick

    def queue_message(self, message: Message) -> None:
        host = self._host()
        if host is None:
            raise SessionClosed("the session of this finished execution is gone")
        host.notify_message(message)
        host.enqueue([message])

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None:
        self._confirmations.submit(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )
