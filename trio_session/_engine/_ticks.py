"""The tick loop: build the request, stream the model, run the tools, commit, decide."""

from __future__ import annotations

from types import AsyncGeneratorType
from typing import TYPE_CHECKING, Any, Final

import trio

from .._agent import TickContext, TickResult
from .._buffer import emitter
from .._errors import ModelError
from .._events import ModelRequestEvent, TickEnd, TickRetry, TickStart
from .._messages import Message
from .._result import SendResult
from ..models._base import ModelRequest, built_request
from ._assembler import Assembler
from ._hooks import call_hook
from ._output import ask_for_output, check_output
from ._resume import resume_tick
from ._spawn import reserve_seq, reserves_seq
from ._tick import Tick
from ._tool_calls import run_tools
from ._unwrap import bounded

if TYPE_CHECKING:
    from .._retry import RetryPolicy
    from ._execution import Execution

__all__ = ["CHECKPOINT_EVERY", "run_ticks"]

_tick_start = emitter(TickStart)
_tick_end = emitter(TickEnd)
_model_request = emitter(ModelRequestEvent)

CHECKPOINT_EVERY: Final = 64
"""The engine yields to the scheduler at least once per this many model chunks."""


class _Pace:
    """The model chunks and ticks an execution went through since its last checkpoint.

    Counted across ticks, not per model call: the offline models with
    ``delay=0`` do not visit the scheduler for a short reply, and a tool need not
    either, so the engine's own checkpoint every `CHECKPOINT_EVERY` is what keeps
    a zero-latency execution from holding the scheduler (and lets ``abort()``
    from another task run). A tick counts as one, so a model streaming nothing
    is paced too.
    """

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = 0


async def run_ticks(execution: Execution) -> SendResult:
    """Commit the execution's input, then run ticks until one decides to stop."""
    host = execution.host
    agent = execution.agent
    publisher = execution.publisher
    transcript = execution.transcript
    if execution.resumed is not None:
        # The tick a restart left waiting for confirmation comes first (SPEC §7).
        await resume_tick(execution, execution.resumed)
    queued = host.take_queued()
    try:
        await _message_hooks(execution, [*queued, *transcript.input])
    except trio.Cancelled:
        # Aborted while a hook ran: the input is committed all the same (SPEC §6),
        # as it is when an abort lands anywhere else; the hooks left are dropped.
        host.drop_message_hooks([*queued, *transcript.input])
        _commit_input(execution, queued)
        raise
    _commit_input(execution, queued)
    if transcript.pending:
        await _deliver_pending(execution)
    if host.persistent and transcript.new_messages:
        await host.save()

    stop_reason = "end_turn"
    spec = agent.output
    output: Any = None
    corrected = False
    # TickContext and TickResult are built only for the hooks that read them.
    needs_context = agent.on_tick_start is not None or agent.build is not None
    needs_result = agent.should_continue is not None or agent.on_tick_end is not None
    # What TickContext.default_request() sends; the agent's tools do not change.
    specs = tuple(t.spec() for t in agent.tools if t.visible_to_model)
    # Whether a session of this execution's chain has a store to reserve seq in.
    reserves = reserves_seq(execution)
    # A session's store is fixed when it opens.
    persistent = host.persistent
    pace = _Pace()
    while True:
        # An execution aborted before its tick does not call the model.
        pace.since += 1
        if pace.since >= CHECKPOINT_EVERY:
            pace.since = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        execution.current_tick += 1
        tick = execution.current_tick
        publisher.tick = tick
        _tick_start(publisher)
        state = Tick(tick)
        transcript.current = state
        if needs_context:
            ctx = TickContext(
                props=execution.props,
                timeline=host.timeline.view(),
                tick=tick,
                state=host.state,
                tools=agent.tools,
                session_id=host.id,
                execution_id=execution.id,
                agent=agent,
            )
            if agent.on_tick_start is not None:
                await call_hook(agent.on_tick_start, ctx)
            if reserves:
                await reserve_seq(execution)
            request = await _build(execution, ctx)
        else:
            if reserves:
                await reserve_seq(execution)
            request = built_request(agent.system, host.timeline.view(), specs, tick, agent.settings)
        if spec is not None:
            request = ask_for_output(spec, agent.model, request)
        await _call_model(execution, request, state, pace)
        assert state.message is not None
        if state.calls:
            await run_tools(execution, state)
        transcript.commit_tick(state)

        default = bool(state.calls) or bool(transcript.pending)
        result: TickResult | None = None
        if needs_result:
            result = TickResult(
                tick=tick,
                message=state.message,
                tool_calls=state.calls,
                tool_results=tuple(r for r in state.results if r is not None),
                usage=state.usage,
                stop_reason=state.stop_reason,
                should_continue=default,
            )
        decided = None
        # result is built whenever either hook is set (needs_result).
        if agent.should_continue is not None and result is not None:
            decided = await call_hook(agent.should_continue, result)
        go_on = default if decided is None else bool(decided)
        stop_reason = state.stop_reason
        if go_on and tick >= execution.max_ticks:
            go_on, stop_reason = False, "max_ticks"
        if not go_on and spec is not None:
            # One corrective tick for an invalid answer, even past max_ticks.
            output, go_on = check_output(spec, state, transcript, corrected)
            corrected = corrected or go_on
        if go_on:
            if transcript.pending:
                await _deliver_pending(execution)
            if persistent:
                await host.save()
        else:
            # Past the last boundary: later messages wait on the session,
            # and the end-of-execution save covers this tick.
            transcript.accepting = False
            transcript.return_pending()
        if agent.on_tick_end is not None and result is not None:
            await call_hook(agent.on_tick_end, result)
        _tick_end(
            publisher, usage=state.usage, stop_reason=state.stop_reason, should_continue=go_on
        )
        if not go_on:
            break
    return transcript.result(stop_reason, execution.id, output)


def _commit_input(execution: Execution, queued: list[Message]) -> None:
    """Commit the messages the session queued, then the execution's own input."""
    transcript = execution.transcript
    transcript.deliver(queued)
    for message in transcript.input:
        transcript.commit(message)
    transcript.input.clear()


async def _message_hooks(execution: Execution, messages: list[Message]) -> None:
    """Await the messages' async ``on_message`` hooks before they are delivered.

    If one fails, none of them is delivered: they go back to the session's
    queue (never lost) and the error fails the execution. Cancelled (the
    execution aborted), the messages are the caller's: the input is committed,
    a tick boundary's go back to the session's queue (this execution would
    not answer them).
    """
    host = execution.host
    for message in messages:
        try:
            await host.message_hook(message)
        except trio.Cancelled:
            raise
        except BaseException:
            execution.transcript.input.clear()
            host.enqueue(messages)
            raise


async def _deliver_pending(execution: Execution) -> None:
    transcript = execution.transcript
    pending = transcript.take_pending()
    try:
        await _message_hooks(execution, pending)
    except trio.Cancelled:
        # Not delivered: they wait on the session for its next execution.
        execution.host.enqueue(pending)
        raise
    transcript.deliver(pending)


async def _build(execution: Execution, ctx: TickContext) -> ModelRequest:
    build = execution.agent.build
    if build is None:
        return ctx.default_request()
    request = await call_hook(build, ctx)
    if not isinstance(request, ModelRequest):
        raise TypeError(f"Agent.build must return a ModelRequest, got {type(request).__name__}")
    return request


async def _call_model(
    execution: Execution, request: ModelRequest, state: Tick, pace: _Pace
) -> None:
    """Stream the tick's model call, running it again as the agent's `RetryPolicy` says."""
    policy = execution.agent.retry
    publisher = execution.publisher
    attempt = 1
    while True:
        _model_request(publisher, request=request)
        try:
            await _stream(execution, request, state, pace, policy, attempt)
            return
        except ModelError as exc:
            if policy is None or not policy.retries(exc, attempt):
                raise
            # The partial output is dropped: _stream fills `state` only on success.
            delay = policy.delay(attempt, exc.retry_after)
            publisher.emit(
                TickRetry, attempt=attempt, delay=delay, error=exc.message, code=exc.code
            )
        # Cancellable: abort() during the wait ends the execution at once.
        await trio.sleep(delay)
        attempt += 1


async def _stream(
    execution: Execution,
    request: ModelRequest,
    state: Tick,
    pace: _Pace,
    policy: RetryPolicy | None,
    attempt: int,
) -> None:
    model = execution.agent.model
    assembler = Assembler(execution.publisher, getattr(model, "name", None))
    with execution.trace.chat(model) as span:
        stream = model.stream(request)
        exhausted = False
        try:
            since = pace.since
            async for chunk in stream:
                assembler.feed(chunk)
                since += 1
                if since >= CHECKPOINT_EVERY:
                    # A stream that never awaits would otherwise never see abort()
                    # (nor let the task that calls it run).
                    since = 0
                    await trio.lowlevel.checkpoint()
                    await reserve_seq(execution)
            exhausted = True
            pace.since = since
        except ModelError as exc:
            # A retried error is reported by its tick_retry event instead.
            if policy is None or not policy.retries(exc, attempt):
                assembler.fail(exc)
            raise
        finally:
            # An async generator that ran to its end has nothing left to close.
            if not (exhausted and isinstance(stream, AsyncGeneratorType)):
                with trio.CancelScope(shield=True), bounded("closing the model stream"):
                    await _close_stream(stream)
        assembled = assembler.finish()
        span.finish(assembled.usage, assembled.stop_reason)
    state.message = assembled.message
    state.calls = assembled.calls
    state.results = [None] * len(assembled.calls)
    state.usage = assembled.usage
    state.stop_reason = assembled.stop_reason
    state.rejected = assembled.rejected  # the assembler's own dict, handed over


async def _close_stream(stream: Any) -> None:
    """Close the model's stream, if it can be closed (the caller shields and bounds it)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    await aclose()
