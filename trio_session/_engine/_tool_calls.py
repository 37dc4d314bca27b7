"""The tool calls of one tick: run them (at most ``max_tool_concurrency`` at once)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from .._buffer import emitter
from .._errors import InvalidToolArguments
from .._events import ToolResultEvent, ToolResultStart
from .._messages import TextBlock, ToolResultBlock, ToolUseBlock, built_tool_result
from .._tools import ToolContext
from ..models._base import INVALID_JSON_KEY
from ._confirm import confirm
from ._hooks import ToolCallContext, current_tool_call
from ._tick import Tick

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["answer", "error_result", "run_tools", "unfinished"]

_tool_result_start = emitter(ToolResultStart)
_tool_result_event = emitter(ToolResultEvent)

logger: Final = logging.getLogger("trio_session")


def error_result(call: ToolUseBlock, text: str) -> ToolResultBlock:
    """An error result for ``call`` that tells the model ``text``."""
    return built_tool_result(call.tool_use_id, call.name, (TextBlock(text),), is_error=True)


async def run_tools(execution: Execution, state: Tick) -> None:
    """Run every call of ``state`` and record its result there."""
    if len(state.calls) == 1:
        # One call: nothing to bound and no task to start. Cancellation is still
        # seen before it runs (an async tool may not checkpoint before its work).
        await trio.lowlevel.checkpoint_if_cancelled()
        await _handle_call(execution, state, 0)
        return
    limiter = trio.CapacityLimiter(execution.agent.max_tool_concurrency)
    async with trio.open_nursery() as nursery:
        for index in range(len(state.calls)):
            nursery.start_soon(_run_tool, execution, state, index, limiter)


async def _run_tool(
    execution: Execution, state: Tick, index: int, limiter: trio.CapacityLimiter
) -> None:
    async with limiter:
        await _handle_call(execution, state, index)


async def _handle_call(execution: Execution, state: Tick, index: int) -> None:
    call = state.calls[index]
    state.started.add(index)
    _tool_result_start(execution.publisher, tool_use_id=call.tool_use_id, name=call.name)
    rejected = state.rejected.get(call.tool_use_id)
    with execution.trace.tool(call.name, call.tool_use_id) as span:
        if rejected is not None:
            await trio.lowlevel.checkpoint()
            result = error_result(call, rejected)
        else:
            result = await _tool_result(execution, call, state.number)
        # The text is the span's error description: only an error needs it.
        span.finish(result.is_error, _text(result) if result.is_error else "")
    answer(execution, state, index, result)


def answer(execution: Execution, state: Tick, index: int, result: ToolResultBlock) -> None:
    """Record the result of call ``index`` and publish it."""
    state.results[index] = result
    _tool_result_event(
        execution.publisher,
        tool_use_id=result.tool_use_id,
        name=result.name,
        content=result.content,
        is_error=result.is_error,
    )


def unfinished(execution: Execution, state: Tick, status: str) -> None:
    """Answer the calls that did not finish (the execution ended ``status``)."""
    for index, call in enumerate(state.calls):
        if state.results[index] is None:
            if index not in state.started:
                execution.publisher.emit(
                    ToolResultStart, tool_use_id=call.tool_use_id, name=call.name
                )
            answer(
                execution,
                state,
                index,
                error_result(
                    call,
                    f"The call to {call.name!r} did not complete: the execution was {status}.",
                ),
            )


async def _tool_result(execution: Execution, call: ToolUseBlock, tick: int) -> ToolResultBlock:
    agent = execution.agent
    tool = agent.tool(call.name)
    if tool is None or not tool.visible_to_model:
        names = ", ".join(t.name for t in agent.tools if t.visible_to_model) or "none"
        return error_result(call, f"Unknown tool {call.name!r}. Available tools: {names}.")
    arguments: Mapping[str, Any] = call.input
    if INVALID_JSON_KEY in arguments:
        return error_result(
            call,
            f"The arguments for {call.name!r} were not a complete JSON object (a reply cut "
            f"off by the output token limit ends like this): {arguments[INVALID_JSON_KEY]!s:.500}. "
            "Call the tool again with a complete JSON object.",
        )
    if tool.needs_confirmation(arguments):
        try:
            tool.validate(arguments)
        except InvalidToolArguments as exc:
            return error_result(call, str(exc))
        decision, timed_out = await confirm(execution, tool, call)
        if timed_out:
            return error_result(
                call,
                f"The confirmation for {call.name!r} timed out after "
                f"{tool.confirmation_timeout:g}s with no answer, so the call was not run.",
            )
        if not decision.approved:
            why = f": {decision.reason}" if decision.reason else ""
            return error_result(call, f"The user denied the call to {call.name!r}{why}.")
        if decision.modified_arguments is not None:
            arguments = decision.modified_arguments
    context: ToolContext | None = None
    if tool.takes_context:
        # Built only for a tool that reads it.
        host = execution.host
        context = ToolContext(
            session=host.owner,
            execution=execution.handle,
            tool_use_id=call.tool_use_id,
            tick=tick,
            props=execution.props,
            state=host.state,
            emit_fn=execution.emit_custom,
            spawn_fn=host.owner.spawn,
        )
    token = current_tool_call.set(ToolCallContext(execution, call.tool_use_id))
    try:
        content = await tool.run(context, arguments)
    except InvalidToolArguments as exc:
        return error_result(call, str(exc))
    except Exception as exc:
        logger.debug("tool %r raised", call.name, exc_info=True)
        return error_result(call, f"Tool {call.name!r} failed: {type(exc).__name__}: {exc}")
    finally:
        current_tool_call.reset(token)
    # tool.run checked the content (to_blocks); the ids are the model's call's.
    return built_tool_result(call.tool_use_id, call.name, content)


def _text(result: ToolResultBlock) -> str:
    return "".join(b.text for b in result.content if isinstance(b, TextBlock))
