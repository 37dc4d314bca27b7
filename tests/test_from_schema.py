"""Tool.from_schema (SPEC §7): raw JSON Schemas, checked when defined, enforced per call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from _helpers import assert_transcript_integrity, text_of

from trio_session import (
    Agent,
    InvalidToolArguments,
    JsonBlock,
    Reply,
    ScriptedModel,
    TextBlock,
    Tool,
    ToolContext,
    ToolResultBlock,
    open_session,
)
from trio_session._validator import validate

POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
    "required": ["x"],
    "additionalProperties": False,
}


def echo(args: Mapping[str, Any]) -> Any:
    return dict(args)


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def test_from_schema_builds_a_tool_the_model_is_told_about() -> None:
    t = Tool.from_schema("move", "Move to a point.", POINT, echo, requires_confirmation=True)
    assert t.name == "move"
    assert t.description == "Move to a point."
    assert t.input_schema == POINT
    assert t.spec().input_schema == POINT
    assert t.requires_confirmation is True
    assert t.takes_context is False
    assert t.visible_to_model
    assert Tool.from_schema("u", "", POINT, echo, audience="user").visible_to_model is False


def test_the_schema_is_copied() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    t = Tool.from_schema("t", "", schema, echo)
    schema["properties"]["a"]["type"] = "integer"
    assert t.validate({"a": "s"}) == {"a": "s"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 3}, TypeError, r"Tool.from_schema\(\) name must be a str, got int"),
        ({"name": "has space"}, ValueError, "name 'has space' is not a valid tool name"),
        ({"description": None}, TypeError, "description must be a str, got NoneType"),
        ({"input_schema": [1]}, TypeError, "input_schema must be a JSON Schema object"),
        ({"input_schema": {"type": "string"}}, ValueError, r"input_schema.type must be 'object'"),
        ({"handler": "nope"}, TypeError, "handler must be callable, got str"),
        ({"requires_confirmation": "yes"}, TypeError, "requires_confirmation must be a bool"),
        ({"confirmation_message": 1}, TypeError, "confirmation_message must be a str"),
        ({"confirmation_timeout": 0}, ValueError, "confirmation_timeout must be > 0"),
        ({"audience": "everyone"}, ValueError, "audience must be one of"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {
        "name": "t",
        "description": "d",
        "input_schema": POINT,
        "handler": echo,
    }
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Tool.from_schema(**args, **options)


def test_handlers_that_cannot_take_the_mapping_are_refused() -> None:
    def two(a: Any, b: Any) -> None: ...

    def gen(args: Any) -> Any:
        yield args

    def ctx_only(ctx: ToolContext) -> None: ...

    with pytest.raises(TypeError, match=r"handler must be callable as handler\(args\)"):
        Tool.from_schema("t", "", POINT, two)
    with pytest.raises(TypeError, match="handler must return its result, not be a generator"):
        Tool.from_schema("t", "", POINT, gen)
    with pytest.raises(TypeError, match=r"callable as handler\(ctx: ToolContext, args\)"):
        Tool.from_schema("t", "", POINT, ctx_only)


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ({"properties": {"n": {"type": "int"}}}, r"input_schema.properties.n.type: 'int' is not"),
        ({"properties": {"n": {"type": []}}}, "type: must be a type name or a non-empty list"),
        ({"properties": {"n": {"type": ["null", "null"]}}}, "type: lists a type twice"),
        ({"properties": {"n": 5}}, r"properties.n: a schema must be an object or a boolean"),
        ({"properties": []}, "properties: must be an object of schemas"),
        ({"required": "n"}, "required: must be a list of property names"),
        ({"properties": {"s": {"minLength": -1}}}, "minLength: must be a non-negative integer"),
        ({"properties": {"s": {"maxItems": 1.5}}}, "maxItems: must be a non-negative integer"),
        ({"properties": {"s": {"pattern": "("}}}, "pattern: '\\(' is not a regular expression"),
        ({"patternProperties": {"[": {}}}, "patternProperties: '\\[' is not a regular expr"),
        ({"properties": {"n": {"minimum": "1"}}}, "minimum: must be a number, got '1'"),
        ({"properties": {"n": {"multipleOf": 0}}}, "multipleOf: must be a number > 0"),
        ({"properties": {"n": {"enum": []}}}, "enum: must be a non-empty list of values"),
        ({"properties": {"n": {"anyOf": []}}}, "anyOf: must be a non-empty list of schemas"),
        ({"properties": {"n": {"oneOf": [{"type": "x"}]}}}, r"oneOf\[0\].type: 'x' is not"),
        ({"properties": {"n": {"uniqueItems": 1}}}, "uniqueItems: must be true or false"),
        ({"properties": {"n": {"$ref": "#/$defs/Nope"}}}, r"\$ref: \$ref '#/\$defs/Nope' does not"),
        ({"properties": {"n": {"$ref": "other.json#/x"}}}, "is not local"),
        (
            {"$defs": {"A": {"$ref": "#/$defs/A"}}, "properties": {"a": {"$ref": "#/$defs/A"}}},
            "circular",
        ),
        ({"properties": {"n": {"default": float("nan")}}}, "NaN|nan"),
    ],
)
def test_invalid_schemas_are_refused_when_the_tool_is_defined(
    schema: dict[str, Any], match: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        Tool.from_schema("t", "", {"type": "object", **schema}, echo)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "value", "problems"),
    [
        ({"type": ["string", "null"]}, None, []),
        ({"type": ["string", "null"]}, 1, ["arguments: expected string or null, got integer"]),
        ({"const": "on"}, "on", []),
        ({"const": "on"}, "off", ["arguments: must be 'on'"]),
        ({"const": 1}, 1.0, ["arguments: must be 1"]),
        ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, "a", []),
        (
            {"oneOf": [{"type": "integer"}, {"type": "number"}]},
            3,
            [
                "arguments: matches 2 of the allowed forms (integer and number); "
                "it must match exactly one"
            ],
        ),
        ({"allOf": [{"type": "integer"}, {"minimum": 2}]}, 1, ["arguments: must be >= 2, got 1"]),
        ({"not": {"type": "null"}}, None, ["arguments: must not be null"]),
        ({"minimum": 0, "maximum": 10}, 11, ["arguments: must be <= 10, got 11"]),
        ({"exclusiveMinimum": 0}, 0, ["arguments: must be > 0, got 0"]),
        ({"exclusiveMaximum": 1.5}, 1.5, ["arguments: must be < 1.5, got 1.5"]),
        ({"minimum": 0, "exclusiveMinimum": True}, 0, ["arguments: must be > 0, got 0"]),
        ({"multipleOf": 0.1}, 0.3, []),
        ({"multipleOf": 5}, 7, ["arguments: must be a multiple of 5, got 7"]),
        ({"minLength": 2}, "é", ["arguments: expected at least 2 character(s), got 1"]),
        ({"maxLength": 2}, "abc", ["arguments: expected at most 2 character(s), got 3"]),
        ({"pattern": "^[a-z]+$"}, "ab1", ["arguments: must match the pattern '^[a-z]+$'"]),
        ({"pattern": "b"}, "abc", []),
        (
            {"uniqueItems": True},
            [1, 2, 1.0],
            ["arguments: items 0 and 2 are equal; items must be unique"],
        ),
        ({"uniqueItems": True}, [1, True, [1], [True]], []),
        (
            {"items": [{"type": "string"}], "additionalItems": False},
            ["a", 1],
            ["[1]: no value is allowed here"],
        ),
        (
            {"prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
            ["a", 1, "b"],
            ["[2]: expected integer, got string"],
        ),
        ({"minProperties": 1}, {}, ["arguments: expected at least 1 argument(s), got 0"]),
        (
            {"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False},
            {"x_a": 1, "x_b": "2", "y": 3},
            ["x_b: expected integer, got string", "unexpected argument 'y'"],
        ),
        ({"format": "email", "type": "string"}, "not an email", []),
    ],
)
def test_validate_keywords(schema: dict[str, Any], value: Any, problems: list[str]) -> None:
    assert validate(schema, value) == problems


def test_refs_are_inlined_and_still_validated() -> None:
    schema = {
        "type": "object",
        "properties": {
            "start": {"$ref": "#/$defs/Point", "description": "Where to start."},
            "path": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
        },
        "required": ["start"],
        "$defs": {"Point": POINT},
    }
    t = Tool.from_schema("walk", "", schema, echo)
    assert "$ref" not in str(t.input_schema)
    assert "$defs" not in t.input_schema
    assert t.input_schema["properties"]["start"] == {**POINT, "description": "Where to start."}
    assert validate(schema, {"start": {"x": 1}, "path": [{"x": "2"}]}) == [
        "path[0].x: expected integer, got string"
    ]
    with pytest.raises(InvalidToolArguments, match=r"path\[0\].x: expected integer, got string"):
        t.validate({"start": {"x": 1}, "path": [{"x": "2"}]})


def test_recursive_refs_are_kept_and_followed() -> None:
    schema = {
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/Node"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name"],
            }
        },
    }
    t = Tool.from_schema("tree", "", schema, echo)
    assert t.input_schema == schema
    good = {"tree": {"name": "a", "children": [{"name": "b", "children": []}]}}
    assert t.validate(good) == good
    with pytest.raises(InvalidToolArguments, match=r"tree.children\[0\].children\[0\].name"):
        t.validate({"tree": {"name": "a", "children": [{"name": "b", "children": [{}]}]}})


def test_a_schema_that_refers_to_itself_without_end_refuses_the_value() -> None:
    assert validate({"allOf": [{"$ref": "#"}]}, 1) == [
        "arguments: the schema refers to itself without end"
    ]


def test_integral_floats_are_not_integers_in_raw_schemas_either() -> None:
    t = Tool.from_schema("move", "", POINT, echo)
    with pytest.raises(InvalidToolArguments, match="x: expected integer, got number"):
        t.validate({"x": 1.0})


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


async def test_sync_and_async_handlers_get_the_mapping() -> None:
    seen: list[Mapping[str, Any]] = []

    async def handler(args: Mapping[str, Any]) -> str:
        seen.append(args)
        return f"at {args['x']}"

    t = Tool.from_schema("move", "", POINT, handler)
    assert await t.run(None, {"x": 3}) == (TextBlock("at 3"),)
    assert seen == [{"x": 3}]
    assert await Tool.from_schema("echo", "", POINT, echo).run(None, {"x": 1, "y": 2}) == (
        JsonBlock({"x": 1, "y": 2}),
    )
    with pytest.raises(InvalidToolArguments, match="missing required argument 'x'"):
        await t.run(None, {})
    assert len(seen) == 1


async def test_a_session_runs_schema_tools_with_context_and_reports_bad_calls() -> None:
    ticks: list[int] = []

    async def handler(ctx: ToolContext, args: Mapping[str, Any]) -> str:
        ticks.append(ctx.tick)
        ctx.state["last"] = args["x"]
        return "moved"

    move = Tool.from_schema("move", "Move to a point.", POINT, handler)
    assert move.takes_context is True
    model = ScriptedModel(
        [
            Reply(tool_calls=[("move", {"x": "far"}, "bad"), ("move", {"x": 2}, "good")]),
            "Done.",
        ]
    )
    async with open_session(Agent(model, tools=[move])) as session:
        result = await (await session.send("go")).result
        timeline = session.timeline
        state = dict(session.state)
    assert result.response == "Done."
    results = {b.tool_use_id: b for b in timeline[2].content if isinstance(b, ToolResultBlock)}
    assert results["bad"].is_error
    assert "x: expected integer, got string" in text_of(results["bad"].content[0])
    assert not results["good"].is_error
    assert results["good"].content == (TextBlock("moved"),)
    assert ticks == [1]
    assert state["last"] == 2
    assert_transcript_integrity(timeline)


async def test_confirmation_messages_format_the_raw_arguments() -> None:
    t = Tool.from_schema(
        "move", "", POINT, echo, requires_confirmation=True, confirmation_message="Go to {x}?"
    )
    assert t.needs_confirmation({"x": 1})
    assert t.confirmation_text({"x": 1}) == "Go to 1?"
