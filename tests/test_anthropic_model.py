"""AnthropicModel against a fake Messages server speaking the real SSE wire format."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import anthropic
import pytest
import trio
import trio.testing
from _servers import (
    WEATHER,
    Ending,
    FakeServer,
    Reply,
    anthropic_message_events,
    anthropic_sse,
    collect,
    collect_into,
    construct_without_sdks,
    json_reply,
    server as server,
    sse_reply,
)

from trio_session import (
    AnthropicModel,
    ImageBlock,
    JsonBlock,
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    StopChunk,
    TextBlock,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    ToolResultBlock,
    ToolUseBlock,
    UsageChunk,
    assistant,
    user,
)
from trio_session.models import _anthropic, _sdk
from trio_session.models._anthropic import to_anthropic_messages
from trio_session.models._base import INVALID_JSON_KEY


def make_client(server: FakeServer, **options: Any) -> anthropic.AsyncAnthropic:
    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=server.base_url, api_key="test-key", **options)


@pytest.fixture
async def model(server: FakeServer) -> AsyncIterator[AnthropicModel]:
    async with make_client(server) as client:
        # Exact request bodies are easier to read without cache breakpoints (tested apart).
        yield AnthropicModel("claude-test", client=client, max_tokens=1024, cache="off")


def reply(blocks: Sequence[Mapping[str, Any]], **options: Any) -> Reply:
    return sse_reply(anthropic_sse(anthropic_message_events(blocks, **options)))


# -- streaming ------------------------------------------------------------------------------


async def test_text_and_thinking_stream_and_exact_request(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(
        reply(
            [{"type": "thinking", "thinking": "Easy one."}, {"type": "text", "text": "Hello!"}],
            input_tokens=21,
            output_tokens=9,
        )
    )
    chunks = await collect(model, ModelRequest("Be brief.", (user("Hi"),)))
    assert chunks == [
        ReasoningChunk("Easy"),
        ReasoningChunk(" one."),
        ReasoningChunk("", signature="sig"),
        TextChunk("Hel"),
        TextChunk("lo!"),
        UsageChunk(21, 9),
        StopChunk("end_turn"),
    ]
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    # The SDK authenticates (x-api-key or a bearer token, depending on its version).
    auth = request.headers.get("x-api-key") or request.headers["authorization"]
    assert auth.removeprefix("Bearer ") == "test-key"
    assert "anthropic-version" in request.headers
    assert request.json() == {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "system": "Be brief.",
        "stream": True,
    }


async def test_tool_use_blocks_with_input_json_deltas(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(
        reply(
            [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "json": ['{"ci', 'ty": "Pa', 'ris"}']},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "json": []},
            ],
            stop_reason="tool_use",
        )
    )
    chunks = await collect(model, ModelRequest(None, (user("Weather?"),), (WEATHER,)))
    assert chunks == [
        TextChunk("Chec"),
        TextChunk("king."),
        ToolCallStartChunk("toolu_1", "get_weather"),
        ToolCallDeltaChunk("toolu_1", '{"ci'),
        ToolCallDeltaChunk("toolu_1", 'ty": "Pa'),
        ToolCallDeltaChunk("toolu_1", 'ris"}'),
        ToolCallChunk("toolu_1", "get_weather", {"city": "Paris"}),
        ToolCallStartChunk("toolu_2", "get_weather"),
        ToolCallChunk("toolu_2", "get_weather", {}),
        UsageChunk(10, 5),
        StopChunk("tool_use"),
    ]
    assert server.requests[0].json()["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "input_schema": dict(WEATHER.input_schema),
        }
    ]


async def test_invalid_tool_input_json(server: FakeServer, model: AnthropicModel) -> None:
    server.push(
        reply(
            [{"type": "tool_use", "id": "t", "name": "get_weather", "json": ['{"city": ']}],
            stop_reason="tool_use",
        )
    )
    chunks = await collect(model, ModelRequest(None, (user("?"),), (WEATHER,)))
    assert ToolCallChunk("t", "get_weather", {INVALID_JSON_KEY: '{"city": '}) in chunks


async def test_two_tick_tool_loop_request_bodies(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(
        reply(
            [{"type": "text", "text": "Let me see."},
             {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
              "json": ['{"city": "Paris"}']}],
            stop_reason="tool_use",
        ),
        reply([{"type": "text", "text": "Sunny in Paris."}]),
    )
    first = ModelRequest("You are a weather bot.", (user("Weather in Paris?"),), (WEATHER,))
    chunks = await collect(model, first)
    call = next(c for c in chunks if isinstance(c, ToolCallChunk))
    answer = assistant("Let me see.", ToolUseBlock(call.tool_use_id, call.name, call.input))
    result = Message(
        "tool", (ToolResultBlock("toolu_1", "get_weather", (TextBlock("21 C, sunny"),)),)
    )
    second = ModelRequest(first.system, (*first.messages, answer, result), first.tools, tick=2)
    chunks = await collect(model, second)
    assert chunks[-1] == StopChunk("end_turn")
    body = server.requests[1].json()
    assert body["system"] == "You are a weather bot."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me see."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "21 C, sunny"}]},
            ],
        },
    ]


@pytest.mark.parametrize(
    "reason", ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]
)
async def test_stop_reasons(server: FakeServer, model: AnthropicModel, reason: str) -> None:
    server.push(reply([{"type": "text", "text": "ok"}], stop_reason=reason))
    chunks = await collect(model, ModelRequest(None, (user("?"),)))
    assert chunks[-1] == StopChunk(reason)


async def test_usage_counts_cache_tokens(server: FakeServer, model: AnthropicModel) -> None:
    events = anthropic_message_events([{"type": "text", "text": "ok"}], output_tokens=4)
    events[0]["message"]["usage"].update(
        {"input_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50}
    )
    # The final message_delta repeats some totals and leaves the others out (null).
    events[-2]["usage"].update({"input_tokens": 3, "cache_read_input_tokens": None})
    server.push(sse_reply(anthropic_sse(events)))
    chunks = await collect(model, ModelRequest(None, (user("?"),)))
    assert UsageChunk(153, 4, cache_read_tokens=50, cache_write_tokens=100) in chunks


# -- request mapping ------------------------------------------------------------------------


def test_message_mapping() -> None:
    messages = (
        Message("system", "Extra rule."),
        user("Look:", ImageBlock("https://example.com/cat.png")),
        Message("event", "timer fired"),
        user(JsonBlock({"k": 1}), ImageBlock("data:image/png;base64,iVBORw0KGgo=")),
        assistant(ReasoningBlock("hidden"), "Calling.", ToolUseBlock("t1", "shot", {"n": 1})),
        Message(
            "tool",
            (
                ToolResultBlock("t1", "shot", (ImageBlock("data:image/gif;base64,R0lG"),)),
                ToolResultBlock("t2", "fail", "disk full", is_error=True),
                ToolResultBlock("t3", "quiet", ()),
            ),
        ),
        user("Thanks"),
        assistant(ReasoningBlock("only thoughts")),
        assistant("Welcome."),
    )
    system, converted = to_anthropic_messages("Be nice.", messages)
    assert system == "Be nice.\n\nExtra rule."
    assert converted == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "text", "text": "[event] timer fired"},
                {"type": "text", "text": '{"k": 1}'},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Calling."},
                {"type": "tool_use", "id": "t1", "name": "shot", "input": {"n": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/gif",
                                                 "data": "R0lG"}}]},
                {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
                 "content": [{"type": "text", "text": "disk full"}]},
                {"type": "tool_result", "tool_use_id": "t3",
                 "content": [{"type": "text", "text": "(no output)"}]},
                {"type": "text", "text": "Thanks"},
            ],
        },
        # The reasoning-only assistant message is dropped; the next one stands alone.
        {"role": "assistant", "content": [{"type": "text", "text": "Welcome."}]},
    ]


def test_tool_results_come_first_in_a_merged_user_turn() -> None:
    messages = (
        assistant(ToolUseBlock("t1", "x", {})),
        Message("event", "a message arrived"),
        Message("tool", (ToolResultBlock("t1", "x", "done"),)),
    )
    _, converted = to_anthropic_messages(None, messages)
    assert [b["type"] for b in converted[1]["content"]] == ["tool_result", "text"]


def test_data_uri_images() -> None:
    svg = ImageBlock("data:image/svg+xml,%3Csvg%2F%3E")
    [entry] = to_anthropic_messages(None, (user(svg),))[1]
    assert entry["content"][0]["source"] == {
        "type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"
    }
    typed_by_block = ImageBlock("data:;base64,AAAA", media_type="image/webp")
    [entry] = to_anthropic_messages(None, (user(typed_by_block),))[1]
    assert entry["content"][0]["source"]["media_type"] == "image/webp"
    with pytest.raises(ValueError, match="media type"):
        to_anthropic_messages(None, (user(ImageBlock("data:;base64,AAAA")),))


async def test_settings_passed_through(server: FakeServer) -> None:
    async with make_client(server) as client:
        model = AnthropicModel(
            "claude-test", client=client, temperature=0.5, stop_sequences=["END"]
        )
        server.push(reply([{"type": "text", "text": "ok"}]))
        request = ModelRequest(
            None, (user("?"),),
            settings={"temperature": 0.1, "max_tokens": 50, "thinking": {"type": "disabled"}},
        )
        await collect(model, request)
    body = server.requests[0].json()
    assert body["temperature"] == 0.1  # request settings win; unknown ones go in the body
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"]
    assert body["thinking"] == {"type": "disabled"}
    assert "system" not in body
    assert "tools" not in body


@pytest.mark.parametrize("key", ["messages", "stream", "system", "tools"])
async def test_reserved_settings_refused(server: FakeServer, key: str) -> None:
    async with make_client(server) as client:
        with pytest.raises(ValueError, match=key):
            AnthropicModel("claude-test", client=client, **{key: 1})  # type: ignore[arg-type]
        model = AnthropicModel("claude-test", client=client)
        with pytest.raises(ValueError, match=key):
            await collect(model, ModelRequest(None, (user("?"),), settings={key: 1}))
    assert server.requests == []


# -- errors ---------------------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(
    ("status", "kind", "code", "retryable"),
    [
        (429, "rate_limit_error", "rate_limit", True),
        (500, "api_error", "server_error", True),
        (529, "overloaded_error", "overloaded", True),
        (401, "authentication_error", "authentication", False),
        (403, "permission_error", "permission_denied", False),
        (404, "not_found_error", "not_found", False),
        (400, "invalid_request_error", "bad_request", False),
        (413, "request_too_large", "bad_request", False),
    ],
)
async def test_http_errors_mapped(
    server: FakeServer, model: AnthropicModel, status: int, kind: str, code: str,
    retryable: bool,
) -> None:
    headers = [("retry-after", "20")] if status == 429 else []
    server.push(json_reply(status, anthropic_error(kind, f"failure {status}"), headers))
    with pytest.raises(ModelError) as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert f"failure {status}" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("kind", "code", "retryable"),
    [
        ("overloaded_error", "overloaded", True),
        ("api_error", "server_error", True),
        ("rate_limit_error", "rate_limit", True),
        ("invalid_request_error", "bad_request", False),
        ("something_else", "model_error", False),
    ],
)
async def test_error_event_in_the_stream(
    server: FakeServer, model: AnthropicModel, kind: str, code: str, retryable: bool
) -> None:
    events = anthropic_message_events([{"type": "text", "text": "partial"}], finish=False)
    events.append(anthropic_error(kind, "it broke"))
    server.push(sse_reply(anthropic_sse(events), ending="hang"))
    got: list[ModelChunk] = []
    with pytest.raises(ModelError, match="it broke") as info:
        await collect_into(got, model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert got == [TextChunk("par"), TextChunk("tial")]
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_dropped_connection_mid_stream(server: FakeServer, model: AnthropicModel) -> None:
    events = anthropic_message_events([{"type": "text", "text": "Hallo"}], finish=False)
    server.push(sse_reply(anthropic_sse(events), ending="drop"))
    got: list[ModelChunk] = []
    with pytest.raises(ModelError) as info:
        await collect_into(got, model, ModelRequest(None, (user("?"),)))
    assert got == [TextChunk("Ha"), TextChunk("llo")]
    assert (info.value.code, info.value.retryable) == ("connection_error", True)


async def test_stream_ending_before_message_stop(
    server: FakeServer, model: AnthropicModel
) -> None:
    events = anthropic_message_events([{"type": "text", "text": "Hallo"}], finish=False)
    server.push(sse_reply(anthropic_sse(events)))
    with pytest.raises(ModelError, match="message_stop") as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("connection_error", True)


async def test_a_response_that_does_not_stream(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(json_reply(200, {"type": "message", "content": []}))
    with pytest.raises(ModelError, match="no server-sent events") as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("model_error", False)


@pytest.mark.parametrize("ending", ["stall", "hang"])
async def test_timeout(
    server: FakeServer, autojump_clock: trio.testing.MockClock, ending: Ending
) -> None:
    events = anthropic_message_events([{"type": "text", "text": "Hallo"}], finish=False)
    server.push(sse_reply(anthropic_sse(events), ending=ending))
    async with make_client(server, timeout=30.0) as client:
        with pytest.raises(ModelError) as info:
            await collect(AnthropicModel("m", client=client), ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("timeout", True)


async def test_sdk_retry_setting_respected(server: FakeServer) -> None:
    retry_soon = [("retry-after-ms", "1")]
    server.push(
        json_reply(529, anthropic_error("overloaded_error", "busy"), retry_soon),
        reply([{"type": "text", "text": "ok"}]),
    )
    async with make_client(server, max_retries=1) as client:
        chunks = await collect(
            AnthropicModel("m", client=client), ModelRequest(None, (user("?"),))
        )
    assert StopChunk("end_turn") in chunks
    assert len(server.requests) == 2
    # The SDK marks a retry in a header: the second request really is the SDK's retry.
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"

    server.push(
        json_reply(529, anthropic_error("overloaded_error", "busy"), retry_soon),
        reply([{"type": "text", "text": "ok"}]),
    )
    async with make_client(server, max_retries=1) as client:
        model = AnthropicModel("m", client=client, max_retries=0)
        with pytest.raises(ModelError) as info:
            await collect(model, ModelRequest(None, (user("?"),)))
    assert info.value.code == "overloaded"
    assert len(server.requests) == 3


# -- cancellation ---------------------------------------------------------------------------


def slow_reply() -> Reply:
    events = anthropic_message_events([{"type": "text", "text": "Once"}], finish=False)
    return sse_reply(anthropic_sse(events), ending="hang")


async def test_cancel_while_reading_closes_the_connection(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(slow_reply())
    got: list[ModelChunk] = []
    with trio.CancelScope() as scope:
        async with aclosing(model.stream(ModelRequest(None, (user("?"),)))) as stream:
            async for chunk in stream:
                got.append(chunk)
                if len(got) == 2:
                    scope.cancel()
    assert scope.cancelled_caught
    assert got == [TextChunk("On"), TextChunk("ce")]
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_cancel_before_the_response_closes_the_connection(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(sse_reply([], ending="stall"))
    async with trio.open_nursery() as nursery:
        async def consume() -> None:
            await collect(model, ModelRequest(None, (user("?"),)))

        nursery.start_soon(consume)
        await server.hanging.wait()
        nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_aclose_at_a_yield_closes_the_connection(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(slow_reply())
    stream = model.stream(ModelRequest(None, (user("?"),)))
    assert await anext(stream) == TextChunk("On")
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        finally:
            # As the engine does: close the stream while its own scope is cancelled.
            await stream.aclose()
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_connection_reused_after_a_complete_stream(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(reply([{"type": "text", "text": "a"}]), reply([{"type": "text", "text": "b"}]))
    await collect(model, ModelRequest(None, (user("?"),)))
    await collect(model, ModelRequest(None, (user("?"),)))
    assert server.connections == 1


# -- construction and the optional extra ----------------------------------------------------


def test_missing_sdk_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'trio-session\[anthropic\]'"):
        AnthropicModel("claude-test", api_key="k")


def test_package_imports_without_the_sdk() -> None:
    printed = construct_without_sdks(
        "trio_session.models._anthropic", "trio_session.AnthropicModel('claude-test', api_key='k')"
    )
    assert "pip install 'trio-session[anthropic]'" in printed


def test_constructor_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-test")
    with pytest.raises(TypeError, match="AsyncAnthropic"):
        AnthropicModel("claude-test", client=anthropic.Anthropic(api_key="k"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either client"):
        AnthropicModel("claude-test", client=anthropic.AsyncAnthropic(api_key="k"), api_key="k")
    with pytest.raises(ValueError, match="max_tokens"):
        AnthropicModel("claude-test", api_key="k", max_tokens=-1)
    model = AnthropicModel("claude-test", api_key="k")
    assert model.settings == {"max_tokens": 4096}
    assert model.name == "claude-test"


async def test_owned_client_closed_given_client_left_open(server: FakeServer) -> None:
    async with AnthropicModel("claude-test", base_url=server.base_url, api_key="k") as model:
        server.push(reply([{"type": "text", "text": "ok"}]))
        assert StopChunk("end_turn") in await collect(model, ModelRequest(None, (user("?"),)))
    assert model.client.is_closed()
    async with make_client(server) as client:
        await AnthropicModel("claude-test", client=client).aclose()
        assert not client.is_closed()


# -- extended thinking, caching, pause_turn, retries ----------------------------------------


async def test_thinking_signature_and_redacted_thinking_stream(
    server: FakeServer, model: AnthropicModel
) -> None:
    server.push(
        reply(
            [
                {"type": "redacted_thinking", "data": "opaque=="},
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
                {"type": "text", "text": "Hi"},
            ]
        )
    )
    chunks = await collect(model, ModelRequest(None, (user("?"),)))
    assert chunks[:4] == [
        ReasoningChunk("", signature="opaque==", redacted=True),
        ReasoningChunk("Hm"),
        ReasoningChunk("m."),
        ReasoningChunk("", signature="sig-1"),
    ]


def test_signed_reasoning_sent_back_unchanged_unsigned_left_out() -> None:
    answer = assistant(
        ReasoningBlock("", signature="opaque==", redacted=True),
        ReasoningBlock("Hmm.", signature="sig-1"),
        ReasoningBlock("another model's thoughts"),
        "Calling.",
        ToolUseBlock("t1", "shot", {"n": 1}),
    )
    _, [converted] = to_anthropic_messages(None, (answer,))
    assert converted["content"] == [
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "t1", "name": "shot", "input": {"n": 1}},
    ]


def test_truncated_tool_input_goes_back_as_an_empty_object() -> None:
    call = ToolUseBlock("t1", "make_file", {INVALID_JSON_KEY: '{"filename": "ta'})
    _, [converted] = to_anthropic_messages(None, (assistant(call),))
    assert converted["content"] == [
        {"type": "tool_use", "id": "t1", "name": "make_file", "input": {}}
    ]


async def test_cache_breakpoints_on_system_tools_and_last_message(server: FakeServer) -> None:
    server.push(reply([{"type": "text", "text": "ok"}]))
    answer = assistant(ReasoningBlock("Hmm.", signature="s"), ToolUseBlock("t1", "get_weather", {}))
    result = Message("tool", (ToolResultBlock("t1", "get_weather", "sunny"),))
    async with make_client(server) as client:
        model = AnthropicModel("claude-test", client=client)
        await collect(model, ModelRequest("Be brief.", (user("?"), answer, result), (WEATHER,)))
    [body] = server.bodies
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": ephemeral}]
    assert body["tools"][-1]["cache_control"] == ephemeral
    assert body["messages"][-1]["content"][-1]["cache_control"] == ephemeral
    # Three breakpoints in all (the API allows four).
    assert json.dumps(body).count('"cache_control"') == 3


async def test_cache_breakpoint_skips_thinking_blocks(server: FakeServer) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": [
            {"type": "text", "text": "a"}, {"type": "thinking", "thinking": "b", "signature": "s"}
        ]}
    ]
    _anthropic._mark_cache_breakpoints(messages, [])
    assert "cache_control" in messages[0]["content"][0]
    assert "cache_control" not in messages[0]["content"][1]


def test_cache_setting_checked() -> None:
    with pytest.raises(ValueError, match="cache must be 'auto' or 'off'"):
        AnthropicModel("m", api_key="k", cache="on")  # type: ignore[arg-type]


async def test_pause_turn_is_continued_transparently(
    server: FakeServer, model: AnthropicModel
) -> None:
    events = anthropic_message_events(
        [{"type": "text", "text": "Searching."}], stop_reason="pause_turn", output_tokens=3
    )
    # A server tool's call and result, which must go back with the paused content.
    search = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    found = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
    extra = [
        {"type": "content_block_start", "index": 1, "content_block": search},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"query": "trio"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": found},
        {"type": "content_block_stop", "index": 2},
    ]
    events[-2:-2] = extra
    server.push(sse_reply(anthropic_sse(events)), reply([{"type": "text", "text": "Found it."}]))
    chunks = await collect(model, ModelRequest(None, (user("Search trio"),)))
    assert [c for c in chunks if isinstance(c, TextChunk | StopChunk | UsageChunk)] == [
        TextChunk("Searc"),
        TextChunk("hing."),
        UsageChunk(10, 3),
        TextChunk("Foun"),
        TextChunk("d it."),
        UsageChunk(10, 5),
        StopChunk("end_turn"),
    ]
    # The server tool is the API's to run: no tool call for the session.
    assert not [c for c in chunks if isinstance(c, ToolCallStartChunk | ToolCallChunk)]
    first, second = server.bodies
    assert second["messages"] == [
        *first["messages"],
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {**search, "input": {"query": "trio"}},
                found,
            ],
        },
    ]


async def test_pause_turn_continuations_are_bounded(
    server: FakeServer, model: AnthropicModel
) -> None:
    paused = reply([{"type": "text", "text": "more"}], stop_reason="pause_turn")
    server.push(*[paused] * (_sdk.MAX_FOLLOW_UPS + 1))
    chunks = await collect(model, ModelRequest(None, (user("?"),)))
    assert chunks[-1] == StopChunk("pause_turn")
    assert len(server.requests) == _sdk.MAX_FOLLOW_UPS + 1
    # Each continuation extends the one assistant message of the paused turn.
    assert [m["role"] for m in server.bodies[-1]["messages"]] == ["user", "assistant"]
    assert len(server.bodies[-1]["messages"][1]["content"]) == _sdk.MAX_FOLLOW_UPS


async def test_own_client_leaves_retries_to_the_retry_policy(server: FakeServer) -> None:
    server.push(
        json_reply(529, anthropic_error("overloaded_error", "busy"), [("retry-after", "3")])
    )
    async with AnthropicModel("m", base_url=server.base_url, api_key="k") as model:
        assert model.client.max_retries == 0
        with pytest.raises(ModelError) as info:
            await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable, info.value.retry_after) == (
        "overloaded", True, 3.0
    )
    # The SDK did not retry behind the session's back.
    assert len(server.requests) == 1


async def test_a_given_client_keeps_its_retry_settings(server: FakeServer) -> None:
    async with make_client(server, max_retries=5) as client:
        assert AnthropicModel("m", client=client).client.max_retries == 5
