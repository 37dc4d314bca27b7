"""Delegation: a tool that spawns a child agent.

The child runs inside the parent's execution (aborting the parent cancels it),
and its events are forwarded into the parent's stream between ``spawn_start``
and ``spawn_end``, with ``spawn_path`` set.
"""

from __future__ import annotations

import trio

from trio_session import Agent, Reply, ScriptedModel, ToolContext, open_session, tool

researcher = Agent(
    ScriptedModel(["The Eiffel Tower is 330 m tall."], chunk_size=10),
    name="researcher",
    system="You find facts.",
)


@tool
async def research(ctx: ToolContext, question: str) -> str:
    """Ask the research agent a question.

    Args:
        question: What to find out.
    """
    child = await ctx.spawn(researcher, question)
    return (await child.result).response


lead = Agent(
    ScriptedModel(
        [
            Reply("Let me ask my researcher.", tool_calls=[("research", {"question": "Height?"})]),
            "According to my researcher, the Eiffel Tower is 330 m tall.",
        ]
    ),
    tools=[research],
)


async def main() -> int:
    forwarded = 0
    async with open_session(lead) as session:
        handle = await session.send("How tall is the Eiffel Tower?")
        async for event in handle:
            indent = "    " * len(event.spawn_path)
            if event.spawn_path:
                forwarded += 1
            if event.type in ("spawn_start", "spawn_end", "tool_call", "message"):
                print(f"{indent}{event.seq:>3} {event.type}")
        print((await handle.result).response)
    return forwarded


if __name__ == "__main__":
    trio.run(main)
