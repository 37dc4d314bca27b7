"""The model-stream assembler: model chunks in, events and the tick's assistant message out.

Sans-I/O (as hypercorn's protocol classes): no trio inside. It is handed the
`Publisher` of the execution's buffer (publishing is synchronous), and fed
chunks one by one; `finish` gives the assembled message. SPEC §2's within-tick order of
the model events (``message_start`` < content / tool-call events <
``message_end`` < ``message``) is its contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from .._buffer import Publisher, emitter
from .._errors import ModelError
from .._events import (
    ContentDelta,
    ContentEnd,
    ContentStart,
    ErrorEvent,
    MessageEnd,
    MessageEvent,
    MessageStart,
    ReasoningDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
)
from .._messages import (
    ContentBlock,
    Message,
    ReasoningBlock,
    TextBlock,
    ToolUseBlock,
    built_message,
    built_tool_use,
    new_id,
    next_id,
)
from .._usage import Usage, built_usage
from ..models._base import (
    INVALID_JSON_KEY,
    ErrorChunk,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
)
from ..models._sdk import parse_arguments

__all__ = ["Assembled", "Assembler"]

_message_start = emitter(MessageStart)
_content_start = emitter(ContentStart)
_content_delta = emitter(ContentDelta)
_content_end = emitter(ContentEnd)
_reasoning_delta = emitter(ReasoningDelta)
_tool_call_start = emitter(ToolCallStart)
_tool_call_delta = emitter(ToolCallDelta)
_tool_call = emitter(ToolCall)
_error = emitter(ErrorEvent)
_message_end = emitter(MessageEnd)
_message = emitter(MessageEvent)


class Assembled:
    """The tick's complete assistant message and what came with it.

    A plain slotted class (built once a tick, by `Assembler.finish` only): an attrs
    frozen class's ``__init__`` costs several times more.

    Attributes:
        message: The assistant message.
        calls: Its tool calls, in block order.
        usage: The tick's token counts.
        stop_reason: Why the model stopped.
        rejected: Calls that must not run, by tool_use_id: the error result the model is told.
    """

    __slots__ = ("calls", "message", "rejected", "stop_reason", "usage")

    def __init__(
        self,
        message: Message,
        calls: tuple[ToolUseBlock, ...],
        usage: Usage,
        stop_reason: str,
        rejected: dict[str, str],
    ) -> None:
        self.message = message
        self.calls = calls
        self.usage = usage
        self.stop_reason = stop_reason
        self.rejected = rejected

    def __repr__(self) -> str:
        return (
            f"Assembled(message={self.message!r}, calls={self.calls!r}, usage={self.usage!r}, "
            f"stop_reason={self.stop_reason!r}, rejected={self.rejected!r})"
        )


class _Call:
    """A tool call the model started and has not completed yet."""

    __slots__ = ("index", "name", "parts")

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.parts: list[str] = []


class Assembler:
    """Turns one model stream into events and an assistant message.

    Args:
        publisher: Where its events go.
        model_name: The model's name, for ``message_start`` and error messages.

    Example:
        >>> from trio_session._buffer import EventBuffer, publisher_of
        >>> buffer = EventBuffer()
        >>> assembler = Assembler(publisher_of(buffer), "m")
        >>> assembler.feed(TextChunk("hi"))
        >>> assembler.finish().message.text
        'hi'
        >>> [event.type for event in buffer.history]
        ['message_start', 'content_start', 'content_delta', 'content_end', 'message_end', 'message']
    """

    __slots__ = (
        "_blocks",
        "_cache_read",
        "_cache_write",
        "_input_tokens",
        "_message_id",
        "_model_name",
        "_open_calls",
        "_open_index",
        "_open_kind",
        "_output_tokens",
        "_parts",
        "_publisher",
        "_rejected",
        "_route",
        "_seen",
        "_stop_reason",
        "_usage_reported",
    )

    def __init__(self, publisher: Publisher, model_name: str | None) -> None:
        self._publisher = publisher
        self._model_name = model_name
        self._blocks: list[ContentBlock | None] = []
        self._open_kind: str | None = None
        self._open_index = -1
        self._parts: list[str] = []
        # A model may reuse a tool_use_id within one tick (every provider rejects that on
        # the next request): the repeat gets a fresh id, and _route sends the model's id to
        # the call it last opened under it.
        self._open_calls: dict[str, _Call] = {}
        self._route: dict[str, str] = {}
        self._seen: set[str] = set()
        self._rejected: dict[str, str] = {}
        self._input_tokens = self._output_tokens = self._cache_read = self._cache_write = 0
        self._usage_reported = False
        self._stop_reason: str | None = None
        # Fixed now, so a client streaming the message knows the id it will be committed as.
        self._message_id = next_id()
        _message_start(publisher, model=model_name, message_id=self._message_id)

    def _close_block(self, signature: str | None = None, redacted: bool = False) -> None:
        kind = self._open_kind
        if kind is not None:
            text = "".join(self._parts)
            index = self._open_index
            self._blocks[index] = (
                TextBlock(text) if kind == "text" else ReasoningBlock(text, signature, redacted)
            )
            _content_end(self._publisher, block_index=index)
            self._open_kind = None

    def _open_block(self, kind: str) -> None:
        self._close_block()
        self._open_kind = kind
        self._open_index = index = len(self._blocks)
        self._blocks.append(None)
        self._parts.clear()
        _content_start(self._publisher, block_index=index, block_type=kind)

    def feed(self, chunk: Any) -> None:
        """Take one chunk of the model's stream.

        Raises:
            ModelError: The chunk is an `ErrorChunk`.
            TypeError: It is not a chunk at all.
        """
        publisher = self._publisher
        kind = type(chunk)
        if kind is TextChunk:
            if self._open_kind != "text":
                self._open_block("text")
            self._parts.append(chunk.text)
            _content_delta(publisher, block_index=self._open_index, delta=chunk.text)
        elif kind is ReasoningChunk:
            if self._open_kind != "reasoning" or chunk.redacted:
                self._open_block("reasoning")
            if chunk.text:
                self._parts.append(chunk.text)
                _reasoning_delta(publisher, block_index=self._open_index, delta=chunk.text)
            if chunk.signature is not None:
                # A signature ends its block: the reasoning that follows is a new block.
                self._close_block(chunk.signature, chunk.redacted)
        elif kind is ToolCallStartChunk:
            self._start_call(chunk.tool_use_id, chunk.name)
        elif kind is ToolCallDeltaChunk:
            call_id = self._route.get(chunk.tool_use_id, chunk.tool_use_id)
            pending = self._open_calls.get(call_id)
            if pending is not None:
                pending.parts.append(chunk.arguments_delta)
            _tool_call_delta(publisher, tool_use_id=call_id, delta=chunk.arguments_delta)
        elif kind is ToolCallChunk:
            call_id = self._route.get(chunk.tool_use_id)
            if call_id is None or call_id not in self._open_calls:
                call_id = self._start_call(chunk.tool_use_id, chunk.name)
            self._complete(call_id, chunk.input)
        elif kind is UsageChunk:
            self._usage_reported = True
            self._input_tokens += chunk.input_tokens
            self._output_tokens += chunk.output_tokens
            self._cache_read += chunk.cache_read_tokens
            self._cache_write += chunk.cache_write_tokens
        elif kind is StopChunk:
            self._stop_reason = chunk.reason
        elif kind is ErrorChunk:
            raise ModelError(chunk.message, code=chunk.code, retryable=chunk.retryable)
        else:
            raise TypeError(f"model {self._model_name!r} streamed a non-chunk: {chunk!r}")

    def _start_call(self, model_id: str, name: str) -> str:
        """Open a tool call's block; returns the id it is committed under."""
        self._close_block()
        call_id = model_id
        if call_id in self._seen:
            call_id = f"{model_id}_{new_id()[-8:]}"
            self._rejected[call_id] = (
                f"The tool_use_id {model_id!r} was already used in this turn, so this call "
                f"to {name!r} was not run. Give every tool call its own id."
            )
        self._seen.add(call_id)
        self._route[model_id] = call_id
        blocks = self._blocks
        self._open_calls[call_id] = _Call(len(blocks), name)
        _tool_call_start(self._publisher, tool_use_id=call_id, name=name, block_index=len(blocks))
        blocks.append(None)
        return call_id

    def _complete(self, call_id: str, arguments: object) -> None:
        """Close a call with its arguments; a call whose input is not an object is rejected."""
        call = self._open_calls.pop(call_id)
        if arguments is None:
            arguments = {}
        if not _is_object(arguments):
            # Kept as text under INVALID_JSON_KEY: adapters send it back as the model wrote it.
            try:
                text = json.dumps(arguments)
            except (TypeError, ValueError):
                text = repr(arguments)
            arguments = {INVALID_JSON_KEY: text}
        if type(call_id) is str and type(call.name) is str:
            # Checked above and here: what the constructor would check, without a second pass.
            block = built_tool_use(call_id, call.name, dict(arguments))
        else:
            block = ToolUseBlock(call_id, call.name, arguments)  # raises, naming the field
        self._blocks[call.index] = block
        _tool_call(self._publisher, tool_use_id=call_id, name=call.name, input=block.input)

    def fail(self, error: ModelError) -> None:
        """The provider reported ``error``: publish it (``error`` event)."""
        _error(self._publisher, message=error.message, code=error.code, retryable=error.retryable)

    def finish(self) -> Assembled:
        """The stream ended: close the open block, publish the message's end and itself.

        A tool call that was started but never completed takes its streamed
        deltas as its arguments (invalid or truncated JSON is kept as text, and
        answered with an error): no call the model made is dropped.
        """
        self._close_block()
        if self._open_calls:
            for call_id, call in list(self._open_calls.items()):
                self._complete(call_id, parse_arguments("".join(call.parts)))
        # No slot is left empty: _close_block and _complete fill the ones _open_block and
        # _start_call reserve, and the lines above closed the block and calls still open.
        blocks = self._blocks
        content: tuple[ContentBlock, ...] = tuple(blocks)  # type: ignore[arg-type]
        # _seen holds every call started: no calls, no search.
        calls = tuple([b for b in blocks if type(b) is ToolUseBlock]) if self._seen else ()
        stop_reason = self._stop_reason
        if stop_reason is None:
            stop_reason = "tool_use" if calls else "end_turn"
        usage = self._usage()
        _message_end(self._publisher, stop_reason=stop_reason, usage=usage)
        # Every block was built (and checked) by its constructor above.
        message = built_message("assistant", content, self._message_id)
        _message(self._publisher, message=message, stop_reason=stop_reason, usage=usage)
        # The assembler is done: its dict of rejected calls is the caller's now.
        return Assembled(message, calls, usage, stop_reason, self._rejected)

    def _usage(self) -> Usage:
        """The tick's `Usage`: the sums of the usage chunks' counts."""
        input_tokens, output_tokens = self._input_tokens, self._output_tokens
        cache_read, cache_write = self._cache_read, self._cache_write
        # No usage chunk at all: the provider did not say, which is not zero tokens.
        unreported = 0 if self._usage_reported else 1
        # A model's UsageChunks are not checked when built: their sums are, here. Valid
        # ones (non-negative ints, the usual case) skip Usage's validators; anything else
        # goes through them, for their error messages.
        if (
            type(input_tokens) is int
            and type(output_tokens) is int
            and type(cache_read) is int
            and type(cache_write) is int
            and input_tokens >= 0
            and output_tokens >= 0
            and cache_read >= 0
            and cache_write >= 0
        ):
            return built_usage(
                input_tokens,
                output_tokens,
                input_tokens + output_tokens,
                1,
                cache_read,
                cache_write,
                unreported,
            )
        return Usage(
            input_tokens,
            output_tokens,
            input_tokens + output_tokens,
            ticks=1,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            unreported_ticks=unreported,
        )


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    """Whether a tool call's input is a JSON object: a mapping with str keys."""
    # type() first: a dict (the usual input) skips the Mapping ABC's isinstance.
    if type(value) is not dict and not isinstance(value, Mapping):
        return False
    return all(isinstance(k, str) for k in value)
