"""EventEmitter-style listeners of an event buffer: plain callables, called synchronously.

No trio inside: listeners run in the publisher's call, in registration order;
one that raises is logged (logger ``trio_session``) and isolated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, cast

from ._events import EVENT_CLASSES, Event, StreamEvent

__all__ = ["ALL", "Listener", "Listeners", "split_listener_args"]

Listener = Callable[[Event], object]
"""A listener: a plain callable that gets each event, called synchronously.

It gets an `Event` (the union of the event classes, which narrows on
``event.type``); a callable of any `StreamEvent` is one too.
"""

ALL: Final = "*"

_logger: Final = logging.getLogger("trio_session")


def _noop() -> None:
    return None


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


def _check_listener_type(type_: object) -> str | None:
    if not isinstance(type_, str):
        raise TypeError(f"event type must be a str, got {type(type_).__name__}")
    if type_ == ALL:
        return None
    if type_ not in EVENT_CLASSES:
        raise ValueError(f"unknown event type {type_!r}; known: '*', {sorted(EVENT_CLASSES)}")
    return type_


def split_listener_args(
    where: str, type_or_handler: str | Listener, handler: Listener | None
) -> tuple[str | None, Listener]:
    """Check ``on(type, handler)`` / ``on(handler)`` arguments; None is every type."""
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


class Listeners:
    """The listeners of one buffer, and their dispatch.

    Events published by a listener during a dispatch are dispatched after the
    current one, in seq order. Once the execution's own ``execution_end`` was
    dispatched (or `drop` was called), every listener is let go and new ones
    are refused silently: nothing can be published any more.

    Attributes:
        registrations: The active registrations, in order; empty (falsy) when
            there is nothing to dispatch to, which the publisher checks per event.
    """

    __slots__ = ("_dispatching", "_dropped", "_pending", "registrations")

    def __init__(self) -> None:
        self.registrations: tuple[_Registration, ...] = ()
        self._dropped = False
        self._dispatching = False
        # Events published by listeners during a dispatch, waiting for theirs.
        self._pending: list[tuple[int, StreamEvent]] = []

    def __bool__(self) -> bool:
        return bool(self.registrations)

    def drop(self) -> None:
        """Let go of every listener and refuse new ones."""
        self.registrations = ()
        self._dropped = True

    def register(
        self, type_: str | None, handler: Listener, once: bool, from_index: int = 0
    ) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        if self._dropped:
            # Nothing can be published any more; keeping it would only leak it.
            return _noop
        registration = _Registration(type_, handler, once, from_index)
        self.registrations = (*self.registrations, registration)

        def unsubscribe() -> None:
            self._unregister(registration)

        return unsubscribe

    def _unregister(self, registration: _Registration) -> None:
        if not registration.active:
            return
        registration.active = False
        self.registrations = tuple(r for r in self.registrations if r is not registration)

    def remove(self, type_: str | None, handler: Listener) -> bool:
        """Remove the first registration of ``handler`` for ``type_``; whether one was."""
        for registration in self.registrations:
            if registration.type == type_ and registration.handler == handler:
                self._unregister(registration)
                return True
        return False

    @staticmethod
    def call(handler: Listener, event: StreamEvent) -> None:
        """Call one listener, logging and isolating what it raises."""
        try:
            # The buffer holds only the library's event classes: the members of Event.
            handler(cast("Event", event))
        except Exception:
            _logger.exception(
                "event listener %r raised on %s event (seq %d); ignored",
                handler,
                event.type,
                event.seq,
            )

    def dispatch(self, index: int, event: StreamEvent) -> None:
        """Call the listeners of ``event`` (at absolute ``index``)."""
        if self._dispatching:
            # A listener published: the event is in the history already, but
            # its listeners run after the current dispatch, in seq order.
            self._pending.append((index, event))
            return
        self._dispatching = True
        try:
            while True:
                event_type = event.type
                for registration in self.registrations:
                    if (
                        registration.active
                        and (registration.type is None or registration.type == event_type)
                        and index >= registration.from_index
                    ):
                        if registration.once:
                            self._unregister(registration)
                        self.call(registration.handler, event)
                if event_type == "execution_end" and not event.spawn_path:
                    self.drop()
                if not self._pending:
                    break
                index, event = self._pending.pop(0)
        finally:
            self._dispatching = False
            self._pending.clear()
