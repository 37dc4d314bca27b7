"""The confirmation flow of one tool call: remembered, hook, or ``submit_tool_result``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._events import ToolConfirmationRequired, ToolConfirmationResult
from .._messages import ToolUseBlock
from .._tools import Decision, Tool
from ._hooks import call_hook

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["confirm"]


async def confirm(
    execution: Execution, tool: Tool, call: ToolUseBlock
) -> tuple[Decision, bool]:
    """Ask for (or recall) the decision on ``call``; publish both confirmation events.

    Returns the decision, and whether it is a denial because nobody answered in time.
    """
    publisher = execution.publisher
    host = execution.host
    remembered = host.remembered(tool.name)
    if remembered is not None:
        publisher.emit(
            ToolConfirmationResult,
            tool_use_id=call.tool_use_id,
            approved=remembered.approved,
            reason=remembered.reason or "remembered for this session",
            always=True,
        )
        return remembered, False
    confirmations = execution.confirmations
    # Registered before the event is published: an answer given synchronously
    # by a listener of that event finds it.
    pending = confirmations.register(call.tool_use_id, tool, call.input)
    try:
        event = publisher.emit(
            ToolConfirmationRequired,
            tool_use_id=call.tool_use_id,
            name=tool.name,
            input=call.input,
            message=tool.confirmation_text(call.input),
        )
        hook = execution.agent.on_tool_confirmation
        if hook is not None:
            decision = await call_hook(hook, event)
            if decision is not None and call.tool_use_id in confirmations:
                if not isinstance(decision, Decision):
                    raise TypeError(
                        "Agent.on_tool_confirmation must return a Decision or None, "
                        f"got {type(decision).__name__}"
                    )
                pending.decide(decision)
        decision = await pending.wait(tool.confirmation_timeout)
    finally:
        if call.tool_use_id in confirmations:
            pending.decide(Decision(False, reason="execution ended"))
    publisher.emit(
        ToolConfirmationResult,
        tool_use_id=call.tool_use_id,
        approved=decision.approved,
        reason=decision.reason,
        modified_arguments=decision.modified_arguments,
        always=decision.always,
    )
    if decision.always:
        host.remember(tool.name, Decision(decision.approved, reason=decision.reason, always=True))
    return decision, pending.timed_out
