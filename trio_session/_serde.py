"""JSON round-trips for every message, block, event, result and snapshot.

One cattrs converter, `converter`, configured here and nowhere else. Classes
with a class-level ``type`` constant (blocks, events, model chunks) carry it
as a ``"type"`` key; unions and base classes are structured by that tag.

Structuring is strict: a str is not an int, a bool is not a number, unknown
keys are refused. Every failure is a `SerializationError` whose message names
the path of the bad field; cattrs' exception groups never escape.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mutable_sequence,
    is_sequence,
    list_structure_factory,
)
from cattrs.errors import BaseValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import transform_error

from ._errors import SerializationError
from ._events import EVENT_CLASSES, StreamEvent
from ._messages import BLOCK_CLASSES, ContentBlock, Message, TextBlock
from .models._base import ModelChunk

__all__ = [
    "converter",
    "from_json",
    "is_json_type",
    "json_type",
    "jsonable",
    "same_value",
    "show_value",
    "structure_enum",
    "to_json",
]

T = TypeVar("T")

MAX_DEPTH = 200
"""Documents nested deeper than this are refused before structuring."""

converter = cattrs.Converter(forbid_extra_keys=True)
"""The one cattrs converter of trio-session; extend it for your own types."""


# ---------------------------------------------------------------------------
# The scalar rules: one set, for documents and tool arguments alike
# ---------------------------------------------------------------------------
#
# cattrs' defaults would turn "5" into 5 and 1 into True; JSON Schema would
# take 3.0 for an integer. Both are refused: a string is only a str, an
# integer only an int written without a fraction (never a bool), a number an
# int or a float (never a bool), a boolean only a bool. `validate` and every
# structure hook use these functions, so a value is never valid in one place
# and refused in another.


def json_type(value: object) -> str:
    """The JSON Schema type name of a Python value (its class name if it has none).

    Example:
        >>> [json_type(v) for v in (None, True, 3, 3.0, "s", [], {})]
        ['null', 'boolean', 'integer', 'number', 'string', 'array', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def is_json_type(kind: str, value: object) -> bool:
    """Whether ``value`` is of the JSON Schema type ``kind`` under the strict rules.

    Example:
        >>> is_json_type("integer", 3), is_json_type("integer", 3.0), is_json_type("number", 3)
        (True, False, True)
        >>> is_json_type("integer", True)
        False
    """
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, Mapping)
    return json_type(value) == kind


def same_value(value: object, expected: object) -> bool:
    """Whether ``value`` is the JSON value ``expected`` (an enum member, a ``const``).

    A bool equals only a bool and an integer only an integer; a float member
    also matches an int of the same value.

    Example:
        >>> same_value(2, 2), same_value(2.0, 2), same_value(2, 2.0), same_value(True, 1)
        (True, False, True, False)
    """
    kind = json_type(expected)
    if not is_json_type(kind, value):
        return False
    if isinstance(expected, list | tuple):
        items = cast(list[Any], value)
        return len(items) == len(expected) and all(map(same_value, items, expected))
    if isinstance(expected, Mapping):
        obj = cast(Mapping[Any, Any], value)
        return obj.keys() == expected.keys() and all(
            same_value(obj[k], expected[k]) for k in expected
        )
    return bool(value == expected)


def show_value(value: object) -> str:
    """A JSON value as a caller reads it in an error: strings quoted, the rest JSON."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    """The member of ``cls`` whose value is ``value`` (see `same_value`).

    Raises:
        ValueError: No member has that value; the message lists the values.
    """
    for member in cls:
        if same_value(value, member.value):
            return member
    raise ValueError("must be one of " + ", ".join(show_value(m.value) for m in cls))


_SCALAR_NAMES = {"string": "a string", "integer": "an integer", "number": "a number"}


def _strict(kind: str) -> Callable[..., Any]:
    name = _SCALAR_NAMES.get(kind, f"a {kind}")

    def structure(value: object, type_: object) -> Any:
        # Registered for int, str and float, these also receive int- and
        # str-based enums (IntEnum, StrEnum): singledispatch finds the scalar
        # before Enum in their MRO.
        if isinstance(type_, type) and issubclass(type_, enum.Enum):
            return structure_enum(value, type_)
        if not is_json_type(kind, value):
            raise TypeError(f"expected {name}, got {json_type(value)}")
        if kind == "number":
            try:
                return float(cast(float, value))
            except OverflowError:
                raise ValueError(f"expected {name}, got an integer too large for a float") from None
        return value

    return structure


converter.register_structure_hook(str, _strict("string"))
converter.register_structure_hook(int, _strict("integer"))
converter.register_structure_hook(float, _strict("number"))
converter.register_structure_hook(bool, _strict("boolean"))
converter.register_structure_hook(enum.Enum, structure_enum)


def jsonable(value: Any, where: str = "value") -> Any:
    """Return ``value`` as plain JSON data, or raise naming what is not JSON-able.

    attrs instances are unstructured with the shared converter, Enum members
    become their values, tuples become lists.

    Raises:
        TypeError: A value (or a dict key) of a type JSON cannot hold; the
            message names its type and where it is.
        ValueError: A NaN or infinite float.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot represent")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has a key of type {type(key).__name__}; JSON object keys must be str"
                )
            out[key] = jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, enum.Enum):
        return jsonable(value.value, where)
    if attrs.has(type(value)):
        return jsonable(converter.unstructure(value), where)
    raise TypeError(f"{where} is of type {type(value).__name__}, which is not JSON-able")


def _strict_sequence(type_: Any, conv: cattrs.Converter) -> Callable[..., Any]:
    """Sequences come from JSON arrays only: no strings, no objects."""
    if is_mutable_sequence(type_):
        inner = list_structure_factory(type_, conv)
    else:
        inner = homogenous_tuple_structure_factory(type_, conv)

    def structure(value: object, _type: object) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return inner(value, _type)

    return structure


converter.register_structure_hook_factory(is_sequence, _strict_sequence)


def _objects_only(cls: type[Any], conv: cattrs.Converter) -> Callable[..., Any]:
    """attrs classes come from JSON objects only, without unknown keys."""
    inner = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)

    def structure(value: object, _type: object) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return inner(value, cls)

    return structure


converter.register_structure_hook_factory(attrs.has, _objects_only)


def _structure_any(value: object, _type: object) -> Any:
    return value


def _structure_mapping(value: object, type_: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    args = get_args(type_)
    value_type = args[1] if len(args) == 2 else Any
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"expected string keys, got {type(key).__name__}")
        result[key] = item if value_type is Any else converter.structure(item, value_type)
    return result


def _is_str_mapping(type_: Any) -> bool:
    origin = get_origin(type_)
    return origin in (Mapping, dict, typing.Mapping) and get_args(type_)[:1] == (str,)


converter.register_structure_hook_func(_is_str_mapping, _structure_mapping)
converter.register_structure_hook(typing.Any, _structure_any)


def _structure_content(value: object, _type: object) -> tuple[Any, ...]:
    """Content is a list of tagged blocks; a plain string is one text block."""
    if isinstance(value, str):
        return (TextBlock(value),)
    if not isinstance(value, list):
        raise TypeError(f"expected a string or a list of blocks, got {type(value).__name__}")
    return converter.structure(value, tuple[ContentBlock, ...])


def _content_overrides(cls: type[Any]) -> dict[str, Any]:
    if "content" in attrs.fields_dict(cls):
        return {"content": override(struct_hook=_structure_content)}
    return {}


_structure_message_fields = make_dict_structure_fn(
    Message, converter, _cattrs_forbid_extra_keys=True, **_content_overrides(Message)
)


def _structure_message(value: object, _type: object) -> Message:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return _structure_message_fields(value, Message)


converter.register_structure_hook(Message, _structure_message)


def _typed_hooks(cls: type[Any]) -> None:
    """Register hooks that write and check the class-level ``type`` tag."""
    unstructure_fields = make_dict_unstructure_fn(cls, converter)
    structure_fields = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True, **_content_overrides(cls)
    )
    tag: str = cls.type

    def unstructure(obj: Any) -> dict[str, Any]:
        return {"type": tag, **unstructure_fields(obj)}

    def structure(value: object, _type: object) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        if "type" in value:
            if value["type"] != tag:
                raise ValueError(f"expected type {tag!r}, got {value['type']!r}")
            value = {k: v for k, v in value.items() if k != "type"}
        return structure_fields(value, cls)

    converter.register_unstructure_hook(cls, unstructure)
    converter.register_structure_hook(cls, structure)


def _tagged_dispatch(name: str, classes: Mapping[str, type[Any]]) -> Callable[..., Any]:
    """A structure hook for a union or base class: pick the class by ``type``."""

    def structure(value: object, _type: object) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        tag = value.get("type")
        if not isinstance(tag, str):
            raise ValueError(f"missing or non-string 'type' tag for {name}")
        cls = classes.get(tag)
        if cls is None:
            raise ValueError(f"unknown {name} type {tag!r}; known: {sorted(classes)}")
        return converter.structure(value, cls)

    return structure


_CHUNK_CLASSES: dict[str, type[Any]] = {cls.type: cls for cls in get_args(ModelChunk)}

for _cls in (*BLOCK_CLASSES.values(), *EVENT_CLASSES.values(), *_CHUNK_CLASSES.values()):
    _typed_hooks(_cls)

converter.register_structure_hook(ContentBlock, _tagged_dispatch("content block", BLOCK_CLASSES))
converter.register_structure_hook(ModelChunk, _tagged_dispatch("model chunk", _CHUNK_CLASSES))
converter.register_structure_hook(StreamEvent, _tagged_dispatch("event", EVENT_CLASSES))


def _unstructure_event_base(obj: StreamEvent) -> Any:
    if type(obj) is StreamEvent:
        raise TypeError("StreamEvent itself is abstract; serialize one of its subclasses")
    return converter.unstructure(obj, unstructure_as=type(obj))


converter.register_unstructure_hook(StreamEvent, _unstructure_event_base)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _depth_ok(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _describe(exc: BaseException, _type: object) -> str:
    """Name the problem of one field, in words a caller can act on."""
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, BaseValidationError):
        return "; ".join(transform_error(exc, path="", format_exception=_describe))
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    if _type is not None:
        return f"invalid value, expected {_type_name(_type)}"
    return f"invalid value ({type(exc).__name__})"


def _type_name(cls: Any) -> str:
    if isinstance(cls, type):
        return cls.__name__
    if get_origin(cls) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(cls))
    if isinstance(cls, types.UnionType) or get_origin(cls) is typing.Union:
        return " | ".join(_type_name(a) for a in get_args(cls))
    return repr(cls)


def to_json(obj: Any) -> str:
    """Serialize a message, block, event, result or snapshot to JSON text.

    Raises:
        SerializationError: The object holds a value JSON cannot represent.

    Example:
        >>> from trio_session import user
        >>> text = to_json(user("hi"))
        >>> from trio_session import Message
        >>> back = from_json(Message, text)
        >>> back.role, back.text
        ('user', 'hi')
    """
    try:
        data = converter.unstructure(obj)
        if not _depth_ok(data, MAX_DEPTH):
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"cannot serialize {type(obj).__name__} to JSON: {exc}") from None


@typing.overload
def from_json(cls: type[T], text: str | bytes | bytearray) -> T: ...
@typing.overload
def from_json(cls: Any, text: str | bytes | bytearray) -> Any: ...
def from_json(cls: type[T] | Any, text: str | bytes | bytearray) -> T | Any:
    """Rebuild an object of ``cls`` from JSON text made by `to_json`.

    ``cls`` may be a concrete class, `StreamEvent` (any event, by its type
    tag) or the `ContentBlock` union.

    Raises:
        SerializationError: The text is not JSON, is nested too deeply, or is
            not a valid document of ``cls``; the message names the bad field.

    Example:
        >>> from trio_session import Message
        >>> from_json(Message, '{"role": "user", "content": [{"type": "text", "text": "hi"}]}').text
        'hi'
    """
    name = _type_name(cls)
    if not isinstance(text, str | bytes | bytearray):
        raise TypeError(f"from_json needs str or bytes, got {type(text).__name__}")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise SerializationError(f"invalid {name} JSON: nested too deeply") from None
    except ValueError as exc:
        raise SerializationError(f"invalid {name} JSON: {exc}") from None
    if not _depth_ok(data, MAX_DEPTH):
        raise SerializationError(f"invalid {name} JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        return cast(T, converter.structure(data, cls))
    except BaseValidationError as exc:
        problems = transform_error(exc, path="$", format_exception=_describe)
        raise SerializationError(f"invalid {name}: " + "; ".join(problems)) from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise SerializationError(f"invalid {name}: {exc}") from None
    except cattrs.errors.StructureHandlerNotFoundError as exc:
        raise SerializationError(f"cannot structure {name}: {exc}") from None
