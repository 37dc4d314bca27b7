"""Hooks and the tool call in progress."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["ToolCallContext", "call_hook", "current_tool_call"]


class ToolCallContext:
    """The execution and tool call a tool runs for (one per tool call: a plain slotted class)."""

    __slots__ = ("execution", "tool_use_id")

    def __init__(self, execution: Execution, tool_use_id: str) -> None:
        self.execution = execution
        self.tool_use_id = tool_use_id


current_tool_call: contextvars.ContextVar[ToolCallContext | None] = contextvars.ContextVar(
    "trio_session_tool_call", default=None
)
"""Set while a tool runs, so ``session.spawn`` from inside it runs the child there."""


P = ParamSpec("P")
T = TypeVar("T")


async def call_hook(
    hook: Callable[P, Awaitable[T] | T] | None, *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """Call a sync or async hook; None when there is no hook."""
    if hook is None:
        return None
    result = hook(*args, **kwargs)
    if inspect.isawaitable(result):
        return await cast("Awaitable[T]", result)
    return result
