"""The outcome of a successful execution."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ._messages import Message
from ._usage import Usage

__all__ = ["SendResult"]


def _message_tuple(messages: Iterable[Message]) -> tuple[Message, ...]:
    return tuple(messages)


@attrs.frozen(kw_only=True)
class SendResult:
    """What ``await handle.result`` gives for a completed execution.

    Attributes:
        output: The typed output, structured from the final answer (SPEC §8); None
            without an ``output_type``.
        response: The text of the final assistant message ("" if none).
        message: The final assistant message, if the model produced one.
        new_messages: Every message this execution committed, in order.
        usage: Tokens and ticks of this execution.
        stop_reason: Why it stopped (``"end_turn"``, ``"max_ticks"``, ...).
        session_id: The session it ran in.
        execution_id: The execution it was.
    """

    response: str
    message: Message | None
    new_messages: tuple[Message, ...] = attrs.field(converter=_message_tuple)
    usage: Usage
    stop_reason: str
    session_id: str
    execution_id: str
    output: Any = None
