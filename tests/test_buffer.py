"""EventBuffer and EventSubscription: fan-out, replay, filters, listeners, lag, chains."""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_session import (
    EVENT_CLASSES,
    CustomEvent,
    ErrorEvent,
    EventBuffer,
    EventsLagged,
    EventSubscription,
    ExecutionEnd,
    ExecutionStart,
    StreamEvent,
    TickStart,
    Usage,
)
from trio_session._buffer import (
    SeqCounter,
    SessionChain,
    emitter,
    end_chain,
    link,
    publisher_of,
    session_subscribe,
)

# -- helpers -----------------------------------------------------------------


def custom(buf: EventBuffer, data: Any = None, name: str = "n") -> CustomEvent:
    return publisher_of(buf).emit(CustomEvent, name=name, data=data)


def end(buf: EventBuffer, status: str = "completed") -> ExecutionEnd:
    return publisher_of(buf).emit(ExecutionEnd, status=status)


def seqs(events: Sequence[StreamEvent]) -> list[int]:
    return [event.seq for event in events]


def drain_nowait(sub: EventSubscription) -> list[StreamEvent]:
    """Every event available now; stops at WouldBlock or EndOfChannel."""
    out: list[StreamEvent] = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


class TaskWatch(trio.abc.Instrument):
    """Counts how often one task yields (steps) and is rescheduled."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0
        self.scheduled = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.scheduled += 1


async def yields_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Await ``fn()`` and count the schedule points the current task went through."""
    watch = TaskWatch(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(watch)
    try:
        result = await fn()
    finally:
        trio.lowlevel.remove_instrument(watch)
    return result, watch.steps


# -- SeqCounter and construction ----------------------------------------------


def test_seq_counter_hands_out_consecutive_numbers() -> None:
    counter = SeqCounter()
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    assert counter.last == 3
    assert SeqCounter(41).next() == 42


@pytest.mark.parametrize(
    ("value", "error"), [("1", TypeError), (True, TypeError), (-1, ValueError)]
)
def test_seq_counter_refuses_bad_start(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="last"):
        SeqCounter(value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_buffered_events": 0}, ValueError, "max_buffered_events"),
        ({"max_buffered_events": -3}, ValueError, "max_buffered_events"),
        ({"max_buffered_events": "5"}, TypeError, "max_buffered_events"),
        ({"max_buffered_events": True}, TypeError, "max_buffered_events"),
        ({"seq": 3}, TypeError, "SeqCounter"),
    ],
)
def test_buffer_refuses_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        EventBuffer(**kwargs)


def test_new_buffer_is_empty_and_open() -> None:
    buf = EventBuffer(session_id="s", execution_id="e")
    assert len(buf) == 0
    assert buf.history == ()
    assert not buf.closed
    assert buf.tick == 0
    assert buf.max_buffered_events is None
    assert "open" in repr(buf)


# -- publishing: _emit, _publish, emit -------------------------------------------


def test_emit_internal_stamps_every_common_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1234.5)
    buf = EventBuffer(session_id="s1", execution_id="x1")
    first = publisher_of(buf).emit(ExecutionStart)
    buf.tick = 3
    second = custom(buf, data={"k": 1})
    assert (first.seq, first.session_id, first.execution_id, first.tick) == (1, "s1", "x1", 0)
    assert (second.seq, second.tick, second.timestamp, second.data) == (2, 3, 1234.5, {"k": 1})
    assert buf.history == (first, second)
    assert len(buf) == 2


def test_shared_counter_numbers_across_buffers() -> None:
    counter = SeqCounter(10)
    first = EventBuffer(seq=counter)
    second = EventBuffer(seq=counter)
    assert custom(first).seq == 11
    assert custom(second).seq == 12
    assert custom(first).seq == 13
    assert counter.last == 13


def test_emit_with_bad_fields_leaves_no_seq_gap() -> None:
    buf = EventBuffer()
    custom(buf)
    with pytest.raises(TypeError):
        publisher_of(buf).emit(CustomEvent, nonsense=1)
    assert custom(buf).seq == 2
    assert len(buf) == 2


def test_each_emitter_builds_what_the_class_constructor_builds() -> None:
    buf = EventBuffer(session_id="s", execution_id="x")
    buf.tick = 4
    publisher = publisher_of(buf)
    assert (publisher.session_id, publisher.execution_id, publisher.tick) == ("s", "x", 4)
    first = emitter(ExecutionEnd)(publisher, status="completed")
    assert first == ExecutionEnd(
        seq=1,
        session_id="s",
        execution_id="x",
        tick=4,
        timestamp=first.timestamp,
        status="completed",
    )
    # Defaults and factories apply as in the constructor.
    assert first.usage == Usage() and first.new_messages == () and first.reason is None
    assert buf.closed and buf.history == (first,)
    for cls in EVENT_CLASSES.values():
        own = {f.name for f in attrs.fields(cls)} - {
            "seq",
            "session_id",
            "execution_id",
            "tick",
            "timestamp",
            "spawn_path",
        }
        required = {
            f.name for f in attrs.fields(cls) if f.name in own and f.default is attrs.NOTHING
        }
        with pytest.raises(TypeError, match=rf"{cls.__name__}.__init__\(\) got an unexpected"):
            emitter(cls)(publisher_of(EventBuffer()), nonsense=1, **dict.fromkeys(required))
        if required:
            with pytest.raises(TypeError, match=rf"{cls.__name__}.__init__\(\) missing"):
                emitter(cls)(publisher_of(EventBuffer()))


def test_execution_end_closes_the_buffer() -> None:
    buf = EventBuffer()
    custom(buf)
    end(buf)
    assert buf.closed
    assert "closed" in repr(buf)
    with pytest.raises(trio.ClosedResourceError):
        custom(buf)
    with pytest.raises(trio.ClosedResourceError):
        publisher_of(buf).forward(CustomEvent(seq=9, name="x"))
    with pytest.raises(trio.ClosedResourceError):
        buf.emit("custom", name="x")
    assert len(buf) == 2


def test_publish_appends_the_event_as_it_is() -> None:
    buf = EventBuffer(session_id="parent")
    custom(buf)
    forwarded = CustomEvent(
        seq=2, session_id="child", execution_id="cx", tick=4, spawn_path=("sp1",), name="c"
    )
    publisher_of(buf).forward(forwarded)
    assert buf.history[-1] is forwarded
    publisher_of(buf).forward(ExecutionEnd(seq=3, status="completed"))
    assert buf.closed


async def test_forwarded_child_execution_end_does_not_close_the_buffer() -> None:
    counter = SeqCounter()
    buf = EventBuffer(reserved=True, seq=counter)
    sub = buf.subscribe()
    seen: list[int] = []
    buf.on(lambda e: seen.append(e.seq))
    publisher_of(buf).emit(ExecutionStart)
    # Forwarded as the engine does: numbered in this session's stream.
    child_end = ExecutionEnd(
        seq=counter.next(),
        session_id="child",
        execution_id="cx",
        spawn_path=("sp1",),
        status="completed",
    )
    publisher_of(buf).forward(child_end)
    assert not buf.closed
    custom(buf)  # the parent's stream goes on
    end(buf)
    assert buf.closed
    assert seqs(drain_nowait(sub)) == [1, 2, 3, 4]
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()
    assert seen == [1, 2, 3, 4]


def test_public_emit_by_type_builds_and_stamps() -> None:
    buf = EventBuffer(session_id="s", execution_id="e")
    buf.tick = 2
    event = buf.emit("custom", name="progress", data=0.5)
    assert isinstance(event, CustomEvent)
    assert (event.seq, event.session_id, event.execution_id, event.tick) == (1, "s", "e", 2)
    assert (event.name, event.data) == ("progress", 0.5)
    assert buf.history == (event,)


def test_public_emit_of_an_instance_restamps_but_keeps_timestamp_and_path() -> None:
    buf = EventBuffer(session_id="s", execution_id="e")
    custom(buf)
    buf.tick = 7
    original = CustomEvent(
        seq=99,
        session_id="other",
        execution_id="o",
        tick=1,
        timestamp=5.0,
        spawn_path=("a", "b"),
        name="x",
        data=[1],
    )
    published = buf.emit(original)
    assert published is not original
    assert published == attrs.evolve(original, seq=2, session_id="s", execution_id="e", tick=7)
    assert buf.history[-1] is published


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("nope",), {}, ValueError, "unknown event type 'nope'"),
        (("custom",), {}, TypeError, "custom.*name"),
        (("custom",), {"name": "x", "bogus": 1}, TypeError, "custom.*bogus"),
        (("custom",), {"name": "x", "seq": 5}, TypeError, "seq are stamped"),
        (("custom",), {"name": "x", "tick": 1, "timestamp": 2.0}, TypeError, "tick, timestamp"),
        ((42,), {}, TypeError, "event type name or an event, got int"),
        ((CustomEvent(name="x"),), {"data": 1}, TypeError, "takes no fields"),
        ((StreamEvent(),), {}, ValueError, "without a type"),
    ],
)
def test_public_emit_refuses_bad_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    buf = EventBuffer()
    with pytest.raises(error, match=match):
        buf.emit(*args, **kwargs)
    assert len(buf) == 0
    assert custom(buf).seq == 1  # nothing was numbered


@pytest.mark.parametrize(
    "event",
    [
        ("execution_start", {}),
        ("execution_end", {"status": "completed"}),
        (ExecutionEnd(status="completed"), {}),
        (ExecutionStart(), {}),
    ],
)
def test_reserved_buffer_refuses_engine_types(event: tuple[Any, dict[str, Any]]) -> None:
    buf = EventBuffer(reserved=True)
    value, fields = event
    with pytest.raises(ValueError, match="belong to the engine"):
        buf.emit(value, **fields)
    assert not buf.closed
    assert len(buf) == 0
    # The engine itself may still publish them.
    publisher_of(buf).emit(ExecutionStart)
    end(buf)
    assert buf.closed


def test_unreserved_buffer_accepts_execution_end_from_emit() -> None:
    buf = EventBuffer()
    buf.emit("execution_end", status="completed")
    assert buf.closed


# -- subscriptions: replay, live, end ------------------------------------------


async def test_replay_then_live_then_end() -> None:
    buf = EventBuffer()
    custom(buf, 1)
    custom(buf, 2)
    received: list[int] = []

    async def reader(sub: EventSubscription) -> None:
        with sub:
            async for event in sub:
                received.append(event.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, buf.subscribe())
        await trio.testing.wait_all_tasks_blocked()
        assert received == [1, 2]
        custom(buf, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert received == [1, 2, 3]
        end(buf)
    assert received == [1, 2, 3, 4]


async def test_end_of_channel_forever_after_execution_end() -> None:
    buf = EventBuffer()
    custom(buf)
    end(buf)
    sub = buf.subscribe()
    assert seqs([await sub.receive(), await sub.receive()]) == [1, 2]
    for _ in range(3):
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()
    with pytest.raises(trio.EndOfChannel):
        await sub.receive_batch()


async def test_late_subscriber_after_the_end_gets_the_full_replay() -> None:
    buf = EventBuffer()
    published = [
        publisher_of(buf).emit(ExecutionStart),
        *(custom(buf, i) for i in range(50)),
        end(buf),
    ]
    async with buf.subscribe() as sub:
        assert [event async for event in sub] == published
    with buf.subscribe() as sub:
        assert await sub.receive_batch() == published


@pytest.mark.parametrize("readers", [2, 10])
async def test_concurrent_iterators_each_get_every_event_once_in_order(readers: int) -> None:
    buf = EventBuffer()
    results: list[list[int]] = [[] for _ in range(readers)]

    async def reader(out: list[int], batch: bool) -> None:
        with buf.subscribe() as sub:
            if batch:
                while True:
                    try:
                        out.extend(seqs(await sub.receive_batch()))
                    except trio.EndOfChannel:
                        return
            async for event in sub:
                out.append(event.seq)

    async with trio.open_nursery() as nursery:
        for index, out in enumerate(results):
            nursery.start_soon(reader, out, index % 3 == 2)
        for i in range(300):
            custom(buf, i)
            if i % 7 == 0:
                await trio.lowlevel.checkpoint()
            if i % 50 == 0:
                await trio.testing.wait_all_tasks_blocked()
        end(buf)
    expected = list(range(1, 302))
    assert results == [expected] * readers


async def test_subscriber_that_never_reads_does_not_delay_the_producer() -> None:
    buf = EventBuffer()
    idle = [buf.subscribe() for _ in range(100)]
    parked_filtered: list[int] = []
    reader_got: list[int] = []

    async def reader() -> None:
        with buf.subscribe() as sub:
            async for event in sub:
                reader_got.append(event.seq)

    async def filtered_waiter(task_status: trio.TaskStatus[trio.lowlevel.Task]) -> None:
        task_status.started(trio.lowlevel.current_task())
        with buf.subscribe(types={"error"}) as sub:
            async for event in sub:
                parked_filtered.append(event.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        waiter_task = await nursery.start(filtered_waiter)
        await trio.testing.wait_all_tasks_blocked()
        watch = TaskWatch(waiter_task)
        trio.lowlevel.add_instrument(watch)
        # Publishing is synchronous: it cannot wait for anyone.
        for i in range(2_000):
            custom(buf, i)
        await trio.testing.wait_all_tasks_blocked()
        # The filtered subscriber was never woken by events it does not want.
        assert watch.scheduled == 0
        publisher_of(buf).emit(ErrorEvent, message="boom")
        await trio.testing.wait_all_tasks_blocked()
        assert watch.scheduled == 1
        trio.lowlevel.remove_instrument(watch)
        end(buf)
    assert reader_got == list(range(1, 2_003))
    assert parked_filtered == [2_001]
    # The idle subscriptions still get everything, whenever they read.
    for sub in idle:
        assert seqs(drain_nowait(sub)) == list(range(1, 2_003))


# -- filters and after_seq ---------------------------------------------------------


async def test_types_filter_skips_other_types_and_still_ends() -> None:
    buf = EventBuffer()
    got: list[str] = []

    async def reader() -> None:
        with buf.subscribe(types=["tick_start", "error"]) as sub:
            async for event in sub:
                got.append(event.type)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        publisher_of(buf).emit(TickStart)
        custom(buf)
        publisher_of(buf).emit(ErrorEvent, message="x")
        custom(buf)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["tick_start", "error"]
        end(buf)  # not wanted, but it ends the stream
    assert got == ["tick_start", "error"]


async def test_filtered_replay_and_batch() -> None:
    buf = EventBuffer()
    for i in range(10):
        publisher_of(buf).emit(TickStart) if i % 3 == 0 else custom(buf, i)
    end(buf)
    with buf.subscribe(types={"tick_start", "execution_end"}) as sub:
        assert seqs(await sub.receive_batch(max_items=2)) == [1, 4]
        assert seqs(await sub.receive_batch()) == [7, 10, 11]
        with pytest.raises(trio.EndOfChannel):
            await sub.receive_batch()


@pytest.mark.parametrize(
    ("types", "error", "match"),
    [
        ("custom", TypeError, "collection of event type names"),
        (42, TypeError, "collection of event type names"),
        ([1], TypeError, "str event type names"),
        (["custom", "bogus"], ValueError, r"unknown event type\(s\) \['bogus'\]"),
        ([], ValueError, "types is empty"),
    ],
)
def test_subscribe_refuses_bad_types(types: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        EventBuffer().subscribe(types=types)


@pytest.mark.parametrize(
    ("after_seq", "error"), [("3", TypeError), (True, TypeError), (-1, ValueError)]
)
def test_subscribe_refuses_bad_after_seq(after_seq: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="after_seq"):
        EventBuffer().subscribe(after_seq=after_seq)


async def test_after_seq_skips_what_was_seen() -> None:
    counter = SeqCounter(100)  # this buffer's events start at seq 101
    buf = EventBuffer(seq=counter)
    for i in range(5):
        custom(buf, i)
    assert seqs(drain_nowait(buf.subscribe(after_seq=103))) == [104, 105]
    assert seqs(drain_nowait(buf.subscribe(after_seq=0))) == [101, 102, 103, 104, 105]
    assert seqs(drain_nowait(buf.subscribe(after_seq=100))) == [101, 102, 103, 104, 105]
    future = buf.subscribe(after_seq=106)
    assert drain_nowait(future) == []
    custom(buf)  # 106: still skipped
    custom(buf)  # 107
    assert seqs(drain_nowait(future)) == [107]
    filtered = buf.subscribe(types={"custom"}, after_seq=105)
    assert seqs(drain_nowait(filtered)) == [106, 107]


@pytest.mark.parametrize("types", [None, {"custom"}])
async def test_after_seq_past_the_end_also_skips_later_events(types: set[str] | None) -> None:
    buf = EventBuffer()
    custom(buf)
    got: list[int] = []

    async def reader() -> None:
        with buf.subscribe(types=types, after_seq=3) as sub:
            async for event in sub:
                got.append(event.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        custom(buf)  # 2
        await trio.testing.wait_all_tasks_blocked()
        custom(buf)  # 3
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        custom(buf)  # 4
        custom(buf)  # 5
        end(buf)  # 6
    assert got == ([4, 5, 6] if types is None else [4, 5])


def test_after_seq_on_an_empty_buffer() -> None:
    buf = EventBuffer(seq=SeqCounter(10))
    sub = buf.subscribe(after_seq=12)
    for i in range(4):
        custom(buf, i)  # 11..14
    assert seqs(drain_nowait(sub)) == [13, 14]


def test_after_seq_on_an_empty_bounded_buffer_lags_only_for_needed_events() -> None:
    buf = EventBuffer(max_buffered_events=5)
    fine = buf.subscribe(after_seq=195)
    late = buf.subscribe(after_seq=100)
    for i in range(200):
        custom(buf, i)
    assert seqs(drain_nowait(fine)) == [196, 197, 198, 199, 200]
    with pytest.raises(EventsLagged) as info:
        late.receive_nowait()
    assert info.value.missed == 95  # 101..195
    assert seqs(drain_nowait(late)) == [196, 197, 198, 199, 200]


def test_after_seq_copes_with_non_contiguous_seq() -> None:
    buf = EventBuffer()
    for seq in (3, 4, 10, 11, 20):
        publisher_of(buf).forward(CustomEvent(seq=seq, name="x"))
    assert seqs(drain_nowait(buf.subscribe(after_seq=4))) == [10, 11, 20]
    assert seqs(drain_nowait(buf.subscribe(after_seq=12))) == [20]
    assert seqs(drain_nowait(buf.subscribe(after_seq=1))) == [3, 4, 10, 11, 20]
    assert drain_nowait(buf.subscribe(after_seq=25)) == []


# -- the channel interface -----------------------------------------------------------


async def test_receive_nowait_would_block_when_nothing_is_available() -> None:
    buf = EventBuffer()
    sub = buf.subscribe()
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()
    first = custom(buf)
    assert sub.receive_nowait() is first
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()


async def test_receive_is_a_checkpoint_with_one_schedule_point() -> None:
    buf = EventBuffer()
    custom(buf)
    custom(buf)
    sub = buf.subscribe()
    with trio.testing.assert_checkpoints():
        await sub.receive()
    event, steps = await yields_of(sub.receive)
    assert (event.seq, steps) == (2, 1)


async def test_receive_batch_returns_everything_available_in_one_checkpoint() -> None:
    buf = EventBuffer()
    for i in range(20):
        custom(buf, i)
    sub = buf.subscribe()
    batch, steps = await yields_of(sub.receive_batch)
    assert (seqs(batch), steps) == (list(range(1, 21)), 1)
    custom(buf)
    with trio.testing.assert_checkpoints():
        assert seqs(await sub.receive_batch()) == [21]


async def test_receive_batch_max_items() -> None:
    buf = EventBuffer()
    for i in range(5):
        custom(buf, i)
    sub = buf.subscribe()
    assert seqs(await sub.receive_batch(max_items=2)) == [1, 2]
    assert seqs(await sub.receive_batch(max_items=10)) == [3, 4, 5]


@pytest.mark.parametrize(
    ("max_items", "error"), [(0, ValueError), ("2", TypeError), (True, TypeError)]
)
async def test_receive_batch_refuses_bad_max_items(max_items: Any, error: type[Exception]) -> None:
    buf = EventBuffer()
    custom(buf)
    sub = buf.subscribe()
    with pytest.raises(error, match="max_items"):
        await sub.receive_batch(max_items)
    assert sub.receive_nowait().seq == 1  # nothing consumed


@pytest.mark.parametrize("filtered", [False, True])
async def test_receive_batch_waits_for_at_least_one_event(filtered: bool) -> None:
    buf = EventBuffer()
    sub = buf.subscribe(types={"custom"} if filtered else None)
    got: list[list[int]] = []

    async def reader() -> None:
        got.append(seqs(await sub.receive_batch()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        publisher_of(buf).emit(TickStart)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ([] if filtered else [[1]])
        custom(buf)
        custom(buf)
    # Woken by the first wanted event; the second was published before it ran.
    assert got == ([[2, 3]] if filtered else [[1]])


@pytest.mark.parametrize("method", ["receive", "receive_batch"])
async def test_cancelled_receive_consumes_nothing_when_an_event_is_ready(method: str) -> None:
    buf = EventBuffer()
    first = custom(buf)
    sub = buf.subscribe()
    with trio.CancelScope() as scope:
        scope.cancel()
        await getattr(sub, method)()
    assert scope.cancelled_caught
    assert sub.receive_nowait() is first


@pytest.mark.parametrize("method", ["receive", "receive_batch", "__anext__"])
@pytest.mark.parametrize("types", [None, {"custom"}])
async def test_cancelled_while_waiting_consumes_nothing(
    method: str, types: set[str] | None
) -> None:
    buf = EventBuffer()
    sub = buf.subscribe(types=types)
    async with trio.open_nursery() as nursery:
        cancelled: list[bool] = []

        async def waiter() -> None:
            with trio.CancelScope() as scope:
                nursery_scope.append(scope)
                await getattr(sub, method)()
            cancelled.append(scope.cancelled_caught)

        nursery_scope: list[trio.CancelScope] = []
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery_scope[0].cancel()
    assert cancelled == [True]
    event = custom(buf)
    assert sub.receive_nowait() is event
    # The subscription is usable for waiting again.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sub.receive)
        await trio.testing.wait_all_tasks_blocked()
        custom(buf)


async def test_close_makes_every_method_raise_closed_resource() -> None:
    buf = EventBuffer()
    custom(buf)
    sub = buf.subscribe()
    sub.close()
    sub.close()  # idempotent
    assert "closed" in repr(sub)
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive()
    with pytest.raises(trio.ClosedResourceError):
        sub.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive_batch()
    with pytest.raises(trio.ClosedResourceError):
        await sub.__anext__()
    filtered = buf.subscribe(types={"custom"})
    await filtered.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await filtered.receive()


async def test_with_and_async_with_close_the_subscription() -> None:
    buf = EventBuffer()
    with buf.subscribe() as sub:
        pass
    with pytest.raises(trio.ClosedResourceError):
        sub.receive_nowait()
    async with buf.subscribe() as sub2:
        pass
    with pytest.raises(trio.ClosedResourceError):
        sub2.receive_nowait()


def test_subscription_is_created_only_by_a_buffer() -> None:
    with pytest.raises(TypeError, match="subscribe"):
        EventSubscription()  # type: ignore[call-arg]


@pytest.mark.parametrize("method", ["receive", "receive_batch", "__anext__"])
@pytest.mark.parametrize("types", [None, {"custom"}])
async def test_closing_wakes_a_blocked_receiver(method: str, types: set[str] | None) -> None:
    buf = EventBuffer()
    sub = buf.subscribe(types=types)
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await getattr(sub, method)()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
    assert len(errors) == 1
    custom(buf)  # the buffer no longer knows the subscription
    feed = buf._feed
    assert not feed.parked_all
    assert not feed.parked_filtered


async def test_second_waiting_task_gets_busy_resource_error() -> None:
    buf = EventBuffer()
    sub = buf.subscribe()
    got: list[int] = []

    async def waiter() -> None:
        got.append((await sub.receive()).seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await sub.receive()
        with pytest.raises(trio.BusyResourceError):
            await sub.receive_batch()
        custom(buf)
    assert got == [1]


async def test_end_wakes_filtered_waiters_that_do_not_want_it() -> None:
    buf = EventBuffer()
    ended: list[str] = []

    async def waiter(method: str) -> None:
        sub = buf.subscribe(types={"error"})
        try:
            await getattr(sub, method)()
        except trio.EndOfChannel:
            ended.append(method)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "receive")
        nursery.start_soon(waiter, "receive_batch")
        await trio.testing.wait_all_tasks_blocked()
        custom(buf)
        end(buf)
    assert sorted(ended) == ["receive", "receive_batch"]


# -- listeners --------------------------------------------------------------------


def test_on_by_type_and_wildcard_in_registration_order() -> None:
    buf = EventBuffer()
    calls: list[tuple[str, int]] = []
    buf.on("custom", lambda e: calls.append(("custom", e.seq)))
    buf.on(lambda e: calls.append(("all", e.seq)))
    buf.on("*", lambda e: calls.append(("star", e.seq)))
    buf.add_listener("tick_start", lambda e: calls.append(("tick", e.seq)))
    custom(buf)
    publisher_of(buf).emit(TickStart)
    assert calls == [("custom", 1), ("all", 1), ("star", 1), ("all", 2), ("star", 2), ("tick", 2)]


def test_unsubscribe_is_idempotent() -> None:
    buf = EventBuffer()
    calls: list[int] = []
    stop = buf.on(lambda e: calls.append(e.seq))
    custom(buf)
    stop()
    stop()
    custom(buf)
    assert calls == [1]


def test_once_runs_once_and_is_removed_before_it_is_called() -> None:
    buf = EventBuffer()
    calls: list[int] = []

    def handler(event: StreamEvent) -> None:
        calls.append(event.seq)
        # Already removed: off finds nothing, and a nested publish misses it.
        assert not buf.off("custom", handler)
        if event.seq == 1:
            custom(buf)

    stop = buf.once("custom", handler)
    custom(buf)
    custom(buf)
    assert calls == [1]
    stop()  # harmless after it fired


def test_off_removes_the_first_matching_registration() -> None:
    buf = EventBuffer()
    calls: list[int] = []

    def handler(event: StreamEvent) -> None:
        calls.append(event.seq)

    buf.on("custom", handler)
    buf.on("custom", handler)
    buf.on(handler)
    assert buf.off("custom", handler)
    custom(buf)
    assert calls == [1, 1]  # one custom registration and the wildcard one
    assert buf.remove_listener(handler)  # off(handler) is off("*", handler)
    assert not buf.off(handler)
    assert buf.off("custom", handler)
    assert not buf.off("custom", handler)
    assert not buf.off("tick_start", handler)
    custom(buf)
    assert calls == [1, 1]


def test_off_matches_bound_methods_by_equality() -> None:
    buf = EventBuffer()

    class Recorder:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def record(self, event: StreamEvent) -> None:
            self.seen.append(event.seq)

    recorder = Recorder()
    buf.on("custom", recorder.record)
    assert buf.off("custom", recorder.record)
    custom(buf)
    assert recorder.seen == []


def test_off_removes_a_once_registration() -> None:
    buf = EventBuffer()
    calls: list[StreamEvent] = []
    buf.once("custom", calls.append)
    assert buf.off("custom", calls.append)
    custom(buf)
    assert calls == []


@pytest.mark.parametrize(
    ("method", "args", "error"),
    [
        ("on", ("custom",), TypeError),
        ("on", ("custom", 42), TypeError),
        ("on", (42,), TypeError),
        ("on", (42, print), TypeError),
        ("on", ("bogus", print), ValueError),
        ("once", ("custom", None), TypeError),
        ("off", ("bogus", print), ValueError),
        ("add_listener", ("custom",), TypeError),
    ],
)
def test_listener_registration_is_validated(
    method: str, args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        getattr(EventBuffer(), method)(*args)


def test_on_replay_refuses_a_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        EventBuffer().on_replay(42)  # type: ignore[arg-type]


def test_raising_listener_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    buf = EventBuffer()
    before: list[int] = []
    after: list[int] = []
    buf.on(lambda e: before.append(e.seq))

    def broken(event: StreamEvent) -> None:
        raise RuntimeError("listener bug")

    buf.on(broken)
    buf.on(lambda e: after.append(e.seq))
    sub = buf.subscribe()
    with caplog.at_level(logging.ERROR, logger="trio_session"):
        custom(buf)
        custom(buf)
    assert before == after == [1, 2]
    assert seqs(drain_nowait(sub)) == [1, 2]
    assert len(caplog.records) == 2
    record = caplog.records[0]
    assert record.name == "trio_session"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "custom" in record.getMessage()


def test_reentrant_emit_is_appended_at_once_and_dispatched_in_order() -> None:
    buf = EventBuffer()
    first_seen: list[int] = []
    second_seen: list[int] = []
    history_during: list[list[int]] = []

    def emitter(event: StreamEvent) -> None:
        first_seen.append(event.seq)
        if event.seq == 1:
            inner = buf.emit("custom", name="inner")
            # Appended at once, before this listener returns.
            history_during.append(seqs(buf.history))
            assert inner.seq == 2
            buf.emit("custom", name="inner2")

    buf.on("custom", emitter)
    buf.on("custom", lambda e: second_seen.append(e.seq))
    custom(buf)
    assert history_during == [[1, 2]]
    # Every listener sees every event in seq order, the first fully first.
    assert first_seen == [1, 2, 3]
    assert second_seen == [1, 2, 3]
    assert seqs(buf.history) == [1, 2, 3]


def test_listener_added_during_dispatch_sees_the_next_events() -> None:
    buf = EventBuffer()
    late: list[int] = []

    def adder(event: StreamEvent) -> None:
        if event.seq == 1:
            buf.on(lambda e: late.append(e.seq))

    buf.on(adder)
    custom(buf)
    custom(buf)
    assert late == [2]


def test_on_replay_replays_then_follows_live() -> None:
    buf = EventBuffer()
    custom(buf)
    custom(buf)
    seen: list[int] = []
    stop = buf.on_replay(lambda e: seen.append(e.seq))
    assert seen == [1, 2]
    custom(buf)
    assert seen == [1, 2, 3]
    stop()
    custom(buf)
    assert seen == [1, 2, 3]


def test_on_replay_includes_events_its_handler_publishes_without_duplicates() -> None:
    buf = EventBuffer()
    custom(buf)
    seen: list[int] = []

    def handler(event: StreamEvent) -> None:
        seen.append(event.seq)
        if event.seq == 1:
            custom(buf)

    buf.on_replay(handler)
    custom(buf)
    assert seen == [1, 2, 3]


def test_on_replay_from_a_listener_skips_replayed_pending_events() -> None:
    buf = EventBuffer()
    seen: list[int] = []

    def starter(event: StreamEvent) -> None:
        if event.seq == 1:
            custom(buf)  # 2: appended, its dispatch is pending
            buf.on_replay(lambda e: seen.append(e.seq))  # replays 1, 2

    buf.on(starter)
    custom(buf)
    custom(buf)
    assert seen == [1, 2, 3]


def test_on_replay_isolates_a_raising_handler(caplog: pytest.LogCaptureFixture) -> None:
    buf = EventBuffer()
    custom(buf)

    def broken(event: StreamEvent) -> None:
        raise ValueError("nope")

    with caplog.at_level(logging.ERROR, logger="trio_session"):
        buf.on_replay(broken)
        custom(buf)
    assert len(caplog.records) == 2


def test_listeners_are_dropped_after_execution_end() -> None:
    buf = EventBuffer()

    class Handler:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def __call__(self, event: StreamEvent) -> None:
            self.seen.append(event.type)

    handler = Handler()
    ref = weakref.ref(handler)
    buf.on(handler)
    buf.once("execution_end", handler)
    custom(buf)
    end(buf)
    assert handler.seen == ["custom", "execution_end", "execution_end"]
    del handler
    gc.collect()
    assert ref() is None  # the buffer let go of it
    # Registering after the end keeps nothing, and the unsubscribe still works.
    late = Handler()
    late_ref = weakref.ref(late)
    stop = buf.on(late)
    stop()
    replayed = Handler()
    buf.on_replay(replayed)
    assert replayed.seen == ["custom", "execution_end"]
    del late
    gc.collect()
    assert late_ref() is None
    assert not buf.off(replayed)


def test_listeners_of_a_buffer_without_listeners_at_the_end_are_not_kept() -> None:
    buf = EventBuffer()
    end(buf)
    calls: list[int] = []
    buf.on(lambda e: calls.append(e.seq))
    assert not buf._listeners


def test_listener_can_answer_synchronously_before_subscribers_run() -> None:
    # The confirmation pattern: a listener reacts to an event synchronously,
    # during the publish call, before any task runs.
    buf = EventBuffer()
    answered: list[int] = []
    buf.on("custom", lambda e: answered.append(e.seq))
    event = custom(buf)
    assert answered == [event.seq]


# -- retention and EventsLagged ---------------------------------------------------------


def test_retention_bound_holds_at_most_n_events() -> None:
    buf = EventBuffer(max_buffered_events=3)
    for i in range(10):
        custom(buf, i)
        assert len(buf) == min(i + 1, 3)
    assert seqs(buf.history) == [8, 9, 10]
    assert buf.max_buffered_events == 3


def test_retention_compacts_in_chunks() -> None:
    buf = EventBuffer(max_buffered_events=5)
    for i in range(10_000):
        custom(buf, i)
        assert len(buf._feed.log.events) <= 2 * 32
    assert seqs(buf.history) == list(range(9_996, 10_001))


async def test_lagging_subscriber_gets_events_lagged_once_then_continues() -> None:
    buf = EventBuffer(max_buffered_events=3)
    sub = buf.subscribe()
    custom(buf)
    assert sub.receive_nowait().seq == 1
    for i in range(6):
        custom(buf, i)  # 2..7; 2, 3, 4 dropped
    with pytest.raises(EventsLagged) as info:
        await sub.receive()
    assert info.value.missed == 3
    assert seqs(drain_nowait(sub)) == [5, 6, 7]


@pytest.mark.parametrize("method", ["receive_nowait", "receive_batch"])
async def test_lag_is_reported_by_every_receive_method(method: str) -> None:
    buf = EventBuffer(max_buffered_events=2)
    sub = buf.subscribe()
    for i in range(5):
        custom(buf, i)
    with pytest.raises(EventsLagged) as info:
        result = getattr(sub, method)()
        if method == "receive_batch":
            await result
    assert info.value.missed == 3
    assert seqs(await sub.receive_batch()) == [4, 5]


async def test_lag_while_the_receiver_is_woken_but_not_yet_running() -> None:
    buf = EventBuffer(max_buffered_events=2)
    outcomes: list[object] = []

    async def reader() -> None:
        with buf.subscribe() as sub:
            while True:
                try:
                    outcomes.append((await sub.receive()).seq)
                except EventsLagged as exc:
                    outcomes.append(("lagged", exc.missed))
                except trio.EndOfChannel:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):  # no checkpoint: the reader cannot keep up
            custom(buf, i)
        end(buf)
    assert outcomes == [("lagged", 4), 5, 6]


def test_late_subscriber_without_after_seq_learns_what_was_dropped() -> None:
    buf = EventBuffer(max_buffered_events=3)
    for i in range(10):
        custom(buf, i)
    sub = buf.subscribe()
    with pytest.raises(EventsLagged) as info:
        sub.receive_nowait()
    assert info.value.missed == 7  # 1..7: its replay starts at the first event
    assert seqs(drain_nowait(sub)) == [8, 9, 10]


def test_new_subscriber_with_after_seq_learns_what_was_dropped() -> None:
    buf = EventBuffer(max_buffered_events=3)
    for i in range(10):
        custom(buf, i)
    sub = buf.subscribe(after_seq=2)
    with pytest.raises(EventsLagged) as info:
        sub.receive_nowait()
    assert info.value.missed == 5  # 3..7
    assert seqs(drain_nowait(sub)) == [8, 9, 10]
    assert seqs(drain_nowait(buf.subscribe(after_seq=7))) == [8, 9, 10]


def test_filtered_subscriber_lags_only_if_a_wanted_event_was_dropped() -> None:
    buf = EventBuffer(max_buffered_events=3)
    wants_ticks = buf.subscribe(types={"tick_start"})
    wants_errors = buf.subscribe(types={"error"})
    publisher_of(buf).emit(TickStart)  # 1
    for i in range(5):
        custom(buf, i)  # 2..6; 1, 2, 3 dropped
    with pytest.raises(EventsLagged) as info:
        wants_ticks.receive_nowait()
    assert info.value.missed == 3
    with pytest.raises(trio.WouldBlock):
        wants_ticks.receive_nowait()
    with pytest.raises(trio.WouldBlock):
        wants_errors.receive_nowait()  # nothing it wanted was dropped
    publisher_of(buf).emit(ErrorEvent, message="x")
    assert wants_errors.receive_nowait().seq == 7


async def test_parked_filtered_subscriber_never_lags_spuriously() -> None:
    buf = EventBuffer(max_buffered_events=2)
    got: list[object] = []

    async def reader() -> None:
        with buf.subscribe(types={"error"}) as sub:
            try:
                async for event in sub:
                    got.append(event.seq)
            except EventsLagged as exc:  # pragma: no cover - the failure we test for
                got.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(100):
            custom(buf, i)
        publisher_of(buf).emit(ErrorEvent, message="x")
        await trio.testing.wait_all_tasks_blocked()
        for i in range(100):
            custom(buf, i)
        end(buf)
    assert got == [101]


# -- session-wide chains ------------------------------------------------------------------


def test_closed_empty_buffer() -> None:
    counter = SeqCounter(5)
    head = SessionChain(session_id="s", seq=counter).last
    assert head.closed
    assert len(head) == 0
    assert head.session_id == "s"
    with pytest.raises(trio.EndOfChannel):
        head.subscribe().receive_nowait()
    with pytest.raises(trio.WouldBlock):
        session_subscribe(head).receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        head.emit("custom", name="x")


async def test_session_subscription_follows_the_chain_until_it_ends() -> None:
    counter = SeqCounter()
    head = SessionChain(session_id="s", seq=counter).last
    got: list[tuple[str, int]] = []

    async def follower() -> None:
        async with session_subscribe(head) as sub:
            async for event in sub:
                got.append((event.type, event.seq))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        first = EventBuffer(session_id="s", execution_id="x1", seq=counter, reserved=True)
        link(head, first)
        publisher_of(first).emit(ExecutionStart)
        custom(first)
        end(first)
        await trio.testing.wait_all_tasks_blocked()
        assert [seq for _, seq in got] == [1, 2, 3]  # execution_end did not end it
        second = EventBuffer(session_id="s", execution_id="x2", seq=counter, reserved=True)
        publisher_of(second).emit(ExecutionStart)  # published before the link: still seen
        link(first, second)
        custom(second)
        end(second)
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 6
        end_chain(second)
    assert [seq for _, seq in got] == [1, 2, 3, 4, 5, 6]
    assert [t for t, _ in got].count("execution_end") == 2


async def test_session_subscription_filtered_and_after_seq_across_buffers() -> None:
    counter = SeqCounter()
    first = EventBuffer(seq=counter)
    custom(first)
    publisher_of(first).emit(TickStart)
    custom(first)
    sub = session_subscribe(first, types={"tick_start", "execution_end"}, after_seq=1)
    late_start = session_subscribe(first, after_seq=5)  # past this buffer
    got: list[int] = []

    async def follower() -> None:
        async for event in sub:
            got.append(event.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        end(first)  # 4
        second = EventBuffer(seq=counter)
        link(first, second)
        for _ in range(3):
            publisher_of(second).emit(TickStart)  # 5, 6, 7
        end(second)  # 8
        end_chain(second)
    assert got == [2, 4, 5, 6, 7, 8]
    assert seqs(drain_nowait(late_start)) == [6, 7, 8]
    with pytest.raises(trio.EndOfChannel):
        late_start.receive_nowait()


async def test_session_subscription_on_an_open_buffer_waits_for_close_and_end_chain() -> None:
    buf = EventBuffer()
    sub = session_subscribe(buf)
    custom(buf)
    end_chain(buf)  # the session closes while the execution still runs
    assert sub.receive_nowait().seq == 1
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()
    end(buf)
    assert sub.receive_nowait().type == "execution_end"
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()


async def test_waiting_filtered_session_subscription_ends_at_end_chain() -> None:
    buf = EventBuffer()
    ended: list[bool] = []

    async def follower() -> None:
        sub = session_subscribe(buf, types={"error"})
        try:
            await sub.receive_batch()
        except trio.EndOfChannel:
            ended.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        custom(buf)
        end(buf)
        await trio.testing.wait_all_tasks_blocked()
        assert ended == []  # execution_end does not end a session subscription
        end_chain(buf)
    assert ended == [True]


def test_session_subscription_lags_on_entering_a_trimmed_successor() -> None:
    counter = SeqCounter()
    first = EventBuffer(seq=counter, max_buffered_events=2)
    sub = session_subscribe(first)
    end(first)
    assert sub.receive_nowait().seq == 1
    second = EventBuffer(seq=counter, max_buffered_events=2)
    for i in range(5):
        custom(second, i)  # 2..6, of which 2, 3, 4 are dropped
    link(first, second)
    with pytest.raises(EventsLagged) as info:
        sub.receive_nowait()
    assert info.value.missed == 3
    assert seqs(drain_nowait(sub)) == [5, 6]


def test_link_and_end_chain_are_validated() -> None:
    buf = EventBuffer()
    with pytest.raises(TypeError, match="EventBuffer"):
        link(buf, "next")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="own successor"):
        link(buf, buf)
    link(buf, EventBuffer())
    with pytest.raises(RuntimeError, match="already"):
        link(buf, EventBuffer())
    with pytest.raises(RuntimeError, match="successor"):
        end_chain(buf)
    other = EventBuffer()
    end_chain(other)
    end_chain(other)  # idempotent
    with pytest.raises(RuntimeError, match="already"):
        link(other, EventBuffer())


def test_buffer_subscription_on_a_linked_buffer_still_ends_at_execution_end() -> None:
    counter = SeqCounter()
    first = EventBuffer(seq=counter)
    end(first)
    link(first, EventBuffer(seq=counter))
    sub = first.subscribe()
    assert sub.receive_nowait().seq == 1
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()


def test_closing_releases_the_buffer() -> None:
    buf = EventBuffer()
    custom(buf)
    sub = buf.subscribe()
    ref = weakref.ref(buf._feed)  # what holds the history
    del buf
    gc.collect()
    assert ref() is not None  # the subscription holds it
    sub.close()
    gc.collect()
    assert ref() is None


def test_every_event_class_is_filterable() -> None:
    buf = EventBuffer()
    sub = buf.subscribe(types=set(EVENT_CLASSES))
    custom(buf)
    assert sub.receive_nowait().seq == 1
