"""The fan-out of an execution's events: `EventBuffer`, its `Publisher`, the session chain.

The pieces live in their own modules: the retention log (`_retention`, pure),
listeners (`_listeners`), subscriptions and the feed they read
(`_subscription`). This module ties them together: the buffer stamps and
publishes events, the engine publishes through a `Publisher`, and a session
chains its executions' buffers with a `SessionChain`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, Final, TypeVar, final

import attrs
import trio
from trio.lowlevel import enable_ki_protection

from ._events import EVENT_CLASSES, ExecutionEnd, StreamEvent
from ._listeners import Listener, Listeners, split_listener_args
from ._subscription import EventSubscription, Feed, open_subscription
from ._util import slot_setter

__all__ = [
    "EventBuffer",
    "EventSubscription",
    "Listener",
    "Publisher",
    "SeqCounter",
    "SessionChain",
    "emitter",
    "publisher_of",
]

E = TypeVar("E", bound=StreamEvent)

_RESERVED: Final = frozenset({"execution_start", "execution_end"})
_STAMPED: Final = ("seq", "session_id", "execution_id", "tick", "timestamp")
_CLOSED: Final = "the execution has ended; no event can follow"


class SeqCounter:
    """The ``seq`` numbers of one session: 1, 2, 3 ... without gaps.

    A session and all its execution buffers share one counter, so ``seq``
    runs on across executions (and from a restored snapshot's ``last_seq``).

    Args:
        last: The last number already handed out; the next is ``last + 1``.

    Example:
        >>> counter = SeqCounter(41)
        >>> counter.next(), counter.next(), counter.last
        (42, 43, 43)
    """

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        if not isinstance(last, int) or isinstance(last, bool):
            raise TypeError(f"SeqCounter last must be an int, got {type(last).__name__}")
        if last < 0:
            raise ValueError(f"SeqCounter last must not be negative, got {last}")
        self.last = last

    def next(self) -> int:
        """Hand out the next number."""
        self.last += 1
        return self.last

    def __repr__(self) -> str:
        return f"SeqCounter(last={self.last})"


class EventBuffer:
    """The fan-out of one execution: holds its events, hands them to subscribers.

    Every subscriber gets the whole stream from the first event, then the live
    events, then ``trio.EndOfChannel`` after ``execution_end``. The producer
    never waits for a subscriber, and a subscriber is a cursor into the shared
    history, never a copy of it.

    Listeners (`on`, `once`, `on_replay`, ...) are plain callables called
    synchronously, in registration order, when an event is published. A
    listener that raises is logged (logger ``trio_session``) and isolated.

    Args:
        session_id: Stamped on every event published with `emit`.
        execution_id: Stamped on every event published with `emit`.
        max_buffered_events: Hold at most this many events, dropping the
            oldest; a subscriber whose next event was dropped gets
            `EventsLagged` once. None (the default) keeps everything.
        seq: The session's `SeqCounter`; by default a private one from 0.
        reserved: Refuse ``execution_start`` / ``execution_end`` in the public
            `emit` (the engine sets this for real executions).

    Attributes:
        session_id: See above; settable.
        execution_id: See above; settable.
        tick: The tick stamped on new events; the engine keeps it current.

    Example:
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["Hi!"]))) as session:
        ...         handle = await session.send("Hello")
        ...         buf = handle.events  # an EventBuffer
        ...         async with buf.subscribe(types={"execution_end"}) as events:
        ...             async for event in events:
        ...                 print(event.type, event.status)
        >>> trio.run(main)
        execution_end completed
    """

    __slots__ = (
        "__weakref__",
        "_feed",
        "_listeners",
        "_publisher",
        "_reserved",
    )

    def __init__(
        self,
        *,
        session_id: str = "",
        execution_id: str = "",
        max_buffered_events: int | None = None,
        seq: SeqCounter | None = None,
        reserved: bool = False,
    ) -> None:
        if max_buffered_events is not None:
            if not isinstance(max_buffered_events, int) or isinstance(max_buffered_events, bool):
                raise TypeError(
                    "max_buffered_events must be an int or None, "
                    f"got {type(max_buffered_events).__name__}"
                )
            if max_buffered_events < 1:
                raise ValueError(
                    f"max_buffered_events must be at least 1, got {max_buffered_events}"
                )
        if seq is not None and not isinstance(seq, SeqCounter):
            raise TypeError(f"seq must be a SeqCounter, got {type(seq).__name__}")
        self._reserved = bool(reserved)
        self._feed = Feed(max_buffered_events)
        self._listeners = Listeners()
        self._publisher = Publisher(
            session_id,
            execution_id,
            self._feed,
            self._listeners,
            seq if seq is not None else SeqCounter(),
        )

    # -- the stamps (the publisher holds them: its hot path reads them) -----

    @property
    def session_id(self) -> str:
        """Stamped on every event published."""
        return self._publisher.session_id

    @session_id.setter
    def session_id(self, value: str) -> None:
        self._publisher.session_id = value

    @property
    def execution_id(self) -> str:
        """Stamped on every event published."""
        return self._publisher.execution_id

    @execution_id.setter
    def execution_id(self, value: str) -> None:
        self._publisher.execution_id = value

    @property
    def tick(self) -> int:
        """The tick stamped on new events; the engine keeps it current."""
        return self._publisher.tick

    @tick.setter
    def tick(self, value: int) -> None:
        self._publisher.tick = value

    def __repr__(self) -> str:
        state = "closed" if self._feed.closed else "open"
        return f"<EventBuffer execution={self.execution_id!r} events={len(self)} {state}>"

    # -- read-only views ----------------------------------------------------

    def __len__(self) -> int:
        """How many events are held (at most ``max_buffered_events``)."""
        return len(self._feed.log)

    @property
    def history(self) -> tuple[StreamEvent, ...]:
        """The events held, oldest first (a copy)."""
        return self._feed.log.history()

    @property
    def closed(self) -> bool:
        """Whether ``execution_end`` was published; nothing can follow it.

        Only the execution's own ``execution_end`` closes the buffer, not a
        forwarded one of a spawned child (which has a ``spawn_path``).
        """
        return self._feed.closed

    @property
    def max_buffered_events(self) -> int | None:
        """The retention bound, or None."""
        return self._feed.log.limit

    # -- subscriptions ------------------------------------------------------

    def subscribe(
        self, *, types: Collection[str] | None = None, after_seq: int | None = None
    ) -> EventSubscription:
        """Open a subscription that replays every held event, then follows live ones.

        Args:
            types: Only these event types; others are skipped, never queued.
            after_seq: Start after the event with this ``seq`` (events up to
                it are skipped even if they are published later). If events
                after it were dropped by the retention bound, the first
                ``receive()`` raises `EventsLagged`. Without it, the
                subscription starts at the oldest event held.

        Returns:
            A `EventSubscription`; it raises ``trio.EndOfChannel`` after
            ``execution_end``. Close it when done (``with`` / ``async with``).

        Raises:
            TypeError: ``types`` is not a collection of str, or ``after_seq``
                is not an int.
            ValueError: ``types`` names an unknown type or is empty, or
                ``after_seq`` is negative.

        Example:
            >>> import trio
            >>> from trio_session import Agent, ScriptedModel, open_session
            >>> async def watch(handle):
            ...     async with handle.events.subscribe(types={"content_delta"}) as deltas:
            ...         async for delta in deltas:
            ...             print(delta.delta, end="")
            >>> async def main():
            ...     async with open_session(Agent(ScriptedModel(["Hi there!"]))) as session:
            ...         await watch(await session.send("Hello"))
            >>> trio.run(main)
            Hi there!
        """
        return open_subscription(self._feed, types, after_seq, session=False)

    # -- listeners ----------------------------------------------------------

    def on(
        self, type_or_handler: str | Listener, handler: Listener | None = None
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for every published event of a type.

        ``on(handler)`` and ``on("*", handler)`` listen to every type.
        Listeners run synchronously in registration order; one that raises is
        logged and the others still run. All listeners are dropped after
        ``execution_end`` was dispatched.

        Returns:
            A function that removes this listener; calling it again does nothing.

        Raises:
            TypeError: ``handler`` is not callable, or no handler was given.
            ValueError: Unknown event type.

        Example:
            >>> buf = EventBuffer()
            >>> stop = buf.on("custom", lambda event: print(event.name))
            >>> _ = buf.emit("custom", name="hello")
            hello
            >>> stop()
        """
        type_, fn = split_listener_args("on", type_or_handler, handler)
        return self._listeners.register(type_, fn, False)

    add_listener = on

    def once(
        self, type_or_handler: str | Listener, handler: Listener | None = None
    ) -> Callable[[], None]:
        """Like `on`, for one event only: the listener is removed before it is called."""
        type_, fn = split_listener_args("once", type_or_handler, handler)
        return self._listeners.register(type_, fn, True)

    def off(self, type_or_handler: str | Listener, handler: Listener | None = None) -> bool:
        """Remove the first registration of ``handler`` for that type.

        ``off(handler)`` is the counterpart of ``on(handler)`` (type ``"*"``).
        Handlers are compared with ``==``, so a bound method matches.

        Returns:
            Whether a listener was removed.
        """
        type_, fn = split_listener_args("off", type_or_handler, handler)
        return self._listeners.remove(type_, fn)

    remove_listener = off

    def on_replay(self, handler: Listener) -> Callable[[], None]:
        """Call ``handler`` now for every held event, then for every live one.

        The replay is synchronous; events published during it (by the handler
        itself) are included, and none is delivered twice.

        Returns:
            A function that removes the listener; calling it again does nothing.

        Example:
            >>> buf = EventBuffer()
            >>> _ = buf.emit("custom", name="early")
            >>> stop = buf.on_replay(lambda event: print(event.name))
            early
            >>> _ = buf.emit("custom", name="late")
            late
        """
        if not callable(handler):
            raise TypeError(f"on_replay() handler must be callable, got {handler!r}")
        log = self._feed.log
        index = log.start
        while index < log.end:
            index = max(index, log.start)
            event = log.at(index)
            index += 1
            Listeners.call(handler, event)
        return self._listeners.register(None, handler, False, index)

    @enable_ki_protection
    def emit(self, type_or_event: str | StreamEvent, /, **fields: Any) -> StreamEvent:
        """Publish an event; for custom events of user code.

        ``emit(type, **fields)`` builds the event class of that type;
        ``emit(event)`` publishes a copy of ``event``. Either way the buffer
        stamps ``seq``, ``session_id``, ``execution_id`` and ``tick``
        (``emit(type, ...)`` also the timestamp).

        Returns:
            The published event.

        Raises:
            trio.ClosedResourceError: The execution has ended.
            ValueError: Unknown type, or a type reserved to the engine.
            TypeError: Missing, unknown or stamped fields.

        Example:
            >>> buf = EventBuffer(session_id="s", execution_id="e")
            >>> event = buf.emit("custom", name="progress", data=0.5)
            >>> (event.seq, event.type, event.data)
            (1, 'custom', 0.5)
        """
        if isinstance(type_or_event, str):
            cls = EVENT_CLASSES.get(type_or_event)
            if cls is None:
                raise ValueError(
                    f"unknown event type {type_or_event!r}; known: {sorted(EVENT_CLASSES)}"
                )
            self._check_emittable(type_or_event)
            stamped = [name for name in _STAMPED if name in fields]
            if stamped:
                raise TypeError(
                    f"emit({type_or_event!r}): {', '.join(stamped)} are stamped by the buffer"
                )
            try:
                return self._publisher.emit(cls, **fields)
            except TypeError as exc:
                # Only the event's construction raises TypeError (listeners are
                # isolated), and then nothing was published.
                raise TypeError(f"emit({type_or_event!r}): {exc}") from None
        if not isinstance(type_or_event, StreamEvent):
            raise TypeError(
                f"emit() takes an event type name or an event, got {type(type_or_event).__name__}"
            )
        if fields:
            raise TypeError("emit(event) takes no fields; use attrs.evolve() on the event")
        self._check_emittable(type_or_event.type)
        return self._publisher.restamp(type_or_event)

    def _check_emittable(self, event_type: str) -> None:
        if not event_type:
            raise ValueError("cannot emit an event without a type")
        if self._reserved and event_type in _RESERVED:
            raise ValueError(f"{event_type!r} events belong to the engine; emit() refuses them")
        if self._feed.closed:
            raise trio.ClosedResourceError(_CLOSED)


@final
class Publisher:
    """How the engine publishes into an `EventBuffer` (the hot path).

    Get a buffer's with `publisher_of`. Events are stamped with the buffer's
    ``session_id``, ``execution_id`` and ``tick`` (the publisher holds them;
    the buffer's attributes are views of these) and the session's next
    ``seq``; the engine-only types (``execution_start`` / ``execution_end``)
    are allowed here.

    It does not refer to its buffer (the buffer holds it): a buffer nobody
    holds is freed by refcounting, with its events, not by the cyclic
    collector.

    Attributes:
        session_id: Stamped on every event.
        execution_id: Stamped on every event.
        tick: Stamped on every event; the engine keeps it current.
    """

    __slots__ = ("_feed", "_listeners", "_seq", "execution_id", "session_id", "tick")

    def __init__(
        self, session_id: str, execution_id: str, feed: Feed, listeners: Listeners, seq: SeqCounter
    ) -> None:
        self.session_id = session_id
        self.execution_id = execution_id
        self.tick = 0
        self._feed = feed
        self._listeners = listeners
        self._seq = seq

    @property
    def seq(self) -> SeqCounter:
        """The session's seq counter this buffer numbers from."""
        return self._seq

    @property
    def closed(self) -> bool:
        """Whether the buffer published its ``execution_end``."""
        return self._feed.closed

    @enable_ki_protection
    def emit(self, cls: type[E], /, **fields: Any) -> E:
        """Build, stamp and publish an event of ``cls``; return it.

        The engine's hot paths call ``emitter(cls)(publisher, **fields)``, the
        same without the dict of ``fields``.

        Raises:
            trio.ClosedResourceError: The buffer already published ``execution_end``.
            TypeError: A missing or unknown field (nothing was published).
        """
        return _EMITTERS[cls](self, **fields)  # type: ignore[no-any-return]

    @enable_ki_protection
    def forward(self, event: StreamEvent) -> None:
        """Publish an already stamped event (a forwarded child event).

        Raises:
            trio.ClosedResourceError: The buffer already published ``execution_end``.
        """
        if self._feed.closed:
            raise trio.ClosedResourceError(_CLOSED)
        self._append(event)

    @enable_ki_protection
    def restamp(self, event: StreamEvent) -> StreamEvent:
        """Publish a copy of ``event`` with this buffer's stamps (not its timestamp)."""
        counter = self._seq
        seq = counter.last + 1
        copy = attrs.evolve(
            event,
            seq=seq,
            session_id=self.session_id,
            execution_id=self.execution_id,
            tick=self.tick,
        )
        counter.last = seq
        self._append(copy)
        return copy

    def _append(self, event: StreamEvent) -> None:
        feed = self._feed
        feed.append(event)
        listeners = self._listeners
        if listeners.registrations:
            listeners.dispatch(feed.log.end - 1, event)
        elif feed.closed:
            listeners.drop()


def _emitter(cls: type[StreamEvent]) -> Callable[..., StreamEvent]:
    """The function that builds, stamps and publishes one ``cls`` event (see `emitter`).

    ``emit(publisher, **fields)``, generated from the class's fields: it takes
    ``cls``'s own fields by keyword, with the attrs ``__init__``'s defaults,
    factories and TypeError for a missing or unknown field, then sets the
    slots directly (events have no validators or converters to run) and
    appends the event as `Publisher._append` would. The seq is taken only once
    the event is built: a bad field leaves no gap in the session's seq.
    """
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_cls": cls,
        "_NOTHING": attrs.NOTHING,
        "_time": time,
        "_Closed": trio.ClosedResourceError,
        "_CLOSED": _CLOSED,
    }
    params: list[str] = []
    sets: list[str] = []
    for field in attrs.fields(cls):
        name = field.name
        namespace[f"_set_{name}"] = slot_setter(cls, name)
        if name in _STAMPED:
            value = {"seq": "seq", "timestamp": "_time.time()"}.get(name, f"publisher.{name}")
            sets.append(f"    _set_{name}(self, {value})")
            continue
        default = field.default
        if default is attrs.NOTHING:
            params.append(name)
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            assert not default.takes_self
            namespace[f"_factory_{name}"] = default.factory
            params.append(f"{name}=_NOTHING")
            sets.append(f"    if {name} is _NOTHING: {name} = _factory_{name}()")
        else:
            namespace[f"_default_{name}"] = default
            params.append(f"{name}=_default_{name}")
        sets.append(f"    _set_{name}(self, {name})")
    own = f", *, {', '.join(params)}" if params else ""
    if cls is ExecutionEnd:
        # The end closes the feed and wakes everyone: the publisher's full path.
        append = ["    publisher._append(self)"]
    else:
        # Feed.append's common case inlined: nobody parked, no retention bound,
        # the event just joins the log.
        append = [
            "    if feed.parked_all or feed.parked_filtered or feed.log.limit:",
            "        feed.append(self)",
            "    else:",
            "        feed.log.events.append(self)",
            "    listeners = publisher._listeners",
            "    if listeners.registrations:",
            "        listeners.dispatch(feed.log.end - 1, self)",
        ]
    source = "\n".join(
        [
            f"def emit(publisher{own}):",
            "    feed = publisher._feed",
            "    if feed.closed:",
            "        raise _Closed(_CLOSED)",
            "    counter = publisher._seq",
            "    seq = counter.last + 1",
            "    self = _new(_cls)",
            *sets,
            "    counter.last = seq",
            *append,
            "    return self",
        ]
    )
    # The source is made of the field names only.
    exec(source, namespace)
    emit: Callable[..., StreamEvent] = namespace["emit"]
    # Its TypeErrors read like the class's own constructor's.
    emit.__qualname__ = f"{cls.__name__}.__init__"
    return enable_ki_protection(emit)


_EMITTERS: Final[dict[type[StreamEvent], Callable[..., Any]]] = {
    cls: _emitter(cls) for cls in EVENT_CLASSES.values()
}


def emitter(cls: type[E]) -> Callable[..., E]:
    """The engine's publisher of ``cls`` events: ``emitter(cls)(publisher, **fields)``.

    One call builds, stamps and publishes the event and returns it, as
    ``publisher.emit(cls, **fields)`` does, without building a dict of the
    fields: the engine's hot paths bind it once per module.
    """
    return _EMITTERS[cls]


def publisher_of(buffer: EventBuffer) -> Publisher:
    """The `Publisher` of a buffer: the engine's way in."""
    return buffer._publisher


@final
class SessionChain:
    """A session's execution buffers, one after the other.

    A session-wide subscription starts at the latest buffer and moves on to
    each next one; it ends once the chain ended and it read every event.
    The chain starts with a closed, empty head, so a subscription made before
    the first execution waits for it.

    Args:
        session_id: The session's id (the head's).
        seq: The session's seq counter.
    """

    __slots__ = ("_last",)

    def __init__(self, *, session_id: str, seq: SeqCounter) -> None:
        head = EventBuffer(session_id=session_id, seq=seq, reserved=True)
        head._feed.closed = True
        head._listeners.drop()
        # Only the latest buffer is held: finished executions' buffers go
        # once no subscription reads them.
        self._last = head

    @property
    def last(self) -> EventBuffer:
        """The latest buffer."""
        return self._last

    def append(self, buffer: EventBuffer) -> None:
        """Chain the session's next execution buffer after the latest one.

        Session-wide subscriptions that read everything so far move on to it.

        Raises:
            TypeError: ``buffer`` is not an `EventBuffer`.
            RuntimeError: It is the latest buffer already, or the chain ended.
        """
        link(self._last, buffer)
        self._last = buffer

    def end(self) -> None:
        """The session closed: no buffer will follow. Idempotent."""
        end_chain(self._last)

    def subscribe(
        self, *, types: Collection[str] | None = None, after_seq: int | None = None
    ) -> EventSubscription:
        """A session-wide subscription from the latest buffer (see `session_subscribe`)."""
        return session_subscribe(self._last, types=types, after_seq=after_seq)


def link(buffer: EventBuffer, successor: EventBuffer) -> None:
    """Chain ``successor`` after ``buffer`` (see `SessionChain.append`).

    Raises:
        TypeError: ``successor`` is not an `EventBuffer`.
        RuntimeError: ``buffer`` is ``successor``, already linked, or its chain ended.
    """
    if not isinstance(successor, EventBuffer):
        raise TypeError(f"successor must be an EventBuffer, got {type(successor).__name__}")
    buffer._feed.link(successor._feed)


def end_chain(buffer: EventBuffer) -> None:
    """No buffer will follow ``buffer``; session-wide subscriptions end after it.

    Raises:
        RuntimeError: ``buffer`` already has a successor.
    """
    buffer._feed.end_chain()


def session_subscribe(
    buffer: EventBuffer, *, types: Collection[str] | None = None, after_seq: int | None = None
) -> EventSubscription:
    """A session-wide subscription that starts at ``buffer`` and follows its successors.

    It does not end at ``execution_end``; it ends once the chain ended and
    every event held was received.
    """
    return open_subscription(buffer._feed, types, after_seq, session=True)
