"""Quick start: stream an agent's answer as it is produced, then print the result.

Run it with ``python examples/quickstart.py``; it needs no key and no network.
"""

from __future__ import annotations

import trio

from trio_session import Agent, Reply, ScriptedModel, TextBlock, open_session, tool


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city.

    Args:
        city: The city name.
    """
    return f"Sunny and 21 °C in {city}"


model = ScriptedModel(
    [
        Reply("Let me check the weather. ", tool_calls=[("get_weather", {"city": "Paris"})]),
        "It is sunny and 21 °C in Paris: a good day for a walk.",
    ],
    chunk_size=6,
    delay=0.02,
)
agent = Agent(model, system="You are a helpful assistant.", tools=[get_weather])


async def main() -> None:
    async with open_session(agent) as session:
        handle = await session.send("What's the weather in Paris?")
        async for event in handle:
            if event.type == "content_delta":
                print(event.delta, end="", flush=True)
            elif event.type == "tool_call":
                print(f"\n[calling {event.name}({event.input})]")
            elif event.type == "tool_result":
                text = "".join(b.text for b in event.content if isinstance(b, TextBlock))
                print(f"[{event.name} -> {text}]")
        result = await handle.result
        print(f"\n\nresponse: {result.response!r}")
        print(f"ticks: {result.usage.ticks}, tokens: {result.usage.total_tokens}")


if __name__ == "__main__":
    trio.run(main)
