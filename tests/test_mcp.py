"""MCP tools against real servers: the SDK's MCPServer over stdio and streamable HTTP."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
from _helpers import collect, narrow, text_of
from mcp_server import PIXEL, server as mcp_server

from trio_session import (
    Agent,
    Event,
    ExecutionEnd,
    ImageBlock,
    JsonBlock,
    Reply,
    ScriptedModel,
    StreamEvent,
    TextBlock,
    Tool,
    ToolConfirmationRequired,
    ToolResultEvent,
    open_session,
)
from trio_session.mcp import HttpServer, StdioServer, open_mcp_tools

# The SDK's streamable-HTTP client leaves its SSE async generators to the garbage
# collector (httpx2 Response.aiter_text, EventSource.__aiter__); trio warns about them.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx2:ResourceWarning",
    "ignore:Async generator 'mcp:ResourceWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
)

SERVER = StdioServer(sys.executable, args=(str(Path(__file__).with_name("mcp_server.py")),))
PIXEL_URI = "data:image/png;base64," + __import__("base64").b64encode(PIXEL).decode()


async def run(
    tools: Sequence[Tool], calls: list[tuple[str, dict[str, Any]]], *, approve: bool = False
) -> list[Event]:
    """One execution whose first tick calls ``calls`` at once, then answers "done"."""
    model = ScriptedModel([Reply("Calling.", tool_calls=calls), "done"])
    async with open_session(Agent(model, tools=tools)) as session:
        handle = await session.send("go")
        if approve:

            def answer(event: StreamEvent) -> None:
                assert isinstance(event, ToolConfirmationRequired)
                handle.submit_tool_result(event.tool_use_id, approved=True)

            handle.events.on("tool_confirmation_required", answer)
        events = await collect(handle)
        assert (await handle.result).response == "done"
    return events


def results(events: Sequence[StreamEvent]) -> dict[str, ToolResultEvent]:
    return {e.name: e for e in events if isinstance(e, ToolResultEvent)}


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("t_greet", {"name": "Ann"}),
    ("t_divide", {"a": 1, "b": 4}),
    ("t_pixel", {}),
]


def check_results(events: Sequence[StreamEvent]) -> None:
    got = results(events)
    assert got["t_greet"].content == (TextBlock("Hello, Ann!"),)
    assert not got["t_greet"].is_error
    # The structured result, without the text copy older clients get.
    assert got["t_divide"].content == (JsonBlock({"quotient": 0.25}),)
    assert got["t_pixel"].content == (ImageBlock(PIXEL_URI, "image/png"),)


async def test_stdio_tools_are_listed_with_their_schemas() -> None:
    async with open_mcp_tools(SERVER, prefix="t") as tools:
        by_name = {t.name: t for t in tools}
        assert list(by_name) == ["t_greet", "t_divide", "t_pixel", "t_crash", "t_hang"]
        greet = by_name["t_greet"]
        assert greet.description == "Greet someone by name."
        assert greet.input_schema["properties"]["name"]["type"] == "string"
        assert greet.input_schema["required"] == ["name"]
    async with open_mcp_tools(SERVER) as tools:
        assert tools[0].name == "greet"


async def test_stdio_tools_are_called_and_their_content_mapped() -> None:
    async with open_mcp_tools(SERVER, prefix="t") as tools:
        check_results(await run(tools, CALLS))


async def test_an_error_result_and_bad_arguments_are_error_results() -> None:
    async with open_mcp_tools(SERVER, prefix="t") as tools:
        events = await run(tools, [("t_divide", {"a": 1, "b": 0}), ("t_greet", {"name": 5})])
    got = results(events)
    assert got["t_divide"].is_error
    assert "division by zero" in text_of(got["t_divide"].content[0])
    # Validated against the server's schema before the server is asked.
    assert got["t_greet"].is_error
    assert "name" in text_of(got["t_greet"].content[0])


async def test_a_confirmation_is_approved_through_the_handle() -> None:
    asked: list[str] = []

    def needs_approval(name: str) -> bool:
        asked.append(name)
        return name == "t_greet"

    async with open_mcp_tools(SERVER, prefix="t", requires_confirmation=needs_approval) as tools:
        events = await run(tools, [("t_greet", {"name": "Bo"})], approve=True)
    assert asked == ["t_greet", "t_divide", "t_pixel", "t_crash", "t_hang"]
    types = [e.type for e in events]
    assert types.index("tool_confirmation_required") < types.index("tool_confirmation_result")
    assert results(events)["t_greet"].content == (TextBlock("Hello, Bo!"),)


async def test_a_server_that_dies_mid_call_gives_an_error_result() -> None:
    async with open_mcp_tools(SERVER, prefix="t") as tools:
        events = await run(tools, [("t_crash", {})])
        crashed = results(events)["t_crash"]
        assert crashed.is_error
        assert "the MCP server failed to run 'crash'" in text_of(crashed.content[0])
        # The execution went on: the model answered after the error result.
        assert narrow(events[-1], ExecutionEnd).status == "completed"
        # Later calls fail the same way, without hanging.
        again = results(await run(tools, [("t_greet", {"name": "Cy"})]))["t_greet"]
        assert again.is_error


def test_bad_server_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="not one string"):
        StdioServer("python", args="server.py")


async def test_a_server_that_is_not_a_server_is_refused() -> None:
    with pytest.raises(TypeError, match="StdioServer or an HttpServer"):
        async with open_mcp_tools("python server.py"):  # type: ignore[arg-type]
            pass


@asynccontextmanager
async def http_server() -> AsyncIterator[tuple[str, trio.CancelScope]]:
    """The test server's streamable-HTTP app, on Hypercorn's trio worker, on a free port."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    app = mcp_server.streamable_http_app()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
            with scope:
                await hypercorn.trio.serve(app, config, task_status=task_status)  # type: ignore[arg-type]

        binds = await nursery.start(serve)
        yield binds[0] + "/mcp", scope
        scope.cancel()


async def test_http_tools_are_listed_called_and_mapped() -> None:
    async with http_server() as (url, _), open_mcp_tools(HttpServer(url), prefix="t") as tools:
        assert [t.name for t in tools] == ["t_greet", "t_divide", "t_pixel", "t_crash", "t_hang"]
        check_results(await run(tools, CALLS))
        failed = results(await run(tools, [("t_divide", {"a": 1, "b": 0})]))["t_divide"]
        assert failed.is_error
        assert "division by zero" in text_of(failed.content[0])


async def test_http_confirmation_and_a_server_stopped_mid_call() -> None:
    model = ScriptedModel([Reply("", tool_calls=[("t_hang", {})]), "done"])
    async with (
        http_server() as (url, server_scope),
        open_mcp_tools(
            HttpServer(url, headers={"X-Test": "1"}), prefix="t", requires_confirmation=True
        ) as tools,
        open_session(Agent(model, tools=tools)) as session,
    ):
        handle = await session.send("go")
        handle.events.on(
            "tool_confirmation_required",
            lambda e: handle.submit_tool_result(
                narrow(e, ToolConfirmationRequired).tool_use_id, approved=True
            ),
        )
        async with handle.events.subscribe(types={"tool_result_start"}) as started:
            await started.receive()
        await trio.testing.wait_all_tasks_blocked()
        server_scope.cancel()
        events = await collect(handle)
    hung = results(events)["t_hang"]
    assert hung.is_error
    assert "the MCP server failed to run 'hang'" in text_of(hung.content[0])
    assert narrow(events[-1], ExecutionEnd).status == "completed"
