"""OpenAIModel against a fake Chat Completions server speaking the real SSE wire format."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import openai
import pytest
import trio
import trio.testing
from _profiles import examples
from _servers import (
    WEATHER,
    Ending,
    FakeServer,
    collect,
    collect_into,
    construct_without_sdks,
    json_reply,
    openai_chunk,
    openai_sse,
    server as server,
    sse_reply,
)
from hypothesis import given, settings, strategies as st

from trio_session import (
    ImageBlock,
    JsonBlock,
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    OpenAIModel,
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
from trio_session.models._base import INVALID_JSON_KEY
from trio_session.models._openai import to_openai_messages
from trio_session.models._sdk import SSEDecoder

USAGE = {"prompt_tokens": 12, "completion_tokens": 7}


def make_client(server: FakeServer, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="test-key", **options)


@pytest.fixture
async def model(server: FakeServer) -> AsyncIterator[OpenAIModel]:
    async with make_client(server) as client:
        yield OpenAIModel("gpt-test", client=client)


def text_reply(*pieces: str, finish: str = "stop") -> Any:
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    chunks += [openai_chunk({"content": p}) for p in pieces]
    chunks += [openai_chunk(finish_reason=finish), openai_chunk(usage=USAGE)]
    return sse_reply(openai_sse(chunks))


def tool_fragment(index: int, *, id: str | None = None, name: str | None = None,
                  arguments: str = "") -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        fragment["id"] = id
        fragment["type"] = "function"
    if name is not None:
        fragment["function"]["name"] = name
    return fragment


def tool_reply(calls: Sequence[tuple[str, str, Sequence[str]]], text: str = "") -> Any:
    chunks = [openai_chunk({"role": "assistant", "content": text or None})]
    for index, (call_id, name, parts) in enumerate(calls):
        chunks.append(openai_chunk({"tool_calls": [tool_fragment(index, id=call_id, name=name)]}))
        chunks += [
            openai_chunk({"tool_calls": [tool_fragment(index, arguments=p)]}) for p in parts
        ]
    chunks += [openai_chunk(finish_reason="tool_calls"), openai_chunk(usage=USAGE)]
    return sse_reply(openai_sse(chunks))


# -- streaming ------------------------------------------------------------------------------


async def test_text_stream_and_exact_request(server: FakeServer, model: OpenAIModel) -> None:
    server.push(text_reply("Hel", "lo!"))
    chunks = await collect(model, ModelRequest("Be brief.", (user("Hi"),)))
    assert chunks == [
        TextChunk("Hel"),
        TextChunk("lo!"),
        UsageChunk(12, 7),
        StopChunk("end_turn"),
    ]
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.json() == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_tool_call_arguments_assembled_per_index(
    server: FakeServer, model: OpenAIModel
) -> None:
    server.push(
        tool_reply(
            [
                ("call_1", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
                ("call_2", "get_weather", ['{"city": ', '"Oslo"}']),
            ],
            text="Checking.",
        )
    )
    chunks = await collect(model, ModelRequest(None, (user("Weather?"),), (WEATHER,)))
    assert chunks == [
        TextChunk("Checking."),
        ToolCallStartChunk("call_1", "get_weather"),
        ToolCallDeltaChunk("call_1", '{"ci'),
        ToolCallDeltaChunk("call_1", 'ty": "Par'),
        ToolCallDeltaChunk("call_1", 'is"}'),
        ToolCallStartChunk("call_2", "get_weather"),
        ToolCallDeltaChunk("call_2", '{"city": '),
        ToolCallDeltaChunk("call_2", '"Oslo"}'),
        ToolCallChunk("call_1", "get_weather", {"city": "Paris"}),
        ToolCallChunk("call_2", "get_weather", {"city": "Oslo"}),
        UsageChunk(12, 7),
        StopChunk("tool_use"),
    ]
    assert server.requests[0].json()["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather for a city.",
                "parameters": dict(WEATHER.input_schema),
            },
        }
    ]


async def test_two_tick_tool_loop_request_bodies(server: FakeServer, model: OpenAIModel) -> None:
    server.push(tool_reply([("call_1", "get_weather", ['{"city": "Paris"}'])], text="Let me see."))
    server.push(text_reply("Sunny in Paris."))
    first = ModelRequest("You are a weather bot.", (user("Weather in Paris?"),), (WEATHER,))
    chunks = await collect(model, first)
    call = next(c for c in chunks if isinstance(c, ToolCallChunk))
    # The conversation as the engine would commit it.
    answer = assistant("Let me see.", ToolUseBlock(call.tool_use_id, call.name, call.input))
    result = Message(
        "tool", (ToolResultBlock("call_1", "get_weather", (TextBlock("21 C, sunny"),)),)
    )
    second = ModelRequest(first.system, (*first.messages, answer, result), first.tools, tick=2)
    chunks = await collect(model, second)
    assert [c for c in chunks if isinstance(c, TextChunk)] == [TextChunk("Sunny in Paris.")]
    assert chunks[-1] == StopChunk("end_turn")
    body = server.requests[1].json()
    assert body["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me see.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
    ]
    assert len(body["tools"]) == 1


async def test_reasoning_deltas_of_compatible_servers(
    server: FakeServer, model: OpenAIModel
) -> None:
    chunks = [
        openai_chunk({"role": "assistant", "reasoning_content": "Think"}),
        openai_chunk({"reasoning": "ing."}),
        openai_chunk({"content": "Done."}),
        openai_chunk(finish_reason="stop"),
    ]
    server.push(sse_reply(openai_sse(chunks)))
    got = await collect(model, ModelRequest(None, (user("?"),)))
    # No usage chunk from the server: none is invented.
    assert got == [
        ReasoningChunk("Think"),
        ReasoningChunk("ing."),
        TextChunk("Done."),
        StopChunk("end_turn"),
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], {}),
        (['{"city": ', '"Paris"'], {INVALID_JSON_KEY: '{"city": "Paris"'}),
        (["[1, 2]"], {INVALID_JSON_KEY: "[1, 2]"}),
    ],
)
async def test_empty_and_invalid_arguments(
    server: FakeServer, model: OpenAIModel, arguments: list[str], expected: dict[str, Any]
) -> None:
    server.push(tool_reply([("call_9", "get_weather", arguments)]))
    chunks = await collect(model, ModelRequest(None, (user("?"),), (WEATHER,)))
    assert ToolCallChunk("call_9", "get_weather", expected) in chunks


async def test_invalid_arguments_go_back_as_an_empty_object() -> None:
    # vLLM parses the arguments of every assistant tool call: text that is not JSON would be
    # refused. The raw text is quoted in the call's error result instead.
    call = ToolUseBlock("c1", "get_weather", {INVALID_JSON_KEY: '{"city": '})
    [message] = to_openai_messages(None, (assistant(call),))
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"
    assert message["content"] == ""


@pytest.mark.parametrize(
    ("finish", "with_call", "refusal", "expected"),
    [
        ("stop", False, False, "end_turn"),
        ("length", False, False, "max_tokens"),
        ("content_filter", False, False, "content_filter"),
        ("tool_calls", True, False, "tool_use"),
        ("stop", True, False, "tool_use"),
        ("stop", False, True, "refusal"),
        ("something_new", False, False, "something_new"),
    ],
)
async def test_stop_reasons_mapped(
    server: FakeServer, model: OpenAIModel, finish: str, with_call: bool, refusal: bool,
    expected: str,
) -> None:
    chunks = [openai_chunk({"role": "assistant", "content": "x"})]
    if refusal:
        chunks.append(openai_chunk({"refusal": "I can't help with that."}))
    if with_call:
        chunks.append(
            openai_chunk({"tool_calls": [tool_fragment(0, id="c", name="get_weather",
                                                       arguments="{}")]})
        )
    chunks.append(openai_chunk(finish_reason=finish))
    server.push(sse_reply(openai_sse(chunks)))
    got = await collect(model, ModelRequest(None, (user("?"),)))
    assert got[-1] == StopChunk(expected)
    if refusal:
        assert TextChunk("I can't help with that.") in got


async def test_tool_calls_without_ids_or_indexes(server: FakeServer, model: OpenAIModel) -> None:
    # Some compatible servers send whole calls without an index, or with no id at all.
    chunks = [
        openai_chunk({"role": "assistant",
                      "tool_calls": [{"function": {"name": "a", "arguments": '{"x": 1}'}}]}),
        openai_chunk({"tool_calls": [{"id": "b1", "function": {"name": "b", "arguments": "{}"}}]}),
        openai_chunk(finish_reason="tool_calls"),
    ]
    server.push(sse_reply(openai_sse(chunks)))
    got = await collect(model, ModelRequest(None, (user("?"),)))
    calls = [c for c in got if isinstance(c, ToolCallChunk)]
    assert [(c.name, c.input) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert calls[0].tool_use_id.startswith("call_")
    assert calls[1].tool_use_id == "b1"
    starts = [c for c in got if isinstance(c, ToolCallStartChunk)]
    assert [s.tool_use_id for s in starts] == [c.tool_use_id for c in calls]


# -- request mapping ------------------------------------------------------------------------


def test_message_mapping() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    messages = (
        Message("system", "Extra rule."),
        user("Describe:", ImageBlock("https://example.com/cat.png"), JsonBlock({"k": 1})),
        Message("event", "timer fired"),
        assistant(ReasoningBlock("hidden"), "Calling.", ToolUseBlock("c1", "shot", {})),
        Message(
            "tool",
            (
                ToolResultBlock("c1", "shot", (ImageBlock(png, "image/png"),)),
            ),
        ),
        Message("tool", (ToolResultBlock("c2", "fail", "disk full", is_error=True),)),
        Message("tool", (ToolResultBlock("c3", "quiet", ()),)),
        user("Thanks"),
    )
    assert to_openai_messages("Be nice.", messages) == [
        {"role": "system", "content": "Be nice.\n\nExtra rule."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": '{"k": 1}'},
            ],
        },
        {"role": "user", "content": "[event] timer fired"},
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "(no output)"},
        {"role": "tool", "tool_call_id": "c2", "content": "Error: disk full"},
        {"role": "tool", "tool_call_id": "c3", "content": "(no output)"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Images returned by shot:"},
                {"type": "image_url", "image_url": {"url": png}},
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]


def test_assistant_with_only_tool_calls_has_empty_content() -> None:
    # Not null: llama-cpp-python answers null with HTTP 500, and a missing key crashes its
    # template; "" is what OpenAI, vLLM, Ollama and llama.cpp all accept.
    [message] = to_openai_messages(None, (assistant(ToolUseBlock("c", "t", {"a": 1})),))
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "t", "arguments": '{"a": 1}'}}
        ],
    }


async def test_settings_passed_through(server: FakeServer) -> None:
    async with make_client(server) as client:
        model = OpenAIModel(
            "gpt-test", client=client, temperature=0.5, max_completion_tokens=100, top_k=40
        )
        server.push(text_reply("ok"))
        request = ModelRequest(
            None, (user("?"),), settings={"temperature": 0.1, "extra_body": {"seed_x": 1}}
        )
        await collect(model, request)
    body = server.requests[0].json()
    # Request settings win; unknown settings travel in the body (extra_body).
    assert body["temperature"] == 0.1
    assert body["max_completion_tokens"] == 100
    assert body["top_k"] == 40
    assert body["seed_x"] == 1


@pytest.mark.parametrize("key", ["messages", "stream", "tools"])
async def test_reserved_settings_refused(server: FakeServer, key: str) -> None:
    async with make_client(server) as client:
        with pytest.raises(ValueError, match=key):
            OpenAIModel("gpt-test", client=client, **{key: 1})  # type: ignore[arg-type]
        model = OpenAIModel("gpt-test", client=client)
        with pytest.raises(ValueError, match=key):
            await collect(model, ModelRequest(None, (user("?"),), settings={key: 1}))
    assert server.requests == []


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "rate_limit", True),
        (500, "server_error", True),
        (502, "server_error", True),
        (503, "overloaded", True),
        (529, "overloaded", True),
        (401, "authentication", False),
        (403, "permission_denied", False),
        (404, "not_found", False),
        (400, "bad_request", False),
        (422, "bad_request", False),
    ],
)
async def test_http_errors_mapped(
    server: FakeServer, model: OpenAIModel, status: int, code: str, retryable: bool
) -> None:
    server.push(
        json_reply(
            status,
            {"error": {"message": f"failure {status}", "type": "x", "code": None}},
            headers=[("retry-after", "20")] if status == 429 else [],
        )
    )
    with pytest.raises(ModelError) as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert f"failure {status}" in str(info.value)
    assert len(server.requests) == 1  # max_retries=0: no retry


async def test_insufficient_quota_is_not_retryable(
    server: FakeServer, model: OpenAIModel
) -> None:
    server.push(
        json_reply(429, {"error": {"message": "quota", "type": "x", "code": "insufficient_quota"}})
    )
    with pytest.raises(ModelError) as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("insufficient_quota", False)


async def test_dropped_connection_mid_stream(server: FakeServer, model: OpenAIModel) -> None:
    parts = openai_sse([openai_chunk({"role": "assistant", "content": "Hal"})], done=False)
    server.push(sse_reply(parts, ending="drop"))
    got: list[ModelChunk] = []
    with pytest.raises(ModelError) as info:
        await collect_into(got, model, ModelRequest(None, (user("?"),)))
    assert got == [TextChunk("Hal")]
    assert (info.value.code, info.value.retryable) == ("connection_error", True)
    assert not isinstance(info.value.__cause__, ModelError)


async def test_stream_ending_early_is_an_error(server: FakeServer, model: OpenAIModel) -> None:
    # A clean end of the body without finish_reason or [DONE]: the reply was cut short.
    parts = openai_sse([openai_chunk({"role": "assistant", "content": "Hal"})], done=False)
    server.push(sse_reply(parts))
    with pytest.raises(ModelError) as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("connection_error", True)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        ({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
         "rate_limit", True),
        ({"message": "oops", "type": "server_error", "code": None}, "server_error", True),
        ({"message": "bad", "object": "error", "type": "BadRequestError", "code": 400},
         "bad_request", False),
        ({"message": "what"}, "model_error", False),
    ],
)
async def test_error_inside_the_stream(
    server: FakeServer, model: OpenAIModel, error: dict[str, Any], code: str, retryable: bool
) -> None:
    chunks = [openai_chunk({"role": "assistant", "content": "a"}), {"error": error}]
    server.push(sse_reply(openai_sse(chunks), ending="hang"))
    with pytest.raises(ModelError) as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert error["message"] in str(info.value)
    # The adapter stopped reading and closed the connection.
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_a_response_that_does_not_stream(server: FakeServer, model: OpenAIModel) -> None:
    # A server that ignores stream=True answers with one JSON document.
    server.push(json_reply(200, {"object": "chat.completion", "choices": []}))
    with pytest.raises(ModelError, match="no server-sent events") as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("model_error", False)


async def test_non_json_event_is_a_model_error(server: FakeServer, model: OpenAIModel) -> None:
    server.push(sse_reply([b"data: {not json\n\n"]))
    with pytest.raises(ModelError, match="not JSON") as info:
        await collect(model, ModelRequest(None, (user("?"),)))
    assert info.value.code == "model_error"


@pytest.mark.parametrize("ending", ["stall", "hang"])
async def test_timeout(
    server: FakeServer, autojump_clock: trio.testing.MockClock, ending: Ending
) -> None:
    # stall: no response at all (the SDK's timeout); hang: the body stops (a read timeout).
    parts = openai_sse([openai_chunk({"role": "assistant", "content": "a"})], done=False)
    server.push(sse_reply(parts, ending=ending))
    async with make_client(server, timeout=30.0) as client:
        model = OpenAIModel("gpt-test", client=client)
        with pytest.raises(ModelError) as info:
            await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("timeout", True)


async def test_connection_refused() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nobody listens there now
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0
    ) as client:
        with pytest.raises(ModelError) as info:
            await collect(OpenAIModel("m", client=client), ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable) == ("connection_error", True)


async def test_sdk_retry_setting_respected(server: FakeServer) -> None:
    retry_soon = [("retry-after-ms", "1")]
    server.push(json_reply(500, {"error": {"message": "boom"}}, retry_soon), text_reply("ok"))
    async with make_client(server, max_retries=1) as client:
        chunks = await collect(OpenAIModel("m", client=client), ModelRequest(None, (user("?"),)))
    assert TextChunk("ok") in chunks
    assert len(server.requests) == 2

    # max_retries as a setting overrides the client's (here: 0 -> 1).
    server.push(json_reply(429, {"error": {"message": "slow"}}, retry_soon), text_reply("ok"))
    async with make_client(server, max_retries=0) as client:
        model = OpenAIModel("m", client=client, max_retries=1)
        assert TextChunk("ok") in await collect(model, ModelRequest(None, (user("?"),)))
    assert len(server.requests) == 4

    # And with no retries allowed, the first failure is final.
    server.push(json_reply(500, {"error": {"message": "boom"}}, retry_soon), text_reply("ok"))
    async with make_client(server, max_retries=1) as client:
        model = OpenAIModel("m", client=client)
        request = ModelRequest(None, (user("?"),), settings={"max_retries": 0})
        with pytest.raises(ModelError):
            await collect(model, request)
    assert len(server.requests) == 5


# -- cancellation ---------------------------------------------------------------------------


def slow_reply() -> Any:
    parts = openai_sse([openai_chunk({"role": "assistant", "content": "Once"})], done=False)
    return sse_reply(parts, ending="hang")


async def test_cancel_while_reading_closes_the_connection(
    server: FakeServer, model: OpenAIModel
) -> None:
    server.push(slow_reply())
    got: list[ModelChunk] = []
    with trio.CancelScope() as scope:
        async with aclosing(model.stream(ModelRequest(None, (user("?"),)))) as stream:
            async for chunk in stream:
                got.append(chunk)
                # The next read blocks on the server: cancel it from "outside".
                scope.cancel()
    assert scope.cancelled_caught
    assert got == [TextChunk("Once")]
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_aclose_at_a_yield_closes_the_connection(
    server: FakeServer, model: OpenAIModel
) -> None:
    server.push(slow_reply())
    stream = model.stream(ModelRequest(None, (user("?"),)))
    assert await anext(stream) == TextChunk("Once")
    await stream.aclose()
    with trio.fail_after(10):
        await server.client_closed.wait()
    # The pool holds nothing: the connection was closed, not parked.
    assert server.closed_by_client == 1


async def test_aclose_inside_a_cancelled_scope_still_closes(
    server: FakeServer, model: OpenAIModel
) -> None:
    # The engine closes the stream while its own scope is cancelled; the close is shielded.
    server.push(slow_reply())
    stream = model.stream(ModelRequest(None, (user("?"),)))
    assert await anext(stream) == TextChunk("Once")
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        finally:
            await stream.aclose()
    assert scope.cancelled_caught
    with trio.fail_after(10):
        await server.client_closed.wait()


async def test_connection_reused_after_a_complete_stream(
    server: FakeServer, model: OpenAIModel
) -> None:
    server.push(text_reply("a"), text_reply("b"))
    await collect(model, ModelRequest(None, (user("?"),)))
    await collect(model, ModelRequest(None, (user("?"),)))
    assert server.connections == 1


# -- construction and the optional extra ----------------------------------------------------


def test_missing_sdk_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'trio-session\[openai\]'"):
        OpenAIModel("gpt-test", api_key="k")


def test_package_imports_without_the_sdk() -> None:
    printed = construct_without_sdks(
        "trio_session.models._openai", "trio_session.OpenAIModel('gpt-test', api_key='k')"
    )
    assert "pip install 'trio-session[openai]'" in printed


def test_constructor_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-test")
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        OpenAIModel("gpt-test", client=openai.OpenAI(api_key="k"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either client"):
        OpenAIModel("gpt-test", client=openai.AsyncOpenAI(api_key="k"), api_key="k")
    with pytest.raises(TypeError, match="model"):
        OpenAIModel("")
    with pytest.raises(ValueError, match="max_retries"):
        OpenAIModel("gpt-test", api_key="k", max_retries=-1)


async def test_owned_client_closed_given_client_left_open(server: FakeServer) -> None:
    async with OpenAIModel("gpt-test", base_url=server.base_url + "/v1", api_key="k") as model:
        assert model.name == "gpt-test"
        assert str(model.client.base_url).startswith(server.base_url)
    assert model.client.is_closed()
    async with make_client(server) as client:
        await OpenAIModel("gpt-test", client=client).aclose()
        assert not client.is_closed()


# -- the SSE decoder ------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(
    payloads=st.lists(st.text(min_size=1).filter(lambda s: "\n" not in s and "\r" not in s),
                      max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    crlf=st.booleans(),
)
def test_sse_decoder_splits_anywhere(payloads: list[str], cuts: list[int], crlf: bool) -> None:
    newline = b"\r\n" if crlf else b"\n"
    wire = b"".join(
        b": keep-alive" + newline + b"data: " + json.dumps(p).encode() + newline + newline
        for p in payloads
    )
    decoder = SSEDecoder()
    events: list[str] = []
    start = 0
    for cut in sorted(c % (len(wire) + 1) for c in cuts):
        events += decoder.feed(wire[start:cut])
        start = max(start, cut)
    events += decoder.feed(wire[start:])
    events += decoder.flush()
    assert [json.loads(e) for e in events] == payloads


# -- roles, cache usage, retries --------------------------------------------------------------


async def test_system_prompt_as_developer(server: FakeServer) -> None:
    server.push(text_reply("ok"))
    async with make_client(server) as client:
        model = OpenAIModel("o1-test", client=client, system_role="developer")
        await collect(model, ModelRequest("Be brief.", (user("Hi"), Message("system", "More."))))
    assert server.bodies[0]["messages"][0] == {"role": "developer", "content": "Be brief.\n\nMore."}
    with pytest.raises(ValueError, match="system_role must be 'system' or 'developer'"):
        OpenAIModel("m", api_key="k", system_role="admin")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "usage",
    [
        # OpenAI (and vLLM, OpenRouter): cached tokens are part of prompt_tokens.
        {"prompt_tokens": 120, "completion_tokens": 7,
         "prompt_tokens_details": {"cached_tokens": 100}},
        # DeepSeek: hit + miss = prompt_tokens.
        {"prompt_tokens": 120, "completion_tokens": 7, "prompt_cache_hit_tokens": 100,
         "prompt_cache_miss_tokens": 20},
    ],
)
async def test_cached_prompt_tokens(
    server: FakeServer, model: OpenAIModel, usage: dict[str, Any]
) -> None:
    chunks = [
        openai_chunk({"content": "ok"}, finish_reason="stop"),
        {**openai_chunk(), "usage": usage},
    ]
    server.push(sse_reply(openai_sse(chunks)))
    got = await collect(model, ModelRequest(None, (user("?"),)))
    assert UsageChunk(120, 7, cache_read_tokens=100) in got


async def test_no_usage_from_the_server_streams_no_usage_chunk(
    server: FakeServer, model: OpenAIModel
) -> None:
    chunks = [openai_chunk({"content": "ok"}), openai_chunk(finish_reason="stop")]
    server.push(sse_reply(openai_sse(chunks)))
    got = await collect(model, ModelRequest(None, (user("?"),)))
    assert got == [TextChunk("ok"), StopChunk("end_turn")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [([("retry-after-ms", "1500")], 1.5), ([("retry-after", "4")], 4.0), ([], None)],
)
async def test_own_client_leaves_retries_to_the_retry_policy(
    server: FakeServer, headers: list[tuple[str, str]], expected: float | None
) -> None:
    server.push(json_reply(429, {"error": {"message": "slow down", "type": "requests",
                                           "code": "rate_limit_exceeded"}}, headers))
    async with OpenAIModel("m", base_url=server.base_url + "/v1", api_key="k") as model:
        assert model.client.max_retries == 0
        with pytest.raises(ModelError) as info:
            await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable, info.value.retry_after) == (
        "rate_limit", True, expected
    )
    assert len(server.requests) == 1


async def test_exhausted_quota_is_asked_once(server: FakeServer) -> None:
    # A 429 that waiting does not cure: neither the SDK nor the RetryPolicy try again.
    server.push(json_reply(429, {"error": {"message": "quota", "type": "insufficient_quota",
                                           "code": "insufficient_quota"}}, [("retry-after", "1")]))
    async with OpenAIModel("m", base_url=server.base_url + "/v1", api_key="k") as model:
        with pytest.raises(ModelError) as info:
            await collect(model, ModelRequest(None, (user("?"),)))
    assert (info.value.code, info.value.retryable, info.value.retry_after) == (
        "insufficient_quota", False, None
    )
    assert len(server.requests) == 1


async def test_a_given_client_keeps_its_retry_settings(server: FakeServer) -> None:
    async with make_client(server, max_retries=5) as client:
        assert OpenAIModel("m", client=client).client.max_retries == 5
