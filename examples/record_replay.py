"""Record a session's model calls once, then replay them offline.

The first run wraps the model in ``RecordingModel``, which writes every
request and the chunks that answered it to a JSON-lines file. The second run
uses ``ReplayModel`` instead, which answers from that file, so the session
runs again with the same events and no model at all: record once against a
real provider (``OpenAIModel``, ``AnthropicModel``), replay in CI.
Here the recorded model is a ``ScriptedModel``, so the example needs no key.

Run it with ``python examples/record_replay.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from trio_session import Agent, Event, Model, Reply, ScriptedModel, open_session, tool
from trio_session.testing import RecordingModel, ReplayModel


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city.

    Args:
        city: The city name.
    """
    return f"Sunny and 21 °C in {city}"


def provider() -> Model:
    """Stands in for a real provider."""
    return ScriptedModel(
        [
            Reply("Checking.", tool_calls=[("get_weather", {"city": "Paris"})]),
            "It is sunny and 21 °C in Paris.",
        ]
    )


async def run(model: Model) -> tuple[str, list[Event]]:
    agent = Agent(model, system="You are a helpful assistant.", tools=[get_weather])
    async with open_session(agent) as session:
        handle = await session.send("What's the weather in Paris?")
        events = [event async for event in handle]
        return (await handle.result).response, events


async def main() -> tuple[list[Event], list[Event]]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "weather.jsonl"

        response, recorded = await run(RecordingModel(provider(), path))
        print(f"recorded: {response!r} ({len(path.read_text().splitlines())} model calls)")

        replay = ReplayModel(path)
        response, replayed = await run(replay)
        print(f"replayed: {response!r} (offline, {replay.unused} recordings left)")

    same = [e.type for e in recorded] == [e.type for e in replayed]
    print(f"same {len(replayed)} events in the same order: {same}")
    return recorded, replayed


if __name__ == "__main__":
    trio.run(main)
