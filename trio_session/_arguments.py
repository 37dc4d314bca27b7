"""Structuring validated tool arguments into the Python values a handler takes."""

from __future__ import annotations

import collections.abc
import functools
import typing
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, get_args, get_origin

import cattrs
from cattrs.cols import is_namedtuple, namedtuple_dict_structure_factory
from cattrs.errors import BaseValidationError
from cattrs.v import transform_error

from ._jsonschema import (
    MAP_ORIGINS,
    Schema,
    is_pydantic_model,
    is_union,
    resolve_hints,
    type_schema,
    unwrap_required,
)
from ._serde import _describe, converter, json_type, same_value, show_value
from ._validator import describe_schema, plain_object_types, validate

__all__ = ["PlainArguments", "plain_arguments", "plain_kwargs", "structure_arguments"]


@functools.lru_cache(maxsize=1024)
def _cached_member_schemas(union: Any) -> tuple[tuple[Schema, Any], ...]:
    return tuple((type_schema(member), member) for member in get_args(union))


def _member_schemas(union: Any) -> tuple[tuple[Schema, Any], ...]:
    try:
        return _cached_member_schemas(union)
    except TypeError:  # unhashable Annotated metadata: compute without the cache
        return tuple((type_schema(member), member) for member in get_args(union))


def _is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def _is_bare_sequence(tp: Any) -> bool:
    return tp is collections.abc.Sequence or tp is collections.abc.MutableSequence


def _is_mapping(tp: Any) -> bool:
    return tp in MAP_ORIGINS or get_origin(tp) in MAP_ORIGINS


@functools.cache
def _converter() -> cattrs.Converter:
    """A child of the shared converter that also structures tool arguments.

    The shared converter has no hook for arbitrary unions, for ``None``, for
    TypedDicts, NamedTuples-as-objects or pydantic models; those belong to
    tool arguments (whose schema already decided what is valid), not to the
    library's own documents. Made at first use, so hooks users registered
    before that are inherited.
    """
    child = converter.copy()

    def structure_union(value: object, union: Any) -> Any:
        # The first member whose schema accepts the value wins, exactly as
        # validate() decided, so validation and structuring never disagree.
        for schema, member in _member_schemas(union):
            if not validate(schema, value):
                return child.structure(value, member)
        wanted = describe_schema({"anyOf": [s for s, _ in _member_schemas(union)]})
        raise TypeError(f"expected {wanted}, got {json_type(value)}")

    def structure_literal(value: object, literal: Any) -> Any:
        for member in get_args(literal):
            if same_value(value, member):
                return member
        raise ValueError("must be one of " + ", ".join(show_value(v) for v in get_args(literal)))

    def structure_none(value: object, _type: object) -> None:
        if value is not None:
            raise TypeError(f"expected null, got {json_type(value)}")

    def structure_sequence(value: object, _type: object) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {json_type(value)}")
        return tuple(value)

    def structure_mapping(value: object, type_: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {json_type(value)}")
        args = get_args(type_)
        value_type = args[1] if len(args) == 2 else Any
        return {
            key: item if value_type is Any else child.structure(item, value_type)
            for key, item in value.items()
        }

    def structure_typeddict(value: object, cls: Any) -> dict[str, Any]:
        # Not cattrs' own: it misses Required[] written as a string before 3.14.
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {json_type(value)}")
        hints = resolve_hints(cls)
        return {
            key: child.structure(item, unwrap_required(hints[key])) if key in hints else item
            for key, item in value.items()
        }

    child.register_structure_hook(type(None), structure_none)
    child.register_structure_hook_func(typing.is_typeddict, structure_typeddict)
    # A NamedTuple is a JSON object keyed by its field names, as in its schema.
    child.register_structure_hook_factory(is_namedtuple, namedtuple_dict_structure_factory)
    child.register_structure_hook_func(is_pydantic_model, _structure_pydantic)
    child.register_structure_hook_func(is_union, structure_union)
    child.register_structure_hook_func(_is_literal, structure_literal)
    child.register_structure_hook_func(_is_bare_sequence, structure_sequence)
    child.register_structure_hook_func(_is_mapping, structure_mapping)
    return child


def _structure_pydantic(value: object, model: Any) -> Any:
    import pydantic  # present: is_pydantic_model() found it imported

    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        problems = [
            ".".join(str(part) for part in error["loc"]) + f": {error['msg']}"
            for error in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


# Scalars the converter structures by calling the type, which gives back an
# instance of exactly that type unchanged.
_EXACT: Final = frozenset({int, str, bool, float})


def structure_arguments(
    hints: Mapping[str, Any], arguments: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Structure validated arguments into Python values with the converter.

    Returns:
        ``(kwargs, problems)``: the structured values, and one message per
        argument that could not be structured (an attrs validator refusing a
        value, for example), each naming its path. cattrs' exception groups
        never escape.
    """
    conv = _converter()
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in arguments.items():
        hint = hints.get(key, Any)
        if hint is Any or (type(value) is hint and hint in _EXACT):
            # What the converter would give back: the value itself.
            kwargs[key] = value
            continue
        try:
            kwargs[key] = conv.structure(value, hint)
        except BaseValidationError as exc:
            for line in transform_error(exc, path=key, format_exception=_describe):
                message, _, where = line.rpartition(" @ ")
                problems.append(f"{where}: {message}" if message else line)
        except Exception as exc:
            problems.append(f"{key}: {exc}" if str(exc) else f"{key}: {type(exc).__name__}")
    return kwargs, problems


PlainArguments: TypeAlias = tuple[tuple[str, ...], dict[str, frozenset[type]]]
"""A tool's plain-arguments check: its required names and each argument's exact types."""

# Hints under which a value of an exact type structures to itself (float only from a float).
_IDENTITY: Final[dict[Any, frozenset[type] | None]] = {
    Any: None,
    int: frozenset({int}),
    str: frozenset({str}),
    bool: frozenset({bool}),
    float: frozenset({float}),
}


def plain_arguments(
    schema: Mapping[str, Any], hints: Mapping[str, Any] | None
) -> PlainArguments | None:
    """The check that takes most calls of a tool without validating and structuring them.

    For a plain object schema of scalar properties whose hints (if any) are
    ``Any``, ``int``, ``str``, ``bool`` or ``float``: a call whose arguments all
    have the exact types the schema and the hint allow is valid, and its kwargs
    are its arguments as given. None when the tool's schema or hints are anything
    else (every call is checked in full).
    """
    plain = plain_object_types(schema)
    if plain is None:
        return None
    required, types = plain
    if hints is not None:
        for name, allowed in list(types.items()):
            try:
                exact = _IDENTITY[hints.get(name, Any)]
            except (KeyError, TypeError):  # another hint, or an unhashable one
                return None
            if exact is not None:
                types[name] = allowed & exact
    return required, types


def plain_kwargs(plain: PlainArguments, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """The kwargs of a call that passes `plain_arguments`' check; None to check it in full."""
    if type(arguments) is not dict:
        return None
    required, types = plain
    for key, value in arguments.items():
        allowed = types.get(key)
        if allowed is None or type(value) not in allowed:
            return None
    for name in required:
        if name not in arguments:
            return None
    return dict(arguments)
