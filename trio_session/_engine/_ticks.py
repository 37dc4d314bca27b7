"""The tick loop: build the request, stream the model, run the tools, commit, decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._agent import TickContext, TickResult
from .._errors import ModelError
from .._events import ModelRequestEvent, TickEnd, TickStart
from .._result import SendResult
from ..models._base import ModelRequest
from ._assembler import Assembler
from ._hooks import call_hook
from ._tick import Tick
from ._tool_calls import run_tools
from ._unwrap import bounded

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["run_ticks"]


async def run_ticks(execution: Execution) -> SendResult:
    """Commit the execution's input, then run ticks until one decides to stop."""
    host = execution.host
    agent = execution.agent
    publisher = execution.publisher
    transcript = execution.transcript
    transcript.deliver(host.take_queued())
    for message in transcript.input:
        transcript.commit(message)
    transcript.input.clear()
    transcript.deliver(transcript.take_pending())
    if host.persistent and transcript.new_messages:
        await host.save()

    stop_reason = "end_turn"
    while True:
        # An execution aborted before its tick does not call the model.
        await trio.lowlevel.checkpoint_if_cancelled()
        execution.current_tick += 1
        tick = execution.current_tick
        execution.buffer.tick = tick
        publisher.emit(TickStart)
        state = Tick(tick)
        transcript.current = state
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
        await call_hook(agent.on_tick_start, ctx)
        request = await _build(execution, ctx)
        publisher.emit(ModelRequestEvent, request=request)
        await _stream(execution, request, state)
        assert state.message is not None
        if state.calls:
            await run_tools(execution, state)
        transcript.commit_tick(state)

        default = bool(state.calls) or bool(transcript.pending)
        result = TickResult(
            tick=tick,
            message=state.message,
            tool_calls=state.calls,
            tool_results=tuple(r for r in state.results if r is not None),
            usage=state.usage,
            stop_reason=state.stop_reason,
            should_continue=default,
        )
        decided = await call_hook(agent.should_continue, result)
        go_on = default if decided is None else bool(decided)
        stop_reason = state.stop_reason
        if go_on and tick >= execution.max_ticks:
            go_on, stop_reason = False, "max_ticks"
        if go_on:
            transcript.deliver(transcript.take_pending())
            if host.persistent:
                await host.save()
        else:
            # Past the last boundary: later messages wait on the session,
            # and the end-of-execution save covers this tick.
            transcript.accepting = False
            transcript.return_pending()
        await call_hook(agent.on_tick_end, result)
        publisher.emit(
            TickEnd, usage=state.usage, stop_reason=state.stop_reason, should_continue=go_on
        )
        if not go_on:
            break
    return transcript.result(stop_reason, execution.id)


async def _build(execution: Execution, ctx: TickContext) -> ModelRequest:
    build = execution.agent.build
    if build is None:
        return ctx.default_request()
    request = await call_hook(build, ctx)
    if not isinstance(request, ModelRequest):
        raise TypeError(f"Agent.build must return a ModelRequest, got {type(request).__name__}")
    return request


async def _stream(execution: Execution, request: ModelRequest, state: Tick) -> None:
    model = execution.agent.model
    assembler = Assembler(execution.publisher.emit, getattr(model, "name", None))
    stream = model.stream(request)
    try:
        async for chunk in stream:
            assembler.feed(chunk)
    except ModelError as exc:
        assembler.fail(exc)
        raise
    finally:
        await _close_stream(stream)
    assembled = assembler.finish()
    state.message = assembled.message
    state.calls = assembled.calls
    state.results = [None] * len(assembled.calls)
    state.usage = assembled.usage
    state.stop_reason = assembled.stop_reason


async def _close_stream(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True), bounded("closing the model stream"):
        await aclose()
