"""Fan-out throughput of EventBuffer against a bare trio fan-out.

For K subscribers, a producer publishes N events with one
``await trio.lowlevel.checkpoint()`` per event while K consumer tasks (in one
nursery) each read all N events. Deliveries per second = K * N / elapsed,
timed with ``time.perf_counter`` from the first publish (consumers already
started and blocked) until every consumer has finished.

Variants, measured in the same run, interleaved, best of ``--repeat``:

- ``bare``: one unbounded memory channel per subscriber; the producer builds
  the same event as the buffer does and ``send_nowait``s it to each channel.
- ``receive``: ``Publisher.emit`` + ``await subscription.receive()`` per event.
- ``batch``: ``Publisher.emit`` + ``await subscription.receive_batch()``.

Both producers build one ``CustomEvent`` per event (the buffer via ``Publisher.emit``,
the bare fan-out by hand, with the same fields), so the ratio compares the
fan-out, not event construction. Targets: receive >= 1.0x bare at every K,
batch >= 5x bare at K = 16.

For reference, ``floor`` is trio's scheduling alone: the producer and K tasks
that each do one checkpoint per event and receive nothing. Any design that
runs every consumer once per event is bounded by it. ``--burst B`` lets the
producer checkpoint once per B events instead of once per event. The engine
publishes in bursts (a tick emits several events between two awaits), so the
default runs both B=1 and B=16.

Usage::

    python bench/fanout.py [--events N] [--repeat R] [--ks 1,16,256] [--bursts 1,16]

By default N = 20,000 events, capped so that one run makes about 640,000
deliveries (N = 2,500 at K = 256); ``--events`` fixes N for every K.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Awaitable, Callable

import trio
import trio.testing

from trio_session import CustomEvent, ExecutionEnd
from trio_session._buffer import EventBuffer, EventSubscription, publisher_of

Variant = Callable[[int, int], Awaitable[float]]

burst = 1  # the producer checkpoints when i % burst == 0; set by --bursts


async def bare(k: int, n: int) -> float:
    """K unbounded memory channels, send_nowait to each, one checkpoint per event."""
    channels = [trio.open_memory_channel[CustomEvent](float("inf")) for _ in range(k)]
    senders = [send for send, _ in channels]
    counts: list[int] = []

    async def consume(receiver: trio.MemoryReceiveChannel[CustomEvent]) -> None:
        received = 0
        try:
            while True:
                await receiver.receive()
                received += 1
        except trio.EndOfChannel:
            counts.append(received)

    async with trio.open_nursery() as nursery:
        for _, receiver in channels:
            nursery.start_soon(consume, receiver)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        for i in range(n):
            event = CustomEvent(
                seq=i + 1, session_id="s", execution_id="e", tick=0,
                timestamp=time.time(), name="tick", data=i,
            )
            for sender in senders:
                sender.send_nowait(event)
            if i % burst == 0:
                await trio.lowlevel.checkpoint()
        for sender in senders:
            sender.close()
    elapsed = time.perf_counter() - started
    assert counts == [n] * k, counts
    return k * n / elapsed


async def _buffer_run(k: int, n: int, consume: Callable[[EventSubscription], Awaitable[int]]
                      ) -> float:
    buf = EventBuffer(session_id="s", execution_id="e")
    counts: list[int] = []

    async def run(subscription: EventSubscription) -> None:
        with subscription:
            counts.append(await consume(subscription))

    async with trio.open_nursery() as nursery:
        for _ in range(k):
            nursery.start_soon(run, buf.subscribe())
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        for i in range(n):
            publisher_of(buf).emit(CustomEvent, name="tick", data=i)
            if i % burst == 0:
                await trio.lowlevel.checkpoint()
        publisher_of(buf).emit(ExecutionEnd, status="completed")
    elapsed = time.perf_counter() - started
    # Every consumer also got the final execution_end.
    assert counts == [n + 1] * k, counts
    return k * n / elapsed


async def per_event(k: int, n: int) -> float:
    """EventBuffer, one ``await receive()`` per event."""

    async def consume(subscription: EventSubscription) -> int:
        received = 0
        try:
            while True:
                await subscription.receive()
                received += 1
        except trio.EndOfChannel:
            return received

    return await _buffer_run(k, n, consume)


async def batched(k: int, n: int) -> float:
    """EventBuffer, ``await receive_batch()`` until the end."""

    async def consume(subscription: EventSubscription) -> int:
        received = 0
        try:
            while True:
                received += len(await subscription.receive_batch())
        except trio.EndOfChannel:
            return received

    return await _buffer_run(k, n, consume)


async def floor(k: int, n: int) -> float:
    """No data at all: K tasks and the producer each do one checkpoint per event."""

    async def spin() -> None:
        for _ in range(n):
            await trio.lowlevel.cancel_shielded_checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(k):
            nursery.start_soon(spin)
        started = time.perf_counter()
        for _ in range(n):
            await trio.lowlevel.checkpoint()
    return k * n / (time.perf_counter() - started)


VARIANTS: dict[str, Variant] = {
    "bare": bare, "receive": per_event, "batch": batched, "floor": floor,
}


def measure(k: int, n: int, repeat: int) -> dict[str, float]:
    """Best deliveries/s of each variant, the variants interleaved per round."""
    best = dict.fromkeys(VARIANTS, 0.0)
    for _ in range(repeat):
        for name, variant in VARIANTS.items():
            gc.collect()
            best[name] = max(best[name], trio.run(variant, k, n))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None,
                        help="events per run (N); default min(20000, 640000 // K)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per variant; best is kept")
    parser.add_argument("--ks", default="1,16,256", help="subscriber counts, comma-separated")
    parser.add_argument("--bursts", default="1,16",
                        help="events per producer checkpoint, one table each (default 1,16)")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    global burst
    for burst in (int(b) for b in args.bursts.split(",")):
        print(f"\npython {sys.version.split()[0]}, trio {trio.__version__}, "
              f"best of {args.repeat}, burst={burst}; deliveries per second")
        print(f"{'K':>5} {'N':>6} {'bare':>12} {'receive':>12} {'batch':>12} {'floor':>12} "
              f"{'receive/bare':>13} {'batch/bare':>11} {'floor/bare':>11}")
        receive_ok = True
        batch_ok = True
        for k in ks:
            n = args.events or min(20_000, 640_000 // k)
            best = measure(k, n, args.repeat)
            receive_ratio = best["receive"] / best["bare"]
            batch_ratio = best["batch"] / best["bare"]
            floor_ratio = best["floor"] / best["bare"]
            rates = " ".join(
                f"{best[name]:>12,.0f}" for name in ("bare", "receive", "batch", "floor")
            )
            print(f"{k:>5} {n:>6} {rates} {receive_ratio:>12.2f}x {batch_ratio:>10.2f}x "
                  f"{floor_ratio:>10.2f}x")
            receive_ok &= receive_ratio >= 1.0
            if k == 16:
                batch_ok &= batch_ratio >= 5.0
        print(f"receive >= 1.0x bare at every K: {'met' if receive_ok else 'NOT met'}; "
              f"batch >= 5x bare at K=16: {'met' if batch_ok else 'NOT met'}")
        if burst == 1 and not batch_ok:
            print("  (with one producer checkpoint per event every consumer is woken per event,"
                  " so a batch holds ~1.5 events; see 'floor')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
