"""The provider adapters under the session engine, through the public API only (SPEC §6, §8).

Each test runs once per provider against its fake server, and checks what `ScriptedModel` is
checked for: event order, transcript integrity, errors and abort — plus what only a real
connection shows: the request bodies the engine's messages become, and that aborting an
execution closes the provider's HTTP stream (the server sees the connection close).
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio
from _helpers import assert_transcript_integrity, assert_well_formed, collect, text_of, types_of
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
    Event,
    ExecutionAborted,
    ExecutionCancelled,
    ExecutionHandle,
    Model,
    ModelError,
    OpenAIModel,
    ReasoningBlock,
    Reply,
    RetryPolicy,
    ScriptedModel,
    StreamEvent,
    Usage,
    open_session,
    tool,
)
from trio_session.models._base import INVALID_JSON_KEY


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
) -> tuple[pytest.ExceptionInfo[ModelError], ExecutionHandle[Any], list[Event], list[Any]]:
    """Send ``message`` and expect a `ModelError`: its info, the handle, events and timeline.

    Retries are off: these tests look at one failure (the retry tests are below).
    """
    async with open_session(Agent(model, retry=None)) as session:
        handle = await session.send(message)
        with pytest.raises(ModelError) as info:
            await handle.result
        events = await collect(handle)
        timeline = list(session.timeline)
    return info, handle, events, timeline


async def run_weather_loop(model: Model) -> tuple[Any, list[Event], list[Any]]:
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


# -- provider quirks under the engine ------------------------------------------------------------


WIRE = Path(__file__).parent / "fixtures" / "wire"


def recorded(name: str) -> list[ServerReply]:
    """The recorded responses of a wire fixture, to be sent byte for byte."""
    interactions = json.loads((WIRE / f"{name}.json").read_text())["interactions"]
    return [
        ServerReply(i["status"], [(k, v) for k, v in i["headers"]], (i["body"].encode(),))
        for i in interactions
    ]


async def test_extended_thinking_goes_back_signed_across_tool_ticks(server: FakeServer) -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "Need the weather tool.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "json": ['{"city": "Paris"}']},
    ]
    server.push(
        sse_reply(anthropic_sse(anthropic_message_events(blocks, stop_reason="tool_use"))),
        PROVIDERS["anthropic"].text("Sunny in Paris."),
    )
    async with PROVIDERS["anthropic"].client(server) as client:
        model = AnthropicModel(
            "claude-test", client=client, thinking={"type": "enabled", "budget_tokens": 1024}
        )
        result, events, timeline = await run_weather_loop(model)
    assert result.response == "Sunny in Paris."
    assert timeline[1].content[:2] == (
        ReasoningBlock("Need the weather tool.", signature="sig-1"),
        ReasoningBlock("", signature="opaque==", redacted=True),
    )
    # The API checks that the last assistant turn starts with its thinking, unchanged.
    second = server.bodies[1]
    assert second["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Need the weather tool.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque=="},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
        ],
    }
    assert "reasoning_delta" in types_of(events)
    assert_well_formed(events)


async def test_cache_tokens_reach_the_result_usage(server: FakeServer) -> None:
    events = anthropic_message_events([{"type": "text", "text": "ok"}], output_tokens=4)
    events[0]["message"]["usage"].update(
        {"input_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50}
    )
    server.push(sse_reply(anthropic_sse(events)))
    async with (
        PROVIDERS["anthropic"].client(server) as client,
        open_session(Agent(AnthropicModel("m", client=client))) as session,
    ):
        result = await (await session.send("hi")).result
    assert result.usage == Usage(153, 4, 157, ticks=1, cache_read_tokens=50,
                                 cache_write_tokens=100)


async def test_a_server_without_usage_is_reported_as_unreported(server: FakeServer) -> None:
    # llama-cpp-python's server sends no usage: zero tokens would look like a measurement.
    chunks = [
        openai_chunk({"role": "assistant", "content": "Hi"}),
        openai_chunk(finish_reason="stop"),
    ]
    server.push(sse_reply(openai_sse(chunks)), PROVIDERS["openai"].text("Again."))
    async with (
        PROVIDERS["openai"].client(server) as client,
        open_session(Agent(OpenAIModel("llama", client=client))) as session,
    ):
        first = await (await session.send("hi")).result
        second = await (await session.send("again")).result
        total = session.usage
    assert first.usage == Usage(ticks=1, unreported_ticks=1)
    assert second.usage == Usage(12, 7, 19, ticks=1)
    assert (total.input_tokens, total.ticks, total.unreported_ticks) == (12, 2, 1)


async def _make_file(filename: str, lines_of_text: list[str]) -> str:
    """Write a file.

    Args:
        filename: Its name.
        lines_of_text: Its lines.
    """
    raise AssertionError("a truncated call must not run")


async def test_a_tool_call_cut_off_by_max_tokens(server: FakeServer) -> None:
    # The recorded stream: text, then a make_file call whose input stops mid-JSON.
    server.push(*recorded("ant_incomplete_partial_json"), PROVIDERS["anthropic"].text("Sorry."))
    model = AnthropicModel("claude-test", base_url=server.base_url, api_key="k")
    agent = Agent(model, tools=[tool(_make_file, name="make_file")])
    async with model, open_session(agent) as session:
        result = await (await session.send("Write my tax guide")).result
        timeline = list(session.timeline)
    assert result.response == "Sorry."
    assert [m.role for m in timeline] == ["user", "assistant", "tool", "assistant"]
    [call] = timeline[1].tool_uses
    raw = call.input[INVALID_JSON_KEY]
    assert raw.startswith('{"filename": "taxes.txt", "lines_of_text": [')
    [answer] = timeline[2].tool_results
    assert answer.is_error
    assert raw[:60] in text_of(answer.content[0])
    assert_transcript_integrity(timeline)
    # On the wire the call goes back as an object the API accepts, never the internal key.
    second = server.bodies[1]
    assert INVALID_JSON_KEY not in json.dumps(second)
    assert second["messages"][1]["content"][-1]["input"] == {}


async def _get_capital(country: str) -> str:
    """Get a country's capital.

    Args:
        country: The country.
    """
    return "London"


async def test_recorded_openai_tool_round_trip_sends_what_openai_accepted(
    server: FakeServer,
) -> None:
    recording = json.loads((WIRE / "pai_openai_tool_roundtrip.json").read_text())
    accepted = recording["interactions"][1]["request"]
    server.push(*recorded("pai_openai_tool_roundtrip"))
    model = OpenAIModel("gpt-4o-mini", base_url=server.base_url + "/v1", api_key="k")
    agent = Agent(model, tools=[tool(_get_capital, name="get_capital")])
    async with model, open_session(agent) as session:
        handle = await session.send(accepted["messages"][0]["content"])
        result = await handle.result
    assert result.response == "The capital of the UK is London."
    assert result.usage == Usage(53 + 78, 15 + 9, 53 + 78 + 15 + 9, ticks=2)
    sent = server.bodies[1]["messages"]
    # What OpenAI accepted on the second request, but for the assistant content: "" (which
    # every compatible server accepts) where the recording has null.
    expected = [dict(m) for m in accepted["messages"]]
    expected[1]["content"] = ""
    # Arguments are re-serialised from the parsed call.
    expected[1]["tool_calls"][0]["function"]["arguments"] = '{"country": "UK"}'
    assert sent == expected


# -- retries through the adapters -----------------------------------------------------------------


def _anthropic_overloaded_mid_stream() -> ServerReply:
    # The stream starts, text arrives, then the API reports an overload inside the stream.
    events = anthropic_message_events([{"type": "text", "text": "Once upon"}], finish=False)
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return sse_reply(anthropic_sse(events))


def _openai_error_mid_stream() -> ServerReply:
    chunks = [
        openai_chunk({"role": "assistant", "content": "Once upon"}),
        {"error": {"message": "The server had an error", "type": "server_error"}},
    ]
    return sse_reply(openai_sse(chunks, done=False))


MID_STREAM_FAILURES = {
    "anthropic": _anthropic_overloaded_mid_stream,
    "openai": _openai_error_mid_stream,
}


async def test_a_mid_stream_failure_is_retried_and_nothing_partial_is_committed(
    provider: Provider, server: FakeServer
) -> None:
    server.push(MID_STREAM_FAILURES[provider.name](), provider.text("A good answer."))
    async with provider.client(server) as client:
        # No backoff: these tests use real sockets, so no mock clock (test_retry_output.py
        # checks the delays).
        agent = Agent(provider.model(client), retry=RetryPolicy(initial_delay=0.0, jitter=False))
        async with open_session(agent) as session:
            handle = await session.send("tell me a story")
            result = await handle.result
            events = await collect(handle)
            timeline = list(session.timeline)
    assert result.response == "A good answer."
    [retry] = [e for e in events if e.type == "tick_retry"]
    assert retry.attempt == 1
    assert retry.code == ("overloaded" if provider.name == "anthropic" else "server_error")
    assert [(m.role, m.text) for m in timeline] == [
        ("user", "tell me a story"), ("assistant", "A good answer.")
    ]
    assert "error" not in types_of(events)
    assert len(server.requests) == 2
    assert server.bodies[0] == server.bodies[1]
    assert_well_formed(events)


async def test_a_recorded_529_is_retried_after_its_retry_after(server: FakeServer) -> None:
    [overloaded] = recorded("err_anthropic_529")
    overloaded = attrs.evolve(overloaded, headers=[*overloaded.headers, ("retry-after", "0")])
    server.push(overloaded, PROVIDERS["anthropic"].text("Back."))
    model = AnthropicModel("claude-test", base_url=server.base_url, api_key="k")
    agent = Agent(model, retry=RetryPolicy(initial_delay=0.0, jitter=False))
    async with model, open_session(agent) as session:
        handle = await session.send("hi")
        result = await handle.result
        events = await collect(handle)
    assert result.response == "Back."
    [retry] = [e for e in events if e.type == "tick_retry"]
    assert (retry.code, retry.delay) == ("overloaded", 0.0)
    # One request per attempt: the SDK did not retry underneath.
    assert len(server.requests) == 2


async def test_a_recorded_quota_429_is_not_retried(server: FakeServer) -> None:
    server.push(*recorded("err_openai_429_quota"))
    model = OpenAIModel("gpt-test", base_url=server.base_url + "/v1", api_key="k")
    async with model, open_session(Agent(model)) as session:
        handle = await session.send("hi")
        with pytest.raises(ModelError) as info:
            await handle.result
        events = await collect(handle)
    assert (info.value.code, info.value.retryable) == ("insufficient_quota", False)
    assert "tick_retry" not in types_of(events)
    assert len(server.requests) == 1


# -- typed output through the adapters -------------------------------------------------------------


@attrs.frozen
class Capital:
    country: str
    city: str


async def test_typed_output_asked_natively(provider: Provider, server: FakeServer) -> None:
    server.push(provider.text('{"country": "UK", "city": "London"}'))
    async with provider.client(server) as client:
        agent = Agent(provider.model(client), system="Be brief.", output_type=Capital)
        async with open_session(agent) as session:
            result = await (await session.send("Capital of the UK?")).result
    assert result.output == Capital("UK", "London")
    [body] = server.bodies
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string"}, "city": {"type": "string"}},
        "required": ["country", "city"],
        "additionalProperties": False,
    }
    if provider.name == "openai":
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "Capital", "schema": schema, "strict": False},
        }
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
        assert body["system"][0]["text"] == "Be brief."


async def test_typed_output_by_instruction_when_native_is_off(
    provider: Provider, server: FakeServer
) -> None:
    server.push(provider.text('{"country": "UK", "city": "London"}'))
    async with provider.client(server) as client:
        model = provider.model(client)
        model.native_output = False  # type: ignore[attr-defined]
        agent = Agent(model, system="Be brief.", output_type=Capital)
        async with open_session(agent) as session:
            result = await (await session.send("Capital of the UK?")).result
    assert result.output == Capital("UK", "London")
    [body] = server.bodies
    assert "response_format" not in body
    assert "output_config" not in body
    if provider.name == "openai":
        system = body["messages"][0]["content"]
    else:
        system = body["system"][0]["text"]
    assert system.startswith("Be brief.\n\nAnswer with only a JSON value")
    assert '"required": ["country", "city"]' in system
