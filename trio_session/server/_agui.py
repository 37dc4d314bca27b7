"""AG-UI over the gateway's sessions: the run input, and session events as AG-UI events.

Pure: `parse_run_input` checks a decoded ``RunAgentInput`` body and
`AGUITranslator` turns a session's `StreamEvent`s into AG-UI event objects
(plain dicts, camelCase keys), in the order the protocol requires.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._events import StreamEvent
from .._messages import JsonBlock, Message, TextBlock
from ._protocol import HTTPError, check_id, public_state

__all__ = ["AGUITranslator", "RunInput", "parse_run_input"]

RUN_ERROR_CODES: Final = {
    "aborted": "aborted",
    "error": "error",
    "failed": "failed",
    "cancelled": "cancelled",
}


@attrs.frozen
class RunInput:
    """What the gateway takes from a ``RunAgentInput``."""

    thread_id: str
    run_id: str
    messages: tuple[Message, ...]
    state: Mapping[str, Any] | None


def _bad(message: str) -> HTTPError:
    return HTTPError(400, f"RunAgentInput: {message}")


def _user_text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(f"{where}.content[{i}] must be a text part")
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"{where}.content[{i}].text must be a string")
            parts.append(text)
        return "".join(parts)
    raise _bad(f"{where}.content must be a string or a list of text parts")


def parse_run_input(data: Mapping[str, Any]) -> RunInput:
    """Check a decoded ``RunAgentInput``; keep its thread, run, user messages and state.

    Only ``user`` messages are taken from the history a client sends: the
    session's own timeline holds the rest, under the same ids.

    Raises:
        HTTPError: 400 naming the bad field.

    Example:
        >>> run = parse_run_input({"threadId": "t", "runId": "r",
        ...     "messages": [{"id": "m1", "role": "user", "content": "hi"}]})
        >>> run.messages[0].id, run.messages[0].text
        ('m1', 'hi')
    """
    thread_id = check_id(data.get("threadId"), "threadId")
    run_id = check_id(data.get("runId"), "runId")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list):
        raise _bad("messages must be a list")
    messages = []
    for i, item in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object")
        if not isinstance(item.get("role"), str):
            raise _bad(f"{where}.role must be a string")
        message_id = check_id(item.get("id"), f"{where}.id")
        if item["role"] == "user":
            text = _user_text(item.get("content"), where)
            messages.append(Message("user", text, id=message_id))
    state = data.get("state")
    if state is not None and not isinstance(state, dict):
        raise _bad("state must be an object")
    return RunInput(thread_id, run_id, tuple(messages), state)


def _result_text(content: tuple[Any, ...]) -> str:
    parts = []
    for block in content:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, JsonBlock):
            parts.append(json.dumps(block.data, ensure_ascii=False))
    return "".join(parts)


class AGUITranslator:
    """Session events in, AG-UI events out, for one run.

    Example:
        >>> t = AGUITranslator("thread", "run")
        >>> [e["type"] for e in t.start({})]
        ['RUN_STARTED', 'STATE_SNAPSHOT']
    """

    def __init__(self, thread_id: str, run_id: str) -> None:
        self._thread_id = thread_id
        self._run_id = run_id
        self._message_id: str | None = None
        self._text_id: str | None = None
        self._text_blocks: set[int] = set()
        self._texts = 0
        self._args_sent: set[str] = set()
        self._calls: dict[str, str] = {}
        self.finished = False

    def start(self, state: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The opening events: ``RUN_STARTED`` and the state."""
        return [
            {"type": "RUN_STARTED", "threadId": self._thread_id, "runId": self._run_id},
            {"type": "STATE_SNAPSHOT", "snapshot": public_state(state)},
        ]

    def _close_text(self) -> list[dict[str, Any]]:
        if self._text_id is None:
            return []
        text_id, self._text_id = self._text_id, None
        return [{"type": "TEXT_MESSAGE_END", "messageId": text_id}]

    def feed(self, event: StreamEvent) -> list[dict[str, Any]]:
        """The AG-UI events for one session event (often none)."""
        if self.finished:
            return []
        kind = event.type
        if event.spawn_path and kind != "tool_confirmation_required":
            return []
        fields: Any = event
        if kind == "message_start":
            # The engine may fix the assistant message's id when the tick starts.
            self._message_id = getattr(fields, "message_id", None) or uuid.uuid4().hex
            self._texts = 0
            self._text_blocks = set()
            return []
        if kind == "content_start":
            if fields.block_type != "text":
                return []
            self._text_blocks.add(fields.block_index)
            out = self._close_text()
            base = self._message_id or uuid.uuid4().hex
            self._text_id = base if self._texts == 0 else f"{base}-{self._texts}"
            self._texts += 1
            out.append(
                {"type": "TEXT_MESSAGE_START", "messageId": self._text_id, "role": "assistant"}
            )
            return out
        if kind == "content_delta":
            if fields.block_index not in self._text_blocks or self._text_id is None:
                return []
            return [
                {"type": "TEXT_MESSAGE_CONTENT", "messageId": self._text_id, "delta": fields.delta}
            ]
        if kind == "content_end":
            if fields.block_index in self._text_blocks:
                return self._close_text()
            return []
        if kind == "tool_call_start":
            out = self._close_text()
            self._calls[fields.tool_use_id] = fields.name
            start: dict[str, Any] = {
                "type": "TOOL_CALL_START",
                "toolCallId": fields.tool_use_id,
                "toolCallName": fields.name,
            }
            if self._message_id is not None:
                start["parentMessageId"] = self._message_id
            out.append(start)
            return out
        if kind == "tool_call_delta":
            if fields.tool_use_id not in self._calls:
                return []
            self._args_sent.add(fields.tool_use_id)
            return [
                {"type": "TOOL_CALL_ARGS", "toolCallId": fields.tool_use_id, "delta": fields.delta}
            ]
        if kind == "tool_call":
            out = []
            if fields.tool_use_id not in self._args_sent:
                out.append(
                    {
                        "type": "TOOL_CALL_ARGS",
                        "toolCallId": fields.tool_use_id,
                        "delta": json.dumps(dict(fields.input), ensure_ascii=False),
                    }
                )
            out.append({"type": "TOOL_CALL_END", "toolCallId": fields.tool_use_id})
            return out
        if kind == "message_end":
            return self._close_text()
        if kind == "tool_confirmation_required":
            return [
                {
                    "type": "CUSTOM",
                    "name": "tool_confirmation_required",
                    "value": {
                        "tool_use_id": fields.tool_use_id,
                        "name": fields.name,
                        "input": dict(fields.input),
                        "message": fields.message,
                    },
                }
            ]
        if kind == "tool_result":
            if fields.tool_use_id not in self._calls:
                return []
            return [
                {
                    "type": "TOOL_CALL_RESULT",
                    "messageId": f"{fields.tool_use_id}-result",
                    "toolCallId": fields.tool_use_id,
                    "content": _result_text(fields.content),
                    "role": "tool",
                }
            ]
        if kind == "execution_end":
            self.finished = True
            out = self._close_text()
            if fields.status == "completed":
                out.append(
                    {"type": "RUN_FINISHED", "threadId": self._thread_id, "runId": self._run_id}
                )
            else:
                message = fields.error or fields.reason or fields.status
                out.append(
                    {
                        "type": "RUN_ERROR",
                        "message": message,
                        "code": RUN_ERROR_CODES.get(fields.status, "failed"),
                    }
                )
            return out
        return []
