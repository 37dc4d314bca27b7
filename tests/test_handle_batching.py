"""``async for event in handle`` takes every available event in one checkpoint."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

import trio

from trio_session import Agent, Event, ScriptedModel, open_session
from trio_session.models import ModelRequest, TextChunk

T = TypeVar("T")


class StepCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


async def three_then_cancelled(events: AsyncIterator[Event]) -> list[Event]:
    """The events a loop hands out until its scope is cancelled at the third."""
    seen = []
    with trio.CancelScope() as scope:
        async for event in events:
            seen.append(event)
            if len(seen) == 3:
                scope.cancel()
    assert scope.cancelled_caught
    return seen


async def drain_counting_steps(items: AsyncIterable[T]) -> tuple[list[T], int]:
    """Everything ``items`` gives, and how often this task went through the scheduler."""
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        taken = [item async for item in items]
    finally:
        trio.lowlevel.remove_instrument(counter)
    return taken, counter.steps.get(trio.lowlevel.current_task(), 0)


async def test_a_replay_yields_at_least_every_64_events_and_not_at_each() -> None:
    agent = Agent(ScriptedModel(["x" * 300], chunk_size=1))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        events, steps = await drain_counting_steps(handle)
    assert [e.type for e in events].count("content_delta") == 300
    # A yield every 64 events, not one per event.
    assert len(events) // 64 <= steps <= len(events) // 64 + 2


async def test_cancellation_is_seen_at_every_event_and_loses_none() -> None:
    agent = Agent(ScriptedModel(["x" * 100], chunk_size=1))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        iterator = aiter(handle)
        seen = await three_then_cancelled(iterator)
        assert len(seen) == 3
        rest = [event async for event in iterator]
    assert [e.seq for e in seen + rest] == list(range(seen[0].seq, seen[0].seq + len(seen + rest)))
    assert rest[-1].type == "execution_end"


async def test_a_zero_delay_script_yields_every_64_chunks_and_sees_cancellation_at_each() -> None:
    model = ScriptedModel(["x" * 200], chunk_size=1)
    chunks, steps = await drain_counting_steps(model.stream(ModelRequest(None, ())))
    assert sum(isinstance(c, TextChunk) for c in chunks) == 200
    assert 200 // 64 <= steps <= 200 // 64 + 4

    again = ScriptedModel(["x" * 200], chunk_size=1)
    taken = 0
    with trio.CancelScope() as scope:
        async for _ in again.stream(ModelRequest(None, ())):
            taken += 1
            if taken == 5:
                scope.cancel()
    assert scope.cancelled_caught
    assert taken == 5


async def test_async_for_over_a_subscription_yields_every_64_events_and_not_at_each() -> None:
    agent = Agent(ScriptedModel(["x" * 300], chunk_size=1))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        with handle.events.subscribe() as subscription:
            events, steps = await drain_counting_steps(subscription)
        with handle.events.subscribe(types={"content_delta"}) as filtered:
            deltas, filtered_steps = await drain_counting_steps(filtered)
    assert [e.type for e in events].count("content_delta") == 300
    assert events[-1].type == "execution_end"
    assert len(events) // 64 <= steps <= len(events) // 64 + 2
    # A filtered subscription batches too.
    assert len(deltas) == 300
    assert 300 // 64 <= filtered_steps <= 300 // 64 + 2


async def test_a_subscription_s_async_for_sees_cancellation_at_every_event_and_loses_none() -> None:
    agent = Agent(ScriptedModel(["x" * 100], chunk_size=1))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        with handle.events.subscribe() as subscription:
            seen = await three_then_cancelled(subscription)
            assert len(seen) == 3
            # Nothing was taken by the cancelled step: receive() goes on at the fourth.
            fourth = await subscription.receive()
            rest = [event async for event in subscription]
    seqs = [e.seq for e in [*seen, fourth, *rest]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert rest[-1].type == "execution_end"


async def test_a_live_subscription_reader_keeps_up_with_the_stream() -> None:
    agent = Agent(ScriptedModel(["x" * 200], chunk_size=1))
    async with open_session(agent) as session:
        handle = await session.send("go")
        with handle.events.subscribe() as subscription:
            events = [event async for event in subscription]
        await handle.result
    assert events == list(handle.events.history)


async def test_a_short_replay_and_its_end_do_not_visit_the_scheduler() -> None:
    agent = Agent(ScriptedModel(["hi"]))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        events, steps = await drain_counting_steps(handle)
    assert events[-1].type == "execution_end"
    assert len(events) < 64
    # Fewer than 64 events, all there: none of them, nor the end (execution_end
    # taken, the handle finished), needs a yield, only cancellation checks (SPEC 4).
    assert steps == 0


async def test_the_end_of_a_finished_handle_still_sees_cancellation() -> None:
    agent = Agent(ScriptedModel(["hi"]))
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.result
        iterator = aiter(handle)
        taken = []
        with trio.CancelScope() as scope:
            async for event in iterator:
                taken.append(event)
                if event.type == "execution_end":
                    scope.cancel()
        assert scope.cancelled_caught
        assert taken[-1].type == "execution_end"
