"""Subscriptions: cursors into one execution's `Feed`, and the feed's parked waiters.

A subscription is a cursor (an absolute index into a `RetentionLog`) plus a
reference to its feed: it never copies the history, so a subscriber costs
O(1) memory however long the history is, and the producer's cost per event
does not depend on how many subscribers exist. The producer only does work
for subscribers that are *parked* (blocked in ``receive()``), and only to
reschedule them.

`Feed` and `EventSubscription` are friends: they live here together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import ClassVar, Final, final

import trio
from trio.lowlevel import (
    Abort,
    RaiseCancelT,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
    reschedule,
    wait_task_rescheduled,
)

from ._errors import EventsLagged
from ._events import EVENT_CLASSES, Event, StreamEvent
from ._retention import RetentionLog
from ._util import NoPublicConstructor

__all__ = ["STREAK", "EventSubscription", "Feed", "end_with", "open_subscription"]

_END: Final = "execution_end"
_BUSY: Final = "another task is already waiting on this subscription"
STREAK: Final = 64
"""``async for`` over a subscription yields to the scheduler at least once per this many events."""


class Feed:
    """What subscriptions read: one execution's log, whether it ended, what follows it.

    The buffer appends to it; a session chains feeds (`link`, `end_chain`) so
    that session-wide subscriptions move from one execution to the next.

    Attributes:
        log: The held events.
        closed: Whether the execution's own ``execution_end`` was appended.
        successor: The session's next execution's feed, once linked.
        chain_ended: The session closed: no successor will come.
        parked_all: Parked unfiltered subscriptions (they wake on every event).
        parked_filtered: Parked filtered subscriptions, also indexed by type in
            ``parked_typed`` so that unwanted events cost nothing.
    """

    __slots__ = (
        "__weakref__",
        "chain_ended",
        "closed",
        "log",
        "parked_all",
        "parked_filtered",
        "parked_typed",
        "successor",
    )

    def __init__(self, limit: int | None) -> None:
        self.log = RetentionLog(limit)
        self.closed = False
        self.successor: Feed | None = None
        self.chain_ended = False
        self.parked_all: dict[EventSubscription, Task] = {}
        self.parked_filtered: dict[EventSubscription, None] = {}
        self.parked_typed: dict[str, dict[EventSubscription, None]] = {}

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Feed events={len(self.log)} {state}>"

    @enable_ki_protection
    def append(self, event: StreamEvent) -> None:
        """Append an event and wake who waits for it (its index is ``log.end - 1``).

        `Publisher.emit` does the common case itself (nobody parked, no bound, not
        ``execution_end``: only the list append); every other case comes here.
        """
        log = self.log
        log.events.append(event)
        parked = self.parked_all
        if parked:
            # reschedule() only queues the tasks: none can touch this set
            # before clear().
            for task in parked.values():
                reschedule(task)
            parked.clear()
        if self.parked_filtered:
            waiting = self.parked_typed.get(event.type)
            if waiting:
                index = log.end - 1
                for sub in tuple(waiting):
                    sub._wake(index)
        if event.type == _END and not event.spawn_path:
            # The execution's own end. A forwarded child's execution_end
            # (with a spawn_path) is just another event of this stream.
            self.closed = True
            self._wake_filtered_at_close()
        if log.limit is not None:
            log.trim()

    def _wake_filtered_at_close(self) -> None:
        # Filtered buffer subscriptions that do not want execution_end must
        # still learn that the stream ended. Session-wide ones wait for
        # link() / end_chain() instead.
        end = self.log.end
        for sub in tuple(self.parked_filtered):
            if not sub._session:
                sub._wake(end)

    def _wake_all(self) -> None:
        end = self.log.end
        for sub in tuple(self.parked_filtered):
            sub._wake(end)
        parked = self.parked_all
        self.parked_all = {}
        for task in parked.values():
            reschedule(task)

    @enable_ki_protection
    def link(self, successor: Feed) -> None:
        """Chain the session's next execution after this one.

        Raises:
            RuntimeError: This feed is its own successor, already linked, or
                its chain ended.
        """
        if successor is self:
            raise RuntimeError("an EventBuffer cannot be its own successor")
        if self.successor is not None or self.chain_ended:
            raise RuntimeError("this EventBuffer already has a successor or ended its chain")
        self.successor = successor
        if self.closed:
            self._wake_all()

    @enable_ki_protection
    def end_chain(self) -> None:
        """The session closed: no successor will come. Idempotent.

        Raises:
            RuntimeError: This feed already has a successor.
        """
        if self.successor is not None:
            raise RuntimeError("this EventBuffer already has a successor")
        if self.chain_ended:
            return
        self.chain_ended = True
        if self.closed:
            self._wake_all()


def _closed_feed() -> Feed:
    feed = Feed(None)
    feed.closed = True
    return feed


# What a closed subscription points at instead of its feed.
_DETACHED: Final = _closed_feed()


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


def end_with(
    subscription: EventSubscription, ending: Callable[[EventSubscription], Awaitable[None]]
) -> EventSubscription:
    """Have ``async for`` over ``subscription`` await ``ending(subscription)`` at the end.

    ``ending`` may raise (what it raises ends the loop instead); the handle's
    iterator is a subscription that ends by waiting for its execution's outcome.
    It is given the subscription rather than holding it, so the two form no cycle.
    """
    subscription._ending = ending
    return subscription


def open_subscription(
    feed: Feed, types: Collection[str] | None, after_seq: int | None, *, session: bool
) -> EventSubscription:
    """A subscription of ``feed``; a ``session`` one follows its successors.

    Raises:
        TypeError: ``types`` is not a collection of str, or ``after_seq`` is not an int.
        ValueError: ``types`` names an unknown type or is empty, or ``after_seq`` is negative.
    """
    if types is None and after_seq is None:
        # What ``async for event in handle`` opens: nothing to check or skip.
        return EventSubscription._create(
            feed, feed.log.start if session else 0, None, None, session
        )
    wanted = _check_types(types)
    after = _check_after_seq(after_seq)
    # An execution's subscriber asks for everything from its first event (or
    # after after_seq) and learns by EventsLagged what the bound dropped; a
    # session-wide one without after_seq asks for what the session still holds.
    subscription = EventSubscription._create(
        feed, feed.log.start if after is None and session else 0, wanted, after, session
    )
    if after is not None:
        subscription._apply_after(feed)
    return subscription


@final
class EventSubscription(trio.abc.ReceiveChannel[Event], metaclass=NoPublicConstructor):
    """One subscriber's view of an `EventBuffer`: a cursor, not a copy.

    Made by `EventBuffer.subscribe` and `Session.subscribe`; there is no
    public constructor.

    It is a ``trio.abc.ReceiveChannel[Event]`` (`Event`, the union of the
    event classes, so ``event.type == "content_delta"`` narrows; every one is
    a `StreamEvent`): ``await receive()``,
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
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def show(buf):
        ...     async with buf.subscribe(types={"execution_end"}) as events:
        ...         while True:
        ...             try:
        ...                 batch = await events.receive_batch()
        ...             except trio.EndOfChannel:
        ...                 break
        ...             print(len(batch), "event:", batch[0].type)
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["Hi!"]))) as session:
        ...         await show((await session.send("Hello")).events)
        >>> trio.run(main)
        1 event: execution_end
    """

    __slots__ = (
        "_after",
        "_budget",
        "_closed",
        "_cursor",
        "_ending",
        "_fast",
        "_feed",
        "_session",
        "_task",
        "_types",
    )

    _made_by: ClassVar = "EventBuffer.subscribe() or Session.subscribe()"

    def __init__(
        self,
        feed: Feed,
        cursor: int,
        types: frozenset[str] | None,
        after: int | None,
        session: bool,
    ) -> None:
        self._feed = feed
        self._cursor = cursor
        self._types = types
        self._after = after
        self._session = session
        # Unfiltered, open, past after_seq: receive() may take the short path.
        self._fast = types is None and after is None
        self._closed = False
        self._task: Task | None = None
        # Events ``async for`` may still hand out before it yields to the scheduler.
        self._budget = STREAK
        # What ``async for`` awaits at the end, before it stops (see `end_with`).
        self._ending: Callable[[EventSubscription], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        kind = "session " if self._session else ""
        state = "closed" if self._closed else f"at index {self._cursor}"
        return f"<EventSubscription {kind}{state} of {self._feed!r}>"

    # -- taking events (synchronous) ----------------------------------------

    def _lagged(self, log: RetentionLog) -> None:
        missed = log.start - self._cursor
        behind = self._cursor
        self._cursor = log.start
        types = self._types
        if types is None or log.dropped_since(types, behind):
            raise EventsLagged(missed)

    def _apply_after(self, feed: Feed) -> None:
        """Skip the events up to seq ``_after``; forget it once a later one exists.

        seq grows along the whole chain, so once an event after ``_after`` was
        seen, no later event can be at or before it.
        """
        log = feed.log
        index = log.index_after(self._after)  # type: ignore[arg-type]
        if index > self._cursor:
            self._cursor = index
        if index < log.end:
            self._after = None
            self._fast = self._types is None and not self._closed

    def _at_end(self, feed: Feed) -> bool:
        """At the end of ``feed``: move to its successor (True) or stop (False).

        Raises ``trio.EndOfChannel`` when nothing more can come.
        """
        if not feed.closed:
            return False
        if not self._session:
            raise trio.EndOfChannel
        successor = feed.successor
        if successor is not None:
            self._feed = successor
            self._cursor = 0
            return True
        if feed.chain_ended:
            raise trio.EndOfChannel
        return False

    def _take_many(self, max_items: int | None) -> list[Event]:
        """The next wanted events (at most ``max_items``); [] when none is available yet."""
        if self._closed:
            raise trio.ClosedResourceError("this subscription was closed")
        types = self._types
        while True:
            feed = self._feed
            if self._after is not None:
                self._apply_after(feed)
            log = feed.log
            cursor = self._cursor
            if cursor < log.start:
                self._lagged(log)
                cursor = self._cursor
            # The log holds only the library's event classes: the members of Event.
            events: list[Event] = log.events  # type: ignore[assignment]
            base = log.base
            index = cursor - base
            count = len(events)
            if types is None:
                if index < count:
                    stop = count if max_items is None else min(count, index + max_items)
                    self._cursor = base + stop
                    return events[index:stop]
            else:
                batch: list[Event] = []
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
            if not self._at_end(feed):
                return []

    # -- parking --------------------------------------------------------------

    def _park(self) -> None:
        if self._task is not None:
            raise trio.BusyResourceError(_BUSY)
        self._task = task = current_task()
        feed = self._feed
        if self._types is None:
            feed.parked_all[self] = task
        else:
            feed.parked_filtered[self] = None
            typed = feed.parked_typed
            for name in self._types:
                waiting = typed.get(name)
                if waiting is None:
                    waiting = typed[name] = {}
                waiting[self] = None

    def _unpark(self) -> bool:
        """Leave the feed's parked sets; whether this subscription was in them."""
        feed = self._feed
        if self._types is None:
            return feed.parked_all.pop(self, None) is not None
        if feed.parked_filtered.pop(self, False) is not None:
            return False
        typed = feed.parked_typed
        for name in self._types:
            del typed[name][self]
        return True

    def _wake(self, cursor: int) -> None:
        # Called by the feed for a parked filtered subscription. Every event
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

    @enable_ki_protection
    def receive_nowait(self) -> Event:
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

    async def receive(self) -> Event:
        """Wait for the next event and return it.

        Raises:
            trio.EndOfChannel: The stream ended and every event was received.
            trio.ClosedResourceError: This subscription was closed, before or
                while waiting.
            trio.BusyResourceError: Another task is waiting on this subscription.
            EventsLagged: Events this subscription needed were dropped (once;
                the next call continues at the oldest event held).
        """
        return (await self._receive(1))[0]

    async def receive_batch(self, max_items: int | None = None) -> list[Event]:
        """Wait for at least one event; return every event then available.

        It is one checkpoint however many events it returns. If it raises
        ``trio.Cancelled``, no event was consumed.

        Args:
            max_items: Return at most this many (None: no limit).

        Raises:
            TypeError: ``max_items`` is not an int or None (and what `receive` raises).
            ValueError: ``max_items`` is less than 1.

        Example:
            >>> import trio
            >>> from trio_session import Agent, ScriptedModel, open_session
            >>> async def drain(sub):
            ...     while True:
            ...         try:
            ...             for event in await sub.receive_batch(max_items=100):
            ...                 print(event.type)
            ...         except trio.EndOfChannel:
            ...             return
            >>> async def main():
            ...     async with open_session(Agent(ScriptedModel(["Hi!"]))) as session:
            ...         handle = await session.send("Hello")
            ...         async with handle.events.subscribe(types={"execution_end"}) as sub:
            ...             await drain(sub)
            >>> trio.run(main)
            execution_end
        """
        if max_items is not None:
            if not isinstance(max_items, int) or isinstance(max_items, bool):
                raise TypeError(f"max_items must be an int or None, got {max_items!r}")
            if max_items < 1:
                raise ValueError(f"max_items must be at least 1, got {max_items}")
        return await self._receive(max_items)

    @enable_ki_protection
    async def _receive(self, max_items: int | None) -> list[Event]:
        """The one receive path of `receive` and `receive_batch`."""
        # The short path, for an unfiltered subscription that keeps up or
        # replays: it must cost no more than a memory channel's receive().
        feed = self._feed
        log = feed.log
        cursor = self._cursor
        if self._fast and cursor >= log.start:
            events: list[Event] = log.events  # type: ignore[assignment]
            base = log.base
            index = cursor - base
            count = len(events)
            if index < count:
                await checkpoint_if_cancelled()
                stop = count if max_items is None else min(count, index + max_items)
                self._cursor = base + stop
                batch = events[index:stop]
                await cancel_shielded_checkpoint()
                return batch
            if feed.closed:
                await checkpoint_if_cancelled()
                batch = self._take_many(max_items)
            else:
                # A reader that keeps up with a live feed: nothing to take
                # (what _take_many would find too), so park at once.
                batch = []
        else:
            # Filters, lag, the end, chaining, or nothing there yet.
            await checkpoint_if_cancelled()
            batch = self._take_many(max_items)
        if batch:
            await cancel_shielded_checkpoint()
            return batch
        while True:
            # Parking is the checkpoint: a cancelled task never gets past
            # wait_task_rescheduled, and nothing was consumed.
            self._park()
            await wait_task_rescheduled(self._abort)
            self._task = None
            batch = self._take_many(max_items)
            if batch:
                return batch

    async def __anext__(self) -> Event:
        """``async for event in subscription``: the events as they come, then the end.

        Every event already there is handed out without a pass through the
        scheduler (as `receive_batch` takes them), yet cancellation is seen at
        every event, and nothing is consumed by a cancelled step; it yields
        when it must wait for the next event, and at least every
        `STREAK` events. `receive` stays a checkpoint of its own, as a memory
        channel's is.
        """
        try:
            if self._budget:
                await checkpoint_if_cancelled()
                if self._fast:
                    # Unfiltered and keeping up: the next event, if there, by index.
                    log = self._feed.log
                    events = log.events
                    cursor = self._cursor
                    index = cursor - log.base
                    if index < len(events) and cursor >= log.start:
                        self._cursor = cursor + 1
                        self._budget -= 1
                        return events[index]  # type: ignore[return-value]
                batch = self._take_many(1)
                if batch:
                    self._budget -= 1
                    return batch[0]
            self._budget = STREAK
            return (await self._receive(1))[0]
        except trio.EndOfChannel:
            pass
        # Awaited outside the except block: what it raises, or a cancellation
        # while it waits, does not carry EndOfChannel along as its context.
        ending = self._ending
        if ending is not None:
            await ending(self)
        raise StopAsyncIteration

    @enable_ki_protection
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
        self._feed = _DETACHED
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
