"""The retention log: one execution's events, addressed by absolute index.

Pure bookkeeping, no trio. Absolute indexes never change: with a retention
bound the oldest events are dropped logically at once (`start` moves) and
physically in chunks (`base` moves, ``del events[:k]``), which keeps dropping
amortized O(1). Subscriptions are cursors (absolute indexes) into it.
"""

from __future__ import annotations

import bisect
import operator
from typing import Final

from ._events import StreamEvent

__all__ = ["RetentionLog"]

_seq_of: Final = operator.attrgetter("seq")


class RetentionLog:
    """The held events of one execution, oldest first.

    Readers on the hot path use the attributes directly; only `append` and
    `trim` change them.

    Attributes:
        events: The physically held events; ``events[0]`` is at index `base`.
        base: The absolute index of ``events[0]``.
        start: The absolute index of the oldest event still held (logically).
        limit: The retention bound, or None.
        last_dropped: Per event type, the absolute index of the newest dropped
            event of that type.

    Example:
        >>> log = RetentionLog(limit=None)
        >>> log.end, len(log)
        (0, 0)
    """

    __slots__ = ("base", "chunk", "events", "last_dropped", "limit", "start")

    def __init__(self, limit: int | None) -> None:
        self.events: list[StreamEvent] = []
        self.base = 0
        self.start = 0
        self.limit = limit
        # Compact in chunks so that dropping one event costs amortized O(1).
        self.chunk = 0 if limit is None else max(limit, 32)
        # A filtered subscriber lagged only if one of *its* types was dropped.
        self.last_dropped: dict[str, int] = {}

    @property
    def end(self) -> int:
        """The absolute index the next event will get."""
        return self.base + len(self.events)

    def __len__(self) -> int:
        return self.base + len(self.events) - self.start

    def history(self) -> tuple[StreamEvent, ...]:
        """The held events, oldest first (a copy)."""
        return tuple(self.events[self.start - self.base :])

    def at(self, index: int) -> StreamEvent:
        """The event at an absolute index (which must be held)."""
        return self.events[index - self.base]

    def trim(self) -> None:
        """Drop the oldest events beyond `limit`."""
        limit = self.limit
        if limit is None:
            return
        events = self.events
        base = self.base
        start = self.start
        new_start = base + len(events) - limit
        if new_start <= start:
            return
        last_dropped = self.last_dropped
        for index in range(start, new_start):
            last_dropped[events[index - base].type] = index
        self.start = new_start
        if new_start - base >= self.chunk:
            del events[: new_start - base]
            self.base = new_start

    def dropped_since(self, types: frozenset[str], index: int) -> bool:
        """Whether an event of one of ``types`` at or after ``index`` was dropped."""
        last_dropped = self.last_dropped
        return any(last_dropped.get(name, -1) >= index for name in types)

    def index_after(self, after_seq: int) -> int:
        """The absolute index of the first event with ``seq > after_seq``."""
        events = self.events
        base = self.base
        end = base + len(events)
        if not events:
            return end
        # seq is contiguous within one log, so this is arithmetic; the check
        # below falls back to a binary search should it ever not be.
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
