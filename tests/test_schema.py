"""JSON Schema generation from signatures, docstring parsing, and validate()."""

from __future__ import annotations

import collections.abc
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NewType, Optional, Union

import attrs
import pytest

from trio_session._docstrings import parse_docstring
from trio_session._jsonschema import signature_schema, type_schema
from trio_session._validator import validate

# -- fixtures: module-level types, so string annotations resolve -------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Empty(enum.Enum):
    pass


class Weird(enum.Enum):
    A = (1, 2)


@attrs.frozen
class Point:
    """A point on the plane.

    Attributes:
        x: Horizontal position.
        y: Vertical position.
    """

    x: int
    y: int = 0
    tags: list[str] = attrs.field(factory=list)
    label: str | None = attrs.field(default=None, metadata={"description": "A name."})


@attrs.frozen
class Segment:
    start: Point
    end: Point
    color: Color = Color.RED


@attrs.frozen
class Node:
    value: int
    children: list[Node] = attrs.field(factory=list)


@attrs.frozen
class Ping:
    pong: Pong | None = None


@attrs.frozen
class Pong:
    ping: Ping


@attrs.frozen
class WithSelfFactory:
    a: int = 1
    b: int = attrs.field(default=attrs.Factory(lambda self: self.a + 1, takes_self=True))
    c: datetime.date | None = None  # unsupported type inside a class


@attrs.frozen
class Opaque:
    when: Any = attrs.field(factory=object)


@attrs.frozen
class UnresolvedField:
    x: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


UserId = NewType("UserId", int)


def schema_of(fn: Any, *, skip_first: bool = False) -> dict[str, Any]:
    return signature_schema(fn, skip_first=skip_first)[0]


def prop(fn: Any, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = schema_of(fn)["properties"][name]
    return schema


def walk(value: Any) -> Any:
    """Yield every key of every dict in a nested schema."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# -- parse_docstring ---------------------------------------------------------


def test_parse_docstring_google_style() -> None:
    doc = """Get the weather
    for a city.

    Uses the public service; results are cached.

    Args:
        city: The city name.
        unit (str, optional): Temperature unit,
            "c" or "f".
        *rest: Ignored.

    Returns:
        A sentence.

    Raises:
        ValueError: Never.

    Example:
        >>> get_weather("Oslo")
    """
    summary, description, params = parse_docstring(doc)
    assert summary == "Get the weather for a city."
    assert description == (
        "Get the weather\nfor a city.\n\nUses the public service; results are cached."
    )
    assert params == {
        "city": "The city name.",
        "unit": 'Temperature unit, "c" or "f".',
        "rest": "Ignored.",
    }


def test_parse_docstring_empty_and_none() -> None:
    assert parse_docstring(None) == ("", "", {})
    assert parse_docstring("") == ("", "", {})
    assert parse_docstring("   \n  ") == ("", "", {})


def test_parse_docstring_text_after_a_section_is_description() -> None:
    doc = "Summary.\n\nArgs:\n    a: An a.\n\nMore text.\n"
    summary, description, params = parse_docstring(doc)
    assert summary == "Summary."
    assert description == "Summary.\n\nMore text."
    assert params == {"a": "An a."}


def test_parse_docstring_unknown_header_is_free_text() -> None:
    summary, description, params = parse_docstring("Do it.\n\nUsage:\n  call it\n")
    assert summary == "Do it."
    assert "Usage:" in description
    assert params == {}


def test_parse_docstring_other_param_sections() -> None:
    doc = "S.\n\nArguments:\n    a: A.\nKeyword Args:\n    b: B.\nParameters:\n    c: C.\n"
    assert parse_docstring(doc)[2] == {"a": "A.", "b": "B.", "c": "C."}


# -- the SPEC example ---------------------------------------------------------


async def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the weather for a city.

    Args:
        city: The city name.
        unit: Temperature unit.
    """
    return city


def test_get_weather_schema_exactly() -> None:
    schema, descriptions = signature_schema(get_weather, skip_first=False)
    assert schema == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city name."},
            "unit": {
                "type": "string",
                "enum": ["c", "f"],
                "description": "Temperature unit.",
                "default": "c",
            },
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert descriptions == {"city": "The city name.", "unit": "Temperature unit."}


# -- every supported annotation ---------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (type(None), {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (list[Any], {"type": "array"}),
        (Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (collections.abc.MutableSequence[str], {"type": "array", "items": {"type": "string"}}),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (tuple[()], {"type": "array", "maxItems": 0}),
        (tuple, {"type": "array"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Mapping[str, bool], {"type": "object", "additionalProperties": {"type": "boolean"}}),
        (dict[str, Any], {"type": "object"}),
        (dict, {"type": "object"}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2, 3], {"type": "integer", "enum": [1, 2, 3]}),
        (Literal[True], {"type": "boolean", "enum": [True]}),
        (Literal["x", 1, None], {"type": ["string", "integer", "null"], "enum": ["x", 1, None]}),
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        # The typing forms on purpose: they must work like `X | None` / `X | Y`.
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (
            Union[int, str, list[int]],  # noqa: UP007
            {"anyOf": [{"type": "integer"}, {"type": "string"},
                       {"type": "array", "items": {"type": "integer"}}]},
        ),
        (Annotated[int, "How many."], {"type": "integer", "description": "How many."}),
        (Annotated[int, 42], {"type": "integer"}),
        (UserId, {"type": "integer"}),
    ],
)
def test_type_schema(annotation: Any, expected: dict[str, Any]) -> None:
    assert type_schema(annotation) == expected


def test_nested_attrs_classes_inline_with_defaults_and_descriptions() -> None:
    def draw(segment: Segment) -> None: ...

    point = {
        "type": "object",
        "description": "A point on the plane.",
        "properties": {
            "x": {"type": "integer", "description": "Horizontal position."},
            "y": {"type": "integer", "description": "Vertical position.", "default": 0},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
            "label": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "A name.",
                "default": None,
            },
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert prop(draw, "segment") == {
        "type": "object",
        "properties": {
            "start": point,
            "end": point,
            "color": {"type": "string", "enum": ["red", "green"], "default": "red"},
        },
        "required": ["start", "end"],
        "additionalProperties": False,
    }


def test_attrs_default_that_is_not_json_is_left_out() -> None:
    def f(o: Opaque) -> None: ...

    when = prop(f, "o")["properties"]["when"]
    assert when == {}
    assert prop(f, "o")["required"] == []


def test_attrs_factory_taking_self_has_no_default() -> None:
    @attrs.frozen
    class Local:
        a: int = 1
        b: int = attrs.field(default=attrs.Factory(lambda self: self.a, takes_self=True))

    assert type_schema(Local)["properties"]["b"] == {"type": "integer"}
    assert type_schema(Local)["required"] == []


def test_parameter_defaults() -> None:
    def f(
        a: int = 3,
        b: Color = Color.GREEN,
        c: tuple[int, int] = (1, 2),
        d: Point = Point(1),
        e: str | None = None,
        f: Any = object(),  # noqa: B008
        g: float = float("nan"),
    ) -> None: ...

    props = schema_of(f)["properties"]
    assert props["a"]["default"] == 3
    assert props["b"]["default"] == "green"
    assert props["c"]["default"] == [1, 2]
    assert props["d"]["default"] == {"x": 1, "y": 0, "tags": [], "label": None}
    assert props["e"]["default"] is None
    # A default JSON cannot hold is left out, not an error.
    assert "default" not in props["f"]
    assert "default" not in props["g"]
    assert schema_of(f)["required"] == []


def test_missing_annotation_is_any() -> None:
    def f(x, y=1):  # type: ignore[no-untyped-def]
        ...

    schema = schema_of(f)
    assert schema["properties"] == {"x": {}, "y": {"default": 1}}
    assert schema["required"] == ["x"]


def test_annotated_description_wins_over_docstring() -> None:
    def f(a: Annotated[int, "From Annotated."], b: int) -> None:
        """Do.

        Args:
            a: From the docstring.
            b: Only the docstring.
        """

    schema, descriptions = signature_schema(f, skip_first=False)
    assert schema["properties"]["a"]["description"] == "From Annotated."
    assert schema["properties"]["b"]["description"] == "Only the docstring."
    assert descriptions == {"a": "From Annotated.", "b": "Only the docstring."}


def test_skip_first_leaves_out_the_context() -> None:
    def f(ctx: Any, path: str) -> None: ...

    schema = schema_of(f, skip_first=True)
    assert list(schema["properties"]) == ["path"]
    assert schema["required"] == ["path"]


def test_skip_first_allows_a_positional_only_context() -> None:
    def f(ctx: Any, /, path: str) -> None: ...

    assert list(schema_of(f, skip_first=True)["properties"]) == ["path"]


def test_keyword_only_parameters_are_fine() -> None:
    def f(*, a: int, b: str = "x") -> None: ...

    assert schema_of(f)["required"] == ["a"]


def test_no_ref_anywhere() -> None:
    def big(
        segments: list[Segment],
        by_name: dict[str, Point | None],
        pair: tuple[Point, Segment],
        level: Level | Color | None = None,
    ) -> None: ...

    schema = schema_of(big)
    keys = set(walk(schema))
    assert "$ref" not in keys
    assert "$defs" not in keys
    assert "definitions" not in keys
    # ...and the nested classes really are inline.
    assert schema["properties"]["segments"]["items"]["properties"]["start"]["type"] == "object"


def test_same_class_twice_is_not_recursion() -> None:
    def f(a: Point, b: list[Point], c: Segment) -> None: ...

    assert schema_of(f)["properties"]["b"]["items"]["required"] == ["x"]


# -- errors at decoration ------------------------------------------------------


def test_var_positional_is_refused() -> None:
    def f(*numbers: int) -> None: ...

    with pytest.raises(TypeError, match=r"\*numbers"):
        signature_schema(f, skip_first=False)


def test_var_keyword_is_refused() -> None:
    def f(a: int, **options: Any) -> None: ...

    with pytest.raises(TypeError, match=r"\*\*options"):
        signature_schema(f, skip_first=False)


def test_positional_only_is_refused() -> None:
    def f(a: int, /) -> None: ...

    with pytest.raises(TypeError, match="parameter 'a' is positional-only"):
        signature_schema(f, skip_first=False)


@pytest.mark.parametrize(
    "annotation",
    [datetime.datetime, set[int], bytes, frozenset[str], object, Literal[b"x"], Weird, Empty],
)
def test_unsupported_annotation_names_the_parameter(annotation: Any) -> None:
    def f(ok: int, bad: Any) -> None: ...

    f.__annotations__["bad"] = annotation
    with pytest.raises(TypeError, match="parameter 'bad'"):
        signature_schema(f, skip_first=False)


def test_non_str_mapping_keys_are_refused() -> None:
    def f(table: dict[int, str]) -> None: ...

    with pytest.raises(TypeError, match=r"parameter 'table'.*int keys"):
        signature_schema(f, skip_first=False)


def test_unsupported_type_inside_an_attrs_class_names_its_path() -> None:
    def f(w: WithSelfFactory) -> None: ...

    with pytest.raises(TypeError, match=r"parameter 'w' \(at w\.c\).*datetime\.date"):
        signature_schema(f, skip_first=False)


def test_recursive_attrs_class_is_refused() -> None:
    def f(tree: Node) -> None: ...

    with pytest.raises(TypeError, match=r"parameter 'tree'.*Node is recursive"):
        signature_schema(f, skip_first=False)


def test_mutually_recursive_attrs_classes_are_refused() -> None:
    def f(p: list[Ping]) -> None: ...

    with pytest.raises(TypeError, match=r"Ping is recursive \(Ping -> Pong -> Ping\)"):
        signature_schema(f, skip_first=False)


def test_unresolvable_annotation() -> None:
    def f(x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="NotDefinedAnywhere"):
        signature_schema(f, skip_first=False)


def test_unresolvable_annotation_in_attrs_class() -> None:
    def f(x: UnresolvedField) -> None: ...

    with pytest.raises(TypeError, match=r"parameter 'x'.*NotDefinedAnywhere"):
        signature_schema(f, skip_first=False)


def test_skip_first_without_parameters() -> None:
    def f() -> None: ...

    with pytest.raises(TypeError, match="first parameter"):
        signature_schema(f, skip_first=True)


def test_type_schema_error() -> None:
    with pytest.raises(TypeError, match="unsupported annotation"):
        type_schema(complex)


# -- validate() ----------------------------------------------------------------

WEATHER = schema_of(get_weather)


def test_validate_accepts_valid_arguments() -> None:
    assert validate(WEATHER, {"city": "Oslo"}) == []
    assert validate(WEATHER, {"city": "Oslo", "unit": "f"}) == []


def test_validate_reports_every_problem_with_its_path() -> None:
    problems = validate(WEATHER, {"city": 3, "unit": "k", "colour": "red"})
    assert problems == [
        "city: expected string, got integer",
        "unit: must be one of 'c', 'f'",
        "unexpected argument 'colour'",
    ]


def test_validate_missing_required() -> None:
    assert validate(WEATHER, {"unit": "c"}) == ["missing required argument 'city'"]


def test_validate_top_level_not_an_object() -> None:
    assert validate(WEATHER, ["Oslo"]) == ["arguments: expected object, got array"]
    assert validate(WEATHER, None) == ["arguments: expected object, got null"]


def test_validate_non_string_keys() -> None:
    problems = validate(WEATHER, {"city": "x", 1: 2})
    assert problems == ["arguments: keys must be strings, got int 1"]


def test_validate_bools_are_never_numbers() -> None:
    assert validate({"type": "integer"}, True) == ["arguments: expected integer, got boolean"]
    assert validate({"type": "number"}, False) == ["arguments: expected number, got boolean"]
    assert validate({"type": "boolean"}, 1) == ["arguments: expected boolean, got integer"]


def test_validate_integral_floats_are_not_integers() -> None:
    # One scalar rule with from_json (stricter than JSON Schema): 3.0 is a number.
    assert validate({"type": "integer"}, 3.0) == ["arguments: expected integer, got number"]
    assert validate({"type": "integer"}, 3.5) == ["arguments: expected integer, got number"]
    assert validate({"type": "number"}, 3) == []
    assert validate({"type": "integer", "enum": [1, 2]}, 2.0) == [
        "arguments: expected integer, got number"
    ]
    assert validate({"enum": [1, 2]}, 2.0) == ["arguments: must be one of 1, 2"]
    assert validate({"enum": [1.0, 2.5]}, 1) == []


def test_validate_enum_is_type_aware() -> None:
    schema = type_schema(Literal[1, "1", True, None])
    assert validate(schema, 1) == []
    assert validate(schema, "1") == []
    assert validate(schema, True) == []
    assert validate(schema, None) == []
    assert validate(schema, 1.0) == [
        "arguments: expected integer or string or boolean or null, got number"
    ]
    assert validate(schema, False) == ["arguments: must be one of 1, '1', true, null"]
    assert validate(schema, 2) == ["arguments: must be one of 1, '1', true, null"]


def test_validate_nested_object_paths() -> None:
    def draw(segment: Segment) -> None: ...

    problems = validate(
        schema_of(draw),
        {"segment": {"start": {"x": "1", "z": 0}, "end": {"y": 2}, "color": "blue"}},
    )
    assert problems == [
        "segment.start.x: expected integer, got string",
        "unexpected field 'segment.start.z'",
        "missing required field 'segment.end.x'",
        "segment.color: must be one of 'red', 'green'",
    ]


def test_validate_array_items_and_lengths() -> None:
    def f(xs: list[int], pair: tuple[int, str], few: tuple[()] = ()) -> None: ...

    schema = schema_of(f)
    assert validate(schema, {"xs": [1, "2", 3.5], "pair": [1, "a"]}) == [
        "xs[1]: expected integer, got string",
        "xs[2]: expected integer, got number",
    ]
    assert validate(schema, {"xs": [], "pair": [1]}) == ["pair: expected 2 item(s), got 1"]
    assert validate(schema, {"xs": [], "pair": ["a", 1]}) == [
        "pair[0]: expected integer, got string",
        "pair[1]: expected string, got integer",
    ]
    assert validate(schema, {"xs": [], "pair": [1, "a"], "few": [1]}) == [
        "few: expected at most 0 item(s), got 1"
    ]
    assert validate({"type": "array", "minItems": 2}, [1]) == [
        "arguments: expected at least 2 item(s), got 1"
    ]


def test_validate_map_values() -> None:
    def f(scores: dict[str, float]) -> None: ...

    assert validate(schema_of(f), {"scores": {"a": 1, "b": "x", "odd key": None}}) == [
        "scores.b: expected number, got string",
        "scores['odd key']: expected number, got null",
    ]


def test_validate_any_of_simple_types() -> None:
    def f(name: str | None, n: int | list[int]) -> None: ...

    schema = schema_of(f)
    assert validate(schema, {"name": None, "n": [1]}) == []
    assert validate(schema, {"name": 3, "n": "x"}) == [
        "name: expected string or null, got integer",
        "n: expected integer or array, got string",
    ]


def test_validate_any_of_reports_the_matching_branch() -> None:
    def f(p: Point | None = None, unit: Literal["c", "f"] | None = None) -> None: ...

    schema = schema_of(f)
    assert validate(schema, {"p": {"x": "no"}}) == ["p.x: expected integer, got string"]
    assert validate(schema, {"unit": "k"}) == ["unit: must be one of 'c', 'f'"]
    assert validate(schema, {"unit": 3}) == [
        "unit: expected one of 'c', 'f' or null, got integer"
    ]


def test_validate_any_value() -> None:
    def f(data: Any, items: list[Any]) -> None: ...

    schema = schema_of(f)
    assert validate(schema, {"data": {"deep": [1, {"x": None}]}, "items": [1, "a", None]}) == []


def test_validate_false_schema() -> None:
    assert validate({"type": "array", "items": False}, [1]) == [
        "[0]: no value is allowed here"
    ]


def test_validate_tuples_count_as_arrays() -> None:
    assert validate({"type": "array", "items": {"type": "integer"}}, (1, 2)) == []


def test_validate_ignores_annotations() -> None:
    schema = {"type": "string", "description": "d", "default": 1, "title": "t"}
    assert validate(schema, "x") == []
