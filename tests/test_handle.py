"""ExecutionHandle on its own: SPEC §4 status machine, result, wait, abort, iteration."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_session import (
    EventBuffer,
    ExecutionAborted,
    ExecutionCancelled,
    ExecutionHandle,
    ExecutionTimeout,
    ModelError,
    SessionExecutionHandle,
)
from trio_session._handle import Outcome, new_handle, outcome_of


def _end(handle: ExecutionHandle[object], status: str, **fields: object) -> None:
    """Do what the engine does at the end of an execution."""
    outcome = outcome_of(handle)
    final = outcome.settle(status, **fields)  # type: ignore[arg-type]
    handle.events.emit("execution_end", status=final)
    outcome.finish()


def _new() -> tuple[ExecutionHandle[Any], Outcome[Any]]:
    return new_handle(EventBuffer())


def test_handles_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        ExecutionHandle(EventBuffer(), Outcome())
    with pytest.raises(TypeError, match="no public constructor"):
        SessionExecutionHandle()  # type: ignore[call-arg]


async def test_result_is_awaitable_many_times_by_many_tasks() -> None:
    handle, outcome = _new()
    results: list[str] = []

    async def waiter() -> None:
        results.append(await handle.result)
        results.append(await handle.result)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        outcome.set_running()
        _end(handle, "completed", value="done")
    assert results == ["done"] * 10
    assert await handle.result == "done"
    assert handle.status == "completed" and handle.done


async def test_status_moves_pending_running_terminal_and_sticks() -> None:
    handle, outcome = _new()
    assert handle.status == "pending" and not handle.done
    outcome.set_running()
    # mypy keeps the "pending" it narrowed above across the call.
    assert handle.status == "running"  # type: ignore[comparison-overlap]
    handle.abort("stop")
    assert handle.status == "aborted" and handle.done
    assert outcome.scope.cancel_called
    # Whatever the engine reports afterwards, abort() came first and wins.
    assert outcome.settle("completed", value="late") == "aborted"
    handle.abort("again")
    outcome.cancel("closed")
    assert handle.status == "aborted"
    assert handle.reason == "stop"
    handle.events.emit("execution_end", status="aborted")
    outcome.finish()
    with pytest.raises(ExecutionAborted) as info:
        await handle.result
    assert info.value.reason == "stop"


async def test_abort_on_a_terminal_handle_does_nothing() -> None:
    handle, outcome = _new()
    _end(handle, "completed", value="x")
    handle.abort("too late")
    assert handle.status == "completed"
    assert not outcome.scope.cancel_called
    assert await handle.result == "x"


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [
        ("error", {"error": ModelError("slow down", code="rate_limit")}, ModelError),
        ("failed", {"error": LookupError("bug")}, LookupError),
        ("cancelled", {"reason": "session closed"}, ExecutionCancelled),
        ("aborted", {"reason": "timeout"}, ExecutionTimeout),
    ],
)
async def test_wait_never_raises_but_result_does(
    status: str, outcome: dict[str, object], expected: type[BaseException]
) -> None:
    handle, _ = _new()
    _end(handle, status, **outcome)
    await handle.wait()  # no exception
    for _ in range(2):
        with pytest.raises(expected):
            await handle.result


@pytest.mark.parametrize("status", ["failed", "error"])
async def test_iteration_raises_after_execution_end_for_failures(status: str) -> None:
    handle, _ = _new()
    handle.events.emit("execution_start")
    error = ModelError("boom") if status == "error" else RuntimeError("boom")
    _end(handle, status, error=error)
    seen: list[str] = []
    with pytest.raises(type(error), match="boom"):
        async for event in handle:
            seen.append(event.type)
    assert seen == ["execution_start", "execution_end"]


@pytest.mark.parametrize("status", ["completed", "aborted", "cancelled"])
async def test_iteration_just_ends_otherwise(status: str) -> None:
    handle, _ = _new()
    handle.events.emit("execution_start")
    _end(handle, status, value="v")
    assert [event.type async for event in handle] == ["execution_start", "execution_end"]


async def test_timeout_deadline_only_tightens() -> None:
    _, outcome = _new()
    outcome.apply_timeout(10)
    first = outcome.scope.deadline
    outcome.apply_timeout(20)
    assert outcome.scope.deadline == first
    outcome.apply_timeout(5)
    assert outcome.scope.deadline < first


def test_a_str_becomes_the_user_message_the_constructor_makes() -> None:
    from trio_session import Message
    from trio_session._handle import as_message

    made = as_message("hello", "send")
    assert made == Message("user", "hello", id=made.id)
    again = as_message("hello", "send")
    assert again.id != made.id
    assert again.metadata == {} and again.metadata is not made.metadata
    with pytest.raises(TypeError, match=r"send\(\) takes a Message or a str, got int"):
        as_message(1, "send")
