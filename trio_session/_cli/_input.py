"""The chat's confirmation dialogue as a state machine: lines in, decisions out, no I/O.

While an execution waits for confirmations, each line the user types answers
the first one pending. `Confirmations` keeps the pending requests in order and
whether the user is editing the arguments; `Confirmations.answer` turns a line
into what to do (`Submit`, `Retry`, `Edit`), which the chat carries out.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

from .._events import ToolConfirmationRequired

__all__ = ["Confirmations", "Edit", "Retry", "Submit"]


@attrs.frozen
class Submit:
    """Answer the current confirmation (the arguments of `ExecutionHandle.submit_tool_result`)."""

    tool_use_id: str
    approved: bool
    modified_arguments: Mapping[str, Any] | None = None
    reason: str | None = None
    always: bool = False


@attrs.frozen
class Retry:
    """The line was not an answer: say ``message`` and ask again."""

    message: str


@attrs.frozen
class Edit:
    """The user chose to edit the arguments: show ``arguments`` and ask for new ones."""

    arguments: str


class Confirmations:
    """The confirmations waiting for the user's answer, first come first asked.

    Example:
        >>> from trio_session import ToolConfirmationRequired
        >>> pending = Confirmations()
        >>> pending.add(ToolConfirmationRequired(
        ...     seq=1, execution_id="e", tool_use_id="t1", name="notes",
        ...     input={"text": "milk"}, message="Save it?"))
        True
        >>> pending.answer("maybe")
        Retry(message='please answer y (yes), n (no), a (always) or e (edit)')
        >>> pending.answer("e")
        Edit(arguments='{"text": "milk"}')
        >>> pending.answer("text=oat milk").modified_arguments
        {'text': 'oat milk'}
    """

    def __init__(self) -> None:
        self._waiting: deque[ToolConfirmationRequired] = deque()
        self.editing = False

    def __bool__(self) -> bool:
        return bool(self._waiting)

    @property
    def current(self) -> ToolConfirmationRequired:
        """The confirmation the next line answers."""
        return self._waiting[0]

    def add(self, event: ToolConfirmationRequired) -> bool:
        """Queue ``event``; True when it is the one to ask now."""
        self._waiting.append(event)
        return len(self._waiting) == 1

    def question(self) -> str:
        """The question for the current confirmation."""
        if self.editing:
            return "  change one argument (name=value) or give them all (a JSON object): "
        return "  [y]es / [n]o / [a]lways / [e]dit: "

    def answer(self, line: str) -> Submit | Retry | Edit:
        """What the user's ``line`` says about the current confirmation."""
        event = self.current
        text = line.strip()
        if self.editing:
            return self._edited(event, text)
        answer = text.lower()
        if answer in ("y", "yes"):
            return Submit(event.tool_use_id, approved=True)
        if answer in ("n", "no"):
            return Submit(event.tool_use_id, approved=False, reason="denied by the user")
        if answer in ("a", "always"):
            return Submit(event.tool_use_id, approved=True, always=True)
        if answer in ("e", "edit"):
            self.editing = True
            return Edit(json.dumps(dict(event.input), ensure_ascii=False))
        return Retry("please answer y (yes), n (no), a (always) or e (edit)")

    @staticmethod
    def _edited(event: ToolConfirmationRequired, text: str) -> Submit | Retry:
        if text.startswith("{"):
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError as exc:
                return Retry(f"error: not JSON: {exc}")
            if not isinstance(arguments, dict):
                return Retry(f"error: the arguments must be a JSON object, got {text}")
            return Submit(event.tool_use_id, approved=True, modified_arguments=arguments)
        name, equals, raw = text.partition("=")
        name = name.strip()
        if not equals or not name:
            return Retry('error: type name=value (e.g. text="oat milk") or a JSON object')
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.strip()  # a bare word: the string itself
        # The tool validates the result; a wrong name or type is refused there.
        return Submit(
            event.tool_use_id, approved=True, modified_arguments={**event.input, name: value}
        )

    def advance(self) -> ToolConfirmationRequired | None:
        """The current one is answered; the next one to ask, if any."""
        self._waiting.popleft()
        self.editing = False
        return self._waiting[0] if self._waiting else None

    def ended(self, tool_use_id: str) -> tuple[ToolConfirmationRequired | None, bool]:
        """A confirmation ended without our answer: the removed one, and whether it was current."""
        for i, waiting in enumerate(self._waiting):
            if waiting.tool_use_id == tool_use_id:
                if i == 0:
                    self.advance()
                else:
                    del self._waiting[i]
                return waiting, i == 0
        return None, False

    def clear(self) -> None:
        """Forget every pending confirmation (the execution is over)."""
        self._waiting.clear()
        self.editing = False
