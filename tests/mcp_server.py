"""A small MCP server for the tests: ``python tests/mcp_server.py [stdio | http PORT]``."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-server")

# The smallest valid PNG (1x1, transparent).
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@server.tool(structured_output=False)
def greet(name: str) -> str:
    """Greet someone by name."""
    return f"Hello, {name}!"


@server.tool()
def divide(a: float, b: float) -> dict[str, float]:
    """Divide a by b."""
    if b == 0:
        raise ToolError("division by zero")
    return {"quotient": a / b}


@server.tool()
def pixel() -> Image:
    """A tiny image."""
    return Image(data=PIXEL, format="png")


@server.tool()
def crash() -> str:
    """The server dies in the middle of this call."""
    sys.stdout.flush()
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answers (the HTTP tests stop the server during this call)."""
    await anyio.sleep_forever()
    return "unreachable"


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
