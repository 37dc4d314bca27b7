"""Per-tick overhead of the engine, against a bare trio loop doing the same work.

Library: one execution of N ticks on a zero-latency `ScriptedModel`; each tick
the model streams a short text and one tool call, the tool runs, and one
subscriber reads the whole event stream.

Bare loop: only what any agent loop must do. A fake model that checkpoints once
and returns a dict, the tool function awaited with its arguments after one
checkpoint, and three plain dicts appended to a list. It drives no library code
(no `ScriptedModel`, no `Message`).

Also: microseconds per streamed ``content_delta`` end to end (model chunk ->
event -> ``async for`` reader), against a bare async generator of N pre-built
strings that checkpoints once per 64 (what ``ScriptedModel(delay=0)`` does),
appended to a list.

Both time what the caller waits for: from ``send()`` (or the loop's start) until
the last event was read.

Run: ``python bench/tick_overhead.py [--ticks N] [--deltas N] [--repeat R]``.
Figures are ratios measured in the same run; absolute times vary by machine.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from trio_session import Agent, Reply, ScriptedModel, Usage, open_session, tool


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


USAGE = Usage(10, 5, 15)  # given, so the model does not estimate tokens per call


def tick_script(ticks: int) -> list[Reply]:
    replies = [
        Reply("Checking.", tool_calls=[("lookup", {"key": f"k{i}"}, f"call_{i}")], usage=USAGE)
        for i in range(ticks)
    ]
    replies.append(Reply("Done.", usage=USAGE))
    return replies


async def library_ticks(ticks: int) -> float:
    model = ScriptedModel(tick_script(ticks))
    agent = Agent(model, tools=[lookup], max_ticks=ticks + 1)
    seen = 0
    async with open_session(agent) as session:
        start = time.perf_counter()
        handle = await session.send("go")
        async for _event in handle:
            seen += 1
        elapsed = time.perf_counter() - start
    assert seen > ticks * 10
    return elapsed / (ticks + 1)


async def bare_ticks(ticks: int) -> float:
    async def model(history: list[dict[str, Any]], tick: int) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if tick <= ticks:
            return {"text": "Checking.", "tool": "lookup", "args": {"key": f"k{tick}"}}
        return {"text": "Done."}

    async def run_tool(key: str) -> str:
        await trio.lowlevel.checkpoint()
        return f"value of {key}"

    history: list[dict[str, Any]] = [{"role": "user", "text": "go"}]
    start = time.perf_counter()
    for tick in range(1, ticks + 2):
        out = await model(history, tick)
        history.append({"role": "assistant", "out": out})
        if "tool" in out:
            result = await run_tool(**out["args"])
            history.append({"role": "tool", "result": result})
            history.append({"role": "note"})
    elapsed = time.perf_counter() - start
    return elapsed / (ticks + 1)


async def library_deltas(deltas: int) -> float:
    model = ScriptedModel([Reply("x" * deltas, usage=USAGE)], chunk_size=1)
    async with open_session(Agent(model)) as session:
        start = time.perf_counter()
        handle = await session.send("go")
        count = 0
        async for event in handle:
            if event.type == "content_delta":
                count += 1
        elapsed = time.perf_counter() - start
    assert count == deltas
    return elapsed / deltas


async def bare_deltas(deltas: int) -> float:
    pieces = ["x"] * deltas

    async def stream() -> AsyncIterator[str]:
        for i, piece in enumerate(pieces):
            if i % 64 == 0:
                await trio.lowlevel.checkpoint()
            yield piece

    start = time.perf_counter()
    received: list[str] = []
    async for piece in stream():
        received.append(piece)
    elapsed = time.perf_counter() - start
    return elapsed / deltas


def best(fn: Any, arg: int, repeat: int) -> float:
    results = []
    for _ in range(repeat):
        gc.collect()
        results.append(trio.run(fn, arg))
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--deltas", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    lib_tick = best(library_ticks, args.ticks, args.repeat)
    bare_tick = best(bare_ticks, args.ticks, args.repeat)
    lib_delta = best(library_deltas, args.deltas, args.repeat)
    bare_delta = best(bare_deltas, args.deltas, args.repeat)
    print(f"ticks: {args.ticks + 1} per run, best of {args.repeat}")
    print(f"  bare trio loop      {bare_tick * 1e6:8.1f} µs/tick")
    print(f"  trio-session        {lib_tick * 1e6:8.1f} µs/tick")
    print(f"  ratio               {lib_tick / bare_tick:8.2f}x   (target <= 10x)")
    print(f"content_delta: {args.deltas} per run, best of {args.repeat}")
    print(f"  bare async stream   {bare_delta * 1e6:8.2f} µs/chunk")
    print(f"  trio-session        {lib_delta * 1e6:8.2f} µs/delta end to end")
    print(f"  ratio               {lib_delta / bare_delta:8.2f}x")


if __name__ == "__main__":
    main()
