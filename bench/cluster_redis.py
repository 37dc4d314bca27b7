"""Events per second through Redis: `EventLog.append` to K readers' blocking `EventLog.read`.

A redis-server is started on 127.0.0.1 (no persistence, in a temporary directory). One
producer appends N events of about 200 bytes (a JSON event's size) in batches of B, fenced by
a lease token, as a lease holder's buffer listener does; K reader tasks (each on its own
client connection from one pool, as K SSE clients would if each read Redis) each loop
``read(after_seq=last, count=512, block=inf)`` until they have all N. Timed with
``time.perf_counter`` from the first append (readers already blocked) until every reader has
the last event.

Printed per K: ``ev/s`` = N / elapsed (events through the stream per second, every reader
having received each) and ``deliveries/s`` = K * N / elapsed. Best of ``--repeat``. N is
capped so that one run makes at most 200,000 deliveries (2,000 events at K = 100).

A second line per K > 1, ``shared``, has one blocking Redis reader per process fan the
events out to the K readers through trio memory channels: what a node should do for its SSE
clients of one session, as each Redis command costs about a millisecond of client time.

Usage::

    python bench/cluster_redis.py [--events N] [--batch B] [--readers 1,100] [--repeat R]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _redis import RedisServer, info

from trio_session.cluster._lease import Lease
from trio_session.cluster._redis import EventLog, open_redis

PAYLOAD = b'{"type":"text_delta","execution_id":"e-0001","seq":0,"text":"' + b"x" * 120 + b'"}'


async def run(
    url: str, port: int, readers: int, events: int, batch: int, run_id: int, shared: bool
) -> float:
    session = f"bench-{readers}-{run_id}-{shared}"
    async with open_redis(url, max_connections=readers + 8) as redis:
        log = EventLog(redis)
        token = await Lease(redis).acquire(session, "bench", ttl=600.0)
        assert token is not None
        done = 0
        finished = trio.Event()

        async def reader() -> None:
            nonlocal done
            last = 0
            while last < events:
                got = await log.read(session, after_seq=last, count=512, block=math.inf)
                last = got[-1][0]
            done += 1
            if done == readers:
                finished.set()

        channels = [
            trio.open_memory_channel[list[tuple[int, bytes]]](math.inf) for _ in range(readers)
        ]

        async def fan_out() -> None:
            last = 0
            while last < events:
                got = await log.read(session, after_seq=last, count=512, block=math.inf)
                last = got[-1][0]
                for send, _ in channels:
                    send.send_nowait(got)

        async def local_reader(receive: trio.MemoryReceiveChannel[list[tuple[int, bytes]]]) -> None:
            nonlocal done
            last = 0
            while last < events:
                last = (await receive.receive())[-1][0]
            done += 1
            if done == readers:
                finished.set()

        async with trio.open_nursery() as nursery:
            if shared:
                nursery.start_soon(fan_out)
                for _, receive in channels:
                    nursery.start_soon(local_reader, receive)
            else:
                for _ in range(readers):
                    nursery.start_soon(reader)
            blocked = 1 if shared else readers
            deadline = time.monotonic() + 30
            while int(info(port, "clients")["blocked_clients"]) < blocked:
                if time.monotonic() > deadline:
                    raise RuntimeError("the readers did not block")
                await trio.sleep(0.01)
            start = time.perf_counter()
            for first in range(1, events + 1, batch):
                chunk = [(seq, PAYLOAD) for seq in range(first, min(first + batch, events + 1))]
                await log.append(session, chunk, token=token)
            await finished.wait()
            elapsed = time.perf_counter() - start
        await log.delete(session)
        return elapsed


async def measure(server: RedisServer, args: argparse.Namespace) -> list[str]:
    results: list[str] = []
    for readers in [int(k) for k in args.readers.split(",")]:
        events = min(args.events, 200_000 // readers)
        for shared in [False, True] if readers > 1 else [False]:
            best = min(
                [
                    await run(server.url, server.port, readers, events, args.batch, i, shared)
                    for i in range(args.repeat)
                ]
            )
            rate = events / best
            label = f"readers={readers}" + (" shared" if shared else "")
            line = (
                f"{label}: {rate:,.0f} ev/s ({rate * readers:,.0f} deliveries/s, "
                f"{events} events in {best * 1000:.0f} ms)"
            )
            print(line, file=sys.stderr)
            results.append(line)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--readers", default="1,100")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[2]
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = RedisServer.start(Path(directory))
        try:
            print(
                f"redis-server {version}, events of {len(PAYLOAD)} bytes in batches of "
                f"{args.batch}, best of {args.repeat}"
            )
            for line in trio.run(measure, server, args):
                print(line)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
