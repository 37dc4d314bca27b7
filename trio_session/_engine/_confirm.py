"""The confirmation flow of one tool call: remembered, hook, or ``submit_tool_result``.

With a store, a confirmation is durable (SPEC §7): the tick's assistant message
and the call are saved as the session's pending tick before
``tool_confirmation_required`` is published, and released (saved again) once
answered, before the tool runs, so a crash can never let one answer run a tool
twice. After a restart, `restore` turns the stored pending tick into the first
tick of the session's next execution.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from .._events import ToolConfirmationRequired, ToolConfirmationResult
from .._messages import ToolUseBlock
from .._tools import ConfirmationWait, Decision, Tool
from ..stores._base import PendingConfirmation
from ._hooks import call_hook
from ._tick import Tick

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["LOST_IN_RESTART", "confirm", "restore"]

LOST_IN_RESTART: Final = (
    "The result of this call was lost when the session restarted while another call of "
    "the same turn waited for confirmation; it may or may not have run. Call the tool "
    "again if it is still needed."
)
"""What the model is told about a call of a restored tick that was not pending."""


def restore(execution: Execution) -> Tick | None:
    """The pending tick the session's store kept, its confirmations registered again.

    Called when a root execution is made, so that ``session.submit_tool_result``
    can answer through it at once. Calls of that tick that were not waiting
    for confirmation are answered with `LOST_IN_RESTART` instead of running:
    they may have run before the restart.
    """
    host = execution.host
    message = host.pending_message
    if message is None:
        return None
    calls = tuple(b for b in message.content if isinstance(b, ToolUseBlock))
    state = Tick(0, message=message, calls=calls, results=[None] * len(calls))
    state.stop_reason = "tool_use"
    waiting = {p.tool_use_id: p for p in host.pending_confirmations}
    for call in calls:
        record = waiting.pop(call.tool_use_id, None)
        tool = execution.agent.tool(call.name)
        if record is None or tool is None:
            state.rejected[call.tool_use_id] = LOST_IN_RESTART
            if record is not None:
                host.release(call.tool_use_id)
            continue
        execution.restored[call.tool_use_id] = execution.confirmations.register(
            call.tool_use_id, tool, call.input
        )
        execution.asked[call.tool_use_id] = record
    for orphan in waiting:
        # A confirmation for a call its message does not have: nothing can answer it.
        host.release(orphan)
    return state


async def confirm(execution: Execution, tool: Tool, call: ToolUseBlock) -> tuple[Decision, bool]:
    """Ask for (or recall) the decision on ``call``; publish both confirmation events.

    Returns the decision, and whether it is a denial because nobody answered in time.
    """
    publisher = execution.publisher
    host = execution.host
    restored = execution.restored.pop(call.tool_use_id, None)
    if restored is not None:
        # Asked before a restart (its event is in the stream before it); answered now.
        decision = await _wait(execution, restored, tool.confirmation_timeout)
        pending = restored
    else:
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
        decision, pending = await _ask(execution, tool, call)
    host.release(call.tool_use_id)
    if host.persistent:
        # Before the tool runs: once answered, a restart never asks again.
        await host.save()
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


async def _ask(
    execution: Execution, tool: Tool, call: ToolUseBlock
) -> tuple[Decision, ConfirmationWait]:
    publisher = execution.publisher
    host = execution.host
    confirmations = execution.confirmations
    # Registered before the event is published: an answer given synchronously
    # by a listener of that event finds it.
    pending = confirmations.register(call.tool_use_id, tool, call.input)
    message = tool.confirmation_text(call.input)
    execution.asked[call.tool_use_id] = record = PendingConfirmation(
        tool_use_id=call.tool_use_id,
        name=tool.name,
        input=call.input,
        message=message,
        execution_id=execution.id,
        created_at=time.time(),
    )
    try:
        state = execution.transcript.current
        assert state is not None
        assert state.message is not None
        host.hold(state.message, record)
        if host.persistent:
            # Durable before anyone hears of it (SPEC §7).
            await host.save()
        event = publisher.emit(
            ToolConfirmationRequired,
            tool_use_id=call.tool_use_id,
            name=tool.name,
            input=call.input,
            message=message,
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
    except BaseException:
        _end(execution, pending)
        raise
    return await _wait(execution, pending, tool.confirmation_timeout), pending


async def _wait(execution: Execution, pending: ConfirmationWait, limit: float | None) -> Decision:
    try:
        return await pending.wait(limit)
    finally:
        _end(execution, pending)


def _end(execution: Execution, pending: ConfirmationWait) -> None:
    execution.asked.pop(pending.tool_use_id, None)
    if pending.tool_use_id in execution.confirmations:
        pending.decide(Decision(False, reason="execution ended"))
