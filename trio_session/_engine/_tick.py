"""What one tick produced so far."""

from __future__ import annotations

from .._messages import Message, ToolResultBlock, ToolUseBlock
from .._usage import NO_USAGE

__all__ = ["Tick"]




class Tick:
    """What one tick produced so far; committed all at once.

    A plain slotted class: one is made per tick, by the engine only.
    """

    __slots__ = (
        "calls",
        "committed",
        "message",
        "number",
        "rejected",
        "results",
        "started",
        "stop_reason",
        "usage",
    )

    def __init__(
        self,
        number: int,
        message: Message | None = None,
        calls: tuple[ToolUseBlock, ...] = (),
        results: list[ToolResultBlock | None] | None = None,
    ) -> None:
        self.number = number
        self.message = message
        self.calls = calls
        self.results: list[ToolResultBlock | None] = [] if results is None else results
        self.usage = NO_USAGE
        self.stop_reason = "end_turn"
        self.started: set[int] = set()
        self.rejected: dict[str, str] = {}
        """Calls answered with an error without running (a reused tool_use_id)."""
        self.committed = False

    def __repr__(self) -> str:
        return f"<Tick {self.number} calls={len(self.calls)} committed={self.committed}>"
