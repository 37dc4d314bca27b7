"""JSON Schema from Python annotations and signatures.

The schemas are self-contained (nested types inline, never ``$ref``) because
several providers reject references.

Supported annotations: str, int, float, bool, None, ``list[X]`` /
``Sequence[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` /
``Mapping[str, X]``, ``Literal[...]``, Enum subclasses, unions (``X | None``),
attrs classes, dataclasses, ``TypedDict``, ``NamedTuple`` (an object keyed by
its field names), pydantic models (their own schema, inlined; pydantic is
looked up in ``sys.modules``, never imported), ``NewType``, ``Any`` (or no
annotation) and ``Annotated[X, "description"]``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, get_args, get_origin

import attrs

from ._docstrings import field_docs, parse_docstring
from ._serde import json_type, jsonable
from ._validator import resolve_ref

__all__ = [
    "MAP_ORIGINS",
    "annotated_as",
    "Schema",
    "SignaturePlan",
    "compile_signature",
    "inline_refs",
    "is_pydantic_model",
    "is_union",
    "resolve_hints",
    "signature_schema",
    "type_schema",
    "unwrap_required",
]

Schema: TypeAlias = dict[str, Any]

_UNSUPPORTED_HELP = (
    "supported: str, int, float, bool, None, list[X], Sequence[X], tuple[...], "
    "dict[str, X], Mapping[str, X], Literal[...], Enum, unions, attrs classes, dataclasses, "
    "TypedDict, NamedTuple, pydantic models, Any, Annotated[X, 'description']"
)

_LIST_ORIGINS = frozenset({list, collections.abc.Sequence, collections.abc.MutableSequence})
MAP_ORIGINS = frozenset({dict, collections.abc.Mapping, collections.abc.MutableMapping})


def _json_default(value: Any) -> tuple[bool, Any]:
    try:
        return True, jsonable(value)
    except (TypeError, ValueError, RecursionError):
        return False, None


def resolve_hints(obj: Any, localns: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``typing.get_type_hints(obj, include_extras=True)`` with a clear error.

    Raises:
        TypeError: An annotation cannot be resolved (a name that is not defined
            at module level, for example); the message names the object.
    """
    target = obj
    # Callable objects and partials carry their annotations on what they wrap.
    while not isinstance(target, type | types.ModuleType) and not inspect.isroutine(target):
        if isinstance(target, functools.partial):
            target = target.func
        elif callable(target):
            target = type(target).__call__
        else:
            break
    try:
        return typing.get_type_hints(
            target, localns=dict(localns) if localns else None, include_extras=True
        )
    except Exception as exc:
        name = getattr(obj, "__qualname__", None) or repr(obj)
        raise TypeError(
            f"cannot resolve the type annotations of {name}: {type(exc).__name__}: {exc}"
        ) from None


def is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or get_origin(tp) is typing.Union


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _literal_type(values: tuple[Any, ...]) -> str | list[str]:
    kinds: list[str] = []
    for v in values:
        kind = json_type(v)
        if kind not in kinds:
            kinds.append(kind)
    return kinds[0] if len(kinds) == 1 else kinds


def _primitive_values(values: tuple[Any, ...], path: str, what: str) -> list[Any]:
    for v in values:
        if not (v is None or isinstance(v, str | int | float)) or isinstance(v, enum.Enum):
            raise _Unsupported(
                path,
                f"{what} has the value {v!r}; only str, int, float, bool and None "
                "values can be expressed in JSON Schema",
            )
    return list(values)


class _Unsupported(Exception):
    """An annotation that has no schema; turned into a TypeError with context."""

    def __init__(self, path: str, message: str, *, show_help: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.show_help = show_help

    def describe(self, root: str) -> str:
        where = f" (at {self.path})" if self.path != root else ""
        tail = f"; {_UNSUPPORTED_HELP}" if self.show_help else ""
        return f"{where}: {self.message}{tail}"


class _Builder:
    """Builds the schema of one type, tracking the attrs classes being expanded."""

    def __init__(self) -> None:
        self._expanding: list[type[Any]] = []

    def build(self, tp: Any, path: str) -> Schema:
        if tp is Any or tp is inspect.Parameter.empty:
            return {}
        origin = get_origin(tp)
        if origin is typing.Annotated:
            base, *metadata = get_args(tp)
            schema = self.build(base, path)
            notes = [m for m in metadata if isinstance(m, str)]
            if notes:
                schema = {**schema, "description": notes[0]}
            return schema
        if isinstance(tp, typing.NewType):
            return self.build(tp.__supertype__, path)
        if tp is None or tp is type(None):
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if origin is Literal:
            values = _primitive_values(get_args(tp), path, repr(tp))
            return {"type": _literal_type(tuple(values)), "enum": values}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            values = _primitive_values(tuple(m.value for m in tp), path, f"enum {tp.__qualname__}")
            if not values:
                raise _Unsupported(path, f"enum {tp.__qualname__} has no members")
            return {"type": _literal_type(tuple(values)), "enum": values}
        if is_union(tp):
            return {"anyOf": [self.build(arg, path) for arg in get_args(tp)]}
        kind = _object_kind(tp)
        if kind is not None:
            return self._object_schema(tp, kind, path)
        if is_pydantic_model(tp):
            return self._pydantic_schema(tp, path)
        if tp is tuple or origin is tuple:
            return self._tuple_schema(tp, origin, path)
        if tp in _LIST_ORIGINS or origin in _LIST_ORIGINS:
            args = get_args(tp)
            if not args:
                return {"type": "array"}
            items = self.build(args[0], f"{path}[]")
            return {"type": "array", "items": items} if items else {"type": "array"}
        if tp in MAP_ORIGINS or origin in MAP_ORIGINS:
            args = get_args(tp)
            if not args:
                return {"type": "object"}
            key, value = args
            if key is not str and key is not Any:
                raise _Unsupported(
                    path,
                    f"{tp!r} has {_type_name(key)} keys; JSON object keys are strings, "
                    "use dict[str, X]",
                )
            values_schema = self.build(value, f"{path}{{}}")
            if not values_schema:
                return {"type": "object"}
            return {"type": "object", "additionalProperties": values_schema}
        raise _Unsupported(path, f"unsupported annotation {_type_name(tp)}", show_help=True)

    def _tuple_schema(self, tp: Any, origin: Any, path: str) -> Schema:
        args = get_args(tp)
        if origin is None:  # bare `tuple`
            return {"type": "array"}
        if len(args) == 2 and args[1] is Ellipsis:
            items = self.build(args[0], f"{path}[]")
            return {"type": "array", "items": items} if items else {"type": "array"}
        if not args:  # tuple[()]
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array",
            "prefixItems": [self.build(arg, f"{path}[{i}]") for i, arg in enumerate(args)],
            "minItems": len(args),
            "maxItems": len(args),
        }

    def _object_schema(self, cls: type[Any], kind: str, path: str) -> Schema:
        """An attrs class, dataclass, TypedDict or NamedTuple: a JSON object of its fields."""
        if cls in self._expanding:
            chain = " -> ".join(c.__qualname__ for c in [*self._expanding, cls])
            raise _Unsupported(
                path,
                f"{kind} {cls.__qualname__} is recursive ({chain}); a "
                "self-contained schema cannot express it without $ref",
            )
        self._expanding.append(cls)
        try:
            try:
                hints = resolve_hints(cls)
            except TypeError as exc:
                raise _Unsupported(path, str(exc)) from None
            description, docs = field_docs(_own_doc(cls))
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for field in _fields(cls, kind, hints):
                schema = dict(self.build(field.type, f"{path}.{field.name}"))
                doc = field.description or docs.get(field.name) or docs.get(field.alias)
                if doc and "description" not in schema:
                    schema["description"] = doc
                if field.required:
                    required.append(field.name)
                else:
                    ok, value = field.default()
                    if ok:
                        schema["default"] = value
                properties[field.name] = schema
            result: Schema = {"type": "object"}
            if description:
                result["description"] = description
            result.update(
                {"properties": properties, "required": required, "additionalProperties": False}
            )
            return result
        finally:
            self._expanding.pop()

    def _pydantic_schema(self, cls: type[Any], path: str) -> Schema:
        try:
            return inline_refs(cls.model_json_schema())
        except (TypeError, ValueError) as exc:
            raise _Unsupported(path, f"pydantic model {cls.__qualname__}: {exc}") from None


@attrs.frozen
class _Field:
    name: str
    alias: str
    type: Any
    required: bool
    default: Callable[[], tuple[bool, Any]]
    description: str | None


def _object_kind(tp: Any) -> str | None:
    """Which kind of record class ``tp`` is, if any."""
    if not isinstance(tp, type) or get_origin(tp) is not None:
        return None
    if attrs.has(tp):
        return "attrs class"
    if dataclasses.is_dataclass(tp):
        return "dataclass"
    if typing.is_typeddict(tp):
        return "TypedDict"
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):
        return "NamedTuple"
    return None


def is_pydantic_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class; never imports pydantic."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(tp, type)
        and get_origin(tp) is None
        and issubclass(tp, pydantic.BaseModel)
    )


def _own_doc(cls: type[Any]) -> str | None:
    doc = cls.__doc__
    # dataclasses and NamedTuples make up a docstring from the signature.
    if doc and doc.startswith(f"{cls.__name__}("):
        return None
    return doc


def _fields(cls: type[Any], kind: str, hints: Mapping[str, Any]) -> list[_Field]:
    if kind == "attrs class":
        return [
            _Field(
                f.name,
                f.alias,
                _or_any(hints.get(f.name, f.type)),
                f.default is attrs.NOTHING,
                functools.partial(_field_default, f.default),
                f.metadata.get("description"),
            )
            for f in attrs.fields(cls)
            if f.init
        ]
    if kind == "dataclass":
        return [
            _Field(
                f.name,
                f.name,
                _or_any(hints.get(f.name)),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                functools.partial(_dataclass_default, f),
                f.metadata.get("description"),
            )
            for f in dataclasses.fields(cls)
            if f.init
        ]
    if kind == "TypedDict":
        return [
            _Field(
                name,
                name,
                unwrap_required(hint),
                _typeddict_requires(cls, name, hint),
                _no_default,
                None,
            )
            for name, hint in hints.items()
        ]
    defaults: Mapping[str, Any] = cls._field_defaults
    return [
        _Field(
            name,
            name,
            _or_any(hints.get(name)),
            name not in defaults,
            functools.partial(_json_default, defaults.get(name)),
            None,
        )
        for name in cls._fields
    ]


def _or_any(tp: Any) -> Any:
    return Any if tp is None else tp


def unwrap_required(hint: Any) -> Any:
    """``Required[X]`` / ``NotRequired[X]`` as ``X`` (typing's or typing_extensions')."""
    while getattr(get_origin(hint), "_name", None) in ("Required", "NotRequired", "ReadOnly"):
        hint = get_args(hint)[0]
    return hint


def _typeddict_requires(cls: type[Any], name: str, hint: Any) -> bool:
    # __required_keys__ misses Required[] / NotRequired[] written as strings
    # (``from __future__ import annotations``) before Python 3.14; the
    # resolved hint has them.
    wrapper = getattr(get_origin(hint), "_name", None)
    if wrapper == "ReadOnly":
        return _typeddict_requires(cls, name, get_args(hint)[0])
    if wrapper in ("Required", "NotRequired"):
        return bool(wrapper == "Required")
    return bool(name in cls.__required_keys__)


def _no_default() -> tuple[bool, Any]:
    return False, None


def _dataclass_default(field: dataclasses.Field[Any]) -> tuple[bool, Any]:
    if field.default is not dataclasses.MISSING:
        return _json_default(field.default)
    try:
        return _json_default(field.default_factory())  # type: ignore[operator]
    except Exception:
        return False, None


def _field_default(default: Any) -> tuple[bool, Any]:
    """An attrs field's default as JSON, if it has one that JSON can show."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return False, None
        try:
            default = default.factory()
        except Exception:
            return False, None
    return _json_default(default)


def type_schema(tp: Any) -> dict[str, Any]:
    """The self-contained JSON Schema of one annotation.

    Raises:
        TypeError: The annotation (or a type nested in it) is not supported, or
            it is a recursive attrs class.

    Example:
        >>> type_schema(list[int] | None)
        {'anyOf': [{'type': 'array', 'items': {'type': 'integer'}}, {'type': 'null'}]}
    """
    try:
        return _Builder().build(tp, "value")
    except _Unsupported as exc:
        raise TypeError(f"{tp!r}{exc.describe('value')}") from None


@attrs.frozen
class SignaturePlan:
    """What a tool needs from its function's signature, computed once.

    Attributes:
        schema: The input schema (a JSON object schema).
        descriptions: The parameter descriptions put into the schema.
        hints: Each parameter's annotation (``Any`` when missing), for structuring.
        takes_context: Whether the first parameter is the context, left out of
            the schema.
    """

    schema: dict[str, Any]
    descriptions: dict[str, str]
    hints: dict[str, Any]
    takes_context: bool


def compile_signature(
    fn: Callable[..., Any],
    *,
    skip_first: bool = False,
    context: type[Any] | None = None,
    localns: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> SignaturePlan:
    """Build the input schema of ``fn`` and the annotations to structure with.

    Args:
        fn: The function.
        skip_first: Leave the first parameter (the `ToolContext`) out,
            whatever its annotation.
        context: The context type: a first parameter annotated with it (or
            ``Annotated[it, ...]``) is left out, as with ``skip_first``.
        localns: Extra names for resolving string annotations.
        where: How to name ``fn`` in errors (its qualified name by default).

    Raises:
        TypeError: ``*args``, ``**kwargs``, a positional-only parameter, an
            unsupported or unresolvable annotation, a recursive attrs class,
            or a later parameter annotated with ``context``; the message names
            the parameter.
    """
    label = where or f"{getattr(fn, '__qualname__', None) or repr(fn)}()"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{label}: cannot read the signature: {exc}") from None
    try:
        hints = resolve_hints(fn, localns)
    except TypeError as exc:
        raise TypeError(f"{label}: {exc}") from None
    _, _, doc_params = parse_docstring(getattr(fn, "__doc__", None))
    params = list(signature.parameters.values())
    takes_context = skip_first
    if context is not None:
        if params and annotated_as(hints.get(params[0].name), context):
            takes_context = True
        for param in params[1:]:
            if annotated_as(hints.get(param.name), context):
                raise TypeError(
                    f"{label}: parameter {param.name!r} is annotated {context.__name__}; "
                    "the context must be the first parameter"
                )
    if takes_context:
        if not params:
            raise TypeError(f"{label}: expected a first parameter for the ToolContext")
        params = params[1:]
    properties: dict[str, Schema] = {}
    required: list[str] = []
    descriptions: dict[str, str] = {}
    param_hints: dict[str, Any] = {}
    builder = _Builder()
    for param in params:
        name = param.name
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(
                f"{label}: parameter *{name} is not supported; tools take named arguments only"
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(
                f"{label}: parameter **{name} is not supported; tools take named arguments only"
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"{label}: parameter {name!r} is positional-only; tool arguments are passed by name"
            )
        hint = hints.get(name, Any)
        try:
            schema = dict(builder.build(hint, name))
        except _Unsupported as exc:
            raise TypeError(f"{label}: parameter {name!r}{exc.describe(name)}") from None
        if "description" not in schema and name in doc_params:
            schema["description"] = doc_params[name]
        if "description" in schema:
            descriptions[name] = schema["description"]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            ok, value = _json_default(param.default)
            if ok:
                schema["default"] = value
        properties[name] = schema
        param_hints[name] = hint
    input_schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return SignaturePlan(input_schema, descriptions, param_hints, takes_context)


def annotated_as(hint: Any, cls: type[Any]) -> bool:
    if get_origin(hint) is typing.Annotated:
        hint = get_args(hint)[0]
    return isinstance(hint, type) and issubclass(hint, cls)


def signature_schema(
    fn: Callable[..., Any],
    *,
    skip_first: bool,
    localns: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON Schema of ``fn``'s arguments, and their descriptions.

    Descriptions come from ``Annotated[X, "description"]`` or, failing that,
    from the docstring's ``Args:`` section. JSON-able defaults are given as
    ``"default"``; parameters without a default are ``"required"``.

    Args:
        fn: The function.
        skip_first: Leave the first parameter (the `ToolContext`) out.
        localns: Extra names for resolving string annotations.

    Returns:
        ``(input_schema, param_descriptions)``.

    Raises:
        TypeError: ``*args``, ``**kwargs``, a positional-only parameter, an
            unsupported annotation or a recursive attrs class; the message
            names the parameter.

    Example:
        >>> def area(width: float, height: float = 1.0) -> float: ...
        >>> signature_schema(area, skip_first=False)[0]["required"]
        ['width']
    """
    plan = compile_signature(fn, skip_first=skip_first, localns=localns)
    return plan.schema, plan.descriptions


_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "deprecated"})


def inline_refs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with every local ``$ref`` replaced by what it points at, and no ``$defs``.

    A reference with sibling keywords keeps them: annotations (``description``,
    ``title``, ``default``...) override the target's; anything else is
    combined with ``allOf``.

    Raises:
        TypeError: A recursive reference, which a self-contained schema
            cannot express; the message names the chain.
        ValueError: A reference that is not local or does not resolve.

    Example:
        >>> inline_refs({"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}},
        ...              "$defs": {"P": {"type": "integer"}}})
        {'type': 'object', 'properties': {'p': {'type': 'integer'}}}
    """
    inlined: dict[str, Any] = _Inliner(schema).inline(schema, ())
    return inlined


class _Inliner:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root

    def inline(self, node: Any, chain: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.inline(item, chain) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in chain:
                raise TypeError(
                    f"the schema is recursive ({' -> '.join((*chain, ref))}); a "
                    "self-contained schema cannot express it without $ref"
                )
            target = self.inline(resolve_ref(self._root, ref), (*chain, ref))
            siblings = {k: self.inline(v, chain) for k, v in node.items() if k != "$ref"}
            if set(siblings) <= _ANNOTATIONS:
                return {**target, **siblings}
            return {"allOf": [target], **siblings}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$defs", "definitions"):
                continue
            if key in _DATA_KEYS:
                out[key] = value
            elif key in _NAMED_SCHEMAS and isinstance(value, Mapping):
                out[key] = {name: self.inline(sub, chain) for name, sub in value.items()}
            else:
                out[key] = self.inline(value, chain)
        return out


# Keys whose values map names to schemas (a property called "$ref" is a name),
# and keys whose values are data (an enum value shaped like a reference is data).
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties"})
_DATA_KEYS = frozenset({"const", "default", "enum", "examples"})
