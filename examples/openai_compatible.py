"""One agent, any OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp, LiteLLM...

Configured by environment variables:

- ``OPENAI_BASE_URL``: the server's API root, such as ``http://localhost:11434/v1`` (Ollama)
  or ``http://localhost:8000/v1`` (vLLM); OpenAI's API when unset.
- ``OPENAI_API_KEY``: the key; servers that ignore keys still need a placeholder.
- ``TRIO_SESSION_MODEL``: the model id (default ``gpt-4o-mini``).
- ``OPENAI_MAX_RETRIES``: the SDK's retry budget before a stream starts (default 2).

Run::

    pip install 'trio-session[openai]'
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama \\
    TRIO_SESSION_MODEL=llama3.1 python examples/openai_compatible.py "Weather in Paris and Oslo?"

The answer streams to stdout as it is generated, tool calls and results are shown as they
happen, and Ctrl+C aborts the execution (the HTTP stream to the server is closed at once).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import trio

from trio_session import (
    Agent,
    ContentBlock,
    JsonBlock,
    ModelError,
    OpenAIModel,
    TextBlock,
    open_session,
    tool,
)

SYSTEM = "You are a concise assistant. Use the tools when they help; answer in one paragraph."


async def _get_weather(city: str, unit: str = "c") -> dict[str, Any]:
    """Get the current weather for a city.

    Args:
        city: The city name, such as "Paris".
        unit: "c" for Celsius or "f" for Fahrenheit.
    """
    # A stand-in for a real weather service: deterministic, offline.
    celsius = 12 + sum(map(ord, city.lower())) % 15
    temperature = celsius if unit == "c" else round(celsius * 9 / 5 + 32)
    return {"city": city, "temperature": temperature, "unit": unit, "sky": "partly cloudy"}


async def _add(a: float, b: float) -> float:
    """Add two numbers exactly.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


get_weather = tool(_get_weather, name="get_weather")
add = tool(_add, name="add")


def make_model(**overrides: Any) -> OpenAIModel:
    """The model, configured from the environment (``overrides`` win)."""
    options: dict[str, Any] = {
        "base_url": os.environ.get("OPENAI_BASE_URL") or None,
        "api_key": os.environ.get("OPENAI_API_KEY") or None,
        "max_retries": int(os.environ.get("OPENAI_MAX_RETRIES", "2")),
    }
    options.update(overrides)
    model_id = options.pop("model", None) or os.environ.get("TRIO_SESSION_MODEL", "gpt-4o-mini")
    return OpenAIModel(model_id, **options)


def _shown(block: ContentBlock) -> str:
    """A tool result's block as one line of text."""
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, JsonBlock):
        return str(block.data)
    return f"<{block.type}>"


async def run(question: str, model: OpenAIModel, out: Any = sys.stdout) -> str:
    """Ask ``question``, streaming the answer and the tool activity to ``out``."""
    agent = Agent(model, system=SYSTEM, tools=[get_weather, add], max_ticks=6)
    async with open_session(agent) as session:
        handle = await session.send(question)
        async for event in handle:
            if event.type == "content_delta":
                out.write(event.delta)
                out.flush()
            elif event.type == "tool_call":
                out.write(f"\n  -> {event.name}({dict(event.input)})\n")
            elif event.type == "tool_result":
                text = " ".join(_shown(block) for block in event.content)
                out.write(f"  <- {'error: ' if event.is_error else ''}{text}\n")
        result = await handle.result
    out.write(
        f"\n[{result.stop_reason}; {result.usage.ticks} ticks, "
        f"{result.usage.input_tokens} in / {result.usage.output_tokens} out tokens]\n"
    )
    return str(result.response)


async def main(question: str) -> int:
    try:
        model = make_model()
    except ValueError as exc:  # no API key, bad settings
        print(exc, file=sys.stderr)
        return 2
    async with model:
        try:
            await run(question, model)
        except ModelError as exc:
            hint = " (try again later)" if exc.retryable else ""
            print(f"\nmodel error [{exc.code}]: {exc}{hint}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    question = " ".join(sys.argv[1:]) or "What's the weather in Paris and in Oslo, and the sum?"
    try:
        sys.exit(trio.run(main, question))
    except KeyboardInterrupt:
        # trio cancelled everything: the session aborted, the HTTP stream is closed.
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
