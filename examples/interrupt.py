"""Abort, inject and interrupt.

1. ``abort()`` stops an execution at once — mid-stream — and the stream still
   ends with ``execution_end``.
2. ``queue_message()`` injects a message into a running execution; it is
   answered in the same execution, at its next tick.
3. ``interrupt()`` aborts whatever runs and sends a new message.
"""

from __future__ import annotations

import trio

from trio_session import Agent, ContentDelta, ExecutionAborted, ScriptedModel, open_session

model = ScriptedModel(
    [
        "Once upon a time, in a land far away, there lived " + "a very long story " * 20,
        "Sure — here are three bullet points instead.",
        "The weather is fine.",
        "And to your follow-up: 6 x 7 = 42.",
        "Short answer: yes.",
    ],
    chunk_size=8,
    delay=0.01,
)


async def main() -> list[str]:
    outcomes: list[str] = []
    async with open_session(Agent(model)) as session:
        # 1. abort
        story = await session.send("Tell me a long story.")
        async with story.events.subscribe(types={"content_delta"}) as deltas:
            for _ in range(3):
                delta = await deltas.receive()
                # Filtered to content_delta; isinstance tells the type checker so too.
                assert isinstance(delta, ContentDelta)
                print(delta.delta, end="")
        story.abort("too long")
        try:
            await story.result
        except ExecutionAborted as exc:
            print(f"\n[aborted: {exc.reason}]")
            outcomes.append(story.status)
        # The user's message stays; the partial story is not committed.
        await session.send("Give me bullet points instead.").result

        # 2. inject a message mid-run
        handle = await session.send("How is the weather?")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            await deltas.receive()
        handle.queue_message("Also: what is 6 x 7?")
        result = await handle.result
        print(result.response)
        outcomes.append(f"ticks={result.usage.ticks}")

        # 3. interrupt with a new message
        await session.send("Write me an essay.")
        new = await session.interrupt("Actually, just answer yes or no.", reason="changed mind")
        assert new is not None
        print((await new.result).response)
        outcomes.append(new.status)
    return outcomes


if __name__ == "__main__":
    trio.run(main)
