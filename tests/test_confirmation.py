"""Human-in-the-loop confirmation: SPEC §7 and the §11 regressions."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _helpers import (
    assert_transcript_integrity,
    assert_well_formed,
    collect,
    delete_file,
    deleted,
    text_of,
    types_of,
)

from trio_session import (
    Agent,
    Decision,
    InvalidToolArguments,
    Reply,
    ScriptedModel,
    StreamEvent,
    ToolConfirmationRequired,
    ToolConfirmationResult,
    UnknownToolUse,
    open_session,
    tool,
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    deleted.clear()


def _script(*paths: str) -> ScriptedModel:
    calls = [("delete_file", {"path": p}, f"call_{i}") for i, p in enumerate(paths)]
    return ScriptedModel([Reply("Deleting.", tool_calls=calls), "Done.", "Done again."])


async def test_listener_answers_synchronously_and_nothing_is_lost() -> None:
    async with open_session(Agent(_script("/tmp/a"), tools=[delete_file])) as session:
        handle = await session.send("clean up")

        def approve(event: StreamEvent) -> None:
            assert isinstance(event, ToolConfirmationRequired)
            handle.submit_tool_result(event.tool_use_id, approved=True)

        handle.events.on("tool_confirmation_required", approve)
        result = await handle.result
        events = await collect(handle)
    assert result.response == "Done."
    assert deleted == ["/tmp/a"]
    kinds = types_of(events)
    start = kinds.index("tool_result_start")
    assert kinds[start : start + 4] == [
        "tool_result_start",
        "tool_confirmation_required",
        "tool_confirmation_result",
        "tool_result",
    ]
    required = events[start + 1]
    assert required.type == "tool_confirmation_required"
    assert required.message == "Delete /tmp/a?"
    assert required.input == {"path": "/tmp/a"}
    assert_well_formed(events)


async def test_modified_arguments_are_validated_then_used() -> None:
    async with open_session(Agent(_script("/etc/passwd"), tools=[delete_file])) as session:
        handle = await session.send("clean up")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        with pytest.raises(InvalidToolArguments, match="path"):
            handle.submit_tool_result(event.tool_use_id, approved=True, modified_arguments={})
        # Still pending after the invalid answer.
        handle.submit_tool_result(
            event.tool_use_id, approved=True, modified_arguments={"path": "/tmp/safe"}
        )
        await handle.result
        with pytest.raises(UnknownToolUse):
            handle.submit_tool_result(event.tool_use_id, approved=True)
        events = await collect(handle)
    assert deleted == ["/tmp/safe"]
    answer = next(e for e in events if e.type == "tool_confirmation_result")
    assert answer.modified_arguments == {"path": "/tmp/safe"}


async def test_denial_gives_an_error_result_with_the_reason() -> None:
    async with open_session(Agent(_script("/a"), tools=[delete_file])) as session:
        handle = await session.send("clean up")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        handle.submit_tool_result(event.tool_use_id, approved=False, reason="too risky")
        await handle.result
        result_block = session.timeline[2].tool_results[0]
    assert deleted == []
    assert result_block.is_error
    assert "denied" in text_of(result_block.content[0])
    assert "too risky" in text_of(result_block.content[0])


async def test_always_is_remembered_for_the_session() -> None:
    model = ScriptedModel(
        [
            Reply(tool_calls=[("delete_file", {"path": "/1"})]),
            "ok",
            Reply(tool_calls=[("delete_file", {"path": "/2"})]),
            "ok again",
        ]
    )
    async with open_session(Agent(model, tools=[delete_file])) as session:
        handle = await session.send("one")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        handle.submit_tool_result(event.tool_use_id, approved=True, always=True)
        await handle.result
        second = await session.send("two")
        await second.result
        events = await collect(second)
    assert deleted == ["/1", "/2"]
    assert "tool_confirmation_required" not in types_of(events)
    remembered = next(e for e in events if e.type == "tool_confirmation_result")
    assert remembered.approved and remembered.always


async def test_confirmation_timeout_denies(autojump_clock: trio.abc.Clock) -> None:
    @tool(requires_confirmation=True, confirmation_timeout=30)
    def risky() -> str:
        """Risky."""
        deleted.append("risky")
        return "ran"

    model = ScriptedModel([Reply(tool_calls=[("risky", {})]), "gave up"])
    async with open_session(Agent(model, tools=[risky])) as session:
        start = trio.current_time()
        result = await session.send("go").result
        assert trio.current_time() - start == pytest.approx(30)
        block = session.timeline[2].tool_results[0]
    assert result.response == "gave up"
    assert deleted == []
    assert block.is_error and "timed out" in text_of(block.content[0])
    # Nobody answered: the model is not told that the user denied it.
    assert "denied" not in text_of(block.content[0])


async def test_policy_hook_decides_and_none_defers_to_a_person() -> None:
    asked: list[str] = []

    async def policy(event: ToolConfirmationRequired) -> Decision | None:
        asked.append(event.input["path"])
        if event.input["path"].startswith("/tmp/"):
            return Decision(True)
        if event.input["path"].startswith("/etc/"):
            return Decision(False, reason="system files are off limits")
        return None

    model = _script("/tmp/x", "/etc/y", "/home/z")
    async with open_session(
        Agent(model, tools=[delete_file], on_tool_confirmation=policy)
    ) as session:
        handle = await session.send("clean")
        async with handle.events.subscribe(types={"tool_confirmation_result"}) as sub:
            decided = [await sub.receive(), await sub.receive()]
            ids = {e.tool_use_id for e in decided if isinstance(e, ToolConfirmationResult)}
            assert ids == {"call_0", "call_1"}
        handle.submit_tool_result("call_2", approved=True)
        await handle.result
        results = session.timeline[2].tool_results
    assert sorted(asked) == ["/etc/y", "/home/z", "/tmp/x"]
    assert sorted(deleted) == ["/home/z", "/tmp/x"]
    assert [r.is_error for r in results] == [False, True, False]
    assert "off limits" in text_of(results[1].content[0])


async def test_abort_ends_pending_confirmation_and_tool_never_runs() -> None:
    async with open_session(Agent(_script("/a"), tools=[delete_file])) as session:
        handle = await session.send("clean")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        handle.abort("never mind")
        await handle.wait()
        with pytest.raises(UnknownToolUse):
            handle.submit_tool_result(event.tool_use_id, approved=True)
        timeline = list(session.timeline)
    assert deleted == []
    assert handle.status == "aborted"
    assert_transcript_integrity(timeline)
    assert_well_formed(handle.events.history)


async def test_unknown_tool_use_id() -> None:
    async with open_session(Agent(_script("/a"), tools=[delete_file])) as session:
        handle = await session.send("clean")
        with pytest.raises(UnknownToolUse, match="nope"):
            handle.submit_tool_result("nope", approved=True)
        with pytest.raises(TypeError):
            handle.submit_tool_result("call_0", approved="yes")  # type: ignore[arg-type]
        handle.abort()


async def test_confirmation_predicate_and_callable_message() -> None:
    def needs(args: Any) -> bool:
        return bool(args["amount"] > 100)

    @tool(requires_confirmation=needs, confirmation_message=lambda a: f"Pay {a['amount']}?")
    def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    model = ScriptedModel(
        [Reply(tool_calls=[("pay", {"amount": 5}), ("pay", {"amount": 500}, "big")]), "ok"]
    )
    async with open_session(Agent(model, tools=[pay])) as session:
        handle = await session.send("pay")
        async with handle.events.subscribe(types={"tool_confirmation_required"}) as sub:
            event = await sub.receive()
        assert isinstance(event, ToolConfirmationRequired)
        assert event.message == "Pay 500?"
        handle.submit_tool_result("big", approved=True)
        await handle.result
        texts = [text_of(r.content[0]) for r in session.timeline[2].tool_results]
    assert texts == ["paid 5", "paid 500"]
