"""The validator's quick yes for plain object schemas agrees with the full check."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given, strategies as st

from trio_session import InvalidToolArguments, tool
from trio_session._arguments import plain_arguments, plain_kwargs, structure_arguments
from trio_session._validator import _Checker, _plainly_valid, validate

SCALARS = ("string", "integer", "number", "boolean", "null")
NAMES = st.sampled_from(["a", "b", "c", "d"])

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)

property_schemas = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(SCALARS)),
    st.builds(lambda t: {"type": t, "description": "x"}, st.sampled_from(SCALARS)),
    # Not plain: the full check must decide.
    st.builds(lambda t: {"type": [t, "null"]}, st.sampled_from(SCALARS)),
    st.just({"type": "integer", "minimum": 0}),
    st.just({"anyOf": [{"type": "number"}, {"type": "null"}]}),
)

object_schemas = st.builds(
    lambda props, required, additional: {
        "type": "object",
        "properties": props,
        "required": sorted(required & props.keys()),
        **({} if additional is None else {"additionalProperties": additional}),
    },
    st.dictionaries(NAMES, property_schemas, max_size=4),
    st.sets(NAMES),
    st.sampled_from([None, True, False]),
)


def full_check(schema: dict[str, Any], value: object) -> list[str]:
    errors: list[str] = []
    _Checker(schema).check(schema, value, "", errors)
    return errors


@given(object_schemas, st.dictionaries(NAMES, values, max_size=4))
def test_quick_yes_only_when_the_full_check_finds_nothing(
    schema: dict[str, Any], value: dict[str, Any]
) -> None:
    if _plainly_valid(schema, value):
        assert full_check(schema, value) == []
    assert validate(schema, value) == full_check(schema, value)


def test_quick_yes_for_a_fitting_value_and_the_full_messages_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert _plainly_valid(schema, {"a": 1, "b": "x"})
    assert not _plainly_valid(schema, {"a": 1.0})
    assert not _plainly_valid(schema, {"a": True})
    assert not _plainly_valid(schema, {"b": "x"})
    assert not _plainly_valid(schema, {"a": 1, "c": 2})
    assert validate(schema, {"a": True, "c": 2}) == [
        "a: expected integer, got boolean",
        "unexpected argument 'c'",
    ]
    assert validate(schema, {"b": "x"}) == ["missing required argument 'a'"]


@given(object_schemas, st.dictionaries(NAMES, values, max_size=4))
def test_plain_arguments_take_a_call_only_when_the_full_check_finds_nothing(
    schema: dict[str, Any], value: dict[str, Any]
) -> None:
    plain = plain_arguments(schema, None)
    kwargs = None if plain is None else plain_kwargs(plain, value)
    if kwargs is not None:
        assert full_check(schema, value) == []
        assert kwargs == value and kwargs is not value


HINTS = st.sampled_from([int, str, bool, float, Any, int | None, list[int]])


@given(
    st.dictionaries(NAMES, HINTS, max_size=4),
    st.dictionaries(NAMES, values, max_size=4),
)
def test_a_tool_s_plain_kwargs_are_what_validation_and_structuring_give(
    hints: dict[str, Any], value: dict[str, Any]
) -> None:
    def handler(**kwargs: Any) -> None:
        return None

    handler.__annotations__ = dict(hints)
    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=hint)
            for name, hint in hints.items()
        ]
    )
    made = tool(handler, name="t")
    plain = plain_arguments(made.input_schema, dict(hints))
    kwargs = None if plain is None else plain_kwargs(plain, value)
    if kwargs is None:
        return
    problems = validate(made.input_schema, value)
    assert problems == []
    structured, problems = structure_arguments(dict(hints), value)
    assert problems == []
    assert kwargs == structured
    assert [type(v) for v in kwargs.values()] == [type(v) for v in structured.values()]


def test_a_plain_tool_validates_without_the_full_check_and_reports_as_before() -> None:
    @tool
    def add(a: int, b: float = 0.0) -> float:
        """Add."""
        return a + b

    plain = plain_arguments(add.input_schema, {"a": int, "b": float})
    assert plain is not None
    assert plain_kwargs(plain, {"a": 1, "b": 2.5}) == {"a": 1, "b": 2.5}
    assert plain_kwargs(plain, {"a": 1, "b": 2}) is None
    assert add.validate({"a": 1, "b": 2.5}) == {"a": 1, "b": 2.5}
    # An int for a float is structured (to 2.0): the full path does it.
    assert add.validate({"a": 1, "b": 2}) == {"a": 1, "b": 2.0}
    assert type(add.validate({"a": 1, "b": 2})["b"]) is float
    with pytest.raises(InvalidToolArguments, match="a: expected integer, got boolean"):
        add.validate({"a": True})
    with pytest.raises(InvalidToolArguments, match="missing required argument 'a'"):
        add.validate({"b": 1.0})
