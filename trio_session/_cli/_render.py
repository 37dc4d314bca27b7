"""The chat's event renderer: events in, pieces of text out, no I/O.

`EventRenderer` turns each event of an execution into `Piece` values: the
streamed answer as it arrives, tool calls as ``[tool name(args)] -> result``,
the end of the execution as a status line. The chat writes the pieces; the
renderer only remembers what the text needs (the calls seen so far, and which
stream owns the line being written), so it is tested without a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from .._events import (
    ContentDelta,
    ExecutionEnd,
    MessageEvent,
    MessageQueued,
    ModelRequestEvent,
    ReasoningDelta,
    StreamEvent,
    ToolCall,
    ToolResultEvent,
)
from .._messages import ContentBlock, ImageBlock, JsonBlock, ReasoningBlock, TextBlock
from .._serde import to_json

__all__ = [
    "BOLD",
    "CYAN",
    "DIM",
    "END_LINE",
    "RED",
    "USER_ABORT",
    "YELLOW",
    "EventRenderer",
    "Piece",
    "format_call",
    "format_content",
    "summarize_request",
]

USER_ABORT: Final = "interrupted by user"
"""The abort reason of an execution stopped with Ctrl-C."""

DIM: Final = "2"
BOLD: Final = "1"
RED: Final = "31"
YELLOW: Final = "33"
CYAN: Final = "36"

_RESULT_LIMIT: Final = 400
_CALL_LIMIT: Final = 200


@attrs.frozen
class Piece:
    """A piece of the chat's output.

    Args:
        text: What to write.
        style: An ANSI SGR code (`DIM`, `RED`...) for colored output, or None.
        line: Write it on a line of its own: end the current line first (if
            anything is on it), and end this one after a non-empty ``text``.
            Otherwise ``text`` continues the current line.
        failure: It reports a failed execution: written to stderr when no one
            is at a terminal, so a script sees answers on stdout, failures on stderr.
        answer: A piece of the agent's answer (markdown, when the terminal renders it).
    """

    text: str
    style: str | None = None
    line: bool = False
    failure: bool = False
    answer: bool = False


END_LINE: Final = Piece("", line=True)
"""Ends the current line, if anything is on it."""


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """Show a tool call compactly, as ``name(key=<JSON value>, ...)``.

    Example:
        >>> format_call("calculator", {"expression": "6 * 7"})
        'calculator(expression="6 * 7")'
    """
    shown = ", ".join(
        f"{key}={json.dumps(value, ensure_ascii=False, default=repr)}"
        for key, value in arguments.items()
    )
    return _shorten(f"{name}({shown})", _CALL_LIMIT)


def format_content(blocks: Sequence[ContentBlock]) -> str:
    """A tool result's content on one line, shortened."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, TextBlock | ReasoningBlock):
            parts.append(block.text)
        elif isinstance(block, JsonBlock):
            parts.append(json.dumps(block.data, ensure_ascii=False, default=repr))
        elif isinstance(block, ImageBlock):
            parts.append(f"[image {block.media_type or ''}]".replace(" ]", "]"))
        else:
            parts.append(f"[{block.type}]")
    return _shorten(" ".join(" ".join(parts).split()), _RESULT_LIMIT)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize_request(event: ModelRequestEvent) -> str:
    """A `ModelRequestEvent` as one short JSON line: its lists counted, not copied.

    Example:
        >>> import json
        >>> from trio_session import ModelRequest, ModelRequestEvent, user
        >>> request = ModelRequest("be brief", (user("hi"), user("again")))
        >>> line = summarize_request(ModelRequestEvent(seq=3, execution_id="e", request=request))
        >>> json.loads(line)["request"]["messages"]
        '[2 items]'
    """
    data = json.loads(to_json(event))
    request = data.get("request")
    if isinstance(request, dict):
        data["request"] = {
            key: f"[{len(value)} items]" if isinstance(value, list | dict) else value
            for key, value in request.items()
            if value not in (None, {}) or key == "tools"
        }
    return json.dumps(
        {key: value for key, value in data.items() if value not in (None, (), [])},
        ensure_ascii=False,
    )


class EventRenderer:
    """What the chat shows for each event of an execution.

    Args:
        interactive: A person reads it: reasoning, child agents' text and the
            usage line are shown too.

    Attributes:
        show_events: Render every event as one JSON line instead.
        calls: The tool calls seen in this execution, by ``tool_use_id``.

    Example:
        >>> from trio_session import ContentDelta
        >>> renderer = EventRenderer(interactive=False)
        >>> delta = ContentDelta(seq=1, execution_id="e", block_index=0, delta="Hi")
        >>> pieces = renderer.render(delta)
        >>> [(piece.text, piece.line) for piece in pieces]  # a new line, then the text
        [('', True), ('Hi', False)]
    """

    def __init__(self, *, interactive: bool, show_events: bool = False) -> None:
        self.interactive = interactive
        self.show_events = show_events
        self.calls: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._owner: tuple[tuple[str, ...], bool] | None = None

    def start(self) -> None:
        """Forget the previous execution."""
        self.calls.clear()
        self._owner = None

    def line_ended(self) -> None:
        """The current line was ended: the next delta starts a line of its own."""
        self._owner = None

    def render(self, event: StreamEvent) -> list[Piece]:
        """The pieces to write for ``event``."""
        if isinstance(event, ToolCall):
            self.calls[event.tool_use_id] = (event.name, event.input)
        if self.show_events:
            # The output stays JSON lines; a person is spared each request's whole transcript.
            if self.interactive and isinstance(event, ModelRequestEvent):
                return [Piece(summarize_request(event), line=True)]
            return [Piece(to_json(event), line=True)]
        pieces = self._render(event)
        if isinstance(event, ExecutionEnd) and not event.spawn_path:
            pieces += self._finish(event)
        return pieces

    def _render(self, event: StreamEvent) -> list[Piece]:
        path = event.spawn_path
        if isinstance(event, ContentDelta):
            if not path or self.interactive:
                return self._delta(path, event.delta, reasoning=False)
        elif isinstance(event, ReasoningDelta):
            if self.interactive:
                return self._delta(path, event.delta, reasoning=True)
        elif isinstance(event, MessageEvent):
            return [END_LINE]
        elif isinstance(event, ToolResultEvent):
            name, arguments = self.calls.get(event.tool_use_id, (event.name, {}))
            result = format_content(event.content)
            head = f"{'  ' * len(path)}[tool {format_call(name, arguments)}] -> "
            if event.is_error:
                return [END_LINE, Piece(head), Piece(f"error: {result}", RED), Piece("\n")]
            return [Piece(head + result, line=True)]
        elif isinstance(event, MessageQueued) and not path:
            return [Piece(f"[queued] {event.message.text}", CYAN, line=True)]
        return []

    def _delta(self, path: tuple[str, ...], text: str, *, reasoning: bool) -> list[Piece]:
        key = (path, reasoning)
        prefix = "  " * len(path) + "| " if path else ""
        pieces: list[Piece] = []
        if self._owner != key:
            pieces.append(END_LINE)
            self._owner = key
            if prefix:
                pieces.append(Piece(prefix, DIM))
        if prefix:
            text = text.replace("\n", "\n" + prefix)
        answer = not (reasoning or path)
        pieces.append(Piece(text, None if answer else DIM, answer=answer))
        return pieces

    def _finish(self, event: ExecutionEnd) -> list[Piece]:
        if event.status == "completed":
            if not self.interactive:
                return [END_LINE]
            usage = event.usage
            ticks = f"{usage.ticks} tick{'s' if usage.ticks != 1 else ''}"
            tokens = (
                f"{usage.total_tokens} tokens: {usage.input_tokens} in, {usage.output_tokens} out"
            )
            return [Piece(f"({ticks}, {tokens})", DIM, line=True)]
        if event.status == "aborted":
            reason = event.reason
            text = "[aborted]" if reason == USER_ABORT else f"[aborted: {reason}]"
            return [Piece(text, RED, line=True, failure=True)]
        if event.status == "cancelled":
            return [Piece(f"[cancelled: {event.reason}]", RED, line=True, failure=True)]
        return [Piece(f"error: {event.error}", RED, line=True, failure=True)]
