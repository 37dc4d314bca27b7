"""JSON Schema from a Python signature, validation against it, and structuring.

Written by hand on purpose: the core may depend only on trio, attrs and
cattrs. The schemas are self-contained (nested types inline, never ``$ref``)
because several providers reject references, and `validate` understands
exactly the keywords generated here: ``type``, ``enum``, ``anyOf``,
``properties``, ``required``, ``additionalProperties``, ``items``,
``prefixItems``, ``minItems`` and ``maxItems`` (``description`` and
``default`` are annotations only).

Supported annotations: str, int, float, bool, None, ``list[X]`` /
``Sequence[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` /
``Mapping[str, X]``, ``Literal[...]``, Enum subclasses, unions (``X | None``),
attrs classes, ``NewType``, ``Any`` (or no annotation) and
``Annotated[X, "description"]``.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import inspect
import json
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import BaseValidationError
from cattrs.v import transform_error

from ._serde import _describe, converter

__all__ = [
    "SignaturePlan",
    "compile_signature",
    "jsonable",
    "parse_docstring",
    "resolve_hints",
    "signature_schema",
    "structure_arguments",
    "type_schema",
    "validate",
]

Schema: TypeAlias = dict[str, Any]

_UNSUPPORTED_HELP = (
    "supported: str, int, float, bool, None, list[X], Sequence[X], tuple[...], "
    "dict[str, X], Mapping[str, X], Literal[...], Enum, unions, attrs classes, Any, "
    "Annotated[X, 'description']"
)

_LIST_ORIGINS = frozenset({list, collections.abc.Sequence, collections.abc.MutableSequence})
_MAP_ORIGINS = frozenset({dict, collections.abc.Mapping, collections.abc.MutableMapping})

# ---------------------------------------------------------------------------
# Docstrings
# ---------------------------------------------------------------------------

_PARAM_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "other parameters",
    }
)
_OTHER_SECTIONS = frozenset(
    {
        "attributes",
        "example",
        "examples",
        "methods",
        "note",
        "notes",
        "raises",
        "references",
        "return",
        "returns",
        "see also",
        "todo",
        "warning",
        "warnings",
        "warns",
        "yield",
        "yields",
    }
)
_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_PARAM_RE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, str, dict[str, str]]:
    """Split a Google-style docstring into its summary, description and parameters.

    Args:
        doc: The docstring (``fn.__doc__``); None gives empty results.

    Returns:
        ``(summary, description, params)``: the first paragraph joined into one
        line; the free text (summary included) with every section such as
        ``Args:``, ``Returns:`` or ``Example:`` removed; and the parameter
        descriptions of the ``Args:`` section, continuation lines joined.

    Example:
        >>> parse_docstring('''Get the weather for a city.
        ...
        ...     Args:
        ...         city: The city name.
        ... ''')
        ('Get the weather for a city.', 'Get the weather for a city.', {'city': 'The city name.'})
    """
    summary, description, sections = _split_docstring(doc)
    params: dict[str, str] = {}
    for name, body in sections:
        if name in _PARAM_SECTIONS:
            params.update(_parse_entries(body))
    return summary, description, params


def _split_docstring(doc: str | None) -> tuple[str, str, list[tuple[str, list[str]]]]:
    if not doc:
        return "", "", []
    lines = inspect.cleandoc(doc).splitlines()
    free: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _HEADER_RE.match(line)
        name = match.group(1).strip().lower() if match else ""
        if name in _PARAM_SECTIONS or name in _OTHER_SECTIONS:
            body: list[str] = []
            i += 1
            # A section runs until the next line that is back at the margin.
            while i < len(lines) and (not lines[i].strip() or lines[i][:1] in (" ", "\t")):
                body.append(lines[i])
                i += 1
            sections.append((name, body))
            continue
        free.append(line.rstrip())
        i += 1
    paragraphs: list[list[str]] = [[]]
    for line in free:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    summary = " ".join(line.strip() for line in paragraphs[0]) if paragraphs else ""
    description = "\n\n".join("\n".join(p) for p in paragraphs)
    return summary, description, sections


def _parse_entries(body: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent("\n".join(body)).splitlines():
        if not line.strip():
            continue
        match = None if line[:1] in (" ", "\t") else _PARAM_RE.match(line)
        if match:
            current = entries.setdefault(match.group(1), [])
            if match.group(2).strip():
                current.append(match.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}


# ---------------------------------------------------------------------------
# JSON values
# ---------------------------------------------------------------------------


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


def _json_default(value: Any) -> tuple[bool, Any]:
    try:
        return True, jsonable(value)
    except (TypeError, ValueError, RecursionError):
        return False, None


# ---------------------------------------------------------------------------
# Schemas from annotations
# ---------------------------------------------------------------------------


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


def _is_union(tp: Any) -> bool:
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
        kind = _json_type(v)
        if kind not in kinds:
            kinds.append(kind)
    return kinds[0] if len(kinds) == 1 else kinds


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


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
        if _is_union(tp):
            return {"anyOf": [self.build(arg, path) for arg in get_args(tp)]}
        if isinstance(tp, type) and attrs.has(tp) and origin is None:
            return self._attrs_schema(tp, path)
        if tp is tuple or origin is tuple:
            return self._tuple_schema(tp, origin, path)
        if tp in _LIST_ORIGINS or origin in _LIST_ORIGINS:
            args = get_args(tp)
            if not args:
                return {"type": "array"}
            items = self.build(args[0], f"{path}[]")
            return {"type": "array", "items": items} if items else {"type": "array"}
        if tp in _MAP_ORIGINS or origin in _MAP_ORIGINS:
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

    def _attrs_schema(self, cls: type[Any], path: str) -> Schema:
        if cls in self._expanding:
            chain = " -> ".join(c.__qualname__ for c in [*self._expanding, cls])
            raise _Unsupported(
                path,
                f"attrs class {cls.__qualname__} is recursive ({chain}); a "
                "self-contained schema cannot express it without $ref",
            )
        self._expanding.append(cls)
        try:
            try:
                hints = resolve_hints(cls)
            except TypeError as exc:
                raise _Unsupported(path, str(exc)) from None
            _, description, sections = _split_docstring(cls.__doc__)
            docs: dict[str, str] = {}
            for name, body in sections:
                if name in _PARAM_SECTIONS or name == "attributes":
                    docs.update(_parse_entries(body))
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for field in attrs.fields(cls):
                if not field.init:
                    continue
                field_type = hints.get(field.name, field.type)
                schema = dict(
                    self.build(Any if field_type is None else field_type, f"{path}.{field.name}")
                )
                doc = (
                    field.metadata.get("description")
                    or docs.get(field.name)
                    or docs.get(field.alias)
                )
                if doc and "description" not in schema:
                    schema["description"] = doc
                if field.default is attrs.NOTHING:
                    required.append(field.name)
                else:
                    ok, value = _field_default(field.default)
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
        if params and _annotated_as(hints.get(params[0].name), context):
            takes_context = True
        for param in params[1:]:
            if _annotated_as(hints.get(param.name), context):
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


def _annotated_as(hint: Any, cls: type[Any]) -> bool:
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


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def validate(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Check ``value`` against a schema made by `signature_schema`.

    Integral floats (``3.0``) are integers; booleans are never numbers.

    Returns:
        Every problem found, each naming its path; empty when the value is valid.

    Example:
        >>> schema = {"type": "object", "properties": {"city": {"type": "string"}},
        ...           "required": ["city"], "additionalProperties": False}
        >>> validate(schema, {"city": 3, "colour": "red"})
        ['city: expected string, got integer', "unexpected argument 'colour'"]
        >>> validate(schema, {})
        ["missing required argument 'city'"]
    """
    errors: list[str] = []
    _check(schema, value, "", errors)
    return errors


def _label(path: str) -> str:
    return path or "arguments"


def _join(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _type_matches(expected: str, value: Any) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "null":
        return value is None
    if expected == "array":
        return isinstance(value, list | tuple)
    if expected == "object":
        return isinstance(value, Mapping)
    return False


def _types_match(schema: Mapping[str, Any], value: Any) -> bool:
    expected = schema.get("type")
    if expected is not None:
        if isinstance(expected, str):
            return _type_matches(expected, value)
        return any(_type_matches(t, value) for t in expected)
    if "anyOf" in schema:
        return any(_types_match(s, value) for s in schema["anyOf"])
    return True


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value)


def _describe_schema(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(_fmt(v) for v in schema["enum"])
    if "type" in schema:
        t = schema["type"]
        return t if isinstance(t, str) else " or ".join(t)
    if "anyOf" in schema:
        return " or ".join(_describe_schema(s) for s in schema["anyOf"])
    return "any value"


def _check(schema: Mapping[str, Any] | bool, value: Any, path: str, errors: list[str]) -> None:
    if schema is True:
        return
    if schema is False:
        errors.append(f"{_label(path)}: no value is allowed here")
        return
    if "anyOf" in schema:
        before = len(errors)
        _check_any_of(schema["anyOf"], value, path, errors)
        if len(errors) > before:
            return
    expected = schema.get("type")
    if expected is not None and not _types_match(schema, value):
        want = expected if isinstance(expected, str) else " or ".join(expected)
        errors.append(f"{_label(path)}: expected {want}, got {_json_type(value)}")
        return
    if "enum" in schema and not any(_json_equal(value, v) for v in schema["enum"]):
        errors.append(
            f"{_label(path)}: must be one of " + ", ".join(_fmt(v) for v in schema["enum"])
        )
        return
    if isinstance(value, Mapping):
        _check_object(schema, value, path, errors)
    elif isinstance(value, list | tuple):
        _check_array(schema, value, path, errors)


def _check_any_of(
    branches: list[Mapping[str, Any]], value: Any, path: str, errors: list[str]
) -> None:
    attempts: list[tuple[Mapping[str, Any], list[str]]] = []
    for branch in branches:
        branch_errors: list[str] = []
        _check(branch, value, path, branch_errors)
        if not branch_errors:
            return
        attempts.append((branch, branch_errors))
    # When exactly one branch has the value's JSON type (the object branch of
    # `Point | None` for an object), its specific problems are the useful ones.
    typed = [problems for branch, problems in attempts if _types_match(branch, value)]
    if len(typed) == 1:
        errors.extend(typed[0])
        return
    wanted = " or ".join(_describe_schema(b) for b in branches)
    errors.append(f"{_label(path)}: expected {wanted}, got {_json_type(value)}")


def _check_object(
    schema: Mapping[str, Any], value: Mapping[Any, Any], path: str, errors: list[str]
) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    noun = "field" if path else "argument"
    for key, item in value.items():
        if not isinstance(key, str):
            errors.append(f"{_label(path)}: keys must be strings, got {type(key).__name__} {key!r}")
            continue
        sub = properties.get(key)
        if sub is not None:
            _check(sub, item, _join(path, key), errors)
        elif additional is False:
            errors.append(f"unexpected {noun} {_join(path, key)!r}")
        elif additional is not True:
            _check(additional, item, _join(path, key), errors)
    for key in schema.get("required", ()):
        if key not in value:
            errors.append(f"missing required {noun} {_join(path, key)!r}")


def _check_array(
    schema: Mapping[str, Any], value: list[Any] | tuple[Any, ...], path: str, errors: list[str]
) -> None:
    n = len(value)
    low = schema.get("minItems")
    high = schema.get("maxItems")
    if low is not None and low == high and n != low:
        errors.append(f"{_label(path)}: expected {low} item(s), got {n}")
        return
    if low is not None and n < low:
        errors.append(f"{_label(path)}: expected at least {low} item(s), got {n}")
        return
    if high is not None and n > high:
        errors.append(f"{_label(path)}: expected at most {high} item(s), got {n}")
        return
    prefix: list[Mapping[str, Any]] = schema.get("prefixItems", [])
    for i, sub in enumerate(prefix[:n]):
        _check(sub, value[i], f"{path}[{i}]", errors)
    items = schema.get("items")
    if items is not None:
        for i in range(len(prefix), n):
            _check(items, value[i], f"{path}[{i}]", errors)


# ---------------------------------------------------------------------------
# Structuring
# ---------------------------------------------------------------------------


def _structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    for member in cls:
        if _json_equal(value, member.value):
            return member
    raise ValueError("must be one of " + ", ".join(_fmt(m.value) for m in cls))


def _structure_int(value: object, type_: Any) -> Any:
    # Registered for `int`, this hook also receives int-based enums (IntEnum,
    # IntFlag): singledispatch finds `int` before `Enum` in their MRO.
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return _structure_enum(value, type_)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected an integer, got {_json_type(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"expected an integer, got {value!r}")
        return int(value)
    return value


def _structure_str(value: object, type_: Any) -> Any:
    # Like `_structure_int`, for str-based enums (StrEnum, `class E(str, Enum)`).
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return _structure_enum(value, type_)
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_type(value)}")
    return value


def _structure_float(value: object, type_: Any) -> Any:
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return _structure_enum(value, type_)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_json_type(value)}")
    return float(value)


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
    return tp in _MAP_ORIGINS or get_origin(tp) in _MAP_ORIGINS


@functools.cache
def _converter() -> cattrs.Converter:
    """A child of the shared converter that also structures tool arguments.

    The shared converter has no hook for arbitrary unions, for ``None`` or for
    integral floats as ints; those belong to tool arguments (whose schema
    already decided what is valid), not to the library's own documents. Made
    at first use, so hooks users registered before that are inherited.
    """
    child = converter.copy()

    def structure_union(value: object, union: Any) -> Any:
        # The first member whose schema accepts the value wins, exactly as
        # validate() decided, so validation and structuring never disagree.
        for schema, member in _member_schemas(union):
            if not validate(schema, value):
                return child.structure(value, member)
        wanted = _describe_schema({"anyOf": [s for s, _ in _member_schemas(union)]})
        raise TypeError(f"expected {wanted}, got {_json_type(value)}")

    def structure_literal(value: object, literal: Any) -> Any:
        for member in get_args(literal):
            if _json_equal(value, member):
                return member
        raise ValueError("must be one of " + ", ".join(_fmt(v) for v in get_args(literal)))

    def structure_none(value: object, _type: object) -> None:
        if value is not None:
            raise TypeError(f"expected null, got {_json_type(value)}")

    def structure_sequence(value: object, _type: object) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {_json_type(value)}")
        return tuple(value)

    def structure_mapping(value: object, type_: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_json_type(value)}")
        args = get_args(type_)
        value_type = args[1] if len(args) == 2 else Any
        return {
            key: item if value_type is Any else child.structure(item, value_type)
            for key, item in value.items()
        }

    child.register_structure_hook(int, _structure_int)
    child.register_structure_hook(str, _structure_str)
    child.register_structure_hook(float, _structure_float)
    child.register_structure_hook(enum.Enum, _structure_enum)
    child.register_structure_hook(type(None), structure_none)
    child.register_structure_hook_func(_is_union, structure_union)
    child.register_structure_hook_func(_is_literal, structure_literal)
    child.register_structure_hook_func(_is_bare_sequence, structure_sequence)
    child.register_structure_hook_func(_is_mapping, structure_mapping)
    return child


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
        if hint is Any:
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
