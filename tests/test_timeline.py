"""The timeline is shared, not copied: O(1) views per tick, request and snapshot."""

from __future__ import annotations

import gc
import tracemalloc

import attrs
import pytest

from trio_session import (
    Agent,
    MemoryStore,
    Reply,
    ScriptedModel,
    SessionSnapshot,
    assistant,
    open_session,
    tool,
    user,
)
from trio_session._timeline import Timeline, TimelineView
from trio_session.models import ModelRequest


def test_a_view_stands_for_the_tuple_of_its_messages() -> None:
    messages = [user("a", id="1"), assistant("b", id="2"), user("c", id="3")]
    timeline = Timeline(messages[:2])
    view = timeline.view()
    timeline.append(messages[2])
    assert isinstance(view, TimelineView)
    assert len(view) == 2  # frozen at the length it was taken at
    assert view == tuple(messages[:2])
    assert tuple(messages[:2]) == view
    assert view != tuple(messages)
    assert view != timeline.view()
    assert view[-1] is messages[1]
    assert view[0:5] == tuple(messages[:2])
    assert isinstance(view[:1], tuple)
    assert view + (messages[2],) == tuple(messages)  # noqa: RUF005 (the + itself is tested)
    assert (messages[2],) + view == (messages[2], *messages[:2])  # noqa: RUF005
    assert list(view) == messages[:2]
    with pytest.raises(IndexError):
        view[2]
    with pytest.raises(IndexError):
        view[-3]
    assert view.text_chars() == 2
    assert timeline.view().text_chars() == 3


async def test_requests_and_snapshots_share_the_timeline_instead_of_copying_it() -> None:
    seen: list[ModelRequest] = []

    def reply(request: ModelRequest) -> str:
        seen.append(request)
        return "ok"

    async with open_session(Agent(ScriptedModel([reply, reply]))) as session:
        await session.send("one").result
        await session.send("two").result
        snap = session.snapshot()
        assert isinstance(snap.timeline, TimelineView)
        assert snap.timeline == tuple(session.timeline)
        assert isinstance(seen[1].messages, TimelineView)
        assert seen[1].messages == tuple(session.timeline)[:3]
        # The first request still holds the one message it was sent.
        assert [m.text for m in seen[0].messages] == ["one"]
        fields = {f.name: getattr(snap, f.name) for f in attrs.fields(SessionSnapshot)}
        again = SessionSnapshot(**fields)
        assert again == snap
        store = MemoryStore()
        await store.save(snap)
        assert await store.load(session.id) == snap


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def _traced_growth(history: int, ticks: int) -> tuple[float, int]:
    """Memory kept per tick, and the peak above what is kept, over ``ticks`` ticks."""

    def reply(request: ModelRequest) -> Reply | str:
        return Reply(tool_calls=[("add", {"a": 1, "b": 2})]) if request.tick < ticks else "done"

    store = MemoryStore()
    async with open_session(Agent(ScriptedModel(["seed"])), session_id="m", store=store) as s:
        await s.send("seed").result
        snap = s.snapshot()
    text = "lorem ipsum dolor sit amet " * 8
    seeded = [m for i in range(history // 2) for m in (user(f"{i} {text}"), assistant(text))]
    await store.save(attrs.evolve(snap, timeline=tuple(seeded)))
    agent = Agent(ScriptedModel([reply] * ticks), tools=[add], max_ticks=ticks)
    async with open_session(agent, session_id="m", store=store) as session:
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            result = await session.send("go").result
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.stop_reason == "end_turn"
    return (after - before) / ticks, peak - after


@pytest.mark.slow
async def test_a_long_history_costs_no_memory_per_tick() -> None:
    ticks = 200  # the bytes per tick of 1,000 ticks (list growth amortized), in a fifth the time
    per_tick, _ = await _traced_growth(10_000, ticks)
    per_tick_short, _ = await _traced_growth(100, ticks)
    print(f"\n{per_tick:.0f} bytes kept per tick at 10,000 messages ({per_tick_short:.0f} at 100)")
    # A copy of 10,000 messages is an 80 kB tuple: none is kept per tick. (The peak is
    # not asserted: growing the timeline's own list of 10,000 pointers may be in flight.)
    assert per_tick < per_tick_short + 2_000
