"""Checking a value against a JSON Schema, with errors a model can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._serde import is_json_type, json_type, same_value, show_value

__all__ = ["describe_schema", "validate"]


def validate(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Check ``value`` against a schema made by `signature_schema`.

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
    errors: list[str] = []
    _check(schema, value, "", errors)
    return errors


def _label(path: str) -> str:
    return path or "arguments"


def _join(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _types_match(schema: Mapping[str, Any], value: Any) -> bool:
    expected = schema.get("type")
    if expected is not None:
        if isinstance(expected, str):
            return is_json_type(expected, value)
        return any(is_json_type(t, value) for t in expected)
    if "anyOf" in schema:
        return any(_types_match(s, value) for s in schema["anyOf"])
    return True


def describe_schema(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(show_value(v) for v in schema["enum"])
    if "type" in schema:
        t = schema["type"]
        return t if isinstance(t, str) else " or ".join(t)
    if "anyOf" in schema:
        return " or ".join(describe_schema(s) for s in schema["anyOf"])
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
        errors.append(f"{_label(path)}: expected {want}, got {json_type(value)}")
        return
    if "enum" in schema and not any(same_value(value, v) for v in schema["enum"]):
        errors.append(
            f"{_label(path)}: must be one of " + ", ".join(show_value(v) for v in schema["enum"])
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
    wanted = " or ".join(describe_schema(b) for b in branches)
    errors.append(f"{_label(path)}: expected {wanted}, got {json_type(value)}")


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
