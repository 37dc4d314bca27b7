"""Content blocks and messages: the conversation's vocabulary.

Everything here is a frozen, slotted attrs class validated at construction:
bad input raises `TypeError` or `ValueError` naming the field.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Final, Literal, TypeAlias, get_args

import attrs

from ._util import slot_setter

__all__ = [
    "ContentBlock",
    "ImageBlock",
    "JsonBlock",
    "Message",
    "ReasoningBlock",
    "Role",
    "TextBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "assistant",
    "system",
    "user",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool", "event"]
ROLES: frozenset[str] = frozenset(get_args(Role))


def _check_str(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")

    return check


def _copy_mapping(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, got {type(key).__name__}")
    return dict(value)


def _tool_input(value: object) -> dict[str, Any]:
    return _copy_mapping("ToolUseBlock.input", value)


def _message_metadata(value: object) -> dict[str, Any]:
    return _copy_mapping("Message.metadata", value)


@attrs.frozen
class TextBlock:
    """Plain text.

    Example:
        >>> TextBlock("hello").text
        'hello'
    """

    type: ClassVar[str] = "text"
    text: str = attrs.field(validator=_check_str("TextBlock.text"))


@attrs.frozen
class ImageBlock:
    """An image, by URL or ``data:`` URI.

    Args:
        source: An ``http(s)://`` URL or a ``data:<media type>;base64,...`` URI.
        media_type: The MIME type, such as ``"image/png"``, when known.
    """

    type: ClassVar[str] = "image"
    source: str = attrs.field(validator=_check_str("ImageBlock.source"))
    media_type: str | None = attrs.field(default=None)

    @media_type.validator
    def _check_media_type(self, _attr: object, value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"ImageBlock.media_type must be a str or None, got {type(value).__name__}"
            )


@attrs.frozen
class JsonBlock:
    """Structured data, any JSON-able value.

    Example:
        >>> JsonBlock({"temperature": 21}).data
        {'temperature': 21}
    """

    type: ClassVar[str] = "json"
    data: Any


@attrs.frozen
class ReasoningBlock:
    """The model's reasoning ("thinking").

    Providers that verify reasoning sent back to them (Anthropic's extended thinking) sign
    it: the block keeps that signature so the reasoning can be sent back unchanged on later
    ticks. Reasoning the provider withholds arrives encrypted, as a redacted block whose
    ``signature`` holds the opaque data and whose ``text`` is empty.

    Args:
        text: The reasoning text (empty for a redacted block).
        signature: The provider's signature of the reasoning, or of a redacted block its
            opaque data; None when the provider gave none.
        redacted: Whether the provider withheld the reasoning (``signature`` holds it).

    Example:
        >>> ReasoningBlock("Paris is in France.", signature="EqQBCg...").signature
        'EqQBCg...'
        >>> ReasoningBlock("", signature="EmwKAhgB...", redacted=True).redacted
        True
    """

    type: ClassVar[str] = "reasoning"
    text: str = attrs.field(validator=_check_str("ReasoningBlock.text"))
    signature: str | None = attrs.field(default=None)
    redacted: bool = attrs.field(default=False)

    @signature.validator
    def _check_signature(self, _attr: object, value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"ReasoningBlock.signature must be a str or None, got {type(value).__name__}"
            )

    @redacted.validator
    def _check_redacted(self, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"ReasoningBlock.redacted must be a bool, got {type(value).__name__}")
        if value and self.signature is None:
            raise ValueError(
                "ReasoningBlock.signature must hold the opaque data of a redacted block"
            )


@attrs.frozen
class ToolUseBlock:
    """A tool call the model asked for.

    Args:
        tool_use_id: The provider's id of the call; its result carries the same id.
        name: The tool's name.
        input: The arguments, a JSON object.
    """

    type: ClassVar[str] = "tool_use"
    tool_use_id: str = attrs.field(validator=_check_str("ToolUseBlock.tool_use_id"))
    name: str = attrs.field(validator=_check_str("ToolUseBlock.name"))
    input: Mapping[str, Any] = attrs.field(converter=_tool_input)


def _to_blocks(field_name: str, value: object) -> tuple[ContentBlock, ...]:
    if isinstance(value, str):
        return (TextBlock(value),)
    if isinstance(value, BLOCK_TYPES):
        return (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise TypeError(
            f"{field_name} must be a str or a sequence of content blocks, "
            f"got {type(value).__name__}"
        )
    blocks: list[ContentBlock] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            blocks.append(TextBlock(item))
        elif isinstance(item, BLOCK_TYPES):
            blocks.append(item)
        else:
            raise TypeError(
                f"{field_name}[{i}] must be a content block or a str, got {type(item).__name__}"
            )
    return tuple(blocks)


def _result_content(value: object) -> tuple[ContentBlock, ...]:
    return _to_blocks("ToolResultBlock.content", value)


def _message_content(value: object) -> tuple[ContentBlock, ...]:
    return _to_blocks("Message.content", value)


@attrs.frozen
class ToolResultBlock:
    """The result of a tool call; allowed only in a ``tool`` message.

    Args:
        tool_use_id: The id of the `ToolUseBlock` it answers.
        name: The tool's name.
        content: The result, as blocks (a str becomes one `TextBlock`).
        is_error: Whether the call failed; the content then says why.
    """

    type: ClassVar[str] = "tool_result"
    tool_use_id: str = attrs.field(validator=_check_str("ToolResultBlock.tool_use_id"))
    name: str = attrs.field(validator=_check_str("ToolResultBlock.name"))
    content: tuple[ContentBlock, ...] = attrs.field(converter=_result_content)
    is_error: bool = attrs.field(default=False)

    @content.validator
    def _check_content(self, _attr: object, value: tuple[ContentBlock, ...]) -> None:
        for i, block in enumerate(value):
            if isinstance(block, ToolResultBlock | ToolUseBlock):
                raise ValueError(f"ToolResultBlock.content[{i}] must not be a {block.type} block")

    @is_error.validator
    def _check_is_error(self, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"ToolResultBlock.is_error must be a bool, got {type(value).__name__}")


ContentBlock: TypeAlias = (
    TextBlock | ImageBlock | JsonBlock | ReasoningBlock | ToolUseBlock | ToolResultBlock
)
BLOCK_TYPES: tuple[type[Any], ...] = get_args(ContentBlock)
BLOCK_CLASSES: dict[str, type[Any]] = {cls.type: cls for cls in BLOCK_TYPES}


class _Ids:
    """Unique ids without a system call each: a random per-process prefix and a counter.

    The prefix (74 random bits, from ``os.urandom``) is drawn again in a forked child
    and when the counter wraps, so ids stay unique across processes and restarts; the
    counter (48 bits) makes them unique within one. Ids are the hex of a valid version-4
    UUID (SPEC §1): the prefix carries the version and variant bits.
    """

    __slots__ = ("counter", "head", "prefix")

    def __init__(self) -> None:
        self.prefix = self.head = ""
        self.counter: Iterator[int] = iter(())
        self.reseed()

    def reseed(self) -> None:
        bits = int.from_bytes(os.urandom(10), "big")
        # Hex digit 12 is the UUID version (4), the top bits of digit 16 the variant (10).
        bits = (bits & ~(0xF << 28) | (0x4 << 28)) & ~(0xC << 12) | (0x8 << 12)
        self.prefix = f"{bits:020x}"
        # The prefix and the counter's 9 high hex digits: they change every 4096 ids.
        self.head = f"{self.prefix}{0:09x}"
        self.counter = itertools.count(1)

    def next(self) -> str:
        n = next(self.counter)
        low = n & 0xFFF
        if not low:
            if n > 0xFFFFFFFFFFFF:
                self.reseed()
                n = low = next(self.counter)
            else:
                self.head = f"{self.prefix}{n >> 12:09x}"
        # The same as f"{self.prefix}{n:012x}", at a third of its cost.
        return self.head + _LOW_DIGITS[low]


_LOW_DIGITS: Final = tuple(f"{n:03x}" for n in range(4096))
"""The counter's 3 low hex digits, formatted once."""

_IDS = _Ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.reseed)


def new_id() -> str:
    """A fresh unique id of 32 hex digits (message, execution and call ids).

    Example:
        >>> len(new_id()), new_id() != new_id()
        (32, True)
    """
    return _IDS.next()


_new_id = new_id
next_id: Final = _IDS.next
"""`new_id` without its own frame: the engine's, for an id per message and call."""


def _check_role(_inst: object, _attr: object, value: object) -> None:
    if not isinstance(value, str) or value not in ROLES:
        raise ValueError(f"Message.role must be one of {sorted(ROLES)}, got {value!r}")


@attrs.frozen
class Message:
    """One entry of a conversation.

    Args:
        role: ``"system"``, ``"user"``, ``"assistant"``, ``"tool"`` or ``"event"``.
        content: A str (becomes one `TextBlock`) or a sequence of blocks.
        id: A unique id; by default a fresh one of 32 hex digits (see `new_id`).
        metadata: Free-form JSON-able data that travels with the message.

    Raises:
        ValueError: Unknown role, or a tool-result block outside a ``tool`` message.
        TypeError: A content item that is neither a block nor a str.

    Example:
        >>> m = Message("user", "What is 2 + 2?")
        >>> m.content
        (TextBlock(text='What is 2 + 2?'),)
        >>> m.text
        'What is 2 + 2?'
    """

    role: Role = attrs.field(validator=_check_role)
    content: tuple[ContentBlock, ...] = attrs.field(converter=_message_content)
    id: str = attrs.field(factory=_new_id, validator=_check_str("Message.id"))
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_message_metadata)

    def __attrs_post_init__(self) -> None:
        if self.role != "tool":
            for i, block in enumerate(self.content):
                if isinstance(block, ToolResultBlock):
                    raise ValueError(
                        f"Message.content[{i}] is a tool_result block, which is only "
                        f"allowed in a 'tool' message, not in a {self.role!r} message"
                    )

    @property
    def text(self) -> str:
        """The text blocks' text, joined with ``""``."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The tool calls in this message, in order."""
        return tuple(b for b in self.content if isinstance(b, ToolUseBlock))

    @property
    def tool_results(self) -> tuple[ToolResultBlock, ...]:
        """The tool results in this message, in order."""
        return tuple(b for b in self.content if isinstance(b, ToolResultBlock))


_new = object.__new__
_set_role = slot_setter(Message, "role")
_set_content = slot_setter(Message, "content")
_set_id = slot_setter(Message, "id")
_set_metadata = slot_setter(Message, "metadata")


def built_message(role: Role, content: tuple[ContentBlock, ...], id: str) -> Message:
    """A `Message` of blocks the engine built itself, without checking them again.

    For the engine's hot path only: ``content`` must be a tuple of valid blocks that
    fit ``role`` (the public constructor's checks, which this skips), ``id`` a str.
    """
    message = _new(Message)
    _set_role(message, role)
    _set_content(message, content)
    _set_id(message, id)
    _set_metadata(message, {})
    return message


_set_use_id = slot_setter(ToolUseBlock, "tool_use_id")
_set_use_name = slot_setter(ToolUseBlock, "name")
_set_use_input = slot_setter(ToolUseBlock, "input")


def built_tool_use(tool_use_id: str, name: str, input: dict[str, Any]) -> ToolUseBlock:
    """A `ToolUseBlock` of checked parts (see `built_message`): str ids, a dict of str keys."""
    block = _new(ToolUseBlock)
    _set_use_id(block, tool_use_id)
    _set_use_name(block, name)
    _set_use_input(block, input)
    return block


_set_result_id = slot_setter(ToolResultBlock, "tool_use_id")
_set_result_name = slot_setter(ToolResultBlock, "name")
_set_result_content = slot_setter(ToolResultBlock, "content")
_set_result_error = slot_setter(ToolResultBlock, "is_error")


def built_tool_result(
    tool_use_id: str, name: str, content: tuple[ContentBlock, ...], is_error: bool = False
) -> ToolResultBlock:
    """A `ToolResultBlock` of checked parts (see `built_message`): str ids, valid blocks."""
    result = _new(ToolResultBlock)
    _set_result_id(result, tool_use_id)
    _set_result_name(result, name)
    _set_result_content(result, content)
    _set_result_error(result, is_error)
    return result


_set_json_data = slot_setter(JsonBlock, "data")


def built_json(data: Any) -> JsonBlock:
    """A `JsonBlock` of data the caller checked is JSON-able (see `built_message`)."""
    block = _new(JsonBlock)
    _set_json_data(block, data)
    return block


def _make(role: Role, parts: tuple[str | ContentBlock, ...], metadata: dict[str, Any]) -> Message:
    return Message(role, parts, metadata=metadata)


def user(*parts: str | ContentBlock, **metadata: Any) -> Message:
    """Build a user message from text and blocks.

    Example:
        >>> user("Describe this:", ImageBlock("https://example.com/cat.png")).role
        'user'
    """
    return _make("user", parts, metadata)


def assistant(*parts: str | ContentBlock, **metadata: Any) -> Message:
    """Build an assistant message from text and blocks."""
    return _make("assistant", parts, metadata)


def system(*parts: str | ContentBlock, **metadata: Any) -> Message:
    """Build a system message from text and blocks."""
    return _make("system", parts, metadata)
