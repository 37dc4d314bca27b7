"""The cost of one tick's save, for a short and a long conversation.

An execution appends four messages — a user message, an assistant message
with a tool call, the tool's result and the answer — and the session saves
its snapshot.
Saving is incremental, so that save should cost about the same whatever the
length of the conversation: the target is a ratio of at most 2x between a
timeline of 10,000 messages and one of 100.

For each size, ``--samples`` real sessions are restored with that many
messages, and each is saved once in full ("first save"); then each session
runs one execution (a tool call and an answer: four new messages) and is
saved, the two sizes interleaved. Times are wall-clock
(``time.perf_counter``) around ``await store.save(session.snapshot())``:
what a session pays for a save, snapshot included. Medians printed.
SQLiteStore runs on a temporary file with its defaults (WAL,
``durability="normal"``: ``synchronous=NORMAL``); MemoryStore is shown for
comparison.

Then the case where sessions share a file: ``--sessions`` (16) sessions, each a real
session (`open_session` with a zero-latency `ScriptedModel` that calls one tool a tick)
saving into one SQLiteStore, for each durability setting. Two figures: ticks per second of
the sessions running concurrently (every tick saves), and the saves per second and median
latency of ``store.save(session.snapshot())`` timed together, all sessions at once.

Usage::

    python bench/store.py [--samples N] [--sizes 100,10000] [--sessions N] [--dir PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from trio_session import (
    Agent,
    MemoryStore,
    Message,
    Reply,
    ScriptedModel,
    Session,
    SessionSnapshot,
    SQLiteStore,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    open_session,
    tool,
)
from trio_session.stores import SessionStore

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog while the agent considers "
    "which tool to call next and how to phrase its answer to the user. "
)


def tick_messages(tag: str) -> tuple[Message, ...]:
    """One tick's new messages: about 1 KiB of JSON in all."""
    call = f"call-{tag}"
    return (
        Message("user", f"Question {tag}: " + PARAGRAPH),
        Message(
            "assistant",
            (
                TextBlock("Let me look that up. " + PARAGRAPH),
                ToolUseBlock(call, "search", {"query": f"topic {tag}", "limit": 5}),
            ),
            metadata={"model": "bench", "tick": tag},
        ),
        Message("tool", (ToolResultBlock(call, "search", PARAGRAPH * 2),)),
    )


def conversation(size: int, tag: str) -> tuple[Message, ...]:
    messages: list[Message] = []
    i = 0
    while len(messages) < size:
        messages.extend(tick_messages(f"{tag}-{i}"))
        i += 1
    return tuple(messages[:size])


def base_snapshot(session_id: str, size: int) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        timeline=conversation(size, session_id),
        state={"topic": "bench", "counters": {"ticks": size // 3}},
        usage=Usage(input_tokens=size * 50, output_tokens=size * 20, ticks=size // 3),
        last_seq=size * 10,
        created_at=time.time(),
        updated_at=time.time(),
    )


async def timed_save(store: SessionStore, session: Session) -> float:
    """What a session pays for a save: its ``snapshot()`` and the store's ``save()``."""
    start = time.perf_counter()
    await store.save(session.snapshot())
    return time.perf_counter() - start


async def measure(
    store: SessionStore, sizes: list[int], samples: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """(first full save times, tick-save times) per size."""
    first: dict[int, list[float]] = {size: [] for size in sizes}
    tick: dict[int, list[float]] = {size: [] for size in sizes}
    sessions: dict[int, list[Session]] = {size: [] for size in sizes}
    async with contextlib.AsyncExitStack() as stack:
        for size in sizes:
            for k in range(samples):
                # A real session, restored from its own MemoryStore: its own saves do not
                # touch the store measured, which gets only the timed ones.
                seed = MemoryStore()
                await seed.save(base_snapshot(f"bench-{size}-{k}", size))
                replies: list[Reply | str] = [Reply(tool_calls=[("add", {"a": 1, "b": 2})]), "ok"]
                agent = Agent(ScriptedModel(replies * samples), tools=[add])
                session = await stack.enter_async_context(
                    open_session(agent, session_id=f"bench-{size}-{k}", store=seed)
                )
                first[size].append(await timed_save(store, session))
                sessions[size].append(session)
        for k in range(samples):
            for size in sizes:
                session = sessions[size][k]
                # One execution of two ticks (four new messages), then the timed save.
                await session.send(f"tick {k}: " + PARAGRAPH).result
                tick[size].append(await timed_save(store, session))
        # The numbers mean nothing unless the saves were right.
        for size in sizes:
            expected = sessions[size][-1].snapshot()
            loaded = await store.load(expected.session_id)
            if loaded is None or loaded.timeline != expected.timeline:
                raise AssertionError(f"{store!r}: session of {size} messages did not load back")
    return first, tick


def report(
    name: str, sizes: list[int], first: dict[int, list[float]], tick: dict[int, list[float]]
) -> float:
    print(f"\n{name}")
    print(
        f"  {'messages':>10}  {'tick save (median)':>19}  {'p90':>9}  {'first save (median)':>20}"
    )
    for size in sizes:
        ticks = sorted(tick[size])
        p90 = ticks[int(0.9 * (len(ticks) - 1))]
        print(
            f"  {size:>10,}  {statistics.median(ticks) * 1e3:>16.3f} ms  {p90 * 1e3:>6.3f} ms"
            f"  {statistics.median(first[size]) * 1e3:>17.3f} ms"
        )
    ratio = statistics.median(tick[sizes[-1]]) / statistics.median(tick[sizes[0]])
    print(f"  ratio tick save {sizes[-1]:,} / {sizes[0]:,}: {ratio:.2f}x (target <= 2x)")
    return ratio


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TICKS = 10


def reply(request: object) -> Reply | str:
    if getattr(request, "tick", TICKS) < TICKS:
        return Reply(tool_calls=[("add", {"a": 1, "b": 2})])
    return "done"


class Counting:
    """A store that counts the saves passing through it."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.saves = 0

    async def save(self, snapshot: SessionSnapshot) -> None:
        await self.store.save(snapshot)
        self.saves += 1

    async def load(self, session_id: str) -> SessionSnapshot | None:
        return await self.store.load(session_id)

    async def delete(self, session_id: str) -> None:
        await self.store.delete(session_id)

    async def list(self) -> list[str]:
        return await self.store.list()


def durabilities() -> list[str | None]:
    """The settings this SQLiteStore has (None: it has no durability setting)."""
    if "durability" in inspect.signature(SQLiteStore).parameters:
        return ["normal", "full"]
    return [None]


def open_store(path: Path, durability: str | None) -> SQLiteStore:
    if durability is None:
        return SQLiteStore(path)
    return SQLiteStore(path, durability=durability)  # type: ignore[arg-type]


async def shared_file(path: Path, durability: str | None, sessions: int, rounds: int) -> None:
    """Many sessions saving into one file at once: ticks/s, and snapshot() + save()."""
    async with open_store(path, durability) as sqlite:
        store = Counting(sqlite)
        ticks = 0
        latencies: list[float] = []
        executions = 3

        async def run(i: int) -> None:
            nonlocal ticks
            model = ScriptedModel([reply] * (executions * TICKS))
            agent = Agent(model, tools=[add], max_ticks=TICKS + 1)
            async with open_session(agent, session_id=f"shared-{i}", store=store) as session:
                for _ in range(executions):
                    handle = await session.send("go")
                    async for event in handle:
                        ticks += event.type == "tick_end"
                    assert handle.status == "completed", handle.status

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(run, i)
        elapsed = time.perf_counter() - start
        run_saves = store.saves

        async def snapshot_and_save(i: int) -> None:
            agent = Agent(ScriptedModel([]))
            async with open_session(agent, session_id=f"shared-{i}", store=sqlite) as session:
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await sqlite.save(session.snapshot())
                    latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(snapshot_and_save, i)
        saving = time.perf_counter() - start
    label = f"durability={durability!r}" if durability else "(no durability setting)"
    print(f"\nSQLiteStore, {sessions} sessions sharing one file, {label}")
    print(
        f"  sessions running: {ticks / elapsed:8.0f} ticks/s, "
        f"{run_saves / elapsed:8.0f} saves/s ({run_saves} saves)"
    )
    print(
        f"  snapshot() + save(), all at once: {sessions * rounds / saving:8.0f} saves/s, "
        f"median {statistics.median(latencies) * 1e3:.3f} ms"
    )


async def main(samples: int, sizes: list[int], sessions: int, directory: Path) -> int:
    stores: list[tuple[str, Callable[[], SQLiteStore | MemoryStore]]] = [
        ("SQLiteStore", lambda: SQLiteStore(directory / "bench.db")),
        ("MemoryStore", MemoryStore),
    ]
    ok = True
    print(f"{samples} tick-saves per size; Python {sys.version.split()[0]}")
    for name, make in stores:
        store = make()
        try:
            first, tick = await measure(store, sizes, samples)
        finally:
            if isinstance(store, SQLiteStore):
                await store.aclose()
        ratio = report(name, sizes, first, tick)
        ok = ok and ratio <= 2.0
    for n, durability in enumerate(durabilities()):
        await shared_file(directory / f"shared-{n}.db", durability, sessions, samples)
    return 0 if ok else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="timed tick-saves per size")
    parser.add_argument(
        "--sizes",
        default="100,10000",
        type=lambda text: [int(part) for part in text.split(",")],
        help="timeline lengths, comma-separated; the ratio is last / first",
    )
    parser.add_argument(
        "--sessions", type=int, default=16, help="sessions sharing one file at once"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sys.exit(trio.run(main, args.samples, args.sizes, args.sessions, Path(tmp)))
