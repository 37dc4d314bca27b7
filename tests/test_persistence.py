"""Sessions with a store: restore, seq continuation, saves per tick, crash safety."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from _helpers import assert_transcript_integrity, text_of

from trio_session import (
    Agent,
    MemoryStore,
    Reply,
    ScriptedModel,
    SessionSnapshot,
    SnapshotError,
    SQLiteStore,
    ToolConfirmationRequired,
    ToolConfirmationResult,
    ToolContext,
    open_session,
    tool,
)


@tool
def remember(ctx: ToolContext, note: str) -> str:
    """Remember a note in the session state."""
    ctx.state.setdefault("notes", []).append(note)
    return "noted"


def _agent(*replies: object) -> Agent:
    return Agent(ScriptedModel(list(replies)), tools=[remember])  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryStore()
        return
    # A store passed to open_session() is the caller's to close.
    async with SQLiteStore(tmp_path / "sessions.db") as opened:
        yield opened


async def test_restore_round_trip_continues_seq(store: object) -> None:
    agent = _agent(Reply(tool_calls=[("remember", {"note": "milk"})]), "Noted milk.")
    async with open_session(agent, session_id="s1", store=store) as session:  # type: ignore[arg-type]
        handle = await session.send("remember milk")
        await handle.result
        session.queue("for later")
        last_seq = handle.events.history[-1].seq
        before = session.snapshot()
    async with open_session(
        _agent("Hello again."), session_id="s1", store=store  # type: ignore[arg-type]
    ) as restored:
        assert [m.id for m in restored.timeline] == [m.id for m in before.timeline]
        assert list(restored.timeline) == list(before.timeline)
        assert restored.state == {"notes": ["milk"]}
        assert [m.text for m in restored.queued_messages] == ["for later"]
        assert restored.usage == before.usage
        assert restored.usage.ticks == 2
        handle = await restored.send("hi")
        await handle.result
        assert handle.events.history[0].seq == last_seq + 1
        # The queued message was delivered first, then the new one.
        assert [m.text for m in restored.timeline][-3:] == ["for later", "hi", "Hello again."]


async def test_saved_after_every_tick_and_at_the_end() -> None:
    saves: list[SessionSnapshot] = []

    class Recording(MemoryStore):
        async def save(self, snapshot: SessionSnapshot) -> None:
            saves.append(snapshot)
            await super().save(snapshot)

    agent = _agent(
        Reply(tool_calls=[("remember", {"note": "a"})]),
        Reply(tool_calls=[("remember", {"note": "b"})]),
        "done",
    )
    async with open_session(agent, session_id="s", store=Recording()) as session:
        await session.send("go").result
    lengths = [len(s.timeline) for s in saves]
    # The user input; each tick that goes on; the end of the execution (which
    # covers the last tick); the session's close.
    assert lengths == [1, 3, 5, 6, 6]
    assert saves[-1].last_seq == session.last_seq


async def test_aborted_execution_is_saved(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    model = ScriptedModel(["slow " * 50], chunk_size=1, delay=1)
    async with open_session(Agent(model), session_id="a", store=store) as session:
        handle = await session.send("keep me")
        await trio.sleep(3)
        handle.abort()
        await handle.wait()
    snapshot = await store.load("a")
    assert snapshot is not None
    assert [m.text for m in snapshot.timeline] == ["keep me"]
    assert snapshot.last_seq == handle.events.history[-1].seq


async def test_newer_snapshot_refuses_to_open(tmp_path: Path) -> None:
    store = MemoryStore()
    await store.save(
        SessionSnapshot(
            version=99, session_id="future", timeline=(), created_at=0.0, updated_at=0.0
        )
    )
    with pytest.raises(SnapshotError, match="future"):
        async with open_session(_agent(), session_id="future", store=store):
            pass


CRASHING_CHILD = textwrap.dedent(
    """
    import os, sys
    import trio
    from trio_session import Agent, Reply, ScriptedModel, SQLiteStore, open_session, tool

    @tool
    def step(n: int) -> str:
        '''One step of work.'''
        if n == 3:
            os._exit(17)  # the process dies in the middle of tick 3
        return f"step {n} done"

    model = ScriptedModel([
        Reply(f"tick {n}", tool_calls=[("step", {"n": n})]) for n in (1, 2, 3)
    ] + ["never"])

    async def main():
        async with SQLiteStore(sys.argv[1]) as store:
            async with open_session(Agent(model, tools=[step]), session_id="crash",
                                    store=store) as session:
                await session.send("do three steps").result

    trio.run(main)
    """
)


async def test_crash_in_tick_three_keeps_ticks_one_and_two(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    done = await trio.run_process(
        [sys.executable, "-c", CRASHING_CHILD, str(path)],
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )
    assert done.returncode == 17, done.stderr.decode()
    async with SQLiteStore(path) as store:
        snapshot = await store.load("crash")
    assert snapshot is not None
    texts = [(m.role, m.text) for m in snapshot.timeline]
    assert texts == [
        ("user", "do three steps"),
        ("assistant", "tick 1"),
        ("tool", ""),
        ("assistant", "tick 2"),
        ("tool", ""),
    ]
    assert [text_of(b.content[0]) for m in snapshot.timeline for b in m.tool_results] == [
        "step 1 done",
        "step 2 done",
    ]
    assert_transcript_integrity(snapshot.timeline)
    # It reopens and carries on.
    async with (
        SQLiteStore(path) as store,
        open_session(_agent("resumed"), session_id="crash", store=store) as session,
    ):
        assert (await session.send("go on").result).response == "resumed"


async def test_always_answer_survives_a_restart(store: object) -> None:
    ran: list[str] = []

    @tool(requires_confirmation=True)
    def wipe(path: str) -> str:
        """Wipe a path."""
        ran.append(path)
        return "wiped"

    first = Agent(ScriptedModel([Reply(tool_calls=[("wipe", {"path": "/1"})]), "ok"]), tools=[wipe])
    async with open_session(first, session_id="w", store=store) as session:  # type: ignore[arg-type]
        handle = await session.send("wipe one")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        handle.submit_tool_result(event.tool_use_id, approved=True, always=True)
        await handle.result
    second = Agent(
        ScriptedModel([Reply(tool_calls=[("wipe", {"path": "/2"})]), "ok again"]), tools=[wipe]
    )
    async with open_session(second, session_id="w", store=store) as restored:  # type: ignore[arg-type]
        assert restored.snapshot().remembered["wipe"].approved
        handle = await restored.send("wipe two")
        await handle.result
        types = [e.type for e in handle.events.history]
        assert_transcript_integrity(restored.timeline)
    assert ran == ["/1", "/2"]
    assert "tool_confirmation_required" not in types
    result = next(e for e in handle.events.history if isinstance(e, ToolConfirmationResult))
    assert result.approved and result.always
