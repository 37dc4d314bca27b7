"""Parameters of other frameworks' types (SPEC §7): dataclass, TypedDict, NamedTuple, pydantic."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, NotRequired, Required, TypedDict

import pydantic
import pytest
from _helpers import text_of

from trio_session import (
    Agent,
    InvalidToolArguments,
    Reply,
    ScriptedModel,
    ToolResultBlock,
    open_session,
    tool,
)


@dataclasses.dataclass
class Address:
    """Where someone lives.

    Attributes:
        city: The city.
    """

    city: str
    zip: str | None = None


@dataclasses.dataclass
class Person:
    name: str
    address: Address
    tags: list[str] = dataclasses.field(default_factory=list)


class Options(TypedDict, total=False):
    verbose: bool
    level: Required[int]


class Filter(TypedDict):
    field: str
    value: NotRequired[str | None]


class Point(NamedTuple):
    x: int
    y: int = 0


class Order(pydantic.BaseModel):
    item: str
    quantity: int = pydantic.Field(ge=1)
    ship_to: Address | None = None
    points: list[Point] = []


received: list[tuple[Any, ...]] = []


@tool
def register(
    person: Person,
    options: Options,
    where: Point,
    order: Order,
    filters: list[Filter] | None = None,
) -> str:
    """Register everything.

    Args:
        person: Who.
        options: How.
        where: Where.
        order: What.
        filters: Which.
    """
    received.append((person, options, where, order, filters))
    return "ok"


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or "$defs" in node or any(_has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v) for v in node)
    return False


GOOD = {
    "person": {"name": "Ada", "address": {"city": "London"}},
    "options": {"level": 2},
    "where": {"x": 1},
    "order": {
        "item": "tea",
        "quantity": 2,
        "ship_to": {"city": "Paris", "zip": "75"},
        "points": [[3, 4]],
    },  # pydantic's own schema: a NamedTuple is an array there
    "filters": [{"field": "a"}, {"field": "b", "value": None}],
}


def test_the_schema_is_self_contained_and_describes_each_type() -> None:
    schema = register.input_schema
    assert not _has_ref(schema)
    props = schema["properties"]
    person = props["person"]
    assert person["type"] == "object"
    assert person["required"] == ["name", "address"]
    assert person["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
    }
    assert person["description"] == "Who."  # not the dataclass's made-up docstring
    address = person["properties"]["address"]
    assert address["description"] == "Where someone lives."
    assert address["properties"]["city"]["description"] == "The city."
    assert props["options"]["required"] == ["level"]
    assert props["options"]["properties"] == {
        "verbose": {"type": "boolean"},
        "level": {"type": "integer"},
    }
    assert props["filters"]["anyOf"][0]["items"]["required"] == ["field"]
    assert props["where"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
        "additionalProperties": False,
        "description": "Where.",
    }
    order = props["order"]
    assert order["properties"]["quantity"]["minimum"] == 1
    assert order["required"] == ["item", "quantity"]
    assert order["description"] == "What."


async def test_the_handler_receives_instances() -> None:
    received.clear()
    await register.run(None, GOOD)
    [(person, options, where, order, filters)] = received
    assert person == Person("Ada", Address("London"))
    assert type(person.address) is Address
    assert options == {"level": 2}
    assert type(options) is dict
    assert where == Point(1, 0)
    assert type(where) is Point
    assert isinstance(order, Order)
    assert order.ship_to == Address("Paris", "75")
    assert order.points == [Point(3, 4)]
    assert filters == [{"field": "a"}, {"field": "b", "value": None}]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"person": {"name": "Ada", "address": {}}},
            "missing required field 'person.address.city'",
        ),
        ({"options": {"verbose": True}}, "missing required field 'options.level'"),
        ({"options": {"level": 1, "colour": "red"}}, "unexpected field 'options.colour'"),
        ({"where": {"x": "1"}}, "where.x: expected integer, got string"),
        ({"where": [1, 2]}, "where: expected object, got array"),
        ({"order": {"item": "tea", "quantity": 0}}, "order.quantity: must be >= 1, got 0"),
        ({"filters": [{"value": "x"}]}, "missing required field 'filters[0].field'"),
    ],
)
def test_invalid_input_names_the_field(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidToolArguments) as info:
        register.validate({**GOOD, **change})
    assert problem in str(info.value)


class Even(pydantic.BaseModel):
    n: int

    @pydantic.field_validator("n")
    @classmethod
    def even(cls, n: int) -> int:
        if n % 2:
            raise ValueError("must be even")
        return n


@dataclasses.dataclass
class Node:
    children: list[Node]


class Tree(pydantic.BaseModel):
    children: list[Tree] = []


def test_pydantic_validators_are_reported_with_their_path() -> None:
    @tool
    def half(value: Even) -> int:
        return value.n // 2

    assert half.validate({"value": {"n": 4}}) == {"value": Even(n=4)}
    with pytest.raises(InvalidToolArguments, match="value: n: Value error, must be even"):
        half.validate({"value": {"n": 3}})


def test_recursive_types_are_refused_when_defined() -> None:
    def walk(node: Node) -> None: ...

    def climb(tree: Tree) -> None: ...

    with pytest.raises(TypeError, match=r"dataclass .*Node is recursive"):
        tool(walk)
    with pytest.raises(TypeError, match=r"pydantic model Tree: the schema is recursive"):
        tool(climb)


async def test_a_session_turns_bad_arguments_into_an_error_result_naming_the_field() -> None:
    received.clear()
    bad = {**GOOD, "where": {"x": 1, "z": 2}}
    model = ScriptedModel(
        [Reply(tool_calls=[("register", bad, "bad"), ("register", GOOD, "good")]), "Done."]
    )
    async with open_session(Agent(model, tools=[register])) as session:
        await (await session.send("go")).result
        results = [b for b in session.timeline[2].content if isinstance(b, ToolResultBlock)]
    assert [r.is_error for r in results] == [True, False]
    assert "unexpected field 'where.z'" in text_of(results[0].content[0])
    assert len(received) == 1
    assert isinstance(received[0][3], Order)
