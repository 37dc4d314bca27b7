"""MCP servers' tools as trio-session tools (extra ``trio-session[mcp]``).

Example:
    Use a server's tools next to your own::

        from trio_session.mcp import StdioServer, open_mcp_tools

        async with open_mcp_tools(StdioServer("uvx", args=("mcp-server-time",)),
                                  prefix="time") as tools:
            async with open_session(Agent(model, tools=[*local_tools, *tools])) as session:
                ...
"""

from ._client import (
    HttpServer as HttpServer,
    McpToolError as McpToolError,
    StdioServer as StdioServer,
    open_mcp_tools as open_mcp_tools,
)

__all__ = ["HttpServer", "McpToolError", "StdioServer", "open_mcp_tools"]
