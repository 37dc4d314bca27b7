"""Events per second delivered to 1, 50 and 500 SSE readers of one session.

Everything runs on 127.0.0.1 in one trio run: a gateway serving a session whose
model streams ``--events`` one-character chunks as fast as it can, and N
readers that each follow ``GET /sessions/{id}/events`` to ``execution_end``
(httpx, parsing every frame). The baseline, measured in the same run, is the
same session read in-process by N ``session.subscribe()`` loops. Each line
prints delivered events per second (events x readers / seconds) and the ratio
to the baseline with as many readers. Bounded: at most ``--timeout`` seconds a
measurement.

    .venv/bin/python bench/sse_load.py [--events 2000] [--readers 1,50,500]
"""

from __future__ import annotations

import argparse
import math
import time

import httpx
import trio

from trio_session import Agent, ScriptedModel, open_session
from trio_session.server import open_gateway

TOKEN = "bench"


def _agent(events: int) -> Agent:
    # One chunk per character: ~events content_delta events, plus the fixed dozen.
    return Agent(ScriptedModel(["x" * events] * 4, chunk_size=1))


async def _in_process(readers: int, events: int) -> tuple[int, float]:
    async with open_session(_agent(events)) as session:
        counts: list[int] = []
        ready = trio.Semaphore(0)

        async def read() -> None:
            n = 0
            with session.subscribe() as subscription:
                ready.release()
                async for event in subscription:
                    n += 1
                    if event.type == "execution_end":
                        break
            counts.append(n)

        async with trio.open_nursery() as nursery:
            for _ in range(readers):
                nursery.start_soon(read)
            for _ in range(readers):
                await ready.acquire()
            start = time.perf_counter()
            await session.send("go")
        return sum(counts), time.perf_counter() - start


async def _over_sse(readers: int, events: int) -> tuple[int, float]:
    async with open_gateway(_agent(events), port=0, token=TOKEN) as gateway:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}",
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=None,
            limits=limits,
        ) as client:
            await client.post("/sessions", json={"session_id": "bench"})
            counts: list[int] = []
            ready = trio.Semaphore(0)

            async def read() -> None:
                n = 0
                async with client.stream("GET", "/sessions/bench/events") as response:
                    ready.release()
                    pending = b""
                    async for chunk in response.aiter_raw():
                        pending += chunk
                        *frames, pending = pending.split(b"\n\n")
                        for frame in frames:
                            if frame.startswith(b"id: "):
                                n += 1
                                if b"event: execution_end" in frame:
                                    counts.append(n)
                                    return

            async with trio.open_nursery() as nursery:
                for _ in range(readers):
                    nursery.start_soon(read)
                for _ in range(readers):
                    await ready.acquire()
                start = time.perf_counter()
                await client.post("/sessions/bench/messages", json={"message": "go"})
            elapsed = time.perf_counter() - start
            return sum(counts), elapsed


async def main(events: int, readers_list: list[int], bound: float) -> None:
    print(f"one session, ~{events} events per execution, delivered events per second")
    for readers in readers_list:
        rates = []
        for name, measure in (("in-process", _in_process), ("SSE", _over_sse)):
            with trio.move_on_after(bound) as scope:
                delivered, seconds = await measure(readers, events)
            if scope.cancelled_caught:
                rates.append(math.nan)
                print(f"{readers:>4} readers  {name:<10} timed out after {bound:g}s")
                continue
            rates.append(delivered / seconds)
            print(
                f"{readers:>4} readers  {name:<10} {delivered:>8} events in {seconds:6.2f}s "
                f"= {delivered / seconds:>10,.0f} events/s"
            )
        print(f"{readers:>4} readers  SSE / in-process = {rates[1] / rates[0]:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--readers", default="1,50,500")
    parser.add_argument("--timeout", type=float, default=300.0)
    options = parser.parse_args()
    trio.run(
        main, options.events, [int(n) for n in options.readers.split(",")], options.timeout
    )
