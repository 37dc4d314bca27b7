"""Recorded real provider traffic, replayed byte for byte through the adapters.

Every recording in ``fixtures/wire/`` (where each comes from: ``fixtures/wire/SOURCES.md``)
is served by a loopback HTTP server on 127.0.0.1, and read through the public API: an
`OpenAIModel` or `AnthropicModel` whose ``base_url`` points at that server (no HTTP client is
injected: anthropic 2.x refuses an ``httpx`` one). Each reply's text, reasoning, signatures,
tool calls, usage and stop reason, or its error, is checked against what the recording says.
The sans-I/O halves (`SSEDecoder` and the adapters' stream states) are then fed the same
recordings in pieces of every size, and must read them the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from _servers import FakeServer, Reply, server as server

from trio_session import (
    AnthropicModel,
    ModelChunk,
    ModelError,
    ModelRequest,
    OpenAIModel,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
    user,
)
from trio_session.models import _anthropic, _openai
from trio_session.models._base import INVALID_JSON_KEY
from trio_session.models._sdk import SSEDecoder, StreamState

WIRE = Path(__file__).parent / "fixtures" / "wire"

# A long text is checked by its start, its end and its length.
Text = str | tuple[str, str, int]


@attrs.frozen
class Expect:
    """What one recorded response must read as."""

    text: Text = ""
    reasoning: Text = ""
    # (redacted, length of the signature) of each signed reasoning block, in order.
    signatures: Sequence[tuple[bool, int]] = ()
    calls: Sequence[tuple[str, Mapping[str, Any]]] = ()
    # (input, output, cache read, cache write); None when the server reported no usage.
    usage: tuple[int, int, int, int] | None = None
    stop: str | None = None
    # (code, retryable, a piece of the message) of the error the response is.
    error: tuple[str, bool, str] | None = None


def anthropic(name: str) -> bool:
    return name.startswith(("ant_", "err_anthropic", "pai_anthropic"))


TAX_GUIDE = (
    '{"filename": "taxes.txt", "lines_of_text": [\n"# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS '
    'WITH MULTIPLE W-2s",\n"",\n"## INTRODUCTION",\n"",\n"Filing taxes'
)

EXPECTED: dict[str, Sequence[Expect]] = {
    # -- Anthropic: the SDK's own recordings ---------------------------------------------
    "ant_basic": [Expect("Hello there!", usage=(11, 6, 0, 0), stop="end_turn")],
    "ant_tool_use": [
        Expect(
            "I'll check the current weather in Paris for you.",
            calls=[("get_weather", {"location": "Paris"})],
            usage=(377, 65, 0, 0),
            stop="tool_use",
        )
    ],
    # The tool input was cut off by max_tokens: kept as raw text for the engine to report.
    "ant_incomplete_partial_json": [
        Expect(
            ("I'll create a comprehensive tax guide", "Let me do that for you now.", 135),
            calls=[("make_file", {INVALID_JSON_KEY: TAX_GUIDE})],
            usage=(450, 124, 0, 0),
            stop="max_tokens",
        )
    ],
    "ant_refusal": [Expect(usage=(20, 0, 0, 0), stop="refusal")],
    # -- Anthropic: pydantic-ai's cassettes ------------------------------------------------
    "pai_anthropic_thinking": [
        Expect(
            ("Here are the basic steps for safely crossing", "when crossing streets.", 1021),
            reasoning=("This is a straightforward question", "help prevent accidents.", 202),
            signatures=[(False, 504)],
            usage=(43, 282, 0, 0),
            stop="end_turn",
        )
    ],
    "pai_anthropic_redacted_thinking": [
        Expect(
            ("I notice that you've sent what appears", "legitimate task or question?", 359),
            signatures=[(True, 744), (True, 296)],
            usage=(92, 189, 0, 0),
            stop="end_turn",
        )
    ],
    # A server tool (code execution) runs inside the API: not a call for the session to run.
    # input_tokens is the final message_delta's total (4714), not message_start's (2293).
    "pai_anthropic_server_tool": [
        Expect(
            ("I'll calculate that expression for you", "**-428,330,955.97745**", 501),
            reasoning="Let me calculate this mathematical expression.",
            signatures=[(False, 320)],
            usage=(4714, 304, 0, 0),
            stop="end_turn",
        )
    ],
    "pai_anthropic_400": [Expect(error=("bad_request", False, "effort level 'xhigh'"))],
    # -- Anthropic: errors pasted in issues ------------------------------------------------
    "err_anthropic_400_thinking": [
        Expect(error=("bad_request", False, "must start with a thinking block"))
    ],
    "err_anthropic_401": [Expect(error=("authentication", False, "invalid x-api-key"))],
    "err_anthropic_429": [Expect(error=("rate_limit", True, "exceed your account's rate"))],
    "err_anthropic_500": [Expect(error=("server_error", True, "Internal server error"))],
    "err_anthropic_529": [Expect(error=("overloaded", True, "Overloaded"))],
    # -- OpenAI: the SDK's own recordings ----------------------------------------------------
    "oai_text": [
        Expect(
            ("I'm unable to provide real-time weather", "website or a weather app.", 159),
            usage=(14, 30, 0, 0),
            stop="end_turn",
        )
    ],
    "oai_single_tool": [
        Expect(
            calls=[("GetWeatherArgs", {"city": "Edinburgh", "country": "UK", "units": "c"})],
            usage=(76, 24, 0, 0),
            stop="tool_use",
        )
    ],
    "oai_parallel_tools": [
        Expect(
            calls=[
                ("GetWeatherArgs", {"city": "Edinburgh", "country": "GB", "units": "c"}),
                ("get_stock_price", {"ticker": "AAPL", "exchange": "NASDAQ"}),
            ],
            usage=(149, 60, 0, 0),
            stop="tool_use",
        )
    ],
    "oai_length": [Expect('{"', usage=(79, 1, 0, 0), stop="max_tokens")],
    "oai_refusal": [
        Expect(
            "I'm sorry, I can't assist with that request.", usage=(79, 11, 0, 0), stop="refusal"
        )
    ],
    # n=3: the session keeps choice 0.
    "oai_n3": [
        Expect(
            '{"city":"San Francisco","temperature":65,"units":"f"}',
            usage=(79, 42, 0, 0),
            stop="end_turn",
        )
    ],
    # -- OpenAI and compatible servers: pydantic-ai's cassettes -------------------------------
    "pai_openai_tool_roundtrip": [
        Expect(calls=[("get_capital", {"country": "UK"})], usage=(53, 15, 0, 0), stop="tool_use"),
        Expect("The capital of the UK is London.", usage=(78, 9, 0, 0), stop="end_turn"),
    ],
    "pai_openai_400": [Expect(error=("bad_request", False, "does not support 'system'"))],
    "pai_deepseek_reasoning": [
        Expect(
            "Hello there! \N{SMILING FACE WITH SMILING EYES} How can I help you today?",
            reasoning=('Hmm, the user just said "Hello"', "and that's okay too.", 882),
            usage=(6, 212, 0, 0),
            stop="end_turn",
        )
    ],
    "pai_zai_thinking": [
        Expect(
            "4",
            reasoning=("\n1.  **Analyze the User's Request:**", 'final response:** "4".', 2173),
            usage=(13, 564, 0, 0),
            stop="end_turn",
        )
    ],
    # OpenRouter repeats `reasoning` in `reasoning_details`: read once.
    "pai_openrouter_reasoning": [
        Expect(
            "2 + 2 = 4",
            reasoning="This is a simple arithmetic question. 2+2 equals 4.",
            usage=(43, 36, 0, 0),
            stop="end_turn",
        )
    ],
    # SSE comments, reasoning, then an error object inside a chunk (code 400).
    "pai_openrouter_stream_error": [
        Expect(
            reasoning="We need to respond to a greeting. The user",
            error=("bad_request", False, "Token limit reached"),
        )
    ],
    # The first reply fails inside the stream; the next two are the model's retry.
    "pai_groq_tool_use_failed": [
        Expect(
            reasoning=("We need to call the tool with invalid", "Let's do that.", 412),
            error=("bad_request", False, "tool call validation failed"),
        ),
        Expect(
            reasoning='We need to call the function with correct parameter "name". '
            'Provide a name, e.g., "example".',
            calls=[("get_something_by_name", {"name": "example"})],
            usage=(304, 49, 0, 0),
            stop="tool_use",
        ),
        Expect(
            "The tool returned the expected result for the valid call.",
            reasoning=("The user wants to test error handling", "Now respond concisely.", 176),
            usage=(339, 58, 0, 0),
            stop="end_turn",
        ),
    ],
    # `refusal: ""` and `tool_calls: null` in every delta.
    "pai_snowflake_stream": [Expect("4", usage=(22, 5, 0, 0), stop="end_turn")],
    # Reasoning only in `reasoning_details`.
    "pai_snowflake_thinking_tools": [
        Expect(
            ("15 \N{MULTIPLICATION SIGN} 27 = **405**", "300 + 105 = **405**", 93),
            reasoning="15 * 27 = 405",
            usage=(45, 73, 0, 0),
            stop="end_turn",
        )
    ],
    # -- compatible servers: captures pasted in notes ------------------------------------------
    # Two whole tool calls in single chunks, and no usage at all.
    "ollama_parallel_tools": [
        Expect(
            calls=[("run_command", {"command": "ls"}), ("run_command", {"command": "ls -l"})],
            stop="tool_use",
        )
    ],
    # `content: null`, reasoning_content, usage (and llama.cpp's `timings`) in the last chunk.
    "llamacpp_reasoning": [Expect(reasoning="We", usage=(1085, 247, 0, 0), stop="end_turn")],
    "err_openai_401": [Expect(error=("authentication", False, "Incorrect API key"))],
    "err_openai_429_quota": [Expect(error=("insufficient_quota", False, "exceeded your current"))],
    "err_openai_429_rate": [Expect(error=("rate_limit", True, "Rate limit reached for gpt-4"))],
}


def load(name: str) -> list[dict[str, Any]]:
    interactions: list[dict[str, Any]] = json.loads((WIRE / f"{name}.json").read_text())[
        "interactions"
    ]
    return interactions


def recorded_reply(interaction: Mapping[str, Any]) -> Reply:
    # The body goes out exactly as recorded (the server frames it with chunked encoding).
    return Reply(
        interaction["status"],
        [(k, v) for k, v in interaction["headers"]],
        (interaction["body"].encode(),),
    )


def check(text: str, expected: Text) -> None:
    if isinstance(expected, str):
        assert text == expected
    else:
        start, end, length = expected
        assert (text[: len(start)], text[-len(end) :], len(text)) == (start, end, length)


def check_reply(chunks: Sequence[ModelChunk], error: ModelError | None, expect: Expect) -> None:
    check("".join(c.text for c in chunks if type(c) is TextChunk), expect.text)
    reasoning = [c for c in chunks if type(c) is ReasoningChunk]
    check("".join(c.text for c in reasoning), expect.reasoning)
    assert [(c.redacted, len(c.signature)) for c in reasoning if c.signature] == list(
        expect.signatures
    )
    assert [(c.name, c.input) for c in chunks if type(c) is ToolCallChunk] == list(expect.calls)
    usage = [c for c in chunks if type(c) is UsageChunk]
    if expect.usage is None:
        assert usage == []
    else:
        assert usage == [UsageChunk(*expect.usage)]
    assert [c.reason for c in chunks if type(c) is StopChunk] == (
        [] if expect.stop is None else [expect.stop]
    )
    if expect.error is None:
        assert error is None
    else:
        assert error is not None
        code, retryable, message = expect.error
        assert (error.code, error.retryable) == (code, retryable)
        assert message.lower() in error.message.lower()


def test_every_recording_is_checked() -> None:
    names = {path.stem for path in WIRE.glob("*.json")}
    assert names == set(EXPECTED)
    for name, expects in EXPECTED.items():
        assert len(load(name)) == len(expects), name


def test_recordings_keep_their_attribution() -> None:
    sources = (WIRE / "SOURCES.md").read_text()
    for name in EXPECTED:
        assert f"| {name} |" in sources, name


# -- through the public API, over HTTP ---------------------------------------------------------


@pytest.fixture
async def models(server: FakeServer) -> AsyncIterator[dict[str, OpenAIModel | AnthropicModel]]:
    # Built from base_url: these clients are the adapters' own (no SDK retries).
    async with (
        OpenAIModel("gpt-test", base_url=server.base_url + "/v1", api_key="k") as openai_model,
        AnthropicModel("claude-test", base_url=server.base_url, api_key="k") as anthropic_model,
    ):
        yield {"openai": openai_model, "anthropic": anthropic_model}


async def read(
    model: OpenAIModel | AnthropicModel, request: ModelRequest
) -> tuple[list[ModelChunk], ModelError | None]:
    chunks: list[ModelChunk] = []
    try:
        async for chunk in model.stream(request):
            chunks.append(chunk)
    except ModelError as exc:
        return chunks, exc
    return chunks, None


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replayed_through_the_adapter(
    name: str, server: FakeServer, models: dict[str, OpenAIModel | AnthropicModel]
) -> None:
    model = models["anthropic" if anthropic(name) else "openai"]
    interactions = load(name)
    server.push(*map(recorded_reply, interactions))
    for expect in EXPECTED[name]:
        chunks, error = await read(model, ModelRequest("Be brief.", (user("Hi"),)))
        check_reply(chunks, error, expect)
    # One request per recorded response: the adapters' own clients never retry by themselves.
    assert len(server.requests) == len(interactions)
    expected_path = "/v1/messages" if anthropic(name) else "/v1/chat/completions"
    assert {r.path for r in server.requests} == {expected_path}


# -- the sans-I/O stream states, fed the same bytes in pieces ---------------------------------


def new_state(name: str) -> StreamState:
    return _anthropic._StreamState() if anthropic(name) else _openai._StreamState()


def parse(name: str, body: bytes, size: int) -> tuple[list[ModelChunk], ModelError | None]:
    state = new_state(name)
    decoder = SSEDecoder()
    chunks: list[ModelChunk] = []
    try:
        for start in range(0, len(body), size):
            for data in decoder.feed(body[start : start + size]):
                chunks += state.feed(data)
            if state.done:
                break
        else:
            for data in decoder.flush():
                chunks += state.feed(data)
        chunks += state.finish()
    except ModelError as exc:
        return chunks, exc
    return chunks, None


STREAMED = sorted(name for name in EXPECTED if all(i["status"] == 200 for i in load(name)))


@pytest.mark.parametrize("name", STREAMED)
@pytest.mark.parametrize("size", [1, 3, 64, 1 << 20])
def test_stream_state_reads_the_recording_in_pieces(name: str, size: int) -> None:
    for interaction, expect in zip(load(name), EXPECTED[name], strict=True):
        chunks, error = parse(name, interaction["body"].encode(), size)
        check_reply(chunks, error, expect)
