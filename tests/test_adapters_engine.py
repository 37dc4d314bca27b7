"""The provider adapters under the session engine, through the public API only (SPEC §6, §8).

Each test runs once per provider against its fake server, and checks what `ScriptedModel` is
checked for: event order, transcript integrity, errors and abort — plus what only a real
connection shows: the request bodies the engine's messages become, and that aborting an
execution closes the provider's HTTP stream (the server sees the connection close).
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio
from _helpers import assert_transcript_integrity, assert_well_formed, collect, types_of
from _servers import (
    FakeServer,
    Reply as ServerReply,
    anthropic_message_events,
    anthropic_sse,
    json_reply,
    openai_chunk,
    openai_sse,
    server as server,
    sse_reply,
)

from trio_session import (
    Agent,
    AnthropicModel,
    ExecutionAborted,
    ExecutionCancelled,
    ExecutionHandle,
    Model,
    ModelError,
    OpenAIModel,
    Reply,
    ScriptedModel,
    StreamEvent,
    open_session,
    tool,
)


async def _get_weather(city: str) -> str:
    """Get the weather for a city.

    Args:
        city: The city name.
    """
    return f"21 C and sunny in {city}"


get_weather = tool(_get_weather, name="get_weather")


# -- the providers, as the tests need them ----------------------------------------------------


@attrs.frozen
class Provider:
    name: str
    client: Callable[[FakeServer], AbstractAsyncContextManager[Any]]
    model: Callable[[Any], Model]
    text: Callable[[str], ServerReply]
    tool_call: Callable[[str, str, str, str], ServerReply]  # text, id, name, arguments
    slow: Callable[[], ServerReply]
    dropped: Callable[[], ServerReply]
    usage: tuple[int, int]  # per reply of text / tool_call
    tool_results: Callable[[dict[str, Any]], list[Any]]  # from a request body


OPENAI_USAGE = {"prompt_tokens": 12, "completion_tokens": 7}


def _openai_text(text: str) -> ServerReply:
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    chunks += [openai_chunk({"content": text[i : i + 4]}) for i in range(0, len(text), 4)]
    chunks += [openai_chunk(finish_reason="stop"), openai_chunk(usage=OPENAI_USAGE)]
    return sse_reply(openai_sse(chunks))


def _openai_tool_call(text: str, call_id: str, name: str, arguments: str) -> ServerReply:
    def fragment(**function: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, "function": function}]}

    first = fragment(name=name, arguments="")
    first["tool_calls"][0].update({"id": call_id, "type": "function"})
    chunks = [openai_chunk({"role": "assistant", "content": text}), openai_chunk(first)]
    chunks += [openai_chunk(fragment(arguments=arguments[i : i + 5]))
               for i in range(0, len(arguments), 5)]
    chunks += [openai_chunk(finish_reason="tool_calls"), openai_chunk(usage=OPENAI_USAGE)]
    return sse_reply(openai_sse(chunks))


def _openai_partial(ending: Any) -> ServerReply:
    chunks = [openai_chunk({"role": "assistant", "content": "Once upon"})]
    return sse_reply(openai_sse(chunks, done=False), ending=ending)


def _openai_tool_results(body: dict[str, Any]) -> list[Any]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def _anthropic_text(text: str) -> ServerReply:
    return sse_reply(anthropic_sse(anthropic_message_events([{"type": "text", "text": text}])))


def _anthropic_tool_call(text: str, call_id: str, name: str, arguments: str) -> ServerReply:
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": text},
        {"type": "tool_use", "id": call_id, "name": name,
         "json": [arguments[i : i + 5] for i in range(0, len(arguments), 5)]},
    ]
    events = anthropic_message_events(blocks, stop_reason="tool_use")
    return sse_reply(anthropic_sse(events))


def _anthropic_partial(ending: Any) -> ServerReply:
    events = anthropic_message_events([{"type": "text", "text": "Once upon"}], finish=False)
    return sse_reply(anthropic_sse(events), ending=ending)


def _anthropic_tool_results(body: dict[str, Any]) -> list[Any]:
    return [
        block
        for message in body["messages"]
        if message["role"] == "user"
        for block in message["content"]
        if block["type"] == "tool_result"
    ]


PROVIDERS = {
    "openai": Provider(
        name="openai",
        client=lambda server: openai.AsyncOpenAI(
            base_url=server.base_url + "/v1", api_key="k", max_retries=0
        ),
        model=lambda client: OpenAIModel("gpt-test", client=client),
        text=_openai_text,
        tool_call=_openai_tool_call,
        slow=lambda: _openai_partial("hang"),
        dropped=lambda: _openai_partial("drop"),
        usage=(12, 7),
        tool_results=_openai_tool_results,
    ),
    "anthropic": Provider(
        name="anthropic",
        client=lambda server: anthropic.AsyncAnthropic(
            base_url=server.base_url, api_key="k", max_retries=0
        ),
        model=lambda client: AnthropicModel("claude-test", client=client),
        text=_anthropic_text,
        tool_call=_anthropic_tool_call,
        slow=lambda: _anthropic_partial("hang"),
        dropped=lambda: _anthropic_partial("drop"),
        usage=(10, 5),
        tool_results=_anthropic_tool_results,
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param]


@pytest.fixture
async def model(provider: Provider, server: FakeServer) -> AsyncIterator[Model]:
    async with provider.client(server) as client:
        yield provider.model(client)


def collapsed(events: Sequence[StreamEvent]) -> list[str]:
    """Event types with runs of deltas folded: providers split text differently."""
    out: list[str] = []
    for kind in types_of(events):
        if kind.endswith("_delta") and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


async def first_delta(handle: ExecutionHandle[Any]) -> None:
    """Wait until the execution has streamed some text: the model's stream is open."""
    async with handle.events.subscribe(types={"content_delta"}) as deltas:
        await deltas.receive()


async def run_to_model_error(
    model: Model, message: str
) -> tuple[pytest.ExceptionInfo[ModelError], ExecutionHandle[Any], list[StreamEvent], list[Any]]:
    """Send ``message`` and expect a `ModelError`: its info, the handle, events and timeline."""
    async with open_session(Agent(model)) as session:
        handle = await session.send(message)
        with pytest.raises(ModelError) as info:
            await handle.result
        events = await collect(handle)
        timeline = list(session.timeline)
    return info, handle, events, timeline


async def run_weather_loop(model: Model) -> tuple[Any, list[StreamEvent], list[Any]]:
    agent = Agent(model, system="You are a weather bot.", tools=[get_weather])
    async with open_session(agent) as session:
        handle = await session.send("Weather in Paris?")
        result = await handle.result
        events = await collect(handle)
        timeline = list(session.timeline)
    return result, events, timeline


# -- the tests --------------------------------------------------------------------------------


async def test_two_tick_tool_loop(provider: Provider, server: FakeServer, model: Model) -> None:
    server.push(
        provider.tool_call("Let me check.", "call_1", "get_weather", '{"city": "Paris"}'),
        provider.text("Sunny in Paris."),
    )
    result, events, timeline = await run_weather_loop(model)

    assert result.response == "Sunny in Paris."
    assert result.stop_reason == "end_turn"
    assert [m.role for m in timeline] == ["user", "assistant", "tool", "assistant"]
    [call] = timeline[1].tool_uses
    assert (call.tool_use_id, call.name, dict(call.input)) == (
        "call_1", "get_weather", {"city": "Paris"}
    )
    assert timeline[1].text == "Let me check."
    assert not timeline[2].tool_results[0].is_error
    assert_transcript_integrity(timeline)
    assert_well_formed(events)
    # Usage: both ticks, as the provider reported them.
    per_in, per_out = provider.usage
    assert (result.usage.input_tokens, result.usage.output_tokens) == (2 * per_in, 2 * per_out)
    assert result.usage.ticks == 2
    # Model events carry their real tick.
    assert {e.tick for e in events if e.type == "content_delta"} == {1, 2}

    # What the engine's conversation became on the wire, on the second call.
    first, second = server.bodies
    assert first["stream"] is True
    assert len(first["tools"]) == len(second["tools"]) == 1
    [result_on_wire] = provider.tool_results(second)
    assert "21 C and sunny in Paris" in str(result_on_wire)
    assert "You are a weather bot." in str(second.get("system", second["messages"][0]))


async def test_event_order_matches_scripted_model(
    provider: Provider, server: FakeServer, model: Model
) -> None:
    server.push(
        provider.tool_call("Let me check.", "call_1", "get_weather", '{"city": "Paris"}'),
        provider.text("Sunny in Paris."),
    )
    _, events, _ = await run_weather_loop(model)
    scripted = ScriptedModel(
        [
            Reply("Let me check.", tool_calls=[("get_weather", {"city": "Paris"}, "call_1")]),
            "Sunny in Paris.",
        ]
    )
    _, expected, _ = await run_weather_loop(scripted)
    assert collapsed(events) == collapsed(expected)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(429, "rate_limit", True), (500, "server_error", True), (401, "authentication", False)],
)
async def test_http_error_ends_the_execution_in_error(
    provider: Provider, server: FakeServer, model: Model, status: int, code: str,
    retryable: bool,
) -> None:
    server.push(json_reply(status, {"error": {"type": "x", "message": "nope"}},
                           [("retry-after", "1")]))
    info, handle, events, timeline = await run_to_model_error(model, "hi")
    assert handle.status == "error"
    assert (info.value.code, info.value.retryable) == (code, retryable)
    [error] = [e for e in events if e.type == "error"]
    assert (error.code, error.retryable) == (code, retryable)
    assert [m.role for m in timeline] == ["user"]
    assert_well_formed(events)


async def test_dropped_connection_ends_in_error_and_commits_nothing_partial(
    provider: Provider, server: FakeServer, model: Model
) -> None:
    server.push(provider.dropped())
    info, _, events, timeline = await run_to_model_error(model, "tell me a story")
    assert (info.value.code, info.value.retryable) == ("connection_error", True)
    assert "content_delta" in types_of(events)  # the partial output was streamed...
    assert [m.role for m in timeline] == ["user"]  # ...but not committed
    assert_well_formed(events)


async def test_abort_closes_the_provider_connection(
    provider: Provider, server: FakeServer, model: Model
) -> None:
    server.push(provider.slow())
    async with open_session(Agent(model)) as session:
        handle = await session.send("tell me a story")
        await first_delta(handle)
        handle.abort("user pressed stop")
        with pytest.raises(ExecutionAborted) as info:
            await handle.result
        # The server sees its client go away: the HTTP stream was really closed.
        with trio.fail_after(10):
            await server.client_closed.wait()
        events = await collect(handle)
        timeline = list(session.timeline)
    assert info.value.reason == "user pressed stop"
    assert handle.status == "aborted"
    assert [m.role for m in timeline] == ["user"]
    assert events[-1].type == "execution_end"
    assert events[-1].status == "aborted"
    assert_well_formed(events)


async def test_closing_the_session_closes_the_provider_connection(
    provider: Provider, server: FakeServer, model: Model
) -> None:
    server.push(provider.slow())
    async with open_session(Agent(model)) as session:
        handle = await session.send("tell me a story")
        await first_delta(handle)
        await session.aclose()
        with pytest.raises(ExecutionCancelled):
            await handle.result
    with trio.fail_after(10):
        await server.client_closed.wait()
    assert handle.status == "cancelled"
    assert_well_formed(await collect(handle))


async def test_next_execution_after_an_abort_works(
    provider: Provider, server: FakeServer, model: Model
) -> None:
    server.push(provider.slow(), provider.text("Hello again."))
    async with open_session(Agent(model)) as session:
        first = await session.send("tell me a story")
        await first_delta(first)
        first.abort()
        await first.wait()
        second = await session.send("hi")
        result = await second.result
        timeline = list(session.timeline)
    assert result.response == "Hello again."
    assert [m.role for m in timeline] == ["user", "user", "assistant"]
    # The aborted stream's connection was closed, not reused: a second one served the retry.
    assert server.connections == 2


# -- the example ------------------------------------------------------------------------------


def load_example() -> Any:
    path = Path(__file__).parent.parent / "examples" / "openai_compatible.py"
    spec = importlib.util.spec_from_file_location("openai_compatible_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_against_a_compatible_server(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    monkeypatch.setenv("TRIO_SESSION_MODEL", "llama-test")
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "0")
    openai_provider = PROVIDERS["openai"]
    server.push(
        openai_provider.tool_call("", "call_1", "get_weather", '{"city": "Paris"}'),
        openai_provider.text("It is mild in Paris."),
    )
    out = io.StringIO()
    async with example.make_model() as model:
        answer = await example.run("Weather in Paris?", model, out=out)
    assert answer == "It is mild in Paris."
    printed = out.getvalue()
    assert "-> get_weather({'city': 'Paris'})" in printed
    assert "<- {'city': 'Paris', 'temperature': " in printed
    assert "It is mild in Paris." in printed
    first, second = server.bodies
    assert first["model"] == "llama-test"
    assert {t["function"]["name"] for t in first["tools"]} == {"get_weather", "add"}
    assert _openai_tool_results(second)[0]["tool_call_id"] == "call_1"
