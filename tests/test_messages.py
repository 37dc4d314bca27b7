"""Messages, content blocks and Usage (SPEC §1, and Usage of §2)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings, strategies as st

from trio_session import (
    ImageBlock,
    JsonBlock,
    Message,
    ReasoningBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    assistant,
    system,
    user,
)

ROLES = ["system", "user", "assistant", "tool", "event"]


def tool_result(content: Any = "ok", **kw: Any) -> ToolResultBlock:
    return ToolResultBlock("call_1", "get_weather", content, **kw)


# -- blocks ----------------------------------------------------------------------


def test_block_types_and_fields() -> None:
    assert TextBlock("hi").type == "text"
    assert TextBlock("hi").text == "hi"
    img = ImageBlock("https://example.com/cat.png", media_type="image/png")
    assert (img.type, img.source, img.media_type) == ("image", img.source, "image/png")
    assert ImageBlock("data:image/png;base64,AAAA").media_type is None
    assert JsonBlock({"t": [1, 2]}).type == "json"
    assert JsonBlock({"t": [1, 2]}).data == {"t": [1, 2]}
    assert ReasoningBlock("because").type == "reasoning"
    use = ToolUseBlock("call_1", "get_weather", {"city": "Paris"})
    assert (use.type, use.tool_use_id, use.name, dict(use.input)) == (
        "tool_use",
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    res = tool_result()
    assert res.type == "tool_result"
    assert res.content == (TextBlock("ok"),)
    assert res.is_error is False


def test_type_is_a_class_constant_not_a_field() -> None:
    for cls in (TextBlock, ImageBlock, JsonBlock, ReasoningBlock, ToolUseBlock, ToolResultBlock):
        assert "type" not in attrs.fields_dict(cls)


def test_tool_use_input_is_copied() -> None:
    original = {"city": "Paris"}
    use = ToolUseBlock("c", "n", original)
    original["city"] = "Rome"
    assert dict(use.input) == {"city": "Paris"}


def test_tool_result_content_normalization() -> None:
    assert tool_result("text").content == (TextBlock("text"),)
    assert tool_result(["a", JsonBlock(1)]).content == (TextBlock("a"), JsonBlock(1))
    assert tool_result(("a",)).content == (TextBlock("a"),)
    assert tool_result(ImageBlock("u")).content == (ImageBlock("u"),)
    assert tool_result([]).content == ()
    assert tool_result("x", is_error=True).is_error is True


@pytest.mark.parametrize(
    ("build", "exc", "field"),
    [
        (lambda: TextBlock(5), TypeError, "TextBlock.text"),  # type: ignore[arg-type]
        (lambda: TextBlock(None), TypeError, "TextBlock.text"),  # type: ignore[arg-type]
        (lambda: ImageBlock(b"bytes"), TypeError, "ImageBlock.source"),  # type: ignore[arg-type]
        (lambda: ImageBlock("u", media_type=5), TypeError, "ImageBlock.media_type"),  # type: ignore[arg-type]
        (lambda: ReasoningBlock(1.5), TypeError, "ReasoningBlock.text"),  # type: ignore[arg-type]
        (lambda: ToolUseBlock(1, "n", {}), TypeError, "ToolUseBlock.tool_use_id"),  # type: ignore[arg-type]
        (lambda: ToolUseBlock("c", None, {}), TypeError, "ToolUseBlock.name"),  # type: ignore[arg-type]
        (lambda: ToolUseBlock("c", "n", [("a", 1)]), TypeError, "ToolUseBlock.input"),
        (lambda: ToolUseBlock("c", "n", {1: "a"}), TypeError, "ToolUseBlock.input keys"),
        (lambda: ToolResultBlock(1, "n", "x"), TypeError, "ToolResultBlock.tool_use_id"),  # type: ignore[arg-type]
        (lambda: ToolResultBlock("c", 2, "x"), TypeError, "ToolResultBlock.name"),  # type: ignore[arg-type]
        (lambda: tool_result(None), TypeError, "ToolResultBlock.content"),
        (lambda: tool_result({"a": 1}), TypeError, "ToolResultBlock.content"),
        (lambda: tool_result(["ok", 3]), TypeError, r"ToolResultBlock.content\[1\]"),
        (lambda: tool_result(is_error=1), TypeError, "ToolResultBlock.is_error"),
        (lambda: tool_result(is_error="yes"), TypeError, "ToolResultBlock.is_error"),
        (
            lambda: tool_result([TextBlock("a"), tool_result()]),
            ValueError,
            r"ToolResultBlock.content\[1\] must not be a tool_result",
        ),
        (
            lambda: tool_result([ToolUseBlock("c", "n", {})]),
            ValueError,
            r"ToolResultBlock.content\[0\] must not be a tool_use",
        ),
    ],
)
def test_block_validation_names_the_field(build: Any, exc: type[Exception], field: str) -> None:
    with pytest.raises(exc, match=field):
        build()


# -- messages ----------------------------------------------------------------------


def test_str_content_becomes_one_text_block() -> None:
    m = Message("user", "What is 2 + 2?")
    assert m.content == (TextBlock("What is 2 + 2?"),)
    assert m.text == "What is 2 + 2?"
    assert m.role == "user"


def test_list_and_tuple_content_become_a_tuple_of_blocks() -> None:
    blocks = [TextBlock("a"), "b", ImageBlock("u")]
    from_list = Message("user", blocks)
    from_tuple = Message("user", tuple(blocks))
    assert isinstance(from_list.content, tuple)
    assert from_list.content == (TextBlock("a"), TextBlock("b"), ImageBlock("u"))
    assert from_tuple.content == from_list.content
    blocks.append(TextBlock("later"))  # the message holds its own copy
    assert len(from_list.content) == 3
    assert Message("assistant", []).content == ()


def test_text_joins_only_the_text_blocks() -> None:
    m = Message(
        "assistant",
        [
            ReasoningBlock("hidden"),
            TextBlock("Hello, "),
            ToolUseBlock("c", "n", {}),
            JsonBlock({"x": 1}),
            TextBlock("world"),
        ],
    )
    assert m.text == "Hello, world"
    assert Message("assistant", [ImageBlock("u")]).text == ""
    assert m.tool_uses == (ToolUseBlock("c", "n", {}),)
    assert Message("tool", [tool_result()]).tool_results == (tool_result(),)


def test_every_role_is_accepted() -> None:
    for role in ROLES:
        assert Message(role, "x").role == role  # type: ignore[arg-type]


def test_ids_are_unique_uuid_hex_unless_given() -> None:
    ids = {Message("user", "x").id for _ in range(100)}
    assert len(ids) == 100
    for i in ids:
        assert len(i) == 32
        int(i, 16)
    assert Message("user", "x", id="m1").id == "m1"


def test_metadata_is_copied_and_defaults_empty() -> None:
    meta = {"source": "cli"}
    m = Message("user", "x", metadata=meta)
    meta["source"] = "changed"
    assert dict(m.metadata) == {"source": "cli"}
    assert dict(Message("user", "x").metadata) == {}


def test_tool_result_allowed_in_a_tool_message() -> None:
    m = Message("tool", [tool_result("22 degrees")])
    assert m.tool_results[0].content == (TextBlock("22 degrees"),)


def test_equality_is_by_value() -> None:
    assert Message("user", "x", id="a") == Message("user", [TextBlock("x")], id="a")
    assert Message("user", "x", id="a") != Message("user", "x", id="b")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"role": "bot", "content": "x"}, ValueError, r"Message.role.*'bot'"),
        ({"role": "USER", "content": "x"}, ValueError, "Message.role"),
        ({"role": None, "content": "x"}, ValueError, "Message.role"),
        ({"role": "user", "content": None}, TypeError, "Message.content"),
        ({"role": "user", "content": 5}, TypeError, "Message.content"),
        ({"role": "user", "content": {"type": "text"}}, TypeError, "Message.content"),
        ({"role": "user", "content": ["ok", 5]}, TypeError, r"Message.content\[1\].*int"),
        ({"role": "user", "content": [{"text": "x"}]}, TypeError, r"Message.content\[0\].*dict"),
        ({"role": "user", "content": "x", "id": 5}, TypeError, "Message.id"),
        ({"role": "user", "content": "x", "id": None}, TypeError, "Message.id"),
        ({"role": "user", "content": "x", "metadata": [("a", 1)]}, TypeError, "Message.metadata"),
        ({"role": "user", "content": "x", "metadata": {1: "a"}}, TypeError, "Message.metadata"),
    ],
)
def test_message_validation_names_the_field(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        Message(**kwargs)


@pytest.mark.parametrize("role", ["system", "user", "assistant", "event"])
def test_tool_result_outside_a_tool_message_is_refused(role: str) -> None:
    with pytest.raises(ValueError, match=r"Message.content\[1\].*tool_result.*'tool'"):
        Message(role, ["before", tool_result()])  # type: ignore[arg-type]


def test_unhashable_role_names_the_field() -> None:
    with pytest.raises((TypeError, ValueError), match=r"Message\.role"):
        Message(["user"], "x")  # type: ignore[arg-type]


# -- frozen ---------------------------------------------------------------------------


def test_messages_and_blocks_are_frozen() -> None:
    m = user("hi")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.role = "assistant"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.content = ()  # type: ignore[misc]
    for block in (
        TextBlock("a"),
        ImageBlock("u"),
        JsonBlock(1),
        ReasoningBlock("r"),
        ToolUseBlock("c", "n", {}),
        tool_result(),
    ):
        field = attrs.fields(type(block))[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(block, field, "changed")
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]  # slotted: no new attributes


def test_evolve_revalidates() -> None:
    m = user("hi", id="m1")
    assert attrs.evolve(m, content="bye").content == (TextBlock("bye"),)
    with pytest.raises(ValueError, match=r"Message\.role"):
        attrs.evolve(m, role="robot")  # type: ignore[arg-type]


# -- helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("helper", "role"), [(user, "user"), (assistant, "assistant"), (system, "system")]
)
def test_role_helpers_build_messages_with_metadata(helper: Any, role: str) -> None:
    m = helper("Describe this:", ImageBlock("https://example.com/cat.png"), source="cli", n=2)
    assert isinstance(m, Message)
    assert m.role == role
    assert m.content == (TextBlock("Describe this:"), ImageBlock("https://example.com/cat.png"))
    assert dict(m.metadata) == {"source": "cli", "n": 2}
    assert m.text == "Describe this:"
    assert helper().content == ()


def test_helper_keyword_arguments_are_metadata_even_id() -> None:
    # `**metadata` swallows every keyword: `id=` does not set the message id.
    m = user("hi", id="m1")
    assert m.metadata == {"id": "m1"}
    assert m.id != "m1"


def test_helpers_validate_their_parts() -> None:
    with pytest.raises(TypeError, match=r"Message.content\[1\]"):
        user("ok", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool_result"):
        assistant(tool_result())


# -- usage ---------------------------------------------------------------------------


def test_usage_defaults_and_addition() -> None:
    assert Usage() == Usage(0, 0, 0, 0)
    a = Usage(input_tokens=10, output_tokens=5, total_tokens=15, ticks=1)
    b = Usage(1, 2, 3, 4)
    assert a + b == Usage(11, 7, 18, 5)
    assert a + Usage() == a
    assert sum([a, b, b], Usage()) == Usage(12, 9, 21, 9)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.builds(
            Usage,
            st.integers(0, 10**12),
            st.integers(0, 10**12),
            st.integers(0, 10**12),
            st.integers(0, 10**6),
        ),
        max_size=5,
    )
)
def test_usage_addition_is_fieldwise_and_associative(usages: list[Usage]) -> None:
    total = sum(usages, Usage())
    assert total.input_tokens == sum(u.input_tokens for u in usages)
    assert total.output_tokens == sum(u.output_tokens for u in usages)
    assert total.total_tokens == sum(u.total_tokens for u in usages)
    assert total.ticks == sum(u.ticks for u in usages)
    assert sum(reversed(usages), Usage()) == total


def test_usage_addition_with_other_types_is_refused() -> None:
    with pytest.raises(TypeError):
        Usage() + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        1 + Usage()  # type: ignore[operator]


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "total_tokens", "ticks"])
@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (-1, ValueError, "must not be negative"),
        (1.0, TypeError, "must be an int, got float"),
        ("1", TypeError, "must be an int, got str"),
        (True, TypeError, "must be an int, got bool"),
        (None, TypeError, "must be an int, got NoneType"),
    ],
)
def test_usage_validation_names_the_field(
    field: str, value: Any, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=f"Usage.{field} {match}"):
        Usage(**{field: value})


def test_usage_is_frozen() -> None:
    u = Usage(1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        u.ticks = 2  # type: ignore[misc]
    assert hash(u) == hash(Usage(1))
