"""The model protocol: what a session asks of a model, and what it streams back."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import Any, ClassVar, Final, Protocol, TypeAlias, cast, runtime_checkable

import attrs
import trio

from .._messages import Message
from .._timeline import TimelineView, trusted
from .._util import slot_setter

__all__ = [
    "ErrorChunk",
    "Model",
    "ModelChunk",
    "ModelRequest",
    "ReasoningChunk",
    "StopChunk",
    "TextChunk",
    "ToolCallChunk",
    "ToolCallDeltaChunk",
    "ToolCallStartChunk",
    "ToolSpec",
    "UsageChunk",
]


@attrs.frozen
class ToolSpec:
    """What the model is told about one tool.

    Args:
        name: The tool's name.
        description: What it does, for the model.
        input_schema: A self-contained JSON Schema of its arguments.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]


def _message_tuple(messages: Iterable[Message]) -> tuple[Message, ...]:
    if trusted(messages):
        # The engine's O(1) view of the timeline stands for this tuple (see TimelineView).
        return cast(tuple[Message, ...], messages)
    return tuple(messages)


def _spec_tuple(specs: Iterable[ToolSpec]) -> tuple[ToolSpec, ...]:
    return tuple(specs)


@attrs.frozen
class ModelRequest:
    """The input of one model call: one tick's compiled context.

    Args:
        system: The system prompt, if any.
        messages: The conversation to send.
        tools: The tools the model may call.
        tick: The tick this request belongs to (1-based).
        settings: Provider settings (temperature, max_tokens, ...).
    """

    system: str | None
    messages: tuple[Message, ...] = attrs.field(converter=_message_tuple)
    tools: tuple[ToolSpec, ...] = attrs.field(converter=_spec_tuple, default=())
    tick: int = 1
    settings: Mapping[str, Any] = attrs.field(factory=dict)


_new = object.__new__
_set_system = slot_setter(ModelRequest, "system")
_set_messages = slot_setter(ModelRequest, "messages")
_set_tools = slot_setter(ModelRequest, "tools")
_set_tick = slot_setter(ModelRequest, "tick")
_set_settings = slot_setter(ModelRequest, "settings")


def built_request(
    system: str | None,
    messages: tuple[Message, ...],
    tools: tuple[ToolSpec, ...],
    tick: int,
    settings: Mapping[str, Any],
) -> ModelRequest:
    """A `ModelRequest` of parts the engine already holds as tuples, without converting them.

    The engine's default request, once a tick: ``messages`` is the timeline's view,
    ``tools`` the agent's specs as a tuple.
    """
    request = _new(ModelRequest)
    _set_system(request, system)
    _set_messages(request, messages)
    _set_tools(request, tools)
    _set_tick(request, tick)
    _set_settings(request, settings)
    return request


@attrs.frozen
class TextChunk:
    """A piece of the answer's text."""

    type: ClassVar[str] = "text"
    text: str


@attrs.frozen
class ReasoningChunk:
    """A piece of the model's reasoning ("thinking") text, or its signature.

    Pieces of text add up to one `ReasoningBlock`. A chunk with a ``signature`` signs the
    reasoning streamed so far (its ``text``, often empty, is added first) and ends that block:
    the next reasoning chunk starts a new one. A ``redacted`` chunk is a block of its own,
    ``ReasoningChunk("", signature=<opaque data>, redacted=True)``.

    Example:
        >>> ReasoningChunk("", signature="EqQBCg...")
        ReasoningChunk(text='', signature='EqQBCg...', redacted=False)
    """

    type: ClassVar[str] = "reasoning"
    text: str
    signature: str | None = None
    redacted: bool = False


@attrs.frozen
class ToolCallStartChunk:
    """The model started a tool call; arguments follow as deltas."""

    type: ClassVar[str] = "tool_call_start"
    tool_use_id: str
    name: str


@attrs.frozen
class ToolCallDeltaChunk:
    """A piece of a tool call's JSON arguments, as streamed."""

    type: ClassVar[str] = "tool_call_delta"
    tool_use_id: str
    arguments_delta: str


@attrs.frozen
class ToolCallChunk:
    """A complete tool call with parsed arguments."""

    type: ClassVar[str] = "tool_call"
    tool_use_id: str
    name: str
    input: Mapping[str, Any]


@attrs.frozen
class UsageChunk:
    """Token counts; several usage chunks add up.

    ``input_tokens`` counts every input token, cached or not; the cache fields say how many
    of them were read from or written to the provider's prompt cache. A model whose provider
    reported no counts streams no usage chunk at all (the tick's `Usage` then says so in
    ``unreported_ticks``), rather than a chunk of zeros.
    """

    type: ClassVar[str] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@attrs.frozen
class StopChunk:
    """Why the model stopped (``"end_turn"``, ``"tool_use"``, ``"max_tokens"``, ...)."""

    type: ClassVar[str] = "stop"
    reason: str


@attrs.frozen
class ErrorChunk:
    """The provider reported an error inside the stream."""

    type: ClassVar[str] = "error"
    message: str
    code: str = "model_error"
    retryable: bool = False


ModelChunk: TypeAlias = (
    TextChunk
    | ReasoningChunk
    | ToolCallStartChunk
    | ToolCallDeltaChunk
    | ToolCallChunk
    | UsageChunk
    | StopChunk
    | ErrorChunk
)


@runtime_checkable
class Model(Protocol):
    """A language model that streams chunks for a request.

    Implementations: `ScriptedModel` (offline, deterministic), `OpenAIModel`,
    `AnthropicModel`. ``stream`` is usually an async generator; the session
    closes it (``aclose()``) when the tick is cancelled, so provider
    connections are released at once.

    A provider failure must be raised as `ModelError`.
    """

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the model's reply to ``request``."""
        ...


_PACE_EVERY: Final = 64
"""With no delay, a zero-latency model yields to the scheduler every this many chunks."""


class Pacer:
    """Paces an offline model's chunks: ``delay`` between them, a checkpoint before the first.

    With ``delay=0`` it checks for cancellation at every chunk (the first too) and yields
    to the scheduler every 64, as SPEC §8 says: a short zero-latency reply does not visit
    the scheduler at all (the engine's own schedule points and a real model's I/O do).

    Example:
        >>> pause = Pacer(0.02)
        >>> # async for piece in pieces: await pause(); yield TextChunk(piece)
    """

    __slots__ = ("_count", "_delay", "_first")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._first = True
        self._count = 0

    @property
    def used(self) -> bool:
        """Whether it has paced anything yet."""
        return not self._first

    def __call__(self) -> Coroutine[Any, Any, None]:
        # Not itself a coroutine: it returns trio's for the caller to await (one
        # frame less a chunk).
        if self._delay:
            if self._first:
                self._first = False
                return trio.lowlevel.checkpoint()  # noqa: ASYNC105 - awaited by the caller
            return trio.sleep(self._delay)  # noqa: ASYNC105 - awaited by the caller
        # No delay: cancellation is still seen at every chunk, but the
        # scheduler is visited only every _PACE_EVERY chunks.
        self._first = False
        self._count += 1
        if self._count % _PACE_EVERY:
            return trio.lowlevel.checkpoint_if_cancelled()  # noqa: ASYNC105 - awaited by the caller
        return trio.lowlevel.checkpoint()  # noqa: ASYNC105 - awaited by the caller


def _make_encoder() -> Callable[[Any, int], list[str]] | None:
    # json.dumps(value) with its default settings builds a C encoder on every call
    # (JSONEncoder.iterencode); this one is built once. Without circular-reference
    # markers, it shares no state between calls (or threads).
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (some Python implementations)
        return None
    try:
        encoder: Callable[[Any, int], list[str]] = make(
            None,  # markers: no circular check (json_text falls back to json.dumps)
            json.JSONEncoder().default,
            json.encoder.encode_basestring_ascii,
            None,  # indent
            ": ",
            ", ",
            False,  # sort_keys
            False,  # skipkeys
            True,  # allow_nan
        )
    except TypeError:  # a signature this was not written for
        return None
    return encoder


_ENCODER: Final = _make_encoder()


def json_text(value: Any) -> str:
    """``json.dumps(value)``, without building an encoder for every call.

    Example:
        >>> json_text({"city": "Paris", "days": [1, 2]})
        '{"city": "Paris", "days": [1, 2]}'
    """
    if _ENCODER is not None:
        try:
            return "".join(_ENCODER(value, 0))  # 0: the indent level
        except Exception:
            # json.dumps raises it again, with its own message: also for a circular
            # value (a RecursionError here, without markers).
            pass
    return json.dumps(value)


def estimate_usage(
    request: ModelRequest, text: str, arguments: Iterable[Mapping[str, Any]] = ()
) -> UsageChunk:
    """An offline model's token counts: about four characters per token.

    Example:
        >>> estimate_usage(ModelRequest(None, ()), "Hello, world")
        UsageChunk(input_tokens=1, output_tokens=3, cache_read_tokens=0, cache_write_tokens=0)
    """
    output = len(text)
    for value in arguments:
        output += len(json_text(value))
    return estimated_usage(request, output)


def estimated_usage(request: ModelRequest, output_chars: int) -> UsageChunk:
    """`estimate_usage` of an answer of ``output_chars`` characters (text and arguments' JSON)."""
    messages = request.messages
    if isinstance(messages, TimelineView):
        chars = messages.text_chars()
    else:
        chars = sum(len(m.text) for m in messages)
    prompt = len(request.system or "") + chars
    return UsageChunk(max(1, prompt // 4), max(1, output_chars // 4))


INVALID_JSON_KEY = "__invalid_json__"
"""Adapters put a tool call's unparseable argument text under this key.

The engine turns such a call into an ``is_error`` tool result that asks the
model to call the tool again with a valid JSON object.
"""
