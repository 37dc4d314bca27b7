"""Streaming fan-out, end to end, against a bare trio fan-out in the same run.

For K readers: the time a session takes to stream N content deltas (a
zero-latency `ScriptedModel` with ``chunk_size=1``) to K readers of one
handle, from ``send()`` until every reader has seen the execution's end.
Readers either ``async for`` over the handle or ``receive_batch()`` from a
subscription of its events.

Baseline: only what a bare fan-out must do. N pre-built tuples (built before
the clock starts) are sent to K unbounded memory channels, one checkpoint per
item, read by K tasks. No library code runs in it.

Prints deliveries per second and the ratio library / bare (higher is better;
1.0 = as fast as the bare fan-out), best of ``--repeat`` with the variants
interleaved. Target: ``async for`` >= 1.0x bare at every K.

Usage::

    python bench/fanout.py [--events N] [--repeat R] [--ks 1,16,256]

By default N = min(20,000, 1,000,000 // K).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import trio

from trio_session import Agent, ExecutionHandle, ScriptedModel, open_session


async def library(k: int, n: int, batch: bool) -> float:
    """Seconds for a session to stream n deltas to k readers of one handle."""
    agent = Agent(ScriptedModel(["x" * n], chunk_size=1, delay=0))
    counts: list[int] = []

    async def reader(handle: ExecutionHandle[object]) -> None:
        received = 0
        if batch:
            with handle.events.subscribe() as subscription:
                while True:
                    try:
                        received += len(await subscription.receive_batch())
                    except trio.EndOfChannel:
                        break
        else:
            async for _event in handle:
                received += 1
        counts.append(received)

    async with open_session(agent) as session:
        started = time.perf_counter()
        handle = await session.send("go")
        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(reader, handle)
        elapsed = time.perf_counter() - started
    assert len(counts) == k, counts
    assert all(count > n for count in counts), counts
    return elapsed


async def bare(k: int, n: int) -> float:
    """Seconds to hand n pre-built items to k memory channels read by k tasks."""
    items = [("content_delta", i, "x") for i in range(n)]
    channels = [trio.open_memory_channel[tuple[str, int, str]](float("inf")) for _ in range(k)]

    async def reader(receiver: trio.MemoryReceiveChannel[tuple[str, int, str]]) -> None:
        async with receiver:
            async for _item in receiver:
                pass

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _, receiver in channels:
            nursery.start_soon(reader, receiver)
        for item in items:
            for sender, _ in channels:
                sender.send_nowait(item)
            await trio.lowlevel.checkpoint()
        for sender, _ in channels:
            await sender.aclose()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None,
                        help="deltas per run (N); default min(20000, 1000000 // K)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant; best is kept")
    parser.add_argument("--ks", default="1,16,256", help="reader counts, comma-separated")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}, best of {args.repeat}; "
          "deliveries per second, end to end")
    print(f"{'K':>5} {'N':>6} {'bare':>12} {'async for':>12} {'batch':>12} "
          f"{'async for/bare':>15} {'batch/bare':>11}")
    met = True
    for k in (int(k) for k in args.ks.split(",")):
        n = args.events or min(20_000, 1_000_000 // k)
        best = {"bare": float("inf"), "async for": float("inf"), "batch": float("inf")}
        for _ in range(args.repeat):
            gc.collect()
            best["bare"] = min(best["bare"], trio.run(bare, k, n))
            gc.collect()
            best["async for"] = min(best["async for"], trio.run(library, k, n, False))
            gc.collect()
            best["batch"] = min(best["batch"], trio.run(library, k, n, True))
        rates = " ".join(f"{k * n / best[name]:>12,.0f}" for name in best)
        per_event = best["bare"] / best["async for"]
        batched = best["bare"] / best["batch"]
        print(f"{k:>5} {n:>6} {rates} {per_event:>14.2f}x {batched:>10.2f}x")
        met &= per_event >= 1.0
    print(f"async for >= 1.0x bare at every K: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
