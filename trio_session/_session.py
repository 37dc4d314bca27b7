"""Sessions: a long-lived conversation that runs one execution at a time."""

from __future__ import annotations

import copy
import inspect
import logging
import os
import time
import uuid
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar, overload

import attrs
import trio

from ._agent import Agent
from ._buffer import EventSubscription, SeqCounter, SessionChain
from ._engine import Execution, current_tool_call, reraise, unwrap
from ._errors import (
    MaxSpawnDepth,
    SerializationError,
    SessionClosed,
    StoreError,
    UnknownTool,
    UnknownToolUse,
)
from ._events import CustomEvent
from ._handle import SessionExecutionHandle, as_message
from ._messages import ContentBlock, Message
from ._output import OutputSpec
from ._procedure import Procedure
from ._timeline import Timeline
from ._tools import Decision, ToolContext
from ._usage import Usage
from .stores import PendingConfirmation, SessionSnapshot, SessionStore, SQLiteStore
from .stores._base import check_timeline

__all__ = ["MAX_SPAWN_DEPTH", "Session", "open_session"]

logger = logging.getLogger("trio_session")

MAX_SPAWN_DEPTH: Final = 10
"""How deeply child sessions may nest."""

SAVE_ATTEMPTS: Final = 3
"""How many times a save is tried before it fails with `StoreError`."""

SAVE_TIMEOUT: Final = 30.0
"""Seconds one save attempt may take; a slower one counts as failed (and is logged)."""

SAVE_BACKOFF: Final = 0.5
"""Seconds before the first retry of a failed save; doubled for each further retry."""

SEQ_BLOCK: Final = 1024
"""How many ``seq`` numbers a save reserves ahead, so a crash never lets one be reused."""

SessionStatus = Literal["idle", "running", "closed"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _alive(ref: weakref.ref[Session], session_id: str) -> Session:
    session = ref()
    if session is None:
        # As a finished handle's control says it (_Ended): a session nobody holds is closed.
        raise SessionClosed(f"session {session_id!r} is gone: nothing holds it any more")
    return session


def _bound_procedure(
    method: Callable[Concatenate[Session, _P], Awaitable[_T]], session: Session, name: str
) -> Procedure[_P, _T]:
    # The session is referred to weakly (it holds its procedures): no reference cycle, so
    # a session nobody holds is freed at once. Typed through the unbound method, so that
    # mypy keeps each procedure's signature.
    ref = weakref.ref(session)
    session_id = session.id

    def bound(*args: _P.args, **kwargs: _P.kwargs) -> Awaitable[_T]:
        return method(_alive(ref, session_id), *args, **kwargs)

    bound.__name__ = bound.__qualname__ = name
    bound.__doc__ = method.__doc__
    return Procedure(bound, name=name)


class _TimelineView(Sequence[Message]):
    """A read-only view of the session's committed messages."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Message]) -> None:
        self._items = items

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Message]: ...
    def __getitem__(self, index: int | slice) -> Message | Sequence[Message]:
        if isinstance(index, slice):
            return tuple(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Message]:
        return iter(tuple(self._items))

    def __repr__(self) -> str:
        return f"Timeline({len(self._items)} messages)"


class _Conversation:
    """The session's state as its executions see it (the engine's `ExecutionHost`)."""

    def __init__(
        self,
        session: Session,
        *,
        session_id: str,
        nursery: trio.Nursery,
        store: SessionStore | None,
        snapshot: SessionSnapshot | None,
        max_buffered_events: int | None,
    ) -> None:
        # Weak, as the session's procedures refer to it (see _bound_procedure): a
        # closed session nobody holds is freed by refcounting, with its history,
        # not by the cyclic collector, whose full passes a long history makes slow.
        self._session = weakref.ref(session)
        # Where async on_message hooks of an idle session run.
        self.nursery = nursery
        self.id = session_id
        self.store = store
        self.max_buffered_events = max_buffered_events
        now = time.time()
        if snapshot is not None:
            self.timeline = Timeline(snapshot.timeline)
            self.queue: list[Message] = list(snapshot.queued_messages)
            self.state: dict[str, Any] = copy.deepcopy(dict(snapshot.state))
            self.usage = snapshot.usage
            self.seq = SeqCounter(snapshot.last_seq)
            self.created_at = snapshot.created_at
            self.always: dict[str, Decision] = dict(snapshot.remembered)
            # A tick that waited for confirmation when the session last closed:
            # kept as stored, so that saving again does not lose it.
            self.pending_message: Message | None = snapshot.pending_message
            self.pending_confirmations: tuple[PendingConfirmation, ...] = (
                snapshot.pending_confirmations
            )
        else:
            self.timeline = Timeline()
            self.queue = []
            self.state = {}
            self.usage = Usage()
            self.seq = SeqCounter(0)
            self.created_at = now
            self.always = {}
            self.pending_message = None
            self.pending_confirmations = ()
        # The high-water mark of seq the store holds: every number handed out
        # stays at or below it (a crash may leave a gap, never a reuse).
        self.reserved = self.seq.last
        # The running execution. Once it finished, only its handle is kept (in
        # `last`): a finished execution refers to this conversation, which would
        # otherwise make the two a reference cycle that outlives the session.
        self.current: Execution | None = None
        self.last: SessionExecutionHandle | None = None
        # Async on_message hooks not yet awaited, by message id.
        self.hooks: dict[str, Awaitable[Any]] = {}
        # One save at a time, each writing the state as it is when it starts: a
        # slower earlier save never overwrites a later one (several confirmations
        # of one tick save concurrently).
        self.saving = trio.Lock()
        # A reservation save started by reserve_seq_soon() is in flight.
        self.reserving = False

    @property
    def session(self) -> Session:
        return _alive(self._session, self.id)

    @property
    def owner(self) -> Session:
        return self.session

    @property
    def persistent(self) -> bool:
        return self.store is not None

    def take_queued(self) -> list[Message]:
        queued, self.queue = self.queue, []
        return queued

    def enqueue(self, messages: Sequence[Message]) -> None:
        self.queue.extend(messages)

    def notify_message(self, message: Message) -> None:
        # One rule on every path: a sync hook runs here, in the caller, and its
        # error reaches the caller before anything is queued; an async hook is
        # awaited by the execution that delivers the message (message_hook).
        hook = self.session.agent.on_message
        if hook is None:
            return
        result = hook(message, self.session)
        if inspect.isawaitable(result):
            self.hooks[message.id] = result

    def drop_message_hooks(self, messages: Sequence[Message]) -> None:
        for message in messages:
            _discard(self.hooks.pop(message.id, None))

    async def message_hook(self, message: Message) -> None:
        awaitable = self.hooks.pop(message.id, None)
        if awaitable is not None:
            await awaitable

    def remembered(self, tool_name: str) -> Decision | None:
        return self.always.get(tool_name)

    def remember(self, tool_name: str, decision: Decision) -> None:
        self.always[tool_name] = decision

    def hold(self, message: Message, confirmation: PendingConfirmation) -> None:
        self.pending_message = message
        # Kept in the order of the tick's calls, however their confirmations raced.
        order = {block.tool_use_id: i for i, block in enumerate(message.tool_uses)}
        self.pending_confirmations = tuple(
            sorted(
                (*self.pending_confirmations, confirmation),
                key=lambda p: order.get(p.tool_use_id, len(order)),
            )
        )

    def release(self, tool_use_id: str) -> None:
        self.pending_confirmations = tuple(
            p for p in self.pending_confirmations if p.tool_use_id != tool_use_id
        )

    def clear_pending(self) -> None:
        self.pending_message = None
        self.pending_confirmations = ()

    def snapshot(self, last_seq: int | None = None) -> SessionSnapshot:
        return SessionSnapshot(
            session_id=self.id,
            timeline=self.timeline.view(),
            queued_messages=tuple(self.queue),
            state=copy.deepcopy(self.state),
            usage=self.usage,
            last_seq=self.seq.last if last_seq is None else last_seq,
            created_at=self.created_at,
            updated_at=time.time(),
            pending_message=self.pending_message,
            pending_confirmations=self.pending_confirmations,
            remembered=dict(self.always),
        )

    async def reserve_seq(self) -> None:
        """Save a new ``seq`` reservation when the numbers handed out near the stored one."""
        if self._near_reservation():
            await self.save()

    def reserve_seq_soon(self) -> None:
        """Start saving a new reservation, in the background, if the numbers near it.

        For numbers handed out between the engine's checkpoints (a child's forwarded
        events, a tool's custom events): the save runs in the session's nursery
        while the emitter goes on, with the rest of the block as headroom.
        """
        if self.reserving or not self._near_reservation():
            return
        try:
            self.nursery.start_soon(self._reserve_in_background)
        except RuntimeError:
            return  # the session's nursery is closing: its last save covers the numbers
        self.reserving = True

    async def _reserve_in_background(self) -> None:
        try:
            await self.reserve_seq()
        except StoreError:
            pass  # save() logged it; the next checkpoint's reservation raises it
        finally:
            self.reserving = False

    def _near_reservation(self) -> bool:
        return self.store is not None and self.seq.last > self.reserved - SEQ_BLOCK // 2

    async def save(self, *, exact: bool = False) -> None:
        """Save the session, retried with backoff; `StoreError` when every attempt failed.

        ``last_seq`` is saved as a reservation ``SEQ_BLOCK`` ahead, except with
        ``exact`` (the session's close: no number will be handed out anymore).
        """
        store = self.store
        if store is None:
            return
        async with self.saving:
            await self._save(store, exact=exact)

    async def _save(self, store: SessionStore, *, exact: bool) -> None:
        if exact:
            last_seq = self.seq.last
        else:
            self.reserved = last_seq = max(self.reserved, self.seq.last + SEQ_BLOCK)
        error: Exception | None = None
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            if attempt > 1:
                await trio.sleep(SAVE_BACKOFF * 2 ** (attempt - 2))
            with trio.move_on_after(SAVE_TIMEOUT) as bound:
                try:
                    # A fresh snapshot each time: the next attempt writes all there is.
                    await store.save(self.snapshot(last_seq))
                except (SerializationError, StoreError) as exc:
                    # The state cannot be written at all, or the store says its refusal is
                    # final (the cluster's FencedOut: a newer lease holder owns the session):
                    # trying again cannot help.
                    error = exc
                    break
                except Exception as exc:
                    error = exc
                    logger.warning(
                        "saving session %r failed (attempt %d of %d)",
                        self.id,
                        attempt,
                        SAVE_ATTEMPTS,
                        exc_info=True,
                    )
                    continue
                return
            if bound.cancelled_caught:
                error = TimeoutError(f"{type(store).__name__}.save took over {SAVE_TIMEOUT:g} s")
                logger.warning(
                    "saving session %r was cut off after %g s (attempt %d of %d)",
                    self.id,
                    SAVE_TIMEOUT,
                    attempt,
                    SAVE_ATTEMPTS,
                )
        logger.error("saving session %r failed: %s: %s", self.id, type(error).__name__, error)
        raise StoreError(
            self.id, f"saving to {type(store).__name__} failed: {type(error).__name__}: {error}"
        ) from error

    def execution_finished(self, execution: Execution) -> None:
        if self.current is execution:
            self.current = None
            self.last = execution.handle
        self.session._execution_finished(execution)


def _discard(awaitable: Awaitable[Any] | None) -> None:
    """Close a hook's coroutine that will never be awaited (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _as_messages(message: object, where: str) -> list[Message]:
    if isinstance(message, Message | str):
        return [as_message(message, where)]
    if isinstance(message, Sequence) and not isinstance(message, bytes | bytearray):
        messages = []
        for i, item in enumerate(message):
            if not isinstance(item, Message | str):
                raise TypeError(
                    f"{where}() message[{i}] must be a Message or a str, got {type(item).__name__}"
                )
            messages.append(as_message(item, where))
        if not messages:
            raise ValueError(f"{where}() needs at least one message")
        return messages
    raise TypeError(
        f"{where}() takes a Message, a str or a sequence of them, got {type(message).__name__}"
    )


def _check_props(props: object, where: str) -> Mapping[str, Any] | None:
    if props is not None and not isinstance(props, Mapping):
        raise TypeError(f"{where}() props must be a mapping or None, got {type(props).__name__}")
    return props


def _check_max_ticks(max_ticks: object, where: str) -> int | None:
    if max_ticks is not None and (
        not isinstance(max_ticks, int) or isinstance(max_ticks, bool) or max_ticks < 1
    ):
        raise ValueError(f"{where}() max_ticks must be a positive int or None, got {max_ticks!r}")
    return max_ticks


class Session:
    """A long-lived conversation with an agent, run one execution at a time.

    Open one with `open_session`. ``send``, ``render`` and ``spawn`` are
    procedures: ``await session.send("hi")`` returns the execution's handle, and
    ``await session.send("hi").result`` its `SendResult`.

    Attributes:
        id: The session's id.
        agent: The agent it runs.
        send: ``(message, *, props=None, max_ticks=None, metadata=None, output_type=None)``
            -> handle. While an execution runs, the message joins it and its handle is
            returned (``output_type``, which replaces the agent's, applies to a new
            execution only).
        render: ``(props=None, *, max_ticks=None)`` -> handle: run with whatever is
            queued and no new message; while running, new props apply from the next tick.
        spawn: ``(agent, message=None, *, max_ticks=None)`` -> the child's handle.
            From a tool, the child runs inside the calling execution and its
            events are forwarded into it.

    Example:
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["Hello!"]))) as session:
        ...         result = await session.send("Hi").result
        ...         print(result.response)
        >>> trio.run(main)
        Hello!
    """

    def __init__(
        self,
        agent: Agent,
        *,
        session_id: str,
        nursery: trio.Nursery,
        store: SessionStore | None = None,
        snapshot: SessionSnapshot | None = None,
        max_buffered_events: int | None = None,
        parent: Session | None = None,
    ) -> None:
        self.id = session_id
        self.agent = agent
        self.parent = parent
        self._depth: int = parent._depth + 1 if parent is not None else 0
        self._nursery = nursery
        self._closed = False
        self._children: list[Session] = []
        self._core = _Conversation(
            self,
            session_id=session_id,
            nursery=nursery,
            store=store,
            snapshot=snapshot,
            max_buffered_events=max_buffered_events,
        )
        self._chain = SessionChain(session_id=session_id, seq=self._core.seq)
        self.send = _bound_procedure(Session._send, self, "send")
        self.render = _bound_procedure(Session._render, self, "render")
        self.spawn = _bound_procedure(Session._spawn, self, "spawn")

    def __repr__(self) -> str:
        return f"<Session {self.id!r} {self.status} {len(self._core.timeline)} messages>"

    # -- state --------------------------------------------------------------

    @property
    def status(self) -> SessionStatus:
        """``idle``, ``running`` (an execution is in progress) or ``closed``."""
        if self._closed:
            return "closed"
        current = self._core.current
        if current is not None and not current.finished:
            return "running"
        return "idle"

    @property
    def timeline(self) -> Sequence[Message]:
        """The committed messages, oldest first (a read-only view)."""
        return _TimelineView(self._core.timeline.items)

    @property
    def queued_messages(self) -> Sequence[Message]:
        """Messages waiting for the session's next execution."""
        return tuple(self._core.queue)

    @property
    def state(self) -> dict[str, Any]:
        """Free-form JSON-able state, persisted with the session; tools may change it."""
        return self._core.state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"Session.state must be a dict, got {type(value).__name__}")
        self._core.state = value

    @property
    def usage(self) -> Usage:
        """Tokens and ticks of every execution so far."""
        return self._core.usage

    @property
    def current_execution(self) -> SessionExecutionHandle | None:
        """The running execution's handle, else the last one's, else None."""
        current = self._core.current
        return current.handle if current is not None else self._core.last

    @property
    def pending_confirmations(self) -> tuple[PendingConfirmation, ...]:
        """Tool calls waiting for ``submit_tool_result``.

        While an execution runs, its own (and its spawned children's). Otherwise,
        with a store, the ones a previous process left pending (SPEC §7): the
        tick that asked is restored with them (in the order of its calls), and
        answering one resumes it.
        """
        current = self._core.current
        if current is not None and not current.finished:
            return current.pending_confirmations()
        return self._core.pending_confirmations

    @property
    def children(self) -> Sequence[Session]:
        """Child sessions that are still running."""
        return tuple(self._children)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the session's latest event."""
        return self._core.seq.last

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.id!r} is closed")

    # -- procedures ---------------------------------------------------------

    async def _send(
        self,
        message: Message | str | Sequence[Message | str],
        *,
        props: Mapping[str, Any] | None = None,
        max_ticks: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        output_type: Any = None,
    ) -> SessionExecutionHandle:
        self._check_open()
        messages = _as_messages(message, "send")
        if output_type is not None:
            OutputSpec.of(output_type)
        if props is not None:
            _check_props(props, "send")
        if max_ticks is not None:
            _check_max_ticks(max_ticks, "send")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise TypeError(
                    f"send() metadata must be a mapping or None, got {type(metadata).__name__}"
                )
            messages = [attrs.evolve(m, metadata={**m.metadata, **metadata}) for m in messages]
        notified: list[Message] = []
        try:
            for item in messages:
                self._core.notify_message(item)
                notified.append(item)
            current = self._core.current
            if not self._closed and (current is None or current.finished):
                # Idle: start at once, without the _join_or_start coroutine.
                return self._start(messages, props, max_ticks, output_type=output_type)
            return await self._join_or_start(messages, props, max_ticks, output_type)
        except BaseException:
            self._core.drop_message_hooks(notified)
            raise

    async def _render(
        self, props: Mapping[str, Any] | None = None, *, max_ticks: int | None = None
    ) -> SessionExecutionHandle:
        self._check_open()
        _check_props(props, "render")
        _check_max_ticks(max_ticks, "render")
        return await self._join_or_start([], props, max_ticks)

    async def _join_or_start(
        self,
        messages: Sequence[Message],
        props: Mapping[str, Any] | None,
        max_ticks: int | None,
        output_type: Any = None,
    ) -> SessionExecutionHandle:
        """One execution at a time: join the running one, or start the next."""
        while True:
            self._check_open()
            current = self._core.current
            if current is None or current.finished:
                return self._start(messages, props, max_ticks, output_type=output_type)
            if current.accepting:
                for item in messages:
                    current.accept(item)
                if props is not None:
                    current.update_props(props)
                return current.handle
            # Past its last tick: let it finish, then start the next one.
            await current.handle.wait()

    async def _spawn(
        self,
        agent: Agent,
        message: Message | str | Sequence[Message | str] | None = None,
        *,
        max_ticks: int | None = None,
    ) -> SessionExecutionHandle:
        self._check_open()
        if not isinstance(agent, Agent):
            raise TypeError(f"spawn() takes an Agent, got {type(agent).__name__}")
        messages = _as_messages(message, "spawn") if message is not None else []
        _check_max_ticks(max_ticks, "spawn")
        if self._depth + 1 > MAX_SPAWN_DEPTH:
            raise MaxSpawnDepth(
                f"spawn() from session {self.id!r} would nest {self._depth + 1} levels deep; "
                f"the limit is {MAX_SPAWN_DEPTH}"
            )
        call = current_tool_call.get()
        parent_execution = (
            call.execution
            if call is not None and call.execution.host is self._core and call.execution.running
            else None
        )
        nursery = parent_execution.nursery if parent_execution is not None else self._nursery
        child = Session(
            agent,
            session_id=uuid.uuid4().hex,
            nursery=nursery,
            max_buffered_events=self._core.max_buffered_events,
            parent=self,
        )
        self._children.append(child)
        try:
            return child._start(
                messages,
                None,
                max_ticks,
                parent=parent_execution,
                origin_tool_use_id=call.tool_use_id if parent_execution and call else None,
            )
        except BaseException:
            self._children.remove(child)
            raise

    def _start(
        self,
        messages: Sequence[Message],
        props: Mapping[str, Any] | None,
        max_ticks: int | None,
        *,
        parent: Execution | None = None,
        origin_tool_use_id: str | None = None,
        output_type: Any = None,
    ) -> SessionExecutionHandle:
        agent = self.agent
        if output_type is not None:
            agent = attrs.evolve(agent, output_type=output_type)
        execution = Execution(
            self._core,
            agent,
            messages=messages,
            props=props,
            max_ticks=max_ticks,
            parent=parent,
        )
        if parent is not None:
            parent.adopt(execution, origin_tool_use_id)
        else:
            self._nursery.start_soon(execution.run)
            execution.start()
        # Only once the task is scheduled: a failed start leaves the session idle.
        self._core.current = execution
        self._chain.append(execution.buffer)
        return execution.handle

    def _execution_finished(self, execution: Execution) -> None:
        # A spawned child runs one execution and closes with it.
        if self.parent is not None and not self._closed:
            self._closed = True
            self._chain.end()
            if self.parent is not None and self in self.parent._children:
                self.parent._children.remove(self)

    # -- methods ------------------------------------------------------------

    def queue(self, message: Message | str) -> None:
        """Queue a message without starting an execution.

        The agent's ``on_message`` hook runs. While an execution runs, the
        message is delivered into it at its next tick; otherwise it waits for
        the next ``send`` or ``render``.

        Raises:
            SessionClosed: The session is closed.
            TypeError: ``message`` is neither a `Message` nor a str.
        """
        self._check_open()
        item = as_message(message, "queue")
        current = self._core.current
        if current is not None and current.accepting:
            current.queue_message(item)
        else:
            self._core.notify_message(item)
            self._core.queue.append(item)

    async def dispatch(self, tool_name: str, input: Mapping[str, Any]) -> tuple[ContentBlock, ...]:
        """Run one of the agent's tools directly, without the model.

        No confirmation is asked: the caller is the user. Tools with
        ``audience="user"`` are reachable only this way. Custom events the tool
        emits go to the running execution's stream, if one runs.

        Raises:
            UnknownTool: The agent has no tool of that name.
            InvalidToolArguments: ``input`` does not fit the tool's schema.
            Exception: Whatever the tool's handler raised.

        Example:
            >>> import trio
            >>> from trio_session import Agent, ScriptedModel, open_session, tool
            >>> @tool
            ... def get_weather(city: str) -> str:
            ...     '''Get the weather for a city.'''
            ...     return f"Sunny in {city}"
            >>> async def main():
            ...     agent = Agent(ScriptedModel([]), tools=[get_weather])
            ...     async with open_session(agent) as session:
            ...         blocks = await session.dispatch("get_weather", {"city": "Oslo"})
            ...         print(blocks[0].text)
            >>> trio.run(main)
            Sunny in Oslo
        """
        self._check_open()
        if not isinstance(tool_name, str):
            raise TypeError(f"dispatch() tool_name must be a str, got {type(tool_name).__name__}")
        if not isinstance(input, Mapping):
            raise TypeError(f"dispatch() input must be a mapping, got {type(input).__name__}")
        found = self.agent.tool(tool_name)
        if found is None:
            names = ", ".join(t.name for t in self.agent.tools) or "none"
            raise UnknownTool(
                f"agent {self.agent.name!r} has no tool {tool_name!r} (tools: {names})"
            )
        current = self._core.current
        running = current is not None and not current.finished

        def emit(name: str, data: Any) -> None:
            if running and current is not None and not current.buffer.closed:
                current.publisher.emit(CustomEvent, name=name, data=data)

        context = ToolContext(
            session=self,
            execution=current.handle if running and current is not None else None,
            tool_use_id=f"dispatch_{uuid.uuid4().hex[:16]}",
            tick=current.current_tick if running and current is not None else 0,
            props=current.props if running and current is not None else {},
            state=self.state,
            emit_fn=emit,
            spawn_fn=self.spawn,
        )
        return await found.run(context, input)

    async def interrupt(
        self, message: Message | str | None = None, *, reason: str | None = None
    ) -> SessionExecutionHandle | None:
        """Abort the running execution (if any); with a message, send it.

        Returns:
            The new execution's handle when a message was given, else None.

        Raises:
            SessionClosed: The session is closed.
        """
        self._check_open()
        if message is not None:
            as_message(message, "interrupt")
        current = self._core.current
        if current is not None and not current.finished:
            current.handle.abort(reason or "interrupted")
            await current.handle.wait()
        if message is None:
            return None
        return await self.send(message)

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None = None,
        reason: str | None = None,
        always: bool = False,
    ) -> None:
        """Answer a pending confirmation, as the running execution's handle does.

        With an execution running, it answers through that execution. With none,
        it answers a confirmation restored from the store after a restart: it
        starts an execution (then ``current_execution``) that runs or denies the
        tool, waits for the tick's other pending calls, commits the tick and goes
        on with the model. Arguments are those of
        `SessionExecutionHandle.submit_tool_result`.

        Raises:
            SessionClosed: The session is closed.
            UnknownToolUse: No confirmation with that id is pending (never asked,
                or already answered).
            InvalidToolArguments: ``modified_arguments`` do not fit the tool's
                schema; nothing is started and the confirmation stays pending.
            TypeError: A badly typed answer.

        Example:
            >>> import trio
            >>> from trio_session import Agent, ScriptedModel, open_session, tool
            >>> from trio_session.models import Reply
            >>> @tool(requires_confirmation=True)
            ... def rm(path: str) -> str:
            ...     '''Delete a file.'''
            ...     return f"deleted {path}"
            >>> model = ScriptedModel([Reply(tool_calls=[("rm", {"path": "/x"})]), "Done."])
            >>> async def main():
            ...     async with open_session(Agent(model, tools=[rm])) as session:
            ...         handle = await session.send("delete /x")
            ...         async for event in handle:
            ...             if event.type == "tool_confirmation_required":
            ...                 session.submit_tool_result(event.tool_use_id, approved=True)
            ...         print((await handle.result).response)
            >>> trio.run(main)
            Done.
        """
        self._check_open()
        current = self._core.current
        if current is not None and not current.finished:
            current.handle.submit_tool_result(
                tool_use_id,
                approved=approved,
                modified_arguments=modified_arguments,
                reason=reason,
                always=always,
            )
            return
        record = next(
            (p for p in self._core.pending_confirmations if p.tool_use_id == tool_use_id), None
        )
        if record is None:
            raise UnknownToolUse(
                f"no confirmation is pending for tool use {tool_use_id!r} "
                "(unknown id, or already answered)"
            )
        # Checked before anything starts: a refused answer leaves it all as it was.
        Decision(approved, modified_arguments=modified_arguments, reason=reason, always=always)
        found = self.agent.tool(record.name)
        if found is not None and modified_arguments is not None:
            found.validate(modified_arguments)
        handle = self._start([], None, None)
        handle.submit_tool_result(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )

    def subscribe(
        self, *, after_seq: int | None = None, types: Collection[str] | None = None
    ) -> EventSubscription:
        """Follow every execution of the session, from what it still holds.

        Replays the latest execution's events (after ``after_seq``), then
        follows live events across executions; ends when the session closes.

        Raises:
            SessionClosed: The session is closed.
        """
        self._check_open()
        return self._chain.subscribe(types=types, after_seq=after_seq)

    def snapshot(self) -> SessionSnapshot:
        """The session's persistent state now.

        Raises:
            SessionClosed: The session is closed.
        """
        self._check_open()
        return self._core.snapshot()

    async def aclose(self) -> None:
        """Close the session: cancel a running execution (status ``cancelled``).

        Idempotent. Afterwards every other method raises `SessionClosed`.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._close_now("session closed")
        call = current_tool_call.get()
        current = self._core.current
        if current is not None and not (call is not None and call.execution is current):
            await current.handle.wait()
        for child in list(self._children):
            await child._wait_idle()
        self._chain.end()

    def _close_now(self, reason: str) -> None:
        """Mark closed and cancel what runs (synchronously)."""
        self._closed = True
        current = self._core.current
        if current is not None and not current.finished:
            current.outcome.cancel(reason)
        for child in list(self._children):
            child._close_now(reason)

    def _end(self) -> _Conversation:
        """The session's block was left: closed for good, its event chain ended."""
        self._closed = True
        self._chain.end()
        # The messages stay queued (and saved); their hooks will not run in this process.
        self._core.drop_message_hooks(self._core.queue)
        return self._core

    async def _wait_idle(self) -> None:
        current = self._core.current
        if current is not None:
            await current.handle.wait()


@asynccontextmanager
async def open_session(
    agent: Agent,
    *,
    session_id: str | None = None,
    store: SessionStore | str | os.PathLike[str] | None = None,
    max_buffered_events: int | None = None,
) -> AsyncIterator[Session]:
    """Open a session that owns a nursery for its executions.

    Leaving the block normally waits for a running execution to finish, as a
    nursery does; leaving it with an exception, or ``await session.aclose()``,
    cancels it (status ``cancelled``). Errors reach the caller unwrapped — never
    as an exception group.

    Args:
        agent: What the session runs.
        session_id: Its id; a new one is generated when None. With a ``store``
            that holds this id, the session is restored from it.
        store: Where to persist the session after every tick and execution. A path
            opens a `SQLiteStore` on that file, closed when the block is left.
        max_buffered_events: Retention bound of each execution's event buffer;
            lagging subscribers get `EventsLagged`. None: no bound.

    Raises:
        SnapshotError: The stored snapshot is newer than this version or corrupt.

    Example:
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["Hi!"]))) as session:
        ...         handle = await session.send("Hello")
        ...         types = [event.type async for event in handle]
        ...         print(types[0], types[-1])
        >>> trio.run(main)
        execution_start execution_end
    """
    if not isinstance(agent, Agent):
        raise TypeError(f"open_session() takes an Agent, got {type(agent).__name__}")
    if session_id is not None and (not isinstance(session_id, str) or not session_id):
        raise ValueError(f"session_id must be a non-empty str or None, got {session_id!r}")
    if (
        store is not None
        and not isinstance(store, str | os.PathLike)
        and not all(
            callable(getattr(store, name, None)) for name in ("save", "load", "delete", "list")
        )
    ):
        raise TypeError(
            "store must be a SessionStore (save/load/delete/list) or a path, "
            f"got {type(store).__name__}"
        )
    if max_buffered_events is not None and (
        not isinstance(max_buffered_events, int)
        or isinstance(max_buffered_events, bool)
        or max_buffered_events < 1
    ):
        raise ValueError(
            f"max_buffered_events must be a positive int or None, got {max_buffered_events!r}"
        )
    if isinstance(store, str | os.PathLike):
        async with (
            SQLiteStore(store) as opened,
            open_session(
                agent,
                session_id=session_id,
                store=opened,
                max_buffered_events=max_buffered_events,
            ) as inner,
        ):
            yield inner
        return
    sid = session_id or uuid.uuid4().hex
    snapshot = await store.load(sid) if store is not None and session_id is not None else None
    if snapshot is not None:
        # Whatever the store: a broken timeline would be sent to the model, which rejects it.
        check_timeline(sid, snapshot.timeline)
    session: Session | None = None
    failed = False
    try:
        async with trio.open_nursery() as nursery:
            session = Session(
                agent,
                session_id=sid,
                nursery=nursery,
                store=store,
                snapshot=snapshot,
                max_buffered_events=max_buffered_events,
            )
            try:
                yield session
            except BaseException:
                failed = True
                session._close_now("session closed")
                raise
    except BaseExceptionGroup as group:
        failed = True
        reraise(unwrap(group))
    finally:
        if session is not None:
            core = session._end()
            if store is not None:
                # Messages queued while idle are kept too. Bounded inside save()
                # (attempts, each cut off and logged after SAVE_TIMEOUT).
                with trio.CancelScope(shield=True):
                    try:
                        await core.save(exact=True)
                    except StoreError:
                        if not failed:
                            raise
