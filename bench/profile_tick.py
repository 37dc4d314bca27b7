"""Where a tick's time goes: counts per tick, and optionally a cProfile of the same run.

The workload is ``../shared/bench/tick_ratio.py``'s: a zero-latency `ScriptedModel`
that asks for one tool call a tick, one ``async for`` reader, EXECUTIONS executions
of K ticks in one session. A `trio.abc.Instrument` counts the task steps
(``before_task_step``) and scheduler iterations (``before_io_wait``, called once per
pass of trio's run loop); the handle's iterator counts the events.

Run: ``python bench/profile_tick.py [--executions N] [--profile] [--top 30]``.
Prints ``per tick: E events, S task steps, I scheduler iterations, T µs`` (T is the
uninstrumented, unprofiled wall time of the same workload, the median of ``--repeat``
runs; the best run's CPU time follows, steadier on a busy machine),
then with ``--profile`` the functions with the most internal time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from typing import Any

import trio

from trio_session import Agent, ModelRequest, Reply, ScriptedModel, open_session, tool

K = 10


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def reply(request: ModelRequest) -> Reply | str:
    if request.tick < K:
        return Reply(tool_calls=[("add", {"a": 1, "b": 2})])
    return "done"


class Counter(trio.abc.Instrument):
    """Counts task steps and passes of the run loop."""

    def __init__(self) -> None:
        self.steps = 0
        self.iterations = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.iterations += 1


async def workload(executions: int, counts: dict[str, Any]) -> float:
    model = ScriptedModel([reply] * (executions * K))
    events = 0
    async with open_session(Agent(model, tools=[add], max_ticks=K + 1)) as session:
        counter = counts.get("counter")
        if counter is not None:
            trio.lowlevel.add_instrument(counter)
        start = time.perf_counter()
        cpu = time.process_time()
        for _ in range(executions):
            handle = await session.send("go")
            async for _event in handle:
                events += 1
            assert handle.status == "completed", handle.status
        elapsed = time.perf_counter() - start
        counts["cpu"] = time.process_time() - cpu
        if counter is not None:
            trio.lowlevel.remove_instrument(counter)
    counts["events"] = events
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    ticks = args.executions * K

    counter = Counter()
    counts: dict[str, Any] = {"counter": counter}
    trio.run(workload, args.executions, counts)
    times, cpus = [], []
    for _ in range(args.repeat):
        run: dict[str, Any] = {}
        times.append(trio.run(workload, args.executions, run))
        cpus.append(run["cpu"])
    per_tick = statistics.median(times) / ticks * 1e6
    cpu_per_tick = min(cpus) / ticks * 1e6
    print(
        f"per tick: {counts['events'] / ticks:.1f} events, {counter.steps / ticks:.1f} task "
        f"steps, {counter.iterations / ticks:.1f} scheduler iterations, {per_tick:.1f} µs "
        f"(CPU {cpu_per_tick:.1f} µs, best of {args.repeat})"
    )
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(trio.run, workload, args.executions, {})
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
