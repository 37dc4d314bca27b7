"""The MCP client: transports, the session, and tools that call the server."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import trio

try:
    import mcp
    import mcp.types
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trio_session.mcp needs the MCP SDK: pip install 'trio-session[mcp]'"
    ) from exc

from .._messages import ContentBlock, ImageBlock, JsonBlock, TextBlock
from .._tools import Tool

__all__ = ["HttpServer", "McpToolError", "StdioServer", "open_mcp_tools"]


def _strings(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("args must be a sequence of strings, not one string")
    return tuple(value)


@attrs.frozen
class StdioServer:
    """An MCP server started as a subprocess, spoken to over stdin/stdout.

    Args:
        command: The executable.
        args: Its arguments.
        env: Environment variables, added to a safe default environment.
        cwd: The working directory of the server.
    """

    command: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None


@attrs.frozen
class HttpServer:
    """An MCP server reached over the streamable-HTTP transport.

    Args:
        url: The server's MCP endpoint, such as ``"http://127.0.0.1:8000/mcp"``.
        headers: Headers sent with every request (authorization, for instance).
    """

    url: str
    headers: Mapping[str, str] | None = None


class McpToolError(Exception):
    """Raised by an MCP tool's handler when the call did not give a result.

    The server answered ``isError``, the server is gone, or the connection
    failed. The engine turns it into a ``tool_result`` with ``is_error=True``
    whose text says what happened, and the execution goes on.
    """


@asynccontextmanager
async def open_mcp_tools(
    server: StdioServer | HttpServer,
    *,
    prefix: str | None = None,
    requires_confirmation: bool | Callable[[str], bool] = False,
) -> AsyncIterator[Sequence[Tool]]:
    """Connect to an MCP server and give its tools as `Tool` objects.

    The MCP client session, and for `StdioServer` the server process, live in
    the task group of this ``async with``: leaving the block closes them. Use
    the tools inside the block only.

    Args:
        server: Where the server is.
        prefix: When given, each tool is named ``f"{prefix}_{name}"``.
        requires_confirmation: Whether calls need the user's approval; a
            callable gets each tool's (prefixed) name and decides for it.

    Yields:
        The server's tools, in the order of its ``list_tools`` answer.

    Raises:
        OSError: The server process could not be started.
        mcp.McpError: The server refused to initialize or to list its tools.

    Example:
        ::

            async with open_mcp_tools(HttpServer("http://127.0.0.1:8000/mcp"),
                                      requires_confirmation=lambda name: name != "search") as tools:
                agent = Agent(model, tools=tools)
    """
    if not isinstance(server, StdioServer | HttpServer):
        raise TypeError(f"server must be a StdioServer or an HttpServer, got {server!r}")
    if prefix is not None and not prefix:
        raise ValueError("prefix must be a non-empty string or None")
    try:
        async with _connect(server) as session:
            listed = await _list_tools(session)
            yield tuple(_make_tool(session, t, prefix, requires_confirmation) for t in listed)
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap whatever left the block; callers get the
        # error itself, as from any other context manager.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


@asynccontextmanager
async def _connect(server: StdioServer | HttpServer) -> AsyncIterator[mcp.ClientSession]:
    async with AsyncExitStack() as stack:
        if isinstance(server, StdioServer):
            parameters = StdioServerParameters(
                command=server.command,
                args=list(server.args),
                env=dict(server.env) if server.env is not None else None,
                cwd=os.fspath(server.cwd) if server.cwd is not None else None,
            )
            read, write = await stack.enter_async_context(stdio_client(parameters))
        else:
            client = await stack.enter_async_context(
                create_mcp_http_client(headers=dict(server.headers or {}))
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(server.url, http_client=client)
            )
        session = await stack.enter_async_context(mcp.ClientSession(read, write))
        await session.initialize()
        yield session


async def _list_tools(session: mcp.ClientSession) -> list[mcp.types.Tool]:
    tools: list[mcp.types.Tool] = []
    cursor: str | None = None
    while True:
        params = mcp.types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _make_tool(
    session: mcp.ClientSession,
    listed: mcp.types.Tool,
    prefix: str | None,
    requires_confirmation: bool | Callable[[str], bool],
) -> Tool:
    remote = listed.name
    name = f"{prefix}_{remote}" if prefix else remote
    confirm = (
        requires_confirmation(name) if callable(requires_confirmation) else requires_confirmation
    )

    async def call(arguments: Mapping[str, Any]) -> tuple[ContentBlock, ...]:
        try:
            result = await session.call_tool(remote, dict(arguments))
        except trio.Cancelled:
            raise
        except Exception as exc:
            # The server died, the connection broke, or it answered with a
            # protocol error: the model gets an error result it can act on.
            raise McpToolError(
                f"the MCP server failed to run {remote!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, mcp.types.CallToolResult):
            raise McpToolError(f"the MCP server answered {remote!r} with {type(result).__name__}")
        blocks = to_blocks(result)
        if result.is_error:
            text = " ".join(b.text for b in blocks if isinstance(b, TextBlock)) or "no details"
            raise McpToolError(text)
        return blocks

    return Tool.from_schema(
        name,
        listed.description or "",
        dict(listed.input_schema),
        call,
        requires_confirmation=bool(confirm),
    )


def to_blocks(result: mcp.types.CallToolResult) -> tuple[ContentBlock, ...]:
    """The blocks of a tool result: text, images (as data: URIs), structured content as JSON.

    The text copy of the structured content that servers send for older
    clients is dropped, so the model sees the value once.
    """
    structured = result.structured_content
    blocks: list[ContentBlock] = []
    for item in result.content:
        if isinstance(item, mcp.types.TextContent):
            if structured is not None and _is_json_of(item.text, structured):
                continue
            blocks.append(TextBlock(item.text))
        elif isinstance(item, mcp.types.ImageContent):
            blocks.append(ImageBlock(f"data:{item.mime_type};base64,{item.data}", item.mime_type))
        elif isinstance(item, mcp.types.EmbeddedResource):
            blocks.append(_resource_block(item.resource))
        elif isinstance(item, mcp.types.ResourceLink):
            blocks.append(TextBlock(f"[resource {item.name}: {item.uri}]"))
        elif isinstance(item, mcp.types.AudioContent):
            size = len(base64.b64decode(item.data, validate=False))
            blocks.append(TextBlock(f"[audio {item.mime_type}, {size} bytes, not shown]"))
    if structured is not None:
        blocks.append(JsonBlock(structured))
    return tuple(blocks)


def _resource_block(resource: Any) -> ContentBlock:
    mime = getattr(resource, "mime_type", None)
    if isinstance(resource, mcp.types.TextResourceContents):
        return TextBlock(resource.text)
    if mime and mime.startswith("image/"):
        return ImageBlock(f"data:{mime};base64,{resource.blob}", mime)
    return TextBlock(f"[resource {resource.uri} ({mime or 'binary'}), not shown]")


def _is_json_of(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False
