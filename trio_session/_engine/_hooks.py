"""Hooks and the tool call in progress."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["ToolCallContext", "call_hook", "current_tool_call"]


@attrs.frozen
class ToolCallContext:
    """The execution and tool call a tool runs for."""

    execution: Execution
    tool_use_id: str


current_tool_call: contextvars.ContextVar[ToolCallContext | None] = contextvars.ContextVar(
    "trio_session_tool_call", default=None
)
"""Set while a tool runs, so ``session.spawn`` from inside it runs the child there."""


async def call_hook(hook: Callable[..., Any] | None, *args: Any) -> Any:
    """Call a sync or async hook."""
    if hook is None:
        return None
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
