"""Several consumers of one execution: a terminal printer, a logger, a late reader.

Each ``async for event in handle`` opens its own replaying subscription, so every
reader sees every event exactly once, in order — even one that joins after the
execution has finished.
"""

from __future__ import annotations

import json

import trio

from trio_session import Agent, ScriptedModel, StreamEvent, open_session, to_json

model = ScriptedModel(["Three readers, one stream, nothing lost."], chunk_size=4, delay=0.01)


async def terminal(handle: object, lines: list[str]) -> None:
    async for event in handle:  # type: ignore[attr-defined]
        if event.type == "content_delta":
            print(event.delta, end="", flush=True)
    print()
    lines.append("terminal done")


async def logger(handle: object, log: list[str]) -> None:
    async for event in handle:  # type: ignore[attr-defined]
        log.append(to_json(event))


async def main() -> dict[str, int]:
    log: list[str] = []
    done: list[str] = []
    async with open_session(Agent(model)) as session:
        handle = await session.send("Show me fan-out.")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(terminal, handle, done)
            nursery.start_soon(logger, handle, log)
        # A late reader: the execution is over, and it still gets the full replay.
        late: list[StreamEvent] = [event async for event in handle]
    counts = {"logger": len(log), "late": len(late)}
    print(f"logger wrote {counts['logger']} JSON lines; the late reader saw {counts['late']}")
    print("first log line:", json.loads(log[0])["type"])
    return counts


if __name__ == "__main__":
    trio.run(main)
