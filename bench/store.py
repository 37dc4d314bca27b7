"""The cost of one tick's save, for a short and a long conversation.

A tick appends three messages — a user message, an assistant message with a
tool call, and the tool's result — and then the session saves its snapshot.
Saving is incremental, so that save should cost about the same whatever the
length of the conversation: the target is a ratio of at most 2x between a
timeline of 10,000 messages and one of 100.

For each size, ``--samples`` sessions are first filled to exactly that many
messages (one full save each, timed separately as "first save"); then each
session takes one timed tick-save, the two sizes interleaved, so every
sample is taken at exactly the stated size. Times are wall-clock
(``time.perf_counter``) around ``await store.save(...)``, medians printed.
SQLiteStore runs on a temporary file with its defaults (WAL,
``synchronous=FULL``: every save is fsync-durable); MemoryStore is shown for
comparison.

Usage::

    python bench/store.py [--samples N] [--sizes 100,10000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from trio_session import (
    MemoryStore,
    Message,
    SessionSnapshot,
    SQLiteStore,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
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


async def timed_save(store: SessionStore, snapshot: SessionSnapshot) -> float:
    start = time.perf_counter()
    await store.save(snapshot)
    return time.perf_counter() - start


async def measure(
    store: SessionStore, sizes: list[int], samples: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """(first full save times, tick-save times) per size."""
    first: dict[int, list[float]] = {size: [] for size in sizes}
    tick: dict[int, list[float]] = {size: [] for size in sizes}
    sessions: dict[int, list[SessionSnapshot]] = {size: [] for size in sizes}
    for size in sizes:
        for k in range(samples):
            snapshot = base_snapshot(f"bench-{size}-{k}", size)
            first[size].append(await timed_save(store, snapshot))
            sessions[size].append(snapshot)
    for k in range(samples):
        for size in sizes:
            snapshot = sessions[size][k]
            # Built outside the timed region: the session does this anyway.
            grown = attrs.evolve(
                snapshot,
                timeline=snapshot.timeline + tick_messages(f"tick-{k}"),
                last_seq=snapshot.last_seq + 25,
                updated_at=time.time(),
                usage=snapshot.usage + Usage(input_tokens=900, output_tokens=150, ticks=1),
            )
            tick[size].append(await timed_save(store, grown))
            sessions[size][k] = grown
    # The numbers mean nothing unless the saves were right.
    for size in sizes:
        expected = sessions[size][-1]
        if await store.load(expected.session_id) != expected:
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


async def main(samples: int, sizes: list[int], directory: Path) -> int:
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
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sys.exit(trio.run(main, args.samples, args.sizes, Path(tmp)))
