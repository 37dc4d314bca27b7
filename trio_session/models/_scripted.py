"""ScriptedModel: a deterministic, offline model for tests and demos."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import trio

from .._errors import ModelError
from .._messages import next_id
from .._usage import Usage
from ._base import (
    ModelChunk,
    ModelRequest,
    Pacer,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
    estimated_usage,
    json_text,
)

__all__ = ["Reply", "ScriptedModel", "ScriptItem"]

_TOOL_USE = StopChunk("tool_use")
_END_TURN = StopChunk("end_turn")


def _tool_calls(value: Iterable[Any]) -> tuple[tuple[str, dict[str, Any], str], ...]:
    calls = []
    for i, call in enumerate(value):
        if not isinstance(call, (tuple, list)) or len(call) not in (2, 3):
            raise TypeError(
                f"Reply.tool_calls[{i}] must be (name, input) or (name, input, id), got {call!r}"
            )
        name, arguments = call[0], call[1]
        call_id = call[2] if len(call) == 3 else f"call_{next_id()}"
        # type() first: a dict (the usual input) skips the Mapping ABC's isinstance.
        if not isinstance(name, str) or (
            type(arguments) is not dict and not isinstance(arguments, Mapping)
        ):
            raise TypeError(f"Reply.tool_calls[{i}] must be (str, mapping), got {call!r}")
        if not isinstance(call_id, str):
            raise TypeError(f"Reply.tool_calls[{i}] id must be a str, got {call_id!r}")
        calls.append((name, dict(arguments), call_id))
    return tuple(calls)


@attrs.frozen
class Reply:
    """One scripted model reply.

    Args:
        text: The answer's text.
        tool_calls: Tool calls as ``(name, input)`` or ``(name, input, tool_use_id)``;
            ids are generated when not given.
        usage: Token counts; estimated from the text when None.
        stop_reason: Defaults to ``"tool_use"`` with tool calls, else ``"end_turn"``.
        reasoning: Reasoning text streamed before the answer.
        error: An exception raised after the text was streamed (a mid-stream failure).

    Example:
        >>> reply = Reply("Let me check.", tool_calls=[("get_weather", {"city": "Paris"}, "c1")])
        >>> reply.tool_calls
        (('get_weather', {'city': 'Paris'}, 'c1'),)
    """

    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any], str], ...] = attrs.field(
        default=(), converter=_tool_calls
    )
    usage: Usage | None = None
    stop_reason: str | None = None
    reasoning: str = ""
    error: BaseException | None = None


ScriptItem: TypeAlias = str | Reply | BaseException | Callable[[ModelRequest], Any]


class ScriptedModel:
    """A model that plays back a script of replies, one per model call.

    Each script item is a reply: a ``str``, a `Reply`, an exception to raise,
    or a callable ``(ModelRequest) -> reply`` (sync or async). Replies stream
    in chunks of ``chunk_size`` characters (the whole text at once when None)
    with ``trio.sleep(delay)`` between chunks, so cancellation can land
    mid-stream. Every request is recorded in ``requests``.

    Args:
        script: The replies, in order.
        chunk_size: Characters per text chunk; None streams each text whole.
        delay: Seconds to sleep between chunks; with 0, cancellation is checked at
            every chunk and the scheduler visited every 64 chunks.
        name: The model name reported in ``message_start``.

    Raises:
        ModelError: (from ``stream``) with code ``"script_exhausted"`` once the
            script has no reply left, naming how many it had.

    Example:
        >>> model = ScriptedModel(["Hello!", Reply(tool_calls=[("add", {"a": 1, "b": 2})])])
        >>> len(model.script)
        2
    """

    def __init__(
        self,
        script: Sequence[ScriptItem] | Iterable[ScriptItem] = (),
        *,
        chunk_size: int | None = None,
        delay: float = 0.0,
        name: str = "scripted",
    ) -> None:
        if isinstance(script, str | Reply):
            script = [script]
        self.script: list[ScriptItem] = list(script)
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        if not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"delay must be a non-negative number, got {delay!r}")
        self.chunk_size = chunk_size
        self.delay = float(delay)
        self.name = name
        self.requests: list[ModelRequest] = []
        self._position = 0

    def __repr__(self) -> str:
        return f"ScriptedModel({len(self.script)} replies, {self._position} used)"

    @property
    def remaining(self) -> int:
        """How many scripted replies are left."""
        return len(self.script) - self._position

    def add(self, *items: ScriptItem) -> None:
        """Append replies to the script."""
        self.script.extend(items)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the next scripted reply for ``request``."""
        self.requests.append(request)
        if self._position >= len(self.script):
            await trio.lowlevel.checkpoint()
            raise ModelError(
                f"ScriptedModel ran out of replies: its script had {len(self.script)} and "
                f"call {self._position + 1} asked for another",
                code="script_exhausted",
            )
        item = self.script[self._position]
        self._position += 1
        reply = await _resolve(item, request)
        # The chunks are yielded here, not through a second generator: one frame a chunk.
        pause = Pacer(self.delay)
        if reply.reasoning:
            for piece in self._pieces(reply.reasoning):
                await pause()
                yield ReasoningChunk(piece)
        text = reply.text
        if text:
            for piece in self._pieces(text):
                await pause()
                yield TextChunk(piece)
        if reply.error is not None:
            await pause()
            raise reply.error
        # The arguments' JSON counts as output text, as the answer's does.
        output_chars = len(text)
        for name, arguments, call_id in reply.tool_calls:
            await pause()
            yield ToolCallStartChunk(call_id, name)
            encoded = json_text(arguments)
            output_chars += len(encoded)
            for piece in self._pieces(encoded):
                await pause()
                yield ToolCallDeltaChunk(call_id, piece)
            yield ToolCallChunk(call_id, name, arguments)
        await pause()
        if reply.usage is None:
            yield estimated_usage(request, output_chars)
        else:
            usage = reply.usage
            yield UsageChunk(
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
            )
        if reply.stop_reason:
            yield StopChunk(reply.stop_reason)
        else:
            # Frozen, so one of each default serves every reply.
            yield _TOOL_USE if reply.tool_calls else _END_TURN

    def _pieces(self, text: str) -> list[str]:
        if not text:
            return []
        if self.chunk_size is None:
            return [text]
        size = self.chunk_size
        return [text[i : i + size] for i in range(0, len(text), size)]


async def _resolve(item: ScriptItem, request: ModelRequest) -> Reply:
    for _ in range(8):  # a callable may return another callable; don't loop forever
        if isinstance(item, Reply):
            return item
        if isinstance(item, str):
            return Reply(item)
        if isinstance(item, BaseException):
            # A fresh traceback each time the same instance is scripted.
            raise item.with_traceback(None)
        if callable(item):
            result = item(request)
            # A Reply (the usual answer) is not awaitable: no need to ask.
            if type(result) is not Reply and inspect.isawaitable(result):
                result = await result
            item = result
            continue
        break
    raise TypeError(
        "a ScriptedModel script item must be a str, a Reply, an exception or a callable "
        f"returning one, got {type(item).__name__}"
    )
