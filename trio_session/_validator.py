"""Checking a value against a JSON Schema, with errors a model can act on.

Written by hand, because the core may depend only on trio, attrs and cattrs,
and not taken from ``jsonschema`` when it happens to be installed: a tool must
accept the same arguments, with the same messages, wherever it runs, and
``jsonschema`` takes ``3.0`` for an integer where every other path of
trio-session refuses it (the scalar rules are `_serde`'s).

It covers what signatures, pydantic and MCP servers emit: ``type`` (a name or a
list of names, so ``["string", "null"]`` is nullable), ``enum``, ``const``,
``anyOf``, ``oneOf``, ``allOf``, ``not``, ``properties``, ``required``,
``additionalProperties``, ``patternProperties``, ``minProperties``,
``maxProperties``, ``items`` (a schema, or a list as in older drafts),
``prefixItems``, ``minItems``, ``maxItems``, ``uniqueItems``, ``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers, or the
booleans of draft 4), ``multipleOf``, ``minLength``, ``maxLength``,
``pattern`` (searched, as JSON Schema says) and local ``$ref`` into
``$defs`` / ``definitions``. ``format`` and the annotations (``title``,
``description``, ``default``, ``examples``, ...) are ignored, as are keywords
outside that list.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._serde import is_json_type, json_type, jsonable, same_value, show_value

__all__ = ["check_schema", "describe_schema", "resolve_ref", "validate"]

_TYPES = frozenset({"string", "integer", "number", "boolean", "null", "array", "object"})
_SCHEMA_KEYS = ("additionalProperties", "additionalItems", "items", "not")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_COUNTS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_MAX_REF_HOPS = 64


def validate(schema: Mapping[str, Any] | bool, value: Any) -> list[str]:
    """Check ``value`` against a JSON Schema (one `check_schema` accepts).

    The scalar rules are `_serde`'s: ``3.0`` is not an integer, a bool is
    never a number.

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
    if _plainly_valid(schema, value):
        return []
    errors: list[str] = []
    try:
        _Checker(schema).check(schema, value, "", errors)
    except RecursionError:
        # A schema can refer to itself without consuming the value
        # (``{"allOf": [{"$ref": "#"}]}``); the value is refused, not the caller.
        return [f"{_label('')}: the schema refers to itself without end"]
    return errors


# The schemas most tools have (what signatures of scalar parameters give): an object
# of scalar-typed properties. Annotations are ignored, as everywhere here.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format"})
_PLAIN_OBJECT = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
_PLAIN_SCALAR = _ANNOTATIONS | {"type"}
_SCALARS = frozenset({"string", "integer", "number", "boolean", "null"})


def _plainly_valid(schema: object, value: object) -> bool:
    """A quick yes for a plain object schema and a value that fits it.

    True only when the full check would find no problem; False means "check in
    full" (a problem, or a schema with more than scalar-typed properties), so the
    messages always come from `_Checker`.
    """
    if not isinstance(schema, dict) or type(value) is not dict:
        return False
    if schema.get("type") != "object" or not _PLAIN_OBJECT.issuperset(schema):
        return False
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(additional, bool):
        return False
    for name in schema.get("required", ()):
        if name not in value:
            return False
    for key, item in value.items():
        sub = properties.get(key) if type(key) is str else None
        if sub is None:
            if additional is not True or type(key) is not str:
                return False
            continue
        if not isinstance(sub, dict) or not _PLAIN_SCALAR.issuperset(sub):
            return False
        kind = sub.get("type")
        if type(kind) is not str or kind not in _SCALARS or not is_json_type(kind, item):
            return False
    return True


# The exact Python types of a JSON value of each scalar type, under the strict rules
# (`is_json_type`): a bool is never an integer or a number, 3.0 never an integer.
_EXACT_TYPES: Mapping[str, frozenset[type]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
}


def plain_object_types(schema: object) -> tuple[tuple[str, ...], dict[str, frozenset[type]]] | None:
    """For a plain object schema (see `_plainly_valid`): its required names and each
    property's exact Python types; None for any other schema.

    A dict whose every key is a property, whose every value's type is one of its
    property's, and that has every required name, is valid: no problem to report.
    Computed once per tool, so that checking a call is a loop of type lookups.
    """
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    if not _PLAIN_OBJECT.issuperset(schema):
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", ())
    if not isinstance(properties, dict) or not isinstance(required, list | tuple):
        return None
    types: dict[str, frozenset[type]] = {}
    for name, sub in properties.items():
        if not isinstance(sub, dict) or not _PLAIN_SCALAR.issuperset(sub):
            return None
        kind = sub.get("type")
        if not isinstance(kind, str) or kind not in _EXACT_TYPES:
            return None
        types[name] = _EXACT_TYPES[kind]
    if not all(isinstance(name, str) and name in types for name in required):
        return None
    return tuple(required), types


def check_schema(schema: object, where: str = "schema") -> None:
    """Refuse a JSON Schema that `validate` cannot apply as its author meant.

    Raises:
        TypeError: ``schema`` is not a mapping, or holds a value JSON cannot.
        ValueError: A keyword has a value of the wrong kind (an unknown type
            name, a negative ``minLength``, a ``pattern`` that is not a regular
            expression, a ``$ref`` that does not resolve inside the schema...);
            the message names its path, e.g. ``schema.properties.city.type``.

    Example:
        >>> check_schema({"type": "object", "properties": {"n": {"type": "int"}}})
        Traceback (most recent call last):
        ...
        ValueError: schema.properties.n.type: 'int' is not a JSON Schema type (one of ...)
    """
    if not isinstance(schema, Mapping):
        raise TypeError(f"{where} must be a JSON Schema object, got {type(schema).__name__}")
    jsonable(schema, where)
    checker = _Checker(schema)
    checker.check_schema(schema, where)


def describe_schema(schema: Mapping[str, Any] | bool) -> str:
    """A short phrase for what a schema accepts ("string or null", "one of 'c', 'f')."""
    return _Checker(schema).describe(schema)


def resolve_ref(root: Any, ref: str) -> Any:
    """The schema a local ``$ref`` (``#``, ``#/$defs/Name``...) points at in ``root``.

    Raises:
        ValueError: The reference is not local or points at nothing.

    Example:
        >>> resolve_ref({"$defs": {"P": {"type": "integer"}}}, "#/$defs/P")
        {'type': 'integer'}
    """
    if not ref.startswith("#"):
        raise ValueError(f"$ref {ref!r} is not local; only '#...' references are supported")
    target: Any = root
    pointer = ref[1:]
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"$ref {ref!r} is not a JSON pointer ('#/$defs/Name')")
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise ValueError(f"$ref {ref!r} does not resolve: no {part!r} in the schema")
    return target


def _label(path: str) -> str:
    return path or "arguments"


def _join(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _types(schema: Mapping[str, Any]) -> list[str] | None:
    expected = schema.get("type")
    if expected is None:
        return None
    return [expected] if isinstance(expected, str) else list(expected)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}(s)"


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class _Checker:
    """Validation against one root schema, which local ``$ref`` resolve in."""

    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self._root = root

    # -- references ----------------------------------------------------------

    def resolve(self, ref: str) -> Any:
        return resolve_ref(self._root, ref)

    def _deref(self, schema: Any) -> Any:
        """Follow ``$ref`` as long as a schema is only a reference."""
        for _ in range(_MAX_REF_HOPS):
            if not (isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str)):
                return schema
            if len(schema) > 1:
                return schema  # a $ref with siblings: both apply, see check()
            schema = self.resolve(schema["$ref"])
        raise ValueError("$ref chain is circular or longer than 64 references")

    # -- the schema itself -----------------------------------------------------

    def check_schema(self, schema: Any, where: str) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, Mapping):
            raise ValueError(
                f"{where}: a schema must be an object or a boolean, got {json_type(schema)}"
            )
        for key in _SCHEMA_KEYS:
            if key in schema and not isinstance(schema[key], list):
                self.check_schema(schema[key], f"{where}.{key}")
        if isinstance(schema.get("items"), list):
            for i, sub in enumerate(schema["items"]):
                self.check_schema(sub, f"{where}.items[{i}]")
        for key in _SCHEMA_LISTS:
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, list) or (key != "prefixItems" and not subs):
                    raise ValueError(f"{where}.{key}: must be a non-empty list of schemas")
                for i, sub in enumerate(subs):
                    self.check_schema(sub, f"{where}.{key}[{i}]")
        for key in _SCHEMA_MAPS:
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, Mapping):
                    raise ValueError(f"{where}.{key}: must be an object of schemas")
                for name, sub in subs.items():
                    if key == "patternProperties":
                        self._check_pattern(name, f"{where}.{key}")
                    self.check_schema(sub, _join(f"{where}.{key}", name))
        self._check_keywords(schema, where)

    def _check_keywords(self, schema: Mapping[str, Any], where: str) -> None:
        if "type" in schema:
            names = schema["type"]
            listed = [names] if isinstance(names, str) else names
            if not isinstance(listed, list) or not listed:
                raise ValueError(f"{where}.type: must be a type name or a non-empty list of them")
            for name in listed:
                if name not in _TYPES:
                    raise ValueError(
                        f"{where}.type: {name!r} is not a JSON Schema type "
                        f"(one of {', '.join(sorted(_TYPES))})"
                    )
            if len(set(listed)) != len(listed):
                raise ValueError(f"{where}.type: lists a type twice")
        if "required" in schema:
            required = schema["required"]
            if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
                raise ValueError(f"{where}.required: must be a list of property names")
        if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
            raise ValueError(f"{where}.enum: must be a non-empty list of values")
        for key in _COUNTS:
            if key in schema:
                n = schema[key]
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError(f"{where}.{key}: must be a non-negative integer, got {n!r}")
        for key in _BOUNDS:
            if key in schema:
                bound = schema[key]
                draft4 = key.startswith("exclusive") and isinstance(bound, bool)
                if not draft4 and not is_json_type("number", bound):
                    raise ValueError(f"{where}.{key}: must be a number, got {show_value(bound)}")
        if "multipleOf" in schema:
            step = schema["multipleOf"]
            if not is_json_type("number", step) or step <= 0:
                raise ValueError(f"{where}.multipleOf: must be a number > 0, got {step!r}")
        if "uniqueItems" in schema and not isinstance(schema["uniqueItems"], bool):
            raise ValueError(f"{where}.uniqueItems: must be true or false")
        if "pattern" in schema:
            self._check_pattern(schema["pattern"], f"{where}.pattern")
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise ValueError(f"{where}.$ref: must be a string")
            try:
                self._deref({"$ref": ref})
            except ValueError as exc:
                raise ValueError(f"{where}.$ref: {exc}") from None

    @staticmethod
    def _check_pattern(pattern: object, where: str) -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"{where}: a pattern must be a string")
        try:
            _regex(pattern)
        except re.error as exc:
            raise ValueError(f"{where}: {pattern!r} is not a regular expression: {exc}") from None

    # -- values ------------------------------------------------------------------

    def types_match(self, schema: Any, value: Any) -> bool:
        schema = self._deref(schema)
        if not isinstance(schema, Mapping):
            return schema is not False
        expected = _types(schema)
        if expected is not None:
            return any(is_json_type(t, value) for t in expected)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return any(self.types_match(s, value) for s in schema[key])
        return True

    def describe(self, schema: Any) -> str:
        schema = self._deref(schema)
        if not isinstance(schema, Mapping):
            return "any value" if schema else "no value"
        if "const" in schema:
            return show_value(schema["const"])
        if "enum" in schema:
            return "one of " + ", ".join(show_value(v) for v in schema["enum"])
        expected = _types(schema)
        if expected is not None:
            return " or ".join(expected)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return " or ".join(self.describe(s) for s in schema[key])
        return "any value"

    def check(self, schema: Any, value: Any, path: str, errors: list[str]) -> None:
        if schema is True:
            return
        if schema is False:
            errors.append(f"{_label(path)}: no value is allowed here")
            return
        if "$ref" in schema:
            before = len(errors)
            self.check(self._deref({"$ref": schema["$ref"]}), value, path, errors)
            if len(errors) > before:
                return
        for sub in schema.get("allOf", ()):
            before = len(errors)
            self.check(sub, value, path, errors)
            if len(errors) > before:
                return
        for key in ("anyOf", "oneOf"):
            if key in schema:
                before = len(errors)
                self._check_branches(schema[key], value, path, errors, exactly_one=key == "oneOf")
                if len(errors) > before:
                    return
        if "not" in schema:
            probe: list[str] = []
            self.check(schema["not"], value, path, probe)
            if not probe:
                errors.append(f"{_label(path)}: must not be {self.describe(schema['not'])}")
                return
        expected = _types(schema)
        if expected is not None and not self.types_match(schema, value):
            errors.append(
                f"{_label(path)}: expected {' or '.join(expected)}, got {json_type(value)}"
            )
            return
        if "enum" in schema and not any(same_value(value, v) for v in schema["enum"]):
            errors.append(
                f"{_label(path)}: must be one of "
                + ", ".join(show_value(v) for v in schema["enum"])
            )
            return
        if "const" in schema and not same_value(value, schema["const"]):
            errors.append(f"{_label(path)}: must be {show_value(schema['const'])}")
            return
        if isinstance(value, Mapping):
            self._check_object(schema, value, path, errors)
        elif isinstance(value, list | tuple):
            self._check_array(schema, value, path, errors)
        elif isinstance(value, str):
            self._check_string(schema, value, path, errors)
        elif is_json_type("number", value):
            self._check_number(schema, value, path, errors)

    def _check_branches(
        self,
        branches: Sequence[Any],
        value: Any,
        path: str,
        errors: list[str],
        *,
        exactly_one: bool,
    ) -> None:
        attempts: list[tuple[Any, list[str]]] = []
        matched: list[int] = []
        for i, branch in enumerate(branches):
            branch_errors: list[str] = []
            self.check(branch, value, path, branch_errors)
            if not branch_errors:
                if not exactly_one:
                    return
                matched.append(i)
            attempts.append((branch, branch_errors))
        if len(matched) == 1:
            return
        if matched:
            errors.append(
                f"{_label(path)}: matches {len(matched)} of the allowed forms "
                f"({' and '.join(self.describe(branches[i]) for i in matched)}); "
                "it must match exactly one"
            )
            return
        # When exactly one branch has the value's JSON type (the object branch of
        # `Point | None` for an object), its specific problems are the useful ones.
        typed = [problems for branch, problems in attempts if self.types_match(branch, value)]
        if len(typed) == 1:
            errors.extend(typed[0])
            return
        wanted = " or ".join(self.describe(b) for b in branches)
        errors.append(f"{_label(path)}: expected {wanted}, got {json_type(value)}")

    def _check_object(
        self, schema: Mapping[str, Any], value: Mapping[Any, Any], path: str, errors: list[str]
    ) -> None:
        properties: Mapping[str, Any] = schema.get("properties", {})
        patterns: Mapping[str, Any] = schema.get("patternProperties", {})
        additional = schema.get("additionalProperties", True)
        noun = "field" if path else "argument"
        n = len(value)
        low = schema.get("minProperties")
        high = schema.get("maxProperties")
        if low is not None and n < low:
            errors.append(f"{_label(path)}: expected at least {_plural(low, noun)}, got {n}")
        if high is not None and n > high:
            errors.append(f"{_label(path)}: expected at most {_plural(high, noun)}, got {n}")
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(
                    f"{_label(path)}: keys must be strings, got {type(key).__name__} {key!r}"
                )
                continue
            where = _join(path, key)
            sub = properties.get(key)
            matching = [s for p, s in patterns.items() if _regex(p).search(key)]
            if sub is not None:
                self.check(sub, item, where, errors)
            for pattern_schema in matching:
                self.check(pattern_schema, item, where, errors)
            if sub is not None or matching:
                continue
            if additional is False:
                errors.append(f"unexpected {noun} {where!r}")
            elif additional is not True:
                self.check(additional, item, where, errors)
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"missing required {noun} {_join(path, key)!r}")

    def _check_array(
        self,
        schema: Mapping[str, Any],
        value: list[Any] | tuple[Any, ...],
        path: str,
        errors: list[str],
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
        items = schema.get("items")
        prefix: list[Any] = schema.get("prefixItems", [])
        if isinstance(items, list):  # the tuple form of drafts before 2020-12
            prefix, items = items, schema.get("additionalItems")
        for i, sub in enumerate(prefix[:n]):
            self.check(sub, value[i], f"{path}[{i}]", errors)
        if items is not None:
            for i in range(len(prefix), n):
                self.check(items, value[i], f"{path}[{i}]", errors)
        if schema.get("uniqueItems") is True:
            for j in range(1, n):
                first = next((i for i in range(j) if _json_equal(value[i], value[j])), None)
                if first is not None:
                    errors.append(
                        f"{_label(path)}: items {first} and {j} are equal; items must be unique"
                    )
                    return

    @staticmethod
    def _check_string(schema: Mapping[str, Any], value: str, path: str, errors: list[str]) -> None:
        n = len(value)
        low = schema.get("minLength")
        high = schema.get("maxLength")
        if low is not None and n < low:
            errors.append(f"{_label(path)}: expected at least {low} character(s), got {n}")
        if high is not None and n > high:
            errors.append(f"{_label(path)}: expected at most {high} character(s), got {n}")
        pattern = schema.get("pattern")
        if pattern is not None and not _regex(pattern).search(value):
            errors.append(f"{_label(path)}: must match the pattern {pattern!r}")

    @staticmethod
    def _check_number(
        schema: Mapping[str, Any], value: float, path: str, errors: list[str]
    ) -> None:
        low: Any = schema.get("minimum")
        high: Any = schema.get("maximum")
        ex_low: Any = schema.get("exclusiveMinimum")
        ex_high: Any = schema.get("exclusiveMaximum")
        if ex_low is True:  # draft 4: a flag on minimum
            ex_low, low = low, None
        if ex_high is True:
            ex_high, high = high, None
        # The value is shown only in a problem's message (json.dumps is not free).
        if is_json_type("number", low) and value < low:
            errors.append(f"{_label(path)}: must be >= {show_value(low)}, got {show_value(value)}")
        if is_json_type("number", high) and value > high:
            errors.append(f"{_label(path)}: must be <= {show_value(high)}, got {show_value(value)}")
        if is_json_type("number", ex_low) and value <= ex_low:
            errors.append(
                f"{_label(path)}: must be > {show_value(ex_low)}, got {show_value(value)}"
            )
        if is_json_type("number", ex_high) and value >= ex_high:
            errors.append(
                f"{_label(path)}: must be < {show_value(ex_high)}, got {show_value(value)}"
            )
        step = schema.get("multipleOf")
        if step is not None:
            quotient = value / step
            if not (math.isfinite(quotient) and math.isclose(quotient, round(quotient))):
                errors.append(
                    f"{_label(path)}: must be a multiple of {show_value(step)}, "
                    f"got {show_value(value)}"
                )


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality for ``uniqueItems``: numbers by value, a bool never a number."""
    kind_a, kind_b = json_type(a), json_type(b)
    if {kind_a, kind_b} <= {"integer", "number"}:
        return bool(a == b)
    if kind_a != kind_b:
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)
