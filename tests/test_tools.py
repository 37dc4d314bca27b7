"""@tool, Tool.validate / run, to_blocks, ToolContext, Decision and Confirmations."""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import attrs
import pytest
import trio
import trio.testing
from _profiles import examples
from hypothesis import given, settings, strategies as st

from trio_session import (
    Decision,
    ImageBlock,
    InvalidToolArguments,
    JsonBlock,
    TextBlock,
    Tool,
    ToolContext,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    UnknownToolUse,
    tool,
)
from trio_session._tools import Confirmations, ConfirmationWait, to_blocks
from trio_session._validator import validate

# -- module-level types, so string annotations resolve -------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    x: int
    y: int = 0


@attrs.frozen
class Positive:
    n: int = attrs.field()

    @n.validator
    def _check(self, _attr: object, value: int) -> None:
        if value <= 0:
            raise ValueError("must be positive")


@attrs.frozen
class Shape:
    name: str
    points: tuple[Point, ...] = ()
    color: Color | None = None


@tool
async def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the weather for a city.

    Args:
        city: The city name.
        unit: Temperature unit.
    """
    return f"21 {unit} in {city}"


@tool(requires_confirmation=True, confirmation_message="Delete {path}?")
async def delete_file(ctx: ToolContext, path: str) -> str:
    """Delete a file."""
    return f"deleted {path} at tick {ctx.tick}"


def make_ctx(**overrides: Any) -> tuple[ToolContext, list[tuple[str, Any]], list[Any]]:
    emitted: list[tuple[str, Any]] = []
    spawned: list[Any] = []

    def emit_fn(name: str, data: Any) -> None:
        emitted.append((name, data))

    async def spawn_fn(agent: Any, message: Any = None, *, max_ticks: int | None = None) -> Any:
        spawned.append((agent, message, max_ticks))
        return "child result"

    fields: dict[str, Any] = {
        "session": "the-session",
        "execution": "the-handle",
        "tool_use_id": "call_1",
        "tick": 3,
        "props": {"user": "ann"},
        "state": {},
        "emit_fn": emit_fn,
        "spawn_fn": spawn_fn,
    }
    fields.update(overrides)
    return ToolContext(**fields), emitted, spawned


# -- @tool -----------------------------------------------------------------------


def test_spec_example() -> None:
    assert isinstance(get_weather, Tool)
    assert get_weather.name == "get_weather"
    assert get_weather.description == "Get the weather for a city."
    assert get_weather.input_schema["required"] == ["city"]
    assert get_weather.input_schema["properties"]["unit"] == {
        "type": "string",
        "enum": ["c", "f"],
        "description": "Temperature unit.",
        "default": "c",
    }
    assert get_weather.takes_context is False
    assert get_weather.audience == "model"
    assert get_weather.requires_confirmation is False
    assert get_weather.confirmation_timeout is None


def test_context_parameter_is_detected_and_left_out_of_the_schema() -> None:
    assert delete_file.takes_context is True
    assert list(delete_file.input_schema["properties"]) == ["path"]
    assert delete_file.requires_confirmation is True


def test_annotated_context_parameter() -> None:
    @tool
    def f(ctx: Annotated[ToolContext, "the context"], x: int) -> int:
        return x

    assert f.takes_context is True
    assert list(f.input_schema["properties"]) == ["x"]


def test_context_must_be_first() -> None:
    def f(x: int, ctx: ToolContext) -> None: ...

    with pytest.raises(TypeError, match=r"'ctx' is annotated ToolContext.*first parameter"):
        tool(f)


def test_first_parameter_without_context_annotation_is_an_argument() -> None:
    @tool
    def f(ctx: str) -> str:
        return ctx

    assert f.takes_context is False
    assert f.input_schema["required"] == ["ctx"]


def test_description_includes_free_text_but_not_sections() -> None:
    @tool
    def search(query: str, limit: int = 10) -> list[str]:
        """Search the index.

        Matches words, not phrases.

        Args:
            query: What to look for.
            limit: At most this many hits.

        Returns:
            The hits.
        """
        return []

    assert search.description == "Search the index.\n\nMatches words, not phrases."
    assert search.input_schema["properties"]["limit"] == {
        "type": "integer",
        "description": "At most this many hits.",
        "default": 10,
    }


def test_explicit_name_and_description() -> None:
    @tool(name="find-things", description="Finds things.", audience="all")
    def f() -> None:
        """Ignored."""

    assert f.name == "find-things"
    assert f.description == "Finds things."
    assert f.visible_to_model is True
    assert f.input_schema == {
        "type": "object", "properties": {}, "required": [], "additionalProperties": False
    }


def test_no_docstring_gives_empty_description() -> None:
    @tool()
    def f(x: int) -> int:
        return x

    assert f.description == ""


def test_audience_and_visibility() -> None:
    def f() -> None: ...

    assert tool(audience="model")(f).visible_to_model is True
    assert tool(audience="all")(f).visible_to_model is True
    assert tool(audience="user")(f).visible_to_model is False


def test_spec() -> None:
    spec = get_weather.spec()
    assert spec == ToolSpec("get_weather", "Get the weather for a city.",
                            get_weather.input_schema)
    assert get_weather.spec() is spec  # computed once, not per tick


async def test_tool_is_callable_like_the_function() -> None:
    assert await get_weather("Oslo", unit="f") == "21 f in Oslo"

    @tool
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert add(2) == 3
    assert add.fn(2, b=5) == 7
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert repr(add) == "<Tool 'add'>"


def test_rewrapping_a_tool_uses_its_function() -> None:
    renamed = tool(name="weather")(get_weather)
    assert renamed.name == "weather"
    assert renamed.fn is get_weather.fn


def test_tools_compare_by_identity_and_hash() -> None:
    def f() -> None: ...

    a, b = tool(f), tool(f)
    assert a != b
    assert len({a, b, a}) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "has space"}, ValueError, "not a valid tool name"),
        ({"name": ""}, ValueError, "not a valid tool name"),
        ({"name": "x" * 65}, ValueError, "not a valid tool name"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"description": 3}, TypeError, "description must be a str"),
        ({"audience": "everyone"}, ValueError, "audience must be one of"),
        ({"confirmation_timeout": 0}, ValueError, "must be > 0"),
        ({"confirmation_timeout": -1.5}, ValueError, "must be > 0"),
        ({"confirmation_timeout": math.nan}, ValueError, "must be > 0"),
        ({"confirmation_timeout": True}, TypeError, "number of seconds"),
        ({"confirmation_timeout": "5"}, TypeError, "number of seconds"),
        ({"requires_confirmation": "yes"}, TypeError, "requires_confirmation"),
        ({"confirmation_message": 5}, TypeError, "confirmation_message"),
    ],
)
def test_tool_options_are_validated(kwargs: dict[str, Any], error: type[Exception],
                                    match: str) -> None:
    with pytest.raises(error, match=match):
        tool(**kwargs)


def test_tool_with_name_positionally_is_refused() -> None:
    with pytest.raises(TypeError, match=r"use @tool\(name='search'\)"):
        tool("search")  # type: ignore[call-overload]


def test_tool_of_non_callable() -> None:
    with pytest.raises(TypeError, match="needs a function"):
        tool(42)  # type: ignore[call-overload]


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ValueError, match="pass name="):
        tool(lambda x: x)
    assert tool(name="identity")(lambda x: x).name == "identity"


def test_generator_functions_are_refused() -> None:
    async def agen() -> Any:
        yield 1

    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        tool(agen)
    with pytest.raises(TypeError, match="generator"):
        tool(gen)


def test_bad_signature_names_the_tool_and_parameter() -> None:
    def f(a: int, *rest: int) -> None: ...

    with pytest.raises(TypeError, match=r"tool 'f': parameter \*rest"):
        tool(f)


def test_unresolvable_annotation_names_the_tool() -> None:
    def f(x: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match=r"tool 'f'.*Missing"):
        tool(f)


def test_timeout_is_stored_as_float() -> None:
    def f() -> None: ...

    assert tool(confirmation_timeout=5)(f).confirmation_timeout == 5.0


# -- Tool.validate -------------------------------------------------------------------


@tool
def draw(
    shape: Shape,
    color: Color = Color.RED,
    level: Level = Level.LOW,
    pair: tuple[int, str] = (0, ""),
    many: Sequence[float] = (),
    either: int | str = 0,
    maybe: Point | None = None,
    table: Mapping[str, Point] | None = None,
    kind: Literal[1, 2] = 1,
    anything: Any = None,
) -> None:
    """Draw a shape."""


def test_validate_structures_every_kind() -> None:
    kwargs = draw.validate(
        {
            "shape": {"name": "tri", "points": [{"x": 1}, {"x": 2, "y": 3}], "color": "blue"},
            "color": "blue",
            "level": 2,
            "pair": [4, "four"],
            "many": [1, 2.5],
            "either": "s",
            "maybe": {"x": 7},
            "table": {"a": {"x": 1}},
            "kind": 2,
            "anything": {"raw": [1]},
        }
    )
    assert kwargs == {
        "shape": Shape("tri", (Point(1), Point(2, 3)), Color.BLUE),
        "color": Color.BLUE,
        "level": Level.HIGH,
        "pair": (4, "four"),
        "many": (1.0, 2.5),
        "either": "s",
        "maybe": Point(7),
        "table": {"a": Point(1)},
        "kind": 2,
        "anything": {"raw": [1]},
    }
    # Enum members themselves, not equal plain values (IntEnum == int!).
    assert kwargs["level"] is Level.HIGH
    assert kwargs["color"] is Color.BLUE
    assert type(kwargs["shape"].points[1].x) is int
    assert type(kwargs["kind"]) is int
    assert all(type(v) is float for v in kwargs["many"])
    # The one scalar rule (as from_json): an integral float is not an integer.
    with pytest.raises(InvalidToolArguments, match=r"x: expected integer, got number; kind: "):
        draw.validate({"shape": {"name": "a", "points": [{"x": 2.0}]}, "kind": 2.0})


class Mode(str, enum.Enum):  # noqa: UP042 - the mixin form on purpose
    FAST = "fast"
    SAFE = "safe"


class Weight(float, enum.Enum):
    LIGHT = 0.5
    HEAVY = 2.0


def test_validate_structures_mixin_enums_to_members() -> None:
    @tool
    def f(mode: Mode, weight: Weight, levels: list[Level]) -> None: ...

    schema = f.input_schema["properties"]
    assert schema["mode"] == {"type": "string", "enum": ["fast", "safe"]}
    assert schema["weight"] == {"type": "number", "enum": [0.5, 2.0]}
    kwargs = f.validate({"mode": "safe", "weight": 2, "levels": [1, 2]})
    assert kwargs["mode"] is Mode.SAFE
    assert kwargs["weight"] is Weight.HEAVY
    assert kwargs["levels"] == [Level.LOW, Level.HIGH]
    assert all(type(level) is Level for level in kwargs["levels"])
    with pytest.raises(InvalidToolArguments, match="mode: must be one of 'fast', 'safe'"):
        f.validate({"mode": "slow", "weight": 0.5, "levels": []})
    with pytest.raises(InvalidToolArguments, match=r"levels\[1\]: expected integer, got number"):
        f.validate({"mode": "safe", "weight": 2, "levels": [1, 2.0]})


def test_validate_leaves_out_arguments_not_given() -> None:
    assert draw.validate({"shape": {"name": "dot"}}) == {"shape": Shape("dot")}


def test_validate_union_members_in_order() -> None:
    assert draw.validate({"shape": {"name": "a"}, "either": 3})["either"] == 3
    assert draw.validate({"shape": {"name": "a"}, "maybe": None})["maybe"] is None


def test_invalid_arguments_name_the_tool_and_every_field() -> None:
    with pytest.raises(InvalidToolArguments) as info:
        draw.validate(
            {"shape": {"name": 1, "points": [{"y": 1}]}, "color": "green", "pair": [1],
             "extra": True}
        )
    message = str(info.value)
    assert message.startswith("invalid arguments for tool 'draw': ")
    for problem in [
        "shape.name: expected string, got integer",
        "missing required field 'shape.points[0].x'",
        "color: must be one of 'red', 'blue'",
        "pair: expected 2 item(s), got 1",
        "unexpected argument 'extra'",
    ]:
        assert problem in message
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, BaseExceptionGroup)


def test_invalid_arguments_not_a_mapping() -> None:
    with pytest.raises(
        InvalidToolArguments, match="tool 'get_weather': arguments: expected object, got array"
    ):
        get_weather.validate(["Oslo"])  # type: ignore[arg-type]


def test_attrs_validator_errors_are_wrapped_with_their_path() -> None:
    @tool
    def f(p: Positive, items: list[Positive] = []) -> None:  # noqa: B006
        ...

    with pytest.raises(InvalidToolArguments) as info:
        f.validate({"p": {"n": -1}, "items": [{"n": 1}, {"n": 0}]})
    message = str(info.value)
    assert "tool 'f'" in message
    assert "p: must be positive" in message
    assert "items" in message
    assert not isinstance(info.value, BaseExceptionGroup)
    assert f.validate({"p": {"n": 2}}) == {"p": Positive(2)}


def test_validate_with_missing_annotation_passes_values_through() -> None:
    @tool
    def f(x, y=None):  # type: ignore[no-untyped-def]
        return x

    value = {"any": ["thing"]}
    assert f.validate({"x": value})["x"] is value


# -- Tool.run ------------------------------------------------------------------------


async def test_run_async_handler() -> None:
    assert await get_weather.run(None, {"city": "Oslo"}) == (TextBlock("21 c in Oslo"),)


async def test_run_sync_handler() -> None:
    calls: list[int] = []

    @tool
    def count(n: int) -> str:
        calls.append(n)
        return "ok"

    assert await count.run(None, {"n": 2}) == (TextBlock("ok"),)
    assert calls == [2]


async def test_run_sync_handler_returning_an_awaitable() -> None:
    async def later() -> str:
        await trio.lowlevel.checkpoint()
        return "later"

    @tool
    def f() -> Any:
        return later()

    assert await f.run(None, {}) == (TextBlock("later"),)


async def test_run_callable_object_with_async_call() -> None:
    class Handler:
        async def __call__(self, x: int) -> int:
            return x * 2

    t = tool(name="double")(Handler())
    assert await t.run(None, {"x": 4}) == (JsonBlock(8),)


async def test_partial_and_bound_method() -> None:
    def join(a: int, sep: str, b: int) -> str:
        return f"{a}{sep}{b}"

    class Service:
        def lookup(self, ctx: ToolContext, key: str) -> str:
            return f"{key}@{ctx.tick}"

    joined = tool(name="join")(functools.partial(join, sep="-"))
    assert joined.input_schema["required"] == ["a", "b"]
    assert await joined.run(None, {"a": 1, "b": 2}) == (TextBlock("1-2"),)
    lookup = tool(Service().lookup)
    assert lookup.takes_context is True
    ctx, _, _ = make_ctx()
    assert await lookup.run(ctx, {"key": "k"}) == (TextBlock("k@3"),)


async def test_run_injects_the_context() -> None:
    seen: list[ToolContext] = []

    @tool
    async def inspect_ctx(ctx: ToolContext, word: str) -> str:
        seen.append(ctx)
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        ctx.emit("progress", {"word": word})
        result = await ctx.spawn("agent", "hello", max_ticks=2)  # type: ignore[arg-type]
        return f"{word} {ctx.tool_use_id} {ctx.tick} {ctx.props['user']} {result}"

    ctx, emitted, spawned = make_ctx()
    blocks = await inspect_ctx.run(ctx, {"word": "hi"})
    assert blocks == (TextBlock("hi call_1 3 ann child result"),)
    assert seen == [ctx]
    assert ctx.state == {"count": 1}
    assert emitted == [("progress", {"word": "hi"})]
    assert spawned == [("agent", "hello", 2)]


async def test_run_sync_handler_with_context() -> None:
    @tool
    def f(ctx: ToolContext) -> str:
        return str(ctx.execution)

    ctx, _, _ = make_ctx(execution=None)
    assert await f.run(ctx, {}) == (TextBlock("None"),)


async def test_run_context_tool_without_context() -> None:
    with pytest.raises(TypeError, match="takes a ToolContext"):
        await delete_file.run(None, {"path": "/x"})


async def test_run_invalid_arguments_never_call_the_handler() -> None:
    calls: list[Any] = []

    @tool
    def f(n: int) -> None:
        calls.append(n)

    with pytest.raises(InvalidToolArguments, match="n: expected integer, got string"):
        await f.run(None, {"n": "1"})
    assert calls == []


async def test_run_handler_exceptions_propagate_unchanged() -> None:
    boom = KeyError("boom")

    @tool
    async def failing() -> None:
        raise boom

    @tool
    def failing_sync() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        await failing.run(None, {})
    assert info.value is boom
    with pytest.raises(KeyError) as info:
        await failing_sync.run(None, {})
    assert info.value is boom


async def test_run_cancelled_sync_handler_never_runs() -> None:
    calls: list[int] = []

    @tool
    def f() -> None:
        calls.append(1)

    with trio.CancelScope() as scope:
        scope.cancel()
        await f.run(None, {})
    assert scope.cancelled_caught
    assert calls == []


@pytest.mark.parametrize(
    ("returned", "blocks"),
    [
        ("text", (TextBlock("text"),)),
        ("", (TextBlock(""),)),
        (None, ()),
        (TextBlock("b"), (TextBlock("b"),)),
        (ImageBlock("https://x/y.png"), (ImageBlock("https://x/y.png"),)),
        ([TextBlock("a"), "b", JsonBlock(1)], (TextBlock("a"), TextBlock("b"), JsonBlock(1))),
        ((TextBlock("a"),), (TextBlock("a"),)),
        ({"temp": 21, "ok": True}, (JsonBlock({"temp": 21, "ok": True}),)),
        ([1, 2], (JsonBlock([1, 2]),)),
        (["a", "b"], (JsonBlock(["a", "b"]),)),
        ([], (JsonBlock([]),)),
        ((1, (2, 3)), (JsonBlock([1, [2, 3]]),)),
        (3, (JsonBlock(3),)),
        (2.5, (JsonBlock(2.5),)),
        (False, (JsonBlock(False),)),
        (Point(1, 2), (JsonBlock({"x": 1, "y": 2}),)),
        ({"p": Point(1), "c": Color.BLUE}, (JsonBlock({"p": {"x": 1, "y": 0}, "c": "blue"}),)),
        (Color.RED, (JsonBlock("red"),)),
    ],
)
async def test_run_every_return_kind(returned: Any, blocks: tuple[Any, ...]) -> None:
    @tool
    async def f() -> Any:
        return returned

    @tool
    def g() -> Any:
        return returned

    assert await f.run(None, {}) == blocks
    assert await g.run(None, {}) == blocks
    assert to_blocks(returned) == blocks
    # The result fits in a tool result block.
    assert ToolResultBlock("id", "f", blocks).content == blocks


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        ({1, 2}, TypeError, "set"),
        (b"bytes", TypeError, "bytes"),
        (object(), TypeError, "object"),
        ({"a": {1: 2}}, TypeError, "key of type int"),
        ({"a": [1, {2, 3}]}, TypeError, r"tool result\['a'\]\[1\] is of type set"),
        (math.inf, ValueError, "inf"),
        ([TextBlock("a"), 3], TypeError, r"tool result\[1\] is of type int"),
        (ToolUseBlock("i", "t", {}), TypeError, "tool_use block"),
        ([ToolResultBlock("i", "t", "x")], TypeError, r"tool result\[0\] is a tool_result block"),
    ],
)
async def test_not_json_able_results(returned: Any, error: type[Exception], match: str) -> None:
    @tool
    def f() -> Any:
        return returned

    with pytest.raises(error, match=match):
        await f.run(None, {})


# -- confirmation helpers ----------------------------------------------------------------


def test_confirmation_text_template() -> None:
    assert delete_file.confirmation_text({"path": "/etc/passwd"}) == "Delete /etc/passwd?"


def test_template_naming_no_argument_falls_back_to_the_default() -> None:
    @tool(confirmation_message="Delete {nothing}?")
    def rm(path: str) -> None: ...

    assert rm.confirmation_text({"path": "/x"}) == 'Allow rm with {"path": "/x"}?'


@pytest.mark.parametrize(
    "template", ["Delete {0}?", "Delete {path!z}", "Delete {path", "Delete {path.missing}?"]
)
def test_template_with_lookups_or_bad_syntax_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="confirmation_message"):

        @tool(confirmation_message=template)
        def rm(path: str) -> None: ...


def test_confirmation_text_callable_and_default() -> None:
    @tool(confirmation_message=lambda args: f"Remove {len(args['paths'])} files?")
    def rm(paths: list[str]) -> None: ...

    @tool
    def plain(path: str, n: int = 1) -> None: ...

    assert rm.confirmation_text({"paths": ["a", "b"]}) == "Remove 2 files?"
    assert plain.confirmation_text({"path": "ü", "n": 2}) == (
        'Allow plain with {"path": "ü", "n": 2}?'
    )


def test_confirmation_text_callable_that_fails(caplog: pytest.LogCaptureFixture) -> None:
    @tool(confirmation_message=lambda args: args["missing"])
    def rm(path: str) -> None: ...

    @tool(confirmation_message=lambda args: 42)  # type: ignore[arg-type, return-value]
    def rm2(path: str) -> None: ...

    with caplog.at_level(logging.ERROR, logger="trio_session"):
        assert rm.confirmation_text({"path": "/x"}) == 'Allow rm with {"path": "/x"}?'
    assert "confirmation_message of tool 'rm' raised" in caplog.text
    assert rm2.confirmation_text({"path": "/x"}) == 'Allow rm2 with {"path": "/x"}?'


def test_needs_confirmation(caplog: pytest.LogCaptureFixture) -> None:
    @tool(requires_confirmation=lambda args: args["path"].startswith("/etc"))
    def rm(path: str) -> None: ...

    @tool(requires_confirmation=lambda args: args["nope"])
    def broken(path: str) -> None: ...

    assert delete_file.needs_confirmation({"path": "/x"}) is True
    assert get_weather.needs_confirmation({"city": "x"}) is False
    assert rm.needs_confirmation({"path": "/etc/hosts"}) is True
    assert rm.needs_confirmation({"path": "/tmp/x"}) is False
    with caplog.at_level(logging.ERROR, logger="trio_session"):
        assert broken.needs_confirmation({"path": "/x"}) is True  # fails safe
    assert "predicate of tool 'broken' raised" in caplog.text


# -- ToolContext and Decision ----------------------------------------------------------------


def test_tool_context_emit_validates_the_name() -> None:
    ctx, emitted, _ = make_ctx()
    ctx.emit("done")
    with pytest.raises(TypeError, match="name must be a str"):
        ctx.emit(3)  # type: ignore[arg-type]
    assert emitted == [("done", None)]


def test_tool_context_is_frozen() -> None:
    ctx, _, _ = make_ctx()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ctx.tick = 4  # type: ignore[misc]


def test_decision() -> None:
    assert Decision(True) == Decision(True, modified_arguments=None, reason=None, always=False)
    args = {"path": "/tmp"}
    d = Decision(True, modified_arguments=args, always=True)
    assert d.modified_arguments is args
    assert d.always is True
    assert Decision(False, reason="no").reason == "no"
    with pytest.raises(TypeError):
        Decision(True, {"a": 1})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="approved must be a bool"):
        Decision("yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="modified_arguments"):
        Decision(True, modified_arguments=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        Decision(False, reason=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="always must be a bool"):
        Decision(True, always=1)  # type: ignore[arg-type]


# -- Confirmations -----------------------------------------------------------------------------


def answer(confirmations: Confirmations, tool_use_id: str, approved: bool = True,
           **kwargs: Any) -> None:
    confirmations.submit(
        tool_use_id,
        approved=approved,
        modified_arguments=kwargs.get("modified_arguments"),
        reason=kwargs.get("reason"),
        always=kwargs.get("always", False),
    )


async def test_register_and_submit() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    assert isinstance(pending, ConfirmationWait)
    assert (pending.tool_use_id, pending.tool, pending.arguments) == (
        "call_1", delete_file, {"path": "/x"}
    )
    assert confirmations.pending() == ["call_1"]
    assert "call_1" in confirmations
    assert confirmations.get("call_1") is pending
    assert len(confirmations) == 1

    modified = {"path": "/tmp/x"}
    answer(confirmations, "call_1", modified_arguments=modified, reason="ok", always=True)
    assert "call_1" not in confirmations
    assert confirmations.pending() == []
    decision = await pending.wait(None)
    assert decision == Decision(True, modified_arguments=modified, reason="ok", always=True)
    assert decision.modified_arguments is modified  # stored as given


def test_register_duplicate_pending_id() -> None:
    confirmations = Confirmations()
    confirmations.register("call_1", delete_file, {"path": "/x"})
    with pytest.raises(ValueError, match="'call_1' is already pending"):
        confirmations.register("call_1", delete_file, {"path": "/y"})


def test_register_checks_types() -> None:
    confirmations = Confirmations()
    with pytest.raises(TypeError, match="tool must be a Tool"):
        confirmations.register("call_1", "delete_file", {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tool_use_id must be a str"):
        confirmations.register(1, delete_file, {})  # type: ignore[arg-type]


def test_submit_unknown_id() -> None:
    confirmations = Confirmations()
    with pytest.raises(UnknownToolUse, match="'nope'") as info:
        answer(confirmations, "nope")
    assert isinstance(info.value, LookupError)


def test_submit_twice() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    answer(confirmations, "call_1", approved=False, reason="no")
    with pytest.raises(UnknownToolUse, match="'call_1'"):
        answer(confirmations, "call_1")
    with pytest.raises(UnknownToolUse, match="already answered"):
        pending.decide(Decision(True))
    assert pending.decision == Decision(False, reason="no")


async def test_invalid_modified_arguments_keep_it_pending() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    with pytest.raises(InvalidToolArguments, match="path: expected string, got integer"):
        answer(confirmations, "call_1", modified_arguments={"path": 3})
    with pytest.raises(InvalidToolArguments, match="unexpected argument 'force'"):
        pending.decide(Decision(True, modified_arguments={"path": "/y", "force": True}))
    assert confirmations.pending() == ["call_1"]
    assert pending.decision is None
    answer(confirmations, "call_1", modified_arguments={"path": "/y"})
    assert (await pending.wait(None)).modified_arguments == {"path": "/y"}


async def test_submit_wakes_the_waiter() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    decisions: list[Decision] = []

    async def waiter() -> None:
        decisions.append(await pending.wait(None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert decisions == []
        assert confirmations.pending() == ["call_1"]
        answer(confirmations, "call_1", approved=False, reason="not today")
    assert decisions == [Decision(False, reason="not today")]
    assert confirmations.pending() == []


async def test_decided_before_wait_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    # As a listener would, synchronously, before the engine starts waiting.
    answer(confirmations, "call_1")
    start = trio.current_time()
    assert await pending.wait(30) == Decision(True)
    assert trio.current_time() == start


async def test_decided_before_wait_wins_over_a_zero_timeout() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    answer(confirmations, "call_1")
    assert await pending.wait(0) == Decision(True)


async def test_wait_is_a_checkpoint_even_when_decided() -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    answer(confirmations, "call_1")
    with trio.CancelScope() as scope:
        scope.cancel()
        await pending.wait(None)
    assert scope.cancelled_caught


async def test_timeout_denies(autojump_clock: trio.testing.MockClock) -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    start = trio.current_time()
    decision = await pending.wait(5)
    assert trio.current_time() - start == pytest.approx(5)
    assert decision == Decision(False, reason="confirmation timed out after 5s")
    assert confirmations.pending() == []
    with pytest.raises(UnknownToolUse):
        answer(confirmations, "call_1")
    with pytest.raises(UnknownToolUse):
        pending.decide(Decision(True))


async def test_timeout_reason_formats_fractions(autojump_clock: trio.testing.MockClock) -> None:
    pending = Confirmations().register("call_1", delete_file, {"path": "/x"})
    assert (await pending.wait(0.25)).reason == "confirmation timed out after 0.25s"


async def test_answer_before_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    decisions: list[Decision] = []

    async def waiter() -> None:
        decisions.append(await pending.wait(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(3)
        answer(confirmations, "call_1")
    assert decisions == [Decision(True)]
    assert trio.current_time() == pytest.approx(3)


async def test_cancellation_unregisters(autojump_clock: trio.testing.MockClock) -> None:
    confirmations = Confirmations()
    pending = confirmations.register("call_1", delete_file, {"path": "/x"})
    with trio.move_on_after(1) as scope:
        await pending.wait(None)
    assert scope.cancelled_caught  # Cancelled propagated out of wait()
    assert confirmations.pending() == []
    assert "call_1" not in confirmations
    with pytest.raises(UnknownToolUse):
        answer(confirmations, "call_1")


async def test_cancellation_propagates_from_wait() -> None:
    pending = Confirmations().register("call_1", delete_file, {"path": "/x"})
    raised: list[BaseException] = []

    async def waiter() -> None:
        try:
            await pending.wait(None)
        except BaseException as exc:
            raised.append(exc)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(raised) == 1
    assert isinstance(raised[0], trio.Cancelled)


async def test_a_new_registration_after_cancellation_is_independent() -> None:
    confirmations = Confirmations()
    first = confirmations.register("call_1", delete_file, {"path": "/x"})
    with trio.CancelScope() as scope:
        scope.cancel()
        await first.wait(None)
    second = confirmations.register("call_1", delete_file, {"path": "/y"})
    answer(confirmations, "call_1", approved=False)
    assert (await second.wait(None)).approved is False


async def test_several_pending_in_a_shared_tree() -> None:
    # A parent and its spawned child share one Confirmations, so a child's call
    # is answerable wherever the parent's handle is.
    shared = Confirmations()
    parent = shared.register("parent_call", delete_file, {"path": "/a"})
    child = shared.register("child_call", delete_file, {"path": "/b"})
    assert shared.pending() == ["parent_call", "child_call"]
    answer(shared, "child_call", approved=False, reason="child denied")
    answer(shared, "parent_call")
    assert (await child.wait(None)).reason == "child denied"
    assert (await parent.wait(None)).approved is True


async def test_wait_rejects_a_negative_timeout() -> None:
    pending = Confirmations().register("call_1", delete_file, {"path": "/x"})
    with pytest.raises(ValueError, match="timeout"):
        await pending.wait(-1)


def test_decide_takes_a_decision() -> None:
    pending = Confirmations().register("call_1", delete_file, {"path": "/x"})
    with pytest.raises(TypeError, match="Decision"):
        pending.decide(True)  # type: ignore[arg-type]


# -- property: validate() and Tool.validate agree ------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(["c", "f", "Oslo", ""]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["city", "unit", "x", "y", "name"]), children, max_size=3),
    max_leaves=8,
)

def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes any JSON value: both outcomes get exercised."""
    return st.integers(0, 4).flatmap(lambda i: json_values if i == 0 else valid)


weather_arguments = st.fixed_dictionaries(
    {"city": mostly(st.text(max_size=4))},
    optional={"unit": mostly(st.sampled_from(["c", "f"]))},
) | st.dictionaries(st.sampled_from(["city", "unit", "colour"]), json_values, max_size=3)


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(weather_arguments, weather_arguments, json_values))
def test_validate_agrees_with_tool_validate(value: Any) -> None:
    problems = validate(get_weather.input_schema, value)
    if problems:
        with pytest.raises(InvalidToolArguments) as info:
            get_weather.validate(value)
        for problem in problems:
            assert problem in str(info.value)
    else:
        assert get_weather.validate(value) == dict(value)


ints = mostly(st.integers(-3, 3) | st.integers(-3, 3).map(float))
points = st.fixed_dictionaries({"x": ints}, optional={"y": ints})
shape_arguments = st.fixed_dictionaries(
    {
        "shape": mostly(
            st.fixed_dictionaries(
                {"name": mostly(st.text(max_size=3))},
                optional={
                    "points": mostly(st.lists(points, max_size=2)),
                    "color": mostly(st.sampled_from(["red", "blue", None])),
                },
            )
        )
    },
    optional={
        "either": mostly(st.integers(-3, 3) | st.text(max_size=2)),
        "pair": mostly(st.tuples(ints, st.text(max_size=2)).map(list)),
        "maybe": mostly(points | st.none()),
        "kind": mostly(st.sampled_from([1, 2, 1.0])) | st.sampled_from([3, True]),
        "level": mostly(st.sampled_from([1, 2, 2.0])) | st.sampled_from([3, "1"]),
    },
)


@settings(max_examples=examples(300), deadline=None)
@given(shape_arguments)
def test_validate_agrees_with_structuring_for_rich_types(value: Any) -> None:
    problems = validate(draw.input_schema, value)
    if problems:
        with pytest.raises(InvalidToolArguments):
            draw.validate(value)
    else:
        kwargs = draw.validate(value)
        assert isinstance(kwargs["shape"], Shape)
        assert all(isinstance(p, Point) for p in kwargs["shape"].points)
        if "level" in kwargs:
            assert isinstance(kwargs["level"], Level)
        if "pair" in kwargs:
            assert isinstance(kwargs["pair"], tuple)
            assert isinstance(kwargs["pair"][0], int)
            assert not isinstance(kwargs["pair"][0], bool)
