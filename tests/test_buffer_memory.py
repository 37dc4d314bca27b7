"""A subscription is a cursor, not a copy: O(1) memory per subscriber.

Run with ``-s`` to see the measured bytes per subscriber.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
from typing import Any

import pytest
import trio

from trio_session import CustomEvent, EventBuffer, EventSubscription, ExecutionEnd
from trio_session._buffer import publisher_of, session_subscribe

SUBSCRIBERS = 1_000


def make_history(events: int, *, closed: bool = True) -> EventBuffer:
    buf = EventBuffer(session_id="s", execution_id="e")
    for i in range(events):
        publisher_of(buf).emit(CustomEvent, name="n", data=i)
    if closed:
        publisher_of(buf).emit(ExecutionEnd, status="completed")
    return buf


def bytes_per_subscriber(buf: EventBuffer, session: bool = False, **kwargs: Any) -> float:
    """Traced allocation of creating SUBSCRIBERS subscriptions, per subscription."""
    subs: list[EventSubscription | None] = [None] * SUBSCRIBERS  # allocated up front
    subscribe = functools.partial(session_subscribe, buf) if session else buf.subscribe
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(SUBSCRIBERS):
            subs[i] = subscribe(**kwargs)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(sub is not None for sub in subs)
    return (after - before) / SUBSCRIBERS


def test_late_subscribers_on_a_long_history_cost_constant_memory() -> None:
    long_history = bytes_per_subscriber(make_history(10_000))
    short_history = bytes_per_subscriber(make_history(10))
    print(
        f"\n{SUBSCRIBERS} late subscribers on a 10,000-event history: "
        f"{long_history:.1f} bytes/subscriber (10-event history: {short_history:.1f})"
    )
    # A subscription object and nothing else: no copy, no per-event state.
    assert long_history <= 160
    assert abs(long_history - short_history) <= 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"after_seq": 5_000},
        {"after_seq": 0},
        {"session": True},
        {"session": True, "after_seq": 9_999},
    ],
    ids=["after_seq-middle", "after_seq-start", "session", "session-after_seq"],
)
def test_every_kind_of_subscription_costs_constant_memory(kwargs: dict[str, Any]) -> None:
    # Histories of 1,000 and 10,000 events: both put cursors past 256, which
    # are int objects of their own (a fixed 32 bytes), so like compares with like.
    long_history = bytes_per_subscriber(make_history(10_000), **kwargs)
    short_history = bytes_per_subscriber(make_history(1_000), **kwargs)
    assert long_history <= 160
    assert abs(long_history - short_history) <= 8


def test_filtered_subscriptions_cost_constant_memory() -> None:
    types = ["custom", "execution_end"]
    long_history = bytes_per_subscriber(make_history(10_000), types=types)
    short_history = bytes_per_subscriber(make_history(10), types=types)
    # The filter's frozenset is the only extra: still independent of the history.
    assert long_history <= 500
    assert abs(long_history - short_history) <= 8


async def test_reading_the_replay_copies_nothing() -> None:
    buf = make_history(10_000)
    sub = buf.subscribe()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        count = 0
        while True:
            try:
                sub.receive_nowait()
            except trio.EndOfChannel:
                break
            count += 1
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 10_001
    assert peak - before < 4_096
    assert after - before < 1_024


def test_bounded_buffer_memory_stays_flat() -> None:
    buf = EventBuffer(max_buffered_events=100)
    subs = [buf.subscribe() for _ in range(10)]  # never read: they must not pin events
    for i in range(1_000):
        publisher_of(buf).emit(CustomEvent, name="n", data=i)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(2_000):
            publisher_of(buf).emit(CustomEvent, name="n", data=i)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(buf) == 100
    # 2,000 more events (20 windows), yet at most the retained window (and a chunk) held.
    assert after - before < 100 * 1_000
    assert len(subs) == 10
