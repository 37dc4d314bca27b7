"""Objects a finished execution leaves for the cyclic garbage collector.

Runs executions of a session (a zero-latency `ScriptedModel`, one tool call a
tick, one reader of the whole stream) with the collector disabled; after each,
the caller drops the handle. Whatever refcounting could not free waits for a
collection: ``gc.collect()`` counts it. Also prints the growth of
``gc.get_objects()`` per execution and, with ``--types``, the most common types
of what the collector found.

Run: ``python bench/cycles.py [--executions N] [--ticks K] [--types]``.
"""

from __future__ import annotations

import argparse
import collections
import gc
from typing import Any

import trio

from trio_session import Agent, Reply, ScriptedModel, open_session, tool
from trio_session.models import ModelRequest


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def run(executions: int, ticks: int) -> tuple[int, int]:
    def reply(request: ModelRequest) -> Any:
        if request.tick < ticks:
            return Reply(tool_calls=[("add", {"a": 1, "b": 2})])
        return "done"

    model = ScriptedModel([reply] * ((executions + 1) * ticks))
    async with open_session(Agent(model, tools=[add], max_ticks=ticks + 1)) as session:

        async def one() -> None:
            handle = await session.send("go")
            async for _ in handle:
                pass
            assert handle.status == "completed", handle.status

        await one()  # warm-up: caches, the first buffer of the chain
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for _ in range(executions):
                await one()
            grown = len(gc.get_objects()) - before
            found = gc.collect()
        finally:
            gc.enable()
    return found, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--types", action="store_true", help="list what the collector found")
    args = parser.parse_args()
    if args.types:
        gc.set_debug(gc.DEBUG_SAVEALL)
    found, grown = trio.run(run, args.executions, args.ticks)
    if args.types:
        counts = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        for name, count in counts.most_common(25):
            print(f"{count / args.executions:8.1f}  {name}")
        gc.set_debug(0)
        gc.garbage.clear()
    print(f"gc.get_objects() growth per execution: {grown / args.executions:.1f}")
    print(f"objects left for the collector per execution: {found / args.executions:.1f}")


if __name__ == "__main__":
    main()
