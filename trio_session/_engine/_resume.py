"""The tick a restart left waiting for confirmation, run as an execution's first tick."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._events import TickEnd, TickStart
from .._tools import Decision
from ._tick import Tick
from ._tool_calls import run_tools

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["resume_tick"]


async def resume_tick(execution: Execution, state: Tick) -> None:
    """Answer the restored tick's calls, commit it, and go on to the model.

    Its calls wait for their answers (``session.submit_tool_result``) and run or
    are denied as in the tick that asked; the others are answered with
    `LOST_IN_RESTART`. The model has not seen the results yet, so the loop
    always goes on (``should_continue`` is not asked for this tick).
    """
    execution.current_tick += 1
    state.number = execution.current_tick
    execution.publisher.tick = state.number
    execution.publisher.emit(TickStart)
    execution.transcript.current = state
    await run_tools(execution, state)
    for pending in execution.restored.values():
        # A call whose tool no longer asks for confirmation, or no longer validates.
        if pending.tool_use_id in execution.confirmations:
            pending.decide(Decision(False, reason="no longer asked"))
    execution.restored.clear()
    execution.transcript.commit_tick(state)
    execution.publisher.emit(
        TickEnd, usage=state.usage, stop_reason=state.stop_reason, should_continue=True
    )
