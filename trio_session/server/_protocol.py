"""The gateway's protocol logic, without I/O: errors, request validation, SSE frames.

Everything here is pure (no trio, no sockets), so it is tested directly and
with hypothesis; `_gateway` feeds it bytes and query strings and writes what
it returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._events import EVENT_CLASSES
from .._messages import Message
from .._serde import converter

__all__ = [
    "IDEMPOTENCY_LIMIT",
    "KEEPALIVE",
    "MAX_BODY_DEPTH",
    "RESERVED_STATE_KEY",
    "HTTPError",
    "IdempotencyLog",
    "ToolAnswer",
    "check_id",
    "parse_abort",
    "parse_cursor",
    "parse_interrupt",
    "parse_json",
    "parse_message",
    "parse_send",
    "parse_session_id",
    "parse_tool_answer",
    "parse_types",
    "public_state",
    "sse_comment",
    "sse_frame",
]

CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "session_closed",
    413: "payload_too_large",
    422: "invalid_tool_arguments",
    500: "internal_error",
    503: "unavailable",
}

MAX_BODY_DEPTH: Final = 64
"""How deeply a request body's JSON may nest; deeper bodies are a 400."""

MAX_ID_LENGTH: Final = 256
"""The longest session id, tool use id or idempotency key accepted."""

IDEMPOTENCY_LIMIT: Final = 1000
"""How many idempotency keys each session remembers (the most recent ones)."""

RESERVED_STATE_KEY: Final = "_trio_session_gateway"
"""The key of ``session.state`` where the gateway keeps its per-session data.

It is persisted with the session, so idempotency keys survive a restart; it
is never shown to clients and AG-UI state replacements keep it.
"""

KEEPALIVE: Final = b": keepalive\n\n"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CURSOR = re.compile(r"[0-9]{1,18}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class HTTPError(Exception):
    """A request the gateway refuses, with its status and error body.

    Example:
        >>> HTTPError(404, "no session 'x'").body()
        {'error': {'code': 'not_found', 'message': "no session 'x'"}}
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = CODES[status]
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def _depth(value: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_BODY_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes, *, required: bool = True) -> dict[str, Any]:
    """Decode a request body that must be a JSON object.

    Args:
        body: The raw body.
        required: When False an empty body is allowed and gives ``{}``.

    Raises:
        HTTPError: 400 for an empty required body, bad JSON, a body nested
            deeper than `MAX_BODY_DEPTH`, or one that is not an object.

    Example:
        >>> parse_json(b'{"a": 1}')
        {'a': 1}
        >>> parse_json(b"", required=False)
        {}
    """
    if not body.strip():
        if required:
            raise _bad("the request needs a JSON object body")
        return {}
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise _bad(f"the body is nested deeper than {MAX_BODY_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad(f"the body must be a JSON object, got {_kind(data)}")
    if _depth(data) > MAX_BODY_DEPTH:
        raise _bad(f"the body is nested deeper than {MAX_BODY_DEPTH} levels")
    return data


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fields(data: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise _bad(f"{what}: unknown field(s) {', '.join(map(repr, extra))}")


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name!r} must be a string, got {_kind(value)}")
    return value


def check_id(value: object, what: str) -> str:
    """A session id, tool use id or idempotency key: 1 to 256 printable characters.

    Raises:
        HTTPError: 400 naming ``what`` and the problem.

    Example:
        >>> check_id("chat-1", "session_id")
        'chat-1'
    """
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string, got {_kind(value)}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise _bad(f"{what} must have 1 to {MAX_ID_LENGTH} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise _bad(f"{what} must not contain control characters")
    return value


def valid_id(value: str) -> bool:
    """Whether a path segment can name anything (else it is unknown: 404)."""
    return 0 < len(value) <= MAX_ID_LENGTH and not _CONTROL.search(value)


def parse_session_id(data: Mapping[str, Any]) -> str | None:
    """The body of ``POST /sessions``: ``{"session_id"?: str}``."""
    _fields(data, ("session_id",), "POST /sessions")
    value = data.get("session_id")
    return None if value is None else check_id(value, "session_id")


def parse_message(value: object, what: str = "message") -> Message:
    """A message field: a str (a user message) or a user `Message` as JSON.

    Only ``user`` messages are accepted from clients: an ``assistant`` or
    ``tool`` message sent over HTTP could break the timeline's integrity.

    Raises:
        HTTPError: 400 naming the bad field.

    Example:
        >>> parse_message("hi").text
        'hi'
    """
    if isinstance(value, str):
        if not value.strip():
            raise _bad(f"{what!r} must not be empty")
        return Message("user", value)
    if not isinstance(value, dict):
        raise _bad(f"{what!r} must be a string or a message object, got {_kind(value)}")
    try:
        message = converter.structure(value, Message)
    # cattrs reports through its own groups, attrs validators through TypeError /
    # ValueError: any of them means the client sent a bad message.
    except Exception as exc:
        raise _bad(f"{what!r} is not a valid message: {_describe(exc)}") from None
    if message.role != "user":
        raise _bad(f"{what!r} must be a user message, got role {message.role!r}")
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc) or type(exc).__name__


def parse_send(data: Mapping[str, Any]) -> tuple[Message, str | None]:
    """``POST /sessions/{id}/messages``: ``{"message", "idempotency_key"?}``."""
    _fields(data, ("message", "idempotency_key"), "POST messages")
    if "message" not in data:
        raise _bad("'message' is required")
    message = parse_message(data["message"])
    key = data.get("idempotency_key")
    return message, None if key is None else check_id(key, "idempotency_key")


@attrs.frozen
class ToolAnswer:
    """A parsed ``tool-results`` body, the arguments of ``submit_tool_result``."""

    approved: bool
    modified_arguments: dict[str, Any] | None = None
    reason: str | None = None
    always: bool = False


def parse_tool_answer(data: Mapping[str, Any]) -> ToolAnswer:
    """``{"approved", "modified_arguments"?, "reason"?, "always"?}``.

    Raises:
        HTTPError: 400 for a missing or badly typed field; 422 for
            ``modified_arguments`` that is not an object.

    Example:
        >>> parse_tool_answer({"approved": False, "reason": "no"})
        ToolAnswer(approved=False, modified_arguments=None, reason='no', always=False)
    """
    _fields(data, ("approved", "modified_arguments", "reason", "always"), "tool result")
    approved = data.get("approved")
    if not isinstance(approved, bool):
        raise _bad(f"'approved' must be true or false, got {_kind(approved)}")
    always = data.get("always", False)
    if not isinstance(always, bool):
        raise _bad(f"'always' must be true or false, got {_kind(always)}")
    reason = _optional_str(data, "reason")
    arguments = data.get("modified_arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise HTTPError(422, f"'modified_arguments' must be an object, got {_kind(arguments)}")
    return ToolAnswer(approved, arguments, reason, always)


def parse_abort(data: Mapping[str, Any]) -> str | None:
    """``POST abort``: ``{"reason"?: str}`` (or no body)."""
    _fields(data, ("reason",), "POST abort")
    return _optional_str(data, "reason")


def parse_interrupt(data: Mapping[str, Any]) -> tuple[Message | None, str | None]:
    """``POST interrupt``: ``{"message"?, "reason"?}`` (or no body)."""
    _fields(data, ("message", "reason"), "POST interrupt")
    message = data.get("message")
    return (
        None if message is None else parse_message(message),
        _optional_str(data, "reason"),
    )


def parse_cursor(text: str, what: str) -> int:
    """A ``seq`` cursor (``Last-Event-ID``, ``?after_seq=``): a non-negative integer.

    Raises:
        HTTPError: 400, also for an empty value.

    Example:
        >>> parse_cursor("42", "after_seq")
        42
    """
    value = text.strip()
    if not _CURSOR.fullmatch(value):
        raise _bad(f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(value)


def parse_types(text: str) -> frozenset[str]:
    """``?types=a,b``: known event type names, comma-separated.

    Raises:
        HTTPError: 400 for an unknown or empty list.

    Example:
        >>> sorted(parse_types("content_delta, execution_end"))
        ['content_delta', 'execution_end']
    """
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise _bad("types must name at least one event type")
    unknown = sorted(names - set(EVENT_CLASSES))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise _bad(f"types names unknown event type(s) {shown}")
    return names


def public_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The session state clients see: without the gateway's reserved key."""
    return {k: v for k, v in state.items() if k != RESERVED_STATE_KEY}


class IdempotencyLog:
    """The answers to the last `IDEMPOTENCY_LIMIT` idempotency keys of a session.

    It lives in ``session.state[RESERVED_STATE_KEY]["idempotency"]`` (a JSON
    object, oldest key first), so it is saved with the session by the same
    snapshot as the message it answered.

    Example:
        >>> state = {}
        >>> log = IdempotencyLog(state)
        >>> log.put("k1", {"execution_id": "e1", "after_seq": 0})
        >>> IdempotencyLog(state).get("k1")
        {'execution_id': 'e1', 'after_seq': 0}
    """

    def __init__(self, state: dict[str, Any], limit: int = IDEMPOTENCY_LIMIT) -> None:
        self._state = state
        self._limit = limit

    def _entries(self) -> dict[str, Any]:
        reserved = self._state.get(RESERVED_STATE_KEY)
        if not isinstance(reserved, dict):
            reserved = self._state[RESERVED_STATE_KEY] = {}
        entries = reserved.get("idempotency")
        if not isinstance(entries, dict):
            entries = reserved["idempotency"] = {}
        return entries

    def get(self, key: str) -> dict[str, Any] | None:
        """The first answer given for ``key``, if it is still remembered."""
        answer = self._entries().get(key)
        return dict(answer) if isinstance(answer, dict) else None

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Remember ``answer`` for ``key``; forget the oldest keys past the limit."""
        entries = self._entries()
        entries[key] = dict(answer)
        excess = len(entries) - self._limit
        if excess > 0:
            for old in list(entries)[:excess]:
                del entries[old]

    def __len__(self) -> int:
        return len(self._entries())


def sse_frame(data: str, *, id: int | None = None, event: str | None = None) -> bytes:
    """One Server-Sent Events frame; multi-line data becomes several ``data:`` lines.

    Example:
        >>> sse_frame('{"a": 1}', id=3, event="tick_start")
        b'id: 3\\nevent: tick_start\\ndata: {"a": 1}\\n\\n'
    """
    if event is not None and _LINE_BREAK.search(event):
        raise ValueError("an SSE event name cannot contain a line break")
    lines = []
    if id is not None:
        lines.append(f"id: {int(id)}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients; keeps proxies from timing out)."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"
