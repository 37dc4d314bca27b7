"""The fan-out of an execution's events: `EventBuffer` and `EventSubscription`.

The buffer keeps the execution's events in one list. A subscription is a
cursor into that list (an absolute index) plus a reference to the buffer: it
never copies the history, so a subscriber costs O(1) memory however long the
history is, and the producer's cost per event does not depend on how many
subscribers exist. The producer only does work for subscribers that are
*parked* (blocked in ``receive()``), and only to reschedule them.

Absolute indexes never change: with a retention bound the oldest events are
dropped logically at once (``_start`` moves) and physically in chunks
(``_base`` moves, ``del events[:k]``), which keeps dropping amortized O(1).
"""

from __future__ import annotations

import bisect
import logging
import operator
import time
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any, Final, TypeVar

import attrs
import trio
from trio.lowlevel import (
    Abort,
    RaiseCancelT,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._errors import EventsLagged
from ._events import EVENT_CLASSES, StreamEvent

__all__ = ["EventBuffer", "EventSubscription", "Listener", "SeqCounter"]

E = TypeVar("E", bound=StreamEvent)

Listener = Callable[[StreamEvent], object]
"""A listener: a plain callable that gets each event, called synchronously."""

_logger: Final = logging.getLogger("trio_session")

_END: Final = "execution_end"
_RESERVED: Final = frozenset({"execution_start", _END})
_STAMPED: Final = ("seq", "session_id", "execution_id", "tick", "timestamp")
_ALL: Final = "*"
_BUSY: Final = "another task is already waiting on this subscription"
_seq_of = operator.attrgetter("seq")


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


class _Registration:
    """One listener registration; ``active`` turns False when it is removed."""

    __slots__ = ("active", "from_index", "handler", "once", "type")

    def __init__(self, type_: str | None, handler: Listener, once: bool, from_index: int) -> None:
        self.type = type_  # None: every type
        self.handler = handler
        self.once = once
        self.active = True
        # on_replay() already delivered the events before this absolute index.
        self.from_index = from_index


def _noop() -> None:
    return None


def _check_types(types: Collection[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str) or not isinstance(types, Collection):
        raise TypeError(f"types must be a collection of event type names (or None), got {types!r}")
    wanted = frozenset(types)
    for name in wanted:
        if not isinstance(name, str):
            raise TypeError(f"types must hold str event type names, got {name!r}")
    unknown = wanted - EVENT_CLASSES.keys()
    if unknown:
        raise ValueError(
            f"unknown event type(s) {sorted(unknown)} in types; known: {sorted(EVENT_CLASSES)}"
        )
    if not wanted:
        raise ValueError("types is empty; pass None to receive every type")
    return wanted


def _check_after_seq(after_seq: int | None) -> int | None:
    if after_seq is None:
        return None
    if not isinstance(after_seq, int) or isinstance(after_seq, bool):
        raise TypeError(f"after_seq must be an int or None, got {type(after_seq).__name__}")
    if after_seq < 0:
        raise ValueError(f"after_seq must not be negative, got {after_seq}")
    return after_seq


def _check_listener_type(type_: object) -> str | None:
    if not isinstance(type_, str):
        raise TypeError(f"event type must be a str, got {type(type_).__name__}")
    if type_ == _ALL:
        return None
    if type_ not in EVENT_CLASSES:
        raise ValueError(f"unknown event type {type_!r}; known: '*', {sorted(EVENT_CLASSES)}")
    return type_


def _split_listener_args(
    where: str, type_or_handler: str | Listener, handler: Listener | None
) -> tuple[str | None, Listener]:
    if handler is None:
        if isinstance(type_or_handler, str):
            raise TypeError(f"{where}({type_or_handler!r}) needs a handler")
        if not callable(type_or_handler):
            raise TypeError(f"{where}() handler must be callable, got {type_or_handler!r}")
        return None, type_or_handler
    type_ = _check_listener_type(type_or_handler)
    if not callable(handler):
        raise TypeError(f"{where}() handler must be callable, got {handler!r}")
    return type_, handler


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
        session_id: See above; a plain attribute.
        execution_id: See above; a plain attribute.
        tick: The tick stamped on new events; the engine keeps it current.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     buf = EventBuffer(session_id="s", execution_id="e")
        ...     buf.emit("custom", name="progress", data=0.5)
        ...     buf.emit("execution_end", status="completed")
        ...     async with buf.subscribe() as events:
        ...         async for event in events:
        ...             print(event.seq, event.type)
        ...     # 1 custom
        ...     # 2 execution_end
    """

    __slots__ = (
        "__weakref__",
        "_base",
        "_chain_ended",
        "_chunk",
        "_closed",
        "_dispatching",
        "_events",
        "_last_dropped",
        "_listeners",
        "_listeners_dropped",
        "_max",
        "_parked_all",
        "_parked_filtered",
        "_parked_typed",
        "_pending",
        "_reserved",
        "_seq",
        "_start",
        "_successor",
        "execution_id",
        "session_id",
        "tick",
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
        self.session_id: str = session_id
        self.execution_id: str = execution_id
        self.tick: int = 0
        self._seq: SeqCounter = seq if seq is not None else SeqCounter()
        self._reserved = bool(reserved)
        self._events: list[StreamEvent] = []
        # Absolute index of _events[0]; absolute indexes survive compaction.
        self._base = 0
        # Absolute index of the oldest event still held (logically).
        self._start = 0
        self._max = max_buffered_events
        # Compact in chunks so that dropping one event costs amortized O(1).
        self._chunk = 0 if max_buffered_events is None else max(max_buffered_events, 32)
        # Per type, the absolute index of the newest dropped event of that
        # type: a filtered subscriber lagged only if one of *its* types was dropped.
        self._last_dropped: dict[str, int] = {}
        self._closed = False
        # Parked subscriptions: unfiltered ones wake on every event; filtered
        # ones are indexed by type so unwanted events cost nothing.
        self._parked_all: dict[EventSubscription, Task] = {}
        self._parked_filtered: dict[EventSubscription, None] = {}
        self._parked_typed: dict[str, dict[EventSubscription, None]] = {}
        self._listeners: tuple[_Registration, ...] = ()
        self._listeners_dropped = False
        self._dispatching = False
        # Events published by listeners during a dispatch, waiting for theirs.
        self._pending: list[tuple[int, StreamEvent]] = []
        self._successor: EventBuffer | None = None
        self._chain_ended = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBuffer execution={self.execution_id!r} events={len(self)} {state}>"

    # -- read-only views ----------------------------------------------------

    def __len__(self) -> int:
        """How many events are held (at most ``max_buffered_events``)."""
        return self._base + len(self._events) - self._start

    @property
    def history(self) -> tuple[StreamEvent, ...]:
        """The events held, oldest first (a copy)."""
        return tuple(self._events[self._start - self._base :])

    @property
    def closed(self) -> bool:
        """Whether ``execution_end`` was published; nothing can follow it.

        Only the execution's own ``execution_end`` closes the buffer, not a
        forwarded one of a spawned child (which has a ``spawn_path``).
        """
        return self._closed

    @property
    def max_buffered_events(self) -> int | None:
        """The retention bound, or None."""
        return self._max

    # -- internal API for the engine (the hot path) -------------------------

    def _emit(self, cls: type[E], /, **fields: Any) -> E:
        """Build, stamp and publish an event of ``cls``; return it.

        Raises:
            trio.ClosedResourceError: The buffer already published ``execution_end``.
        """
        if self._closed:
            raise trio.ClosedResourceError("the execution has ended; no event can follow")
        counter = self._seq
        # Take the number only once the event is built: a bad field must not
        # leave a gap in the session's seq.
        seq = counter.last + 1
        event = cls(
            seq=seq,
            session_id=self.session_id,
            execution_id=self.execution_id,
            tick=self.tick,
            timestamp=time.time(),
            **fields,
        )
        counter.last = seq
        self._append(event)
        return event

    def _publish(self, event: StreamEvent) -> None:
        """Publish an already stamped event (a forwarded child event).

        Raises:
            trio.ClosedResourceError: The buffer already published ``execution_end``.
        """
        if self._closed:
            raise trio.ClosedResourceError("the execution has ended; no event can follow")
        self._append(event)

    def _append(self, event: StreamEvent) -> None:
        # The engine's hot path: the common case (no filtered subscriber
        # parked, no bound, no listener) is one append and the wake-ups.
        self._events.append(event)
        parked = self._parked_all
        if parked:
            # reschedule() only queues the tasks: none can touch this set
            # before clear().
            for task in parked.values():
                reschedule(task)
            parked.clear()
        if self._parked_filtered or self._max is not None or self._listeners or event.type == _END:
            self._after_append(event)

    def _after_append(self, event: StreamEvent) -> None:
        """Everything but waking unfiltered subscribers (which _append does)."""
        index = self._base + len(self._events) - 1
        if self._parked_filtered:
            waiting = self._parked_typed.get(event.type)
            if waiting:
                for sub in tuple(waiting):
                    sub._wake(index)
        if event.type == _END and not event.spawn_path:
            # The execution's own end. A forwarded child's execution_end
            # (with a spawn_path) is just another event of this stream.
            self._closed = True
            self._wake_filtered_at_close()
        if self._max is not None:
            self._trim(self._max)
        if self._listeners:
            self._dispatch(index, event)
        elif self._closed:
            self._listeners_dropped = True

    def _trim(self, limit: int) -> None:
        events = self._events
        base = self._base
        end = base + len(events)
        start = self._start
        new_start = end - limit
        if new_start <= start:
            return
        last_dropped = self._last_dropped
        for index in range(start, new_start):
            last_dropped[events[index - base].type] = index
        self._start = new_start
        if new_start - base >= self._chunk:
            del events[: new_start - base]
            self._base = new_start

    def _wake_filtered_at_close(self) -> None:
        # Filtered buffer subscriptions that do not want execution_end must
        # still learn that the stream ended. Session-wide ones wait for
        # _link() / _end_chain() instead.
        if not self._parked_filtered:
            return
        end = self._base + len(self._events)
        for sub in tuple(self._parked_filtered):
            if not sub._session:
                sub._wake(end)

    def _wake_all(self) -> None:
        end = self._base + len(self._events)
        for sub in tuple(self._parked_filtered):
            sub._wake(end)
        parked = self._parked_all
        self._parked_all = {}
        for task in parked.values():
            reschedule(task)

    def _link(self, successor: EventBuffer) -> None:
        """Chain the session's next execution buffer after this one.

        Session-wide subscriptions that read everything here move on to
        ``successor``.

        Raises:
            TypeError: ``successor`` is not an `EventBuffer`.
            RuntimeError: This buffer is already linked or its chain ended.
        """
        if not isinstance(successor, EventBuffer):
            raise TypeError(f"successor must be an EventBuffer, got {type(successor).__name__}")
        if successor is self:
            raise RuntimeError("an EventBuffer cannot be its own successor")
        if self._successor is not None or self._chain_ended:
            raise RuntimeError("this EventBuffer already has a successor or ended its chain")
        self._successor = successor
        if self._closed:
            self._wake_all()

    def _end_chain(self) -> None:
        """The session closed: no successor will come.

        Session-wide subscriptions end (``trio.EndOfChannel``) once they read
        every event held here. Idempotent.

        Raises:
            RuntimeError: This buffer already has a successor.
        """
        if self._successor is not None:
            raise RuntimeError("this EventBuffer already has a successor")
        if self._chain_ended:
            return
        self._chain_ended = True
        if self._closed:
            self._wake_all()

    @classmethod
    def _closed_empty(cls, *, session_id: str, seq: SeqCounter) -> EventBuffer:
        """A closed buffer without events: the head of a session's chain."""
        buffer = cls(session_id=session_id, seq=seq, reserved=True)
        buffer._closed = True
        buffer._listeners_dropped = True
        return buffer

    # -- subscriptions ------------------------------------------------------

    def _index_after(self, after_seq: int) -> int:
        """The absolute index of the first event with ``seq > after_seq``."""
        events = self._events
        base = self._base
        end = base + len(events)
        if not events:
            return end
        # seq is contiguous within one buffer, so this is arithmetic; the
        # check below falls back to a binary search should it ever not be.
        index = min(max(after_seq + 1 - (events[0].seq - base), 0), end)
        if index < base:
            return index
        if index < end:
            if events[index - base].seq == after_seq + 1:
                return index
        elif events[-1].seq <= after_seq:
            return index
        position = bisect.bisect_right(events, after_seq, key=_seq_of)
        return base + position if position else min(index, base)

    def _new_subscription(
        self, types: Collection[str] | None, after_seq: int | None, session: bool
    ) -> EventSubscription:
        wanted = _check_types(types)
        after = _check_after_seq(after_seq)
        # Without after_seq a subscriber asks for "what is held"; with it, it
        # asks for everything after that seq, and learns if some was dropped.
        subscription = EventSubscription._create(
            self, self._start if after is None else 0, wanted, after, session
        )
        if after is not None:
            subscription._apply_after(self)
        return subscription

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
            >>> async def watch(handle):  # doctest: +SKIP
            ...     with handle.events.subscribe(types={"content_delta"}) as deltas:
            ...         async for delta in deltas:
            ...             print(delta.delta, end="")
        """
        return self._new_subscription(types, after_seq, False)

    def _subscribe_session(
        self, *, types: Collection[str] | None = None, after_seq: int | None = None
    ) -> EventSubscription:
        """A session-wide subscription: starts here, follows `_link` successors.

        It does not end at ``execution_end``; it ends once `_end_chain` was
        called on the last buffer and every event held was received.
        """
        return self._new_subscription(types, after_seq, True)

    # -- listeners ----------------------------------------------------------

    def _register(
        self, type_: str | None, handler: Listener, once: bool, from_index: int
    ) -> Callable[[], None]:
        if self._listeners_dropped:
            # Nothing can be published any more; keeping it would only leak it.
            return _noop
        registration = _Registration(type_, handler, once, from_index)
        self._listeners = (*self._listeners, registration)

        def unsubscribe() -> None:
            self._unregister(registration)

        return unsubscribe

    def _unregister(self, registration: _Registration) -> None:
        if not registration.active:
            return
        registration.active = False
        self._listeners = tuple(r for r in self._listeners if r is not registration)

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
        type_, fn = _split_listener_args("on", type_or_handler, handler)
        return self._register(type_, fn, False, 0)

    add_listener = on

    def once(
        self, type_or_handler: str | Listener, handler: Listener | None = None
    ) -> Callable[[], None]:
        """Like `on`, for one event only: the listener is removed before it is called."""
        type_, fn = _split_listener_args("once", type_or_handler, handler)
        return self._register(type_, fn, True, 0)

    def off(self, type_or_handler: str | Listener, handler: Listener | None = None) -> bool:
        """Remove the first registration of ``handler`` for that type.

        ``off(handler)`` is the counterpart of ``on(handler)`` (type ``"*"``).
        Handlers are compared with ``==``, so a bound method matches.

        Returns:
            Whether a listener was removed.
        """
        type_, fn = _split_listener_args("off", type_or_handler, handler)
        for registration in self._listeners:
            if registration.type == type_ and registration.handler == fn:
                self._unregister(registration)
                return True
        return False

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
        index = self._start
        while index < self._base + len(self._events):
            index = max(index, self._start)
            event = self._events[index - self._base]
            index += 1
            self._call(handler, event)
        return self._register(None, handler, False, index)

    def _call(self, handler: Listener, event: StreamEvent) -> None:
        try:
            handler(event)
        except Exception:
            _logger.exception(
                "event listener %r raised on %s event (seq %d); ignored",
                handler,
                event.type,
                event.seq,
            )

    def _dispatch(self, index: int, event: StreamEvent) -> None:
        if self._dispatching:
            # A listener published: the event is in the history already, but
            # its listeners run after the current dispatch, in seq order.
            self._pending.append((index, event))
            return
        self._dispatching = True
        try:
            while True:
                event_type = event.type
                for registration in self._listeners:
                    if (
                        registration.active
                        and (registration.type is None or registration.type == event_type)
                        and index >= registration.from_index
                    ):
                        if registration.once:
                            self._unregister(registration)
                        self._call(registration.handler, event)
                if event_type == _END and not event.spawn_path:
                    self._listeners = ()
                    self._listeners_dropped = True
                if not self._pending:
                    break
                index, event = self._pending.pop(0)
        finally:
            self._dispatching = False
            self._pending.clear()

    # -- publishing from user code -----------------------------------------

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
                return self._emit(cls, **fields)
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
        counter = self._seq
        seq = counter.last + 1
        event = attrs.evolve(
            type_or_event,
            seq=seq,
            session_id=self.session_id,
            execution_id=self.execution_id,
            tick=self.tick,
        )
        counter.last = seq
        self._append(event)
        return event

    def _check_emittable(self, event_type: str) -> None:
        if not event_type:
            raise ValueError("cannot emit an event without a type")
        if self._reserved and event_type in _RESERVED:
            raise ValueError(f"{event_type!r} events belong to the engine; emit() refuses them")
        if self._closed:
            raise trio.ClosedResourceError("the execution has ended; no event can follow")


class EventSubscription(trio.abc.ReceiveChannel[StreamEvent]):
    """One subscriber's view of an `EventBuffer`: a cursor, not a copy.

    It is a ``trio.abc.ReceiveChannel``: ``await receive()``,
    ``receive_nowait()``, ``async for``, ``await aclose()``, ``close()``,
    ``with`` and ``async with``, plus `receive_batch`. It replays from the
    execution's first event (or after ``after_seq``), follows live events,
    and raises ``trio.EndOfChannel`` once the execution's own
    ``execution_end`` was received (a forwarded child's does not end it).
    If ``receive()`` raises ``trio.Cancelled``, no event was consumed.

    One task at a time may wait in it: a second task blocking in ``receive()``
    while another is blocked gets ``trio.BusyResourceError``.

    With a retention bound, ``receive()`` raises `EventsLagged` once when
    the next event of this subscription was dropped, then continues at the
    oldest event held. ``missed`` is exact for an unfiltered subscription.
    For a filtered one, `EventsLagged` is raised only if a dropped event was
    of a wanted type, and ``missed`` counts every event dropped between its
    position and the oldest one held, of any type (an upper bound of the
    wanted events it missed).

    Example:
        >>> async def show(buf):  # doctest: +SKIP
        ...     async with buf.subscribe() as events:
        ...         while True:
        ...             try:
        ...                 batch = await events.receive_batch()
        ...             except trio.EndOfChannel:
        ...                 break
        ...             print(len(batch), "events")
    """

    __slots__ = ("_after", "_buf", "_closed", "_cursor", "_fast", "_session", "_task", "_types")

    _buf: EventBuffer
    _cursor: int
    _types: frozenset[str] | None
    _after: int | None
    _session: bool
    _fast: bool
    _closed: bool
    _task: Task | None

    def __init__(self) -> None:
        raise TypeError("EventSubscription is created by EventBuffer.subscribe()")

    @classmethod
    def _create(
        cls,
        buffer: EventBuffer,
        cursor: int,
        types: frozenset[str] | None,
        after: int | None,
        session: bool,
    ) -> EventSubscription:
        self = object.__new__(cls)
        self._buf = buffer
        self._cursor = cursor
        self._types = types
        self._after = after
        self._session = session
        # Unfiltered, open, past after_seq: receive() may take the short path.
        self._fast = types is None and after is None
        self._closed = False
        self._task = None
        return self

    def __repr__(self) -> str:
        kind = "session " if self._session else ""
        state = "closed" if self._closed else f"at index {self._cursor}"
        return f"<EventSubscription {kind}{state} of {self._buf!r}>"

    # -- taking events (synchronous) ----------------------------------------

    def _lagged(self, buffer: EventBuffer) -> None:
        missed = buffer._start - self._cursor
        behind = self._cursor
        self._cursor = buffer._start
        types = self._types
        if types is None:
            raise EventsLagged(missed)
        last_dropped = buffer._last_dropped
        for name in types:
            if last_dropped.get(name, -1) >= behind:
                raise EventsLagged(missed)

    def _apply_after(self, buffer: EventBuffer) -> None:
        """Skip the events up to seq ``_after``; forget it once a later one exists.

        seq grows along the whole chain, so once an event after ``_after`` was
        seen, no later event can be at or before it.
        """
        index = buffer._index_after(self._after)  # type: ignore[arg-type]
        if index > self._cursor:
            self._cursor = index
        if index < buffer._base + len(buffer._events):
            self._after = None
            self._fast = self._types is None and not self._closed

    def _at_end(self, buffer: EventBuffer) -> bool:
        """At the end of ``buffer``: move to its successor (True) or stop (False).

        Raises ``trio.EndOfChannel`` when nothing more can come.
        """
        if not buffer._closed:
            return False
        if not self._session:
            raise trio.EndOfChannel
        successor = buffer._successor
        if successor is not None:
            self._buf = successor
            self._cursor = 0
            return True
        if buffer._chain_ended:
            raise trio.EndOfChannel
        return False

    def _take_many(self, max_items: int | None) -> list[StreamEvent]:
        """The next wanted events (at most ``max_items``); [] when none is available yet."""
        if self._closed:
            raise trio.ClosedResourceError("this subscription was closed")
        types = self._types
        while True:
            buffer = self._buf
            if self._after is not None:
                self._apply_after(buffer)
            cursor = self._cursor
            if cursor < buffer._start:
                self._lagged(buffer)
                cursor = self._cursor
            events = buffer._events
            base = buffer._base
            index = cursor - base
            count = len(events)
            if types is None:
                if index < count:
                    stop = count if max_items is None else min(count, index + max_items)
                    self._cursor = base + stop
                    return events[index:stop]
            else:
                batch: list[StreamEvent] = []
                while index < count:
                    event = events[index]
                    index += 1
                    if event.type in types:
                        batch.append(event)
                        if len(batch) == max_items:
                            break
                self._cursor = base + index
                if batch:
                    return batch
            if not self._at_end(buffer):
                return []

    # -- parking --------------------------------------------------------------

    def _park(self) -> None:
        if self._task is not None:
            raise trio.BusyResourceError(_BUSY)
        self._task = task = current_task()
        buffer = self._buf
        if self._types is None:
            buffer._parked_all[self] = task
        else:
            buffer._parked_filtered[self] = None
            typed = buffer._parked_typed
            for name in self._types:
                waiting = typed.get(name)
                if waiting is None:
                    waiting = typed[name] = {}
                waiting[self] = None

    def _unpark(self) -> bool:
        """Leave the buffer's parked sets; whether this subscription was in them."""
        buffer = self._buf
        if self._types is None:
            return buffer._parked_all.pop(self, None) is not None
        if buffer._parked_filtered.pop(self, False) is not None:
            return False
        typed = buffer._parked_typed
        for name in self._types:
            del typed[name][self]
        return True

    def _wake(self, cursor: int) -> None:
        # Called by the buffer for a parked filtered subscription. Every event
        # published while it was parked was unwanted (a wanted one would have
        # woken it), so its cursor may jump straight to ``cursor``.
        self._unpark()
        self._cursor = cursor
        reschedule(self._task)  # type: ignore[arg-type]

    def _abort(self, _raise_cancel: RaiseCancelT) -> Abort:
        # Cancelled while parked: nothing was consumed, the cursor is unchanged.
        self._unpark()
        self._task = None
        return Abort.SUCCEEDED

    # -- the ReceiveChannel interface ----------------------------------------

    def receive_nowait(self) -> StreamEvent:
        """Take the next event if one is available.

        Raises:
            trio.WouldBlock: No event is available yet.
            trio.EndOfChannel: The stream ended and every event was received.
            trio.ClosedResourceError: This subscription was closed.
            EventsLagged: Events this subscription needed were dropped.
        """
        batch = self._take_many(1)
        if not batch:
            raise trio.WouldBlock
        return batch[0]

    async def receive(self) -> StreamEvent:
        """Wait for the next event and return it.

        Raises:
            trio.EndOfChannel: The stream ended and every event was received.
            trio.ClosedResourceError: This subscription was closed, before or
                while waiting.
            trio.BusyResourceError: Another task is waiting on this subscription.
            EventsLagged: Events this subscription needed were dropped (once;
                the next call continues at the oldest event held).
        """
        # The short path, for an unfiltered subscription that keeps up or
        # replays: it must cost no more than a memory channel's receive().
        buffer = self._buf
        cursor = self._cursor
        if self._fast and cursor >= buffer._start:
            events = buffer._events
            index = cursor - buffer._base
            if index < len(events):
                await checkpoint_if_cancelled()
                self._cursor = cursor + 1
                await cancel_shielded_checkpoint()
                return events[index]
            if not buffer._closed:
                # Parking is the checkpoint: a cancelled task never gets here
                # past wait_task_rescheduled, and nothing was consumed.
                if self._task is not None:
                    raise trio.BusyResourceError(_BUSY)
                self._task = task = current_task()
                buffer._parked_all[self] = task
                await wait_task_rescheduled(self._abort)
                self._task = None
                buffer = self._buf
                cursor = self._cursor
                events = buffer._events
                index = cursor - buffer._base
                if self._fast and index < len(events) and cursor >= buffer._start:
                    self._cursor = cursor + 1
                    return events[index]
                return (await self._receive_batch_slow(1, True))[0]
        return (await self._receive_batch_slow(1, False))[0]

    async def receive_batch(self, max_items: int | None = None) -> list[StreamEvent]:
        """Wait for at least one event; return every event then available.

        It is one checkpoint however many events it returns. If it raises
        ``trio.Cancelled``, no event was consumed.

        Args:
            max_items: Return at most this many (None: no limit).

        Raises:
            Like `receive`; also ``TypeError`` / ``ValueError`` for a bad
            ``max_items``.

        Example:
            >>> async def drain(sub):  # doctest: +SKIP
            ...     while True:
            ...         try:
            ...             for event in await sub.receive_batch(max_items=100):
            ...                 handle(event)
            ...         except trio.EndOfChannel:
            ...             return
        """
        if max_items is not None:
            if not isinstance(max_items, int) or isinstance(max_items, bool):
                raise TypeError(f"max_items must be an int or None, got {max_items!r}")
            if max_items < 1:
                raise ValueError(f"max_items must be at least 1, got {max_items}")
        buffer = self._buf
        cursor = self._cursor
        if self._fast and cursor >= buffer._start:
            events = buffer._events
            base = buffer._base
            index = cursor - base
            count = len(events)
            if index < count:
                await checkpoint_if_cancelled()
                stop = count if max_items is None else min(count, index + max_items)
                self._cursor = base + stop
                batch = events[index:stop]
                await cancel_shielded_checkpoint()
                return batch
            if not buffer._closed:
                if self._task is not None:
                    raise trio.BusyResourceError(_BUSY)
                self._task = task = current_task()
                buffer._parked_all[self] = task
                await wait_task_rescheduled(self._abort)
                self._task = None
                buffer = self._buf
                cursor = self._cursor
                events = buffer._events
                base = buffer._base
                index = cursor - base
                count = len(events)
                if self._fast and index < count and cursor >= buffer._start:
                    stop = count if max_items is None else min(count, index + max_items)
                    self._cursor = base + stop
                    return events[index:stop]
                return await self._receive_batch_slow(max_items, True)
        return await self._receive_batch_slow(max_items, False)

    async def _receive_batch_slow(
        self, max_items: int | None, checkpointed: bool
    ) -> list[StreamEvent]:
        """receive_batch() (and receive()) for the rest: filters, lag, the end, chaining.

        ``checkpointed``: the caller already parked once (a checkpoint).
        """
        if not checkpointed:
            await checkpoint_if_cancelled()
        batch = self._take_many(max_items)
        if batch:
            if not checkpointed:
                await cancel_shielded_checkpoint()
            return batch
        while True:
            self._park()
            await wait_task_rescheduled(self._abort)
            self._task = None
            batch = self._take_many(max_items)
            if batch:
                return batch

    def close(self) -> None:
        """Close the subscription; a task waiting in it gets ``ClosedResourceError``.

        Idempotent. The subscription keeps no event alive after this.
        """
        if self._closed:
            return
        self._closed = True
        self._fast = False
        task = self._task
        if task is not None and self._unpark():
            self._task = None
            reschedule(task)
        # Let go of the history: a closed subscription keeps no event alive.
        self._buf = _DETACHED
        self._cursor = 0

    async def aclose(self) -> None:
        """Close the subscription (see `close`); a checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# What a closed subscription points at instead of its buffer.
_DETACHED: Final = EventBuffer._closed_empty(session_id="", seq=SeqCounter())
