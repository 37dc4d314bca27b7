"""Tick retries (`RetryPolicy`, ``tick_retry``) and typed output (``output_type``), SPEC §8.

Time runs on trio's `MockClock` (``autojump_clock``): a retry's sleep takes no real time, and
``trio.current_time()`` shows how long the engine waited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing
from _helpers import assert_well_formed, collect, types_of

from trio_session import (
    Agent,
    ExecutionAborted,
    InvalidOutput,
    Message,
    ModelChunk,
    ModelError,
    ModelRequest,
    RetryPolicy,
    ScriptedModel,
    StopChunk,
    TextChunk,
    TickRetry,
    UsageChunk,
    open_session,
)

OVERLOADED = ModelError("Overloaded", code="overloaded", retryable=True)

# One model call: the chunks to stream, then the error to raise (None: end normally).
Call = tuple[Sequence[ModelChunk], ModelError | None]


def answer(text: str) -> Call:
    return [TextChunk(text), UsageChunk(10, 2), StopChunk("end_turn")], None


class FlakyModel:
    """A model that plays one scripted call per request, failing where the script says."""

    name = "flaky"

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = list(calls)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        chunks, error = self.calls.pop(0)
        for chunk in chunks:
            await trio.lowlevel.checkpoint()
            yield chunk
        if error is not None:
            raise error


async def run(agent: Agent, message: str = "hi") -> tuple[Any, list[Any], list[Message]]:
    async with open_session(agent) as session:
        handle = await session.send(message)
        try:
            result: Any = await handle.result
        except Exception as exc:
            result = exc
        events = await collect(handle)
        timeline = list(session.timeline)
        assert handle.status in ("completed", "error", "failed", "aborted")
    return result, events, timeline


# -- retries ---------------------------------------------------------------------------------


async def test_mid_stream_overload_then_a_good_answer(autojump_clock: trio.abc.Clock) -> None:
    model = FlakyModel([([TextChunk("Partial ans")], OVERLOADED), answer("Hello!")])
    start = trio.current_time()
    result, events, timeline = await run(Agent(model))

    assert result.response == "Hello!"
    assert result.stop_reason == "end_turn"
    [retry] = [e for e in events if isinstance(e, TickRetry)]
    assert (retry.attempt, retry.code, retry.error) == (1, "overloaded", "Overloaded")
    assert retry.tick == 1
    # The default policy: 1 s, jittered into its upper half.
    assert 0.5 <= retry.delay <= 1.0
    assert trio.current_time() - start == pytest.approx(retry.delay)
    # The partial text was streamed, then discarded: nothing of it was committed.
    assert [(m.role, m.text) for m in timeline] == [("user", "hi"), ("assistant", "Hello!")]
    [message_event] = [e for e in events if e.type == "message"]
    assert message_event.message.text == "Hello!"
    kinds = types_of(events)
    assert kinds.count("tick_start") == kinds.count("tick_end") == 1
    assert kinds.count("model_request") == 2
    # A retried error is reported as the tick_retry, not as an error event.
    assert "error" not in kinds
    first_delta = kinds.index("content_delta")
    assert first_delta < kinds.index("tick_retry") < kinds.index("message")
    assert result.usage.ticks == 1
    assert len(model.requests) == 2
    assert model.requests[0] == model.requests[1]
    assert_well_formed(events)


async def test_retry_after_wins_over_a_shorter_backoff(autojump_clock: trio.abc.Clock) -> None:
    slow_down = ModelError("slow down", code="rate_limit", retryable=True, retry_after=7.5)
    model = FlakyModel([([], slow_down), answer("ok")])
    start = trio.current_time()
    result, events, _ = await run(Agent(model, retry=RetryPolicy(jitter=False)))
    assert result.response == "ok"
    [retry] = [e for e in events if isinstance(e, TickRetry)]
    assert retry.delay == 7.5
    assert trio.current_time() - start == pytest.approx(7.5)


async def test_backoff_doubles_and_the_execution_ends_in_error_after_max_attempts(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = FlakyModel([([TextChunk("x")], OVERLOADED)] * 3)
    policy = RetryPolicy(max_attempts=3, initial_delay=2.0, jitter=False)
    result, events, timeline = await run(Agent(model, retry=policy))
    assert isinstance(result, ModelError)
    assert result.code == "overloaded"
    retries = [e for e in events if isinstance(e, TickRetry)]
    assert [(r.attempt, r.delay) for r in retries] == [(1, 2.0), (2, 4.0)]
    [error] = [e for e in events if e.type == "error"]
    assert error.code == "overloaded"
    assert events[-1].status == "error"
    assert [m.role for m in timeline] == ["user"]
    assert len(model.requests) == 3
    assert_well_formed(events)


@pytest.mark.parametrize(
    "error",
    [
        ModelError("bad request", code="bad_request"),
        ModelError("quota", code="insufficient_quota"),
        ModelError("key", code="authentication"),
    ],
)
async def test_errors_that_are_not_retryable_are_never_retried(
    autojump_clock: trio.abc.Clock, error: ModelError
) -> None:
    model = FlakyModel([([], error), answer("never")])
    result, events, _ = await run(Agent(model))
    assert result is error
    assert "tick_retry" not in types_of(events)
    assert len(model.requests) == 1


@pytest.mark.parametrize("policy", [None, RetryPolicy(max_attempts=1)])
async def test_retries_turned_off(
    autojump_clock: trio.abc.Clock, policy: RetryPolicy | None
) -> None:
    model = FlakyModel([([], OVERLOADED), answer("never")])
    result, events, _ = await run(Agent(model, retry=policy))
    assert result.code == "overloaded"
    assert "tick_retry" not in types_of(events)
    assert len(model.requests) == 1


async def test_abort_during_the_retry_sleep(autojump_clock: trio.abc.Clock) -> None:
    model = FlakyModel([([], OVERLOADED), answer("never")])
    agent = Agent(model, retry=RetryPolicy(initial_delay=30.0, jitter=False))
    async with open_session(agent) as session:
        handle = await session.send("hi")
        async with handle.events.subscribe(types={"tick_retry"}) as retries:
            await retries.receive()
        start = trio.current_time()
        handle.abort("user pressed stop")
        with pytest.raises(ExecutionAborted):
            await handle.result
        # The sleep was cut short at once, and the tick never ran again.
        assert trio.current_time() == start
        events = await collect(handle)
    assert handle.status == "aborted"
    assert len(model.requests) == 1
    assert_well_formed(events)


async def test_a_scripted_exception_is_retried_too(autojump_clock: trio.abc.Clock) -> None:
    model = ScriptedModel([OVERLOADED, "fine"])
    result, events, _ = await run(Agent(model))
    assert result.response == "fine"
    assert types_of(events).count("tick_retry") == 1


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts must be an int >= 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="initial_delay must be a number of seconds"):
        RetryPolicy(initial_delay=-1)
    with pytest.raises(TypeError, match="jitter must be a bool"):
        RetryPolicy(jitter="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        Agent(ScriptedModel([]), retry=3)  # type: ignore[arg-type]


def test_jitter_stays_in_the_upper_half_of_the_backoff() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=30.0)
    assert policy.delay(1, rand=lambda: 0.0) == 0.5
    assert policy.delay(1, rand=lambda: 1.0) == 1.0
    assert policy.delay(10, rand=lambda: 1.0) == 30.0


# -- typed output -----------------------------------------------------------------------------


@attrs.frozen
class City:
    name: str
    population: int
    size: Literal["big", "small"] = "big"


PARIS = '{"name": "Paris", "population": 2100000}'


async def test_output_type_by_instruction() -> None:
    model = ScriptedModel([PARIS])
    result, events, _ = await run(Agent(model, system="Be brief.", output_type=City))
    assert result.output == City("Paris", 2_100_000)
    assert result.response == PARIS
    [request] = model.requests
    assert request.system is not None
    assert request.system.startswith("Be brief.\n\n")
    assert '"population": {"type": "integer"}' in request.system
    assert events[-1].status == "completed"


async def test_no_output_type_no_output() -> None:
    result, _, _ = await run(Agent(ScriptedModel(["hello"])))
    assert result.output is None


async def test_one_corrective_tick_on_an_invalid_answer() -> None:
    model = ScriptedModel(['{"name": "Paris", "population": "many"}', f"```json\n{PARIS}\n```"])
    result, _, timeline = await run(Agent(model, output_type=City))
    assert result.output == City("Paris", 2_100_000)
    assert [m.role for m in timeline] == ["user", "assistant", "user", "assistant"]
    correction = timeline[2].text
    assert "population: expected integer, got string" in correction
    assert result.usage.ticks == 2
    # The model saw its answer and the correction.
    assert model.requests[1].messages[-1] == timeline[2]


async def test_invalid_twice_fails_with_invalid_output() -> None:
    model = ScriptedModel(["Paris, I think.", '{"name": "Paris"}'])
    result, events, timeline = await run(Agent(model, output_type=City))
    assert isinstance(result, InvalidOutput)
    assert result.errors == ("missing required argument 'population'",)
    assert events[-1].status == "failed"
    assert "InvalidOutput" in (events[-1].error or "")
    assert len(model.requests) == 2
    # Both answers and the correction stay in the conversation.
    assert [m.role for m in timeline] == ["user", "assistant", "user", "assistant"]
    assert_well_formed(events)


async def test_send_output_type_overrides_the_agent() -> None:
    model = ScriptedModel(["[1, 2, 3]", PARIS])
    async with open_session(Agent(model, output_type=City)) as session:
        first = await (await session.send("numbers", output_type=list[int])).result
        second = await (await session.send("a city")).result
    assert first.output == [1, 2, 3]
    assert second.output == City("Paris", 2_100_000)


def test_an_output_type_without_a_schema_is_refused() -> None:
    with pytest.raises(TypeError, match="output_type"):
        Agent(ScriptedModel([]), output_type=Callable[[int], int])


class NativeModel(FlakyModel):
    """A model with native JSON output, as the provider adapters have it."""

    def output_settings(self, name: str, schema: Any) -> dict[str, Any]:
        return {"response_format": {"name": name, "schema": schema}}


async def test_native_output_goes_in_the_settings_not_the_prompt() -> None:
    model = NativeModel([answer(PARIS)])
    result, _, _ = await run(Agent(model, system="Be brief.", output_type=City,
                                   settings={"temperature": 0}))  # type: ignore[arg-type]
    assert result.output == City("Paris", 2_100_000)
    [request] = model.requests
    assert request.system == "Be brief."
    assert request.settings["temperature"] == 0
    assert request.settings["response_format"]["name"] == "City"
    assert request.settings["response_format"]["schema"]["required"] == ["name", "population"]


