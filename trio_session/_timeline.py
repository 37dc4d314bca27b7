"""The session's append-only timeline and O(1) frozen views of it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, overload

from ._messages import Message, TextBlock


def _text_length(message: Message) -> int:
    """``len(message.text)``, without joining the text."""
    length = 0
    for block in message.content:
        if isinstance(block, TextBlock):
            length += len(block.text)
    return length


class Timeline:
    """A session's committed messages: only ever appended to.

    Because nothing is ever removed or replaced, the first ``n`` messages never
    change, so a view of them can be handed out without copying the history.
    """

    __slots__ = ("_chars", "items")

    def __init__(self, messages: Sequence[Message] = ()) -> None:
        self.items: list[Message] = list(messages)
        # Prefix sums of the messages' text lengths, for the offline models'
        # usage estimate without a pass over the history each tick.
        self._chars: list[int] = [0]
        for message in self.items:
            self._chars.append(self._chars[-1] + _text_length(message))

    def append(self, message: Message) -> int:
        """Commit one more message; return its index."""
        items = self.items
        items.append(message)
        self._chars.append(self._chars[-1] + _text_length(message))
        return len(items) - 1

    def __len__(self) -> int:
        return len(self.items)

    def view(self) -> tuple[Message, ...]:
        """The messages committed so far, frozen at their current number.

        Typed as the tuple it stands for (``TickContext.timeline``,
        ``ModelRequest.messages`` and ``SessionSnapshot.timeline`` are tuples).
        """
        # Not cast(): this runs every tick, and cast is a call.
        return TimelineView(self, len(self.items))  # type: ignore[return-value]


class TimelineView(Sequence[Message]):
    """The first ``len(view)`` messages of a timeline: immutable, built in O(1).

    It behaves as the tuple it stands for: it compares equal to a tuple (or another
    view) of the same messages, hashes like it, and slicing or ``+`` return tuples.
    """

    __slots__ = ("_len", "_timeline")

    def __init__(self, timeline: Timeline, length: int) -> None:
        self._timeline = timeline
        self._len = length

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Message, ...]: ...
    def __getitem__(self, index: int | slice) -> Message | tuple[Message, ...]:
        items = self._timeline.items
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            return tuple(items[start:stop:step])
        i = index.__index__()
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("timeline index out of range")
        return items[i]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Message]:
        return itertools.islice(self._timeline.items, self._len)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TimelineView):
            if other._timeline is self._timeline:
                return other._len == self._len
        elif not isinstance(other, tuple):
            return NotImplemented
        return len(other) == self._len and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __add__(self, other: Sequence[Message]) -> tuple[Message, ...]:
        if not isinstance(other, tuple | TimelineView):
            return NotImplemented
        return (*self, *other)

    def __radd__(self, other: Sequence[Message]) -> tuple[Message, ...]:
        if not isinstance(other, tuple):
            return NotImplemented
        return (*other, *self)

    def __repr__(self) -> str:
        return repr(tuple(self))

    def text_chars(self) -> int:
        """The total length of the messages' text, in O(1)."""
        return self._timeline._chars[self._len]


def trusted(value: Any) -> bool:
    """Whether ``value`` is a view the library built (its messages need no checking)."""
    return type(value) is TimelineView
