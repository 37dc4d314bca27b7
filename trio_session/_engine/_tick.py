"""What one tick produced so far."""

from __future__ import annotations

import attrs

from .._messages import Message, ToolResultBlock, ToolUseBlock
from .._usage import Usage

__all__ = ["Tick"]


_NO_USAGE = Usage()  # frozen: one serves every tick until its model call ends


@attrs.define
class Tick:
    """What one tick produced so far; committed all at once."""

    number: int
    message: Message | None = None
    calls: tuple[ToolUseBlock, ...] = ()
    results: list[ToolResultBlock | None] = attrs.Factory(list)
    usage: Usage = _NO_USAGE
    stop_reason: str = "end_turn"
    started: set[int] = attrs.Factory(set)
    rejected: dict[str, str] = attrs.Factory(dict)
    """Calls answered with an error without running (a reused tool_use_id)."""
    committed: bool = False
