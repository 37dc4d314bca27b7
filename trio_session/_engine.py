"""The tick loop of one execution.

An `Execution` is one ``send``/``render``/``spawn``: a task in its session's
nursery (or, for a child spawned by a tool, in the parent execution's nursery)
with its own nursery and cancel scope (the handle's). Each tick compiles the
model input, streams the model's reply into events, runs the requested tools
concurrently, commits the tick atomically, and decides whether to go on.

The engine knows its session only through `ExecutionHost`; it never imports
the session module.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs
import trio

from ._agent import Agent, TickContext, TickResult
from ._buffer import EventBuffer, SeqCounter
from ._errors import InvalidToolArguments, ModelError
from ._events import (
    ContentDelta,
    ContentEnd,
    ContentStart,
    CustomEvent,
    EntryCommitted,
    ErrorEvent,
    ExecutionEnd,
    ExecutionStart,
    MessageDelivered,
    MessageEnd,
    MessageEvent,
    MessageQueued,
    MessageStart,
    ModelRequestEvent,
    ReasoningDelta,
    ResultEvent,
    SpawnEnd,
    SpawnStart,
    StreamEvent,
    TickEnd,
    TickStart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolConfirmationRequired,
    ToolConfirmationResult,
    ToolResultEvent,
    ToolResultStart,
)
from ._handle import SessionExecutionHandle, Status
from ._messages import (
    ContentBlock,
    Message,
    ReasoningBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ._result import SendResult
from ._tools import Confirmations, Decision, Tool, ToolContext
from ._tracing import NO_TRACE, start_execution
from ._usage import Usage
from .models._base import (
    INVALID_JSON_KEY,
    ErrorChunk,
    ModelRequest,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
)

__all__ = ["Execution", "ExecutionHost", "current_tool_call", "reraise"]

logger = logging.getLogger("trio_session")

CLEANUP_TIMEOUT: Final = 5.0
"""Seconds that shielded cleanup (closing a model stream, the final save) may take."""


class ExecutionHost(Protocol):
    """What an execution needs from the session it runs in."""

    id: str
    seq: SeqCounter
    timeline: list[Message]
    state: dict[str, Any]
    usage: Usage
    max_buffered_events: int | None

    @property
    def owner(self) -> Any:
        """The session object, as hooks and tools see it."""
        ...

    def take_queued(self) -> list[Message]:
        """Remove and return the messages waiting on the session."""
        ...

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Keep messages on the session for its next execution (hooks already ran)."""
        ...

    def notify_message(self, message: Message, execution: Execution | None) -> None:
        """Run the agent's ``on_message`` hook for a message entering the session."""
        ...

    def remembered(self, tool_name: str) -> Decision | None:
        """An ``always`` answer given earlier for this tool."""
        ...

    def remember(self, tool_name: str, decision: Decision) -> None:
        """Keep an ``always`` answer for the rest of the session."""
        ...

    @property
    def persistent(self) -> bool:
        """Whether ``save`` does anything (a store is configured)."""
        ...

    async def save(self) -> None:
        """Persist the session (after a tick's commit, at the end of an execution)."""
        ...

    def execution_finished(self, execution: Execution) -> None:
        """Called once, after ``execution_end`` was published."""
        ...


@attrs.frozen
class _ToolCallContext:
    execution: Execution
    tool_use_id: str


current_tool_call: contextvars.ContextVar[_ToolCallContext | None] = contextvars.ContextVar(
    "trio_session_tool_call", default=None
)
"""Set while a tool runs, so ``session.spawn`` from inside it runs the child there."""


def reraise(exc: BaseException) -> None:
    """Raise ``exc`` keeping its own ``__context__`` (not the group it came out of)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Pick the exception a caller should see from a nursery's group.

    KeyboardInterrupt / SystemExit first, then the first real error, and a
    `trio.Cancelled` only when nothing else happened.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)

    def rank(exc: BaseException) -> int:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return 0
        if isinstance(exc, Exception):
            return 1
        return 3 if isinstance(exc, trio.Cancelled) else 2

    return min(leaves, key=rank) if leaves else group


async def call_hook(hook: Callable[..., Any] | None, *args: Any) -> Any:
    """Call a sync or async hook."""
    if hook is None:
        return None
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _error_result(call: ToolUseBlock, text: str) -> ToolResultBlock:
    return ToolResultBlock(call.tool_use_id, call.name, (TextBlock(text),), is_error=True)


@attrs.define
class _Tick:
    """What one tick produced so far; committed all at once."""

    number: int
    message: Message | None = None
    calls: tuple[ToolUseBlock, ...] = ()
    results: list[ToolResultBlock | None] = attrs.Factory(list)
    usage: Usage = attrs.field(factory=Usage)
    stop_reason: str = "end_turn"
    started: set[int] = attrs.Factory(set)
    committed: bool = False


class Execution:
    """One execution of a session: the handle's engine side.

    Implements `ExecutionControl` for its `SessionExecutionHandle`.
    """

    def __init__(
        self,
        host: ExecutionHost,
        agent: Agent,
        *,
        messages: Sequence[Message] = (),
        props: Mapping[str, Any] | None = None,
        max_ticks: int | None = None,
        parent: Execution | None = None,
    ) -> None:
        self.host = host
        self.agent = agent
        self.id = uuid.uuid4().hex
        self.parent = parent
        self.props: Mapping[str, Any] = dict(props or {})
        self.max_ticks = max_ticks if max_ticks is not None else agent.max_ticks
        self.buffer = EventBuffer(
            session_id=host.id,
            execution_id=self.id,
            max_buffered_events=host.max_buffered_events,
            seq=host.seq,
            reserved=True,
        )
        self.handle = SessionExecutionHandle(
            self.buffer, session_id=host.id, execution_id=self.id, control=self
        )
        # A child shares its root's confirmations, so the root's handle answers them.
        self.confirmations: Confirmations = (
            parent.confirmations if parent is not None else Confirmations()
        )
        self._input = list(messages)
        self._pending: list[Message] = []
        self._accepting = True
        self._tick = 0
        self._nursery: trio.Nursery | None = None
        self._early_hooks: list[Awaitable[Any]] = []
        self._new_messages: list[Message] = []
        self._usage = Usage()
        self._current: _Tick | None = None
        self._last_message: Message | None = None
        self._children: set[Execution] = set()
        self._started = False
        self.trace = NO_TRACE

    def __repr__(self) -> str:
        return f"<Execution {self.id[:8]} {self.handle.status} tick={self._tick}>"

    # -- ExecutionControl ---------------------------------------------------

    @property
    def current_tick(self) -> int:
        """The tick now running; 0 before the first."""
        return self._tick

    @property
    def finished(self) -> bool:
        """Whether ``execution_end`` was published."""
        return self.handle._finished.is_set()

    @property
    def running(self) -> bool:
        """Whether the execution's nursery is open to children."""
        return self._nursery is not None and not self.buffer.closed

    @property
    def nursery(self) -> trio.Nursery:
        """The execution's own nursery (tools' children run here)."""
        if self._nursery is None:
            raise RuntimeError("the execution has not started")
        return self._nursery

    @property
    def usage(self) -> Usage:
        """Tokens and ticks of this execution so far."""
        return self._usage

    @property
    def accepting(self) -> bool:
        """Whether a queued message will still be answered by this execution."""
        return self._accepting and not self.handle.done

    def queue_message(self, message: Message) -> None:
        """Queue into this execution, or onto the session once it is past its last tick."""
        self.host.notify_message(message, self if self.accepting else None)
        self.accept(message)

    def accept(self, message: Message) -> None:
        """Take a message whose ``on_message`` hook already ran."""
        if self.accepting:
            self._pending.append(message)
            self.buffer._emit(MessageQueued, message=message)
        else:
            self.host.enqueue([message])

    def submit_tool_result(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None:
        """Answer a pending confirmation of this execution or of its children."""
        self.confirmations.submit(
            tool_use_id,
            approved=approved,
            modified_arguments=modified_arguments,
            reason=reason,
            always=always,
        )

    def update_props(self, props: Mapping[str, Any]) -> None:
        """New props, seen from the next tick on (``render()`` while running)."""
        self.props = dict(props)

    def run_hook_soon(self, awaitable: Awaitable[Any]) -> None:
        """Await an async hook inside this execution; its failure fails the execution."""
        if self._nursery is None:
            self._early_hooks.append(awaitable)
        else:
            self._nursery.start_soon(_await, awaitable)

    # -- spawn --------------------------------------------------------------

    def adopt(self, child: Execution, origin_tool_use_id: str | None) -> None:
        """Run ``child`` in this execution's nursery, forwarding its events here."""
        if self._nursery is None or self.buffer.closed:
            raise RuntimeError("the parent execution is not running")
        spawn_id = uuid.uuid4().hex
        parent_buffer = self.buffer
        seq = self.host.seq
        self.buffer._emit(
            SpawnStart,
            spawn_id=spawn_id,
            child_session_id=child.host.id,
            child_execution_id=child.id,
            origin_tool_use_id=origin_tool_use_id,
        )

        def forward(event: StreamEvent) -> None:
            if parent_buffer.closed:
                return
            parent_buffer._publish(
                attrs.evolve(event, seq=seq.next(), spawn_path=(spawn_id, *event.spawn_path))
            )
            if isinstance(event, ExecutionEnd) and not event.spawn_path:
                result = child.handle._value
                parent_buffer._emit(
                    SpawnEnd,
                    spawn_id=spawn_id,
                    child_session_id=child.host.id,
                    status=event.status,
                    response=result.response if isinstance(result, SendResult) else None,
                    usage=event.usage,
                )

        child.buffer.on(forward)
        child.start()
        self._children.add(child)
        self._nursery.start_soon(self._run_child, child)

    async def _run_child(self, child: Execution) -> None:
        try:
            await child.run()
        finally:
            self._children.discard(child)

    # -- the run ------------------------------------------------------------

    async def run(self) -> None:
        """Run the execution to its end.

        Every outcome is recorded on the handle; only `trio.Cancelled` from an
        enclosing scope (and KeyboardInterrupt / SystemExit) propagate, after
        ``execution_end`` was published.
        """
        if not self._started:
            self.start()
        self.handle._set_running()
        with self.trace:
            try:
                status, value, error, reason = await self._run_guarded()
            except trio.Cancelled:
                await self._finish("cancelled", None, None, self._outside_reason())
                raise
            except BaseException as exc:
                await self._finish("failed", None, exc, None)
                raise
            await self._finish(status, value, error, reason)

    def start(self) -> None:
        """Publish ``execution_start``; called when the execution is scheduled.

        Publishing it before the task runs means that anything queued in
        between (``message_queued``) follows it in the stream.
        """
        self._started = True
        # Started here, in the caller's context: a child spawned by a tool is
        # a child of that tool's span, and the handle has its trace id at once.
        self.trace = start_execution(
            agent=self.agent.name,
            model=self.agent.model,
            session_id=self.host.id,
            execution_id=self.id,
        )
        if self.trace.trace_id is not None:
            self.handle.trace_id = self.trace.trace_id
        self.buffer._emit(
            ExecutionStart, parent_execution_id=self.parent.id if self.parent else None
        )

    def _outside_reason(self) -> str:
        return "parent execution ended" if self.parent is not None else "cancelled from outside"

    async def _run_guarded(
        self,
    ) -> tuple[Status, SendResult | None, BaseException | None, str | None]:
        handle = self.handle
        try:
            with handle._scope:
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        for awaitable in self._early_hooks:
                            nursery.start_soon(_await, awaitable)
                        self._early_hooks.clear()
                        value = await self._loop()
                        # Children and pending hook tasks end with their execution.
                        self._end_children("parent execution ended")
                        nursery.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    reraise(unwrap(group))
                await call_hook(self.agent.on_complete, value)
                return "completed", value, None, None
            # Only reached when the handle's scope absorbed a cancellation:
            # abort() or _cancel() already set the status; otherwise a timeout.
            return "aborted", None, None, "timeout" if handle._timed_out() else None
        except ModelError as exc:
            return "error", None, exc, None
        except Exception as exc:
            return "failed", None, exc, None

    async def _finish(
        self,
        status: Status,
        value: SendResult | None,
        error: BaseException | None,
        reason: str | None,
    ) -> None:
        """Settle the handle and publish the last events, on every path."""
        handle = self.handle
        self._accepting = False
        final = handle._settle(status, value, error, reason)
        self._salvage_tick(final)
        self._return_pending()
        if final in ("failed", "error") and self.agent.on_error is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    await call_hook(self.agent.on_error, handle._error)
                except Exception:
                    logger.exception("Agent.on_error raised while handling an error")
        buf = self.buffer
        if final == "completed":
            buf._emit(ResultEvent, result=handle._value)
        failure = handle._error if final in ("failed", "error") else None
        self.trace.finish(
            final,
            self._usage,
            stop_reason=handle._value.stop_reason if handle._value is not None else None,
            error=failure,
            reason=handle.reason,
        )
        buf._emit(
            ExecutionEnd,
            status=final,
            reason=handle.reason,
            error=f"{type(failure).__name__}: {failure}" if failure is not None else None,
            usage=self._usage,
            new_messages=tuple(self._new_messages),
        )
        # Saved after the last event, so a restored session numbers on from it;
        # the session stays "running" until the save is done.
        if self.host.persistent:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    await self.host.save()
                except Exception:
                    logger.exception(
                        "saving session %r at the end of an execution failed", self.host.id
                    )
        handle._finish()
        self.host.execution_finished(self)

    def _salvage_tick(self, status: Status) -> None:
        """Commit a tick cut short after its model message was complete.

        The model's message and the tools that finished are kept; calls that
        did not finish get an error result, so no tool_use is left unanswered.
        """
        state = self._current
        if state is None or state.committed or state.message is None:
            return
        for index, call in enumerate(state.calls):
            if state.results[index] is None:
                if index not in state.started:
                    self.buffer._emit(ToolResultStart, tool_use_id=call.tool_use_id, name=call.name)
                self._answer(
                    state,
                    index,
                    _error_result(
                        call,
                        f"The call to {call.name!r} did not complete: the execution was {status}.",
                    ),
                )
        self._commit_tick(state)

    # -- the tick loop ------------------------------------------------------

    async def _loop(self) -> SendResult:
        buf = self.buffer
        host = self.host
        self._deliver(host.take_queued())
        for message in self._input:
            self._commit(message)
        self._input.clear()
        self._deliver(self._take_pending())
        if host.persistent and self._new_messages:
            await host.save()

        stop_reason = "end_turn"
        while True:
            # An execution aborted before its tick does not call the model.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._tick += 1
            tick = self._tick
            buf.tick = tick
            buf._emit(TickStart)
            state = _Tick(tick)
            self._current = state
            ctx = TickContext(
                props=self.props,
                timeline=tuple(host.timeline),
                tick=tick,
                state=host.state,
                tools=self.agent.tools,
                session_id=host.id,
                execution_id=self.id,
                agent=self.agent,
            )
            await call_hook(self.agent.on_tick_start, ctx)
            request = await self._build(ctx)
            buf._emit(ModelRequestEvent, request=request)
            await self._stream(request, state)
            assert state.message is not None
            if state.calls:
                await self._run_tools(state)
            self._commit_tick(state)

            default = bool(state.calls) or bool(self._pending)
            result = TickResult(
                tick=tick,
                message=state.message,
                tool_calls=state.calls,
                tool_results=tuple(r for r in state.results if r is not None),
                usage=state.usage,
                stop_reason=state.stop_reason,
                should_continue=default,
            )
            decided = await call_hook(self.agent.should_continue, result)
            go_on = default if decided is None else bool(decided)
            stop_reason = state.stop_reason
            if go_on and tick >= self.max_ticks:
                go_on, stop_reason = False, "max_ticks"
            if go_on:
                self._deliver(self._take_pending())
                if host.persistent:
                    await host.save()
            else:
                # Past the last boundary: later messages wait on the session,
                # and the end-of-execution save covers this tick.
                self._accepting = False
                self._return_pending()
            await call_hook(self.agent.on_tick_end, result)
            buf._emit(
                TickEnd, usage=state.usage, stop_reason=state.stop_reason, should_continue=go_on
            )
            if not go_on:
                break
        last = self._last_message
        return SendResult(
            response=last.text if last is not None else "",
            message=last,
            new_messages=tuple(self._new_messages),
            usage=self._usage,
            stop_reason=stop_reason,
            session_id=host.id,
            execution_id=self.id,
        )

    async def _build(self, ctx: TickContext) -> ModelRequest:
        if self.agent.build is None:
            return ctx.default_request()
        request = await call_hook(self.agent.build, ctx)
        if not isinstance(request, ModelRequest):
            raise TypeError(f"Agent.build must return a ModelRequest, got {type(request).__name__}")
        return request

    def _commit(self, message: Message) -> None:
        timeline = self.host.timeline
        timeline.append(message)
        self._new_messages.append(message)
        self.buffer._emit(EntryCommitted, message=message, index=len(timeline) - 1)

    def _deliver(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.buffer._emit(MessageDelivered, message_id=message.id)
            self._commit(message)

    def _take_pending(self) -> list[Message]:
        pending, self._pending = self._pending, []
        return pending

    def _return_pending(self) -> None:
        pending = self._take_pending()
        if pending:
            self.host.enqueue(pending)

    def _commit_tick(self, state: _Tick) -> None:
        """Commit the assistant message and its tool results together."""
        assert state.message is not None
        if state.message.content:
            self._commit(state.message)
            self._last_message = state.message
        if state.calls:
            blocks = tuple(r for r in state.results if r is not None)
            self._commit(Message("tool", blocks))
        state.committed = True
        self._usage = self._usage + state.usage
        self.host.usage = self.host.usage + state.usage

    # -- the model stream ---------------------------------------------------

    async def _stream(self, request: ModelRequest, state: _Tick) -> None:
        with self.trace.chat(self.agent.model) as span:
            await self._stream_untraced(request, state)
            span.finish(state.usage, state.stop_reason)

    async def _stream_untraced(self, request: ModelRequest, state: _Tick) -> None:
        buf = self.buffer
        model = self.agent.model
        blocks: list[ContentBlock | None] = []
        open_kind: str | None = None
        open_index = -1
        parts: list[str] = []
        started: dict[str, int] = {}
        input_tokens = output_tokens = 0
        stop_reason: str | None = None

        def close_block() -> None:
            nonlocal open_kind
            if open_kind is not None:
                text = "".join(parts)
                blocks[open_index] = (
                    TextBlock(text) if open_kind == "text" else ReasoningBlock(text)
                )
                buf._emit(ContentEnd, block_index=open_index)
                open_kind = None

        def open_block(kind: str) -> None:
            nonlocal open_kind, open_index
            close_block()
            open_kind = kind
            open_index = len(blocks)
            blocks.append(None)
            parts.clear()
            buf._emit(ContentStart, block_index=open_index, block_type=kind)

        buf._emit(MessageStart, model=getattr(model, "name", None))
        stream = model.stream(request)
        try:
            async for chunk in stream:
                if type(chunk) is TextChunk:
                    if open_kind != "text":
                        open_block("text")
                    parts.append(chunk.text)
                    buf._emit(ContentDelta, block_index=open_index, delta=chunk.text)
                elif type(chunk) is ReasoningChunk:
                    if open_kind != "reasoning":
                        open_block("reasoning")
                    parts.append(chunk.text)
                    buf._emit(ReasoningDelta, block_index=open_index, delta=chunk.text)
                elif type(chunk) is ToolCallStartChunk:
                    close_block()
                    started[chunk.tool_use_id] = len(blocks)
                    buf._emit(
                        ToolCallStart,
                        tool_use_id=chunk.tool_use_id,
                        name=chunk.name,
                        block_index=len(blocks),
                    )
                    blocks.append(None)
                elif type(chunk) is ToolCallDeltaChunk:
                    buf._emit(
                        ToolCallDelta, tool_use_id=chunk.tool_use_id, delta=chunk.arguments_delta
                    )
                elif type(chunk) is ToolCallChunk:
                    close_block()
                    index = started.pop(chunk.tool_use_id, None)
                    if index is None:
                        index = len(blocks)
                        blocks.append(None)
                        buf._emit(
                            ToolCallStart,
                            tool_use_id=chunk.tool_use_id,
                            name=chunk.name,
                            block_index=index,
                        )
                    blocks[index] = ToolUseBlock(chunk.tool_use_id, chunk.name, chunk.input)
                    buf._emit(
                        ToolCall, tool_use_id=chunk.tool_use_id, name=chunk.name, input=chunk.input
                    )
                elif type(chunk) is UsageChunk:
                    input_tokens += chunk.input_tokens
                    output_tokens += chunk.output_tokens
                elif type(chunk) is StopChunk:
                    stop_reason = chunk.reason
                elif type(chunk) is ErrorChunk:
                    raise ModelError(chunk.message, code=chunk.code, retryable=chunk.retryable)
                else:
                    raise TypeError(f"model {model.name!r} streamed a non-chunk: {chunk!r}")
        except ModelError as exc:
            buf._emit(ErrorEvent, message=exc.message, code=exc.code, retryable=exc.retryable)
            raise
        finally:
            await _close_stream(stream)
        close_block()
        content = tuple(b for b in blocks if b is not None)
        calls = tuple(b for b in content if isinstance(b, ToolUseBlock))
        if stop_reason is None:
            stop_reason = "tool_use" if calls else "end_turn"
        usage = Usage(input_tokens, output_tokens, input_tokens + output_tokens, 1)
        buf._emit(MessageEnd, stop_reason=stop_reason, usage=usage)
        message = Message("assistant", content)
        buf._emit(MessageEvent, message=message, stop_reason=stop_reason, usage=usage)
        state.message = message
        state.calls = calls
        state.results = [None] * len(calls)
        state.usage = usage
        state.stop_reason = stop_reason

    # -- tools --------------------------------------------------------------

    async def _run_tools(self, state: _Tick) -> None:
        limiter = trio.CapacityLimiter(self.agent.max_tool_concurrency)
        if len(state.calls) == 1:
            await self._run_tool(state, 0, limiter)
            return
        async with trio.open_nursery() as nursery:
            for index in range(len(state.calls)):
                nursery.start_soon(self._run_tool, state, index, limiter)

    async def _run_tool(self, state: _Tick, index: int, limiter: trio.CapacityLimiter) -> None:
        call = state.calls[index]
        async with limiter:
            state.started.add(index)
            self.buffer._emit(ToolResultStart, tool_use_id=call.tool_use_id, name=call.name)
            with self.trace.tool(call.name, call.tool_use_id) as span:
                result = await self._tool_result(call, state.number)
                span.finish(result.is_error, _text(result))
            self._answer(state, index, result)

    def _answer(self, state: _Tick, index: int, result: ToolResultBlock) -> None:
        state.results[index] = result
        self.buffer._emit(
            ToolResultEvent,
            tool_use_id=result.tool_use_id,
            name=result.name,
            content=result.content,
            is_error=result.is_error,
        )

    async def _tool_result(self, call: ToolUseBlock, tick: int) -> ToolResultBlock:
        tool = self.agent.tool(call.name)
        if tool is None or not tool.visible_to_model:
            names = ", ".join(t.name for t in self.agent.tools if t.visible_to_model) or "none"
            return _error_result(call, f"Unknown tool {call.name!r}. Available tools: {names}.")
        arguments: Mapping[str, Any] = call.input
        if INVALID_JSON_KEY in arguments:
            return _error_result(
                call,
                f"The arguments for {call.name!r} were not valid JSON: "
                f"{arguments[INVALID_JSON_KEY]!s:.500}. Call the tool again with a JSON object.",
            )
        if tool.needs_confirmation(arguments):
            try:
                tool.validate(arguments)
            except InvalidToolArguments as exc:
                return _error_result(call, str(exc))
            decision = await self._confirm(tool, call)
            if not decision.approved:
                why = f": {decision.reason}" if decision.reason else ""
                return _error_result(call, f"The user denied the call to {call.name!r}{why}.")
            if decision.modified_arguments is not None:
                arguments = decision.modified_arguments
        context = ToolContext(
            session=self.host.owner,
            execution=self.handle,
            tool_use_id=call.tool_use_id,
            tick=tick,
            props=self.props,
            state=self.host.state,
            emit_fn=self._emit_custom,
            spawn_fn=self.host.owner.spawn,
        )
        token = current_tool_call.set(_ToolCallContext(self, call.tool_use_id))
        try:
            content = await tool.run(context, arguments)
        except InvalidToolArguments as exc:
            return _error_result(call, str(exc))
        except Exception as exc:
            logger.debug("tool %r raised", call.name, exc_info=True)
            return _error_result(call, f"Tool {call.name!r} failed: {type(exc).__name__}: {exc}")
        finally:
            current_tool_call.reset(token)
        return ToolResultBlock(call.tool_use_id, call.name, content)

    def _emit_custom(self, name: str, data: Any) -> None:
        self.buffer._emit(CustomEvent, name=name, data=data)

    async def _confirm(self, tool: Tool, call: ToolUseBlock) -> Decision:
        buf = self.buffer
        remembered = self.host.remembered(tool.name)
        if remembered is not None:
            buf._emit(
                ToolConfirmationResult,
                tool_use_id=call.tool_use_id,
                approved=remembered.approved,
                reason=remembered.reason or "remembered for this session",
                always=True,
            )
            return remembered
        # Registered before the event is published: an answer given synchronously
        # by a listener of that event finds it.
        pending = self.confirmations.register(call.tool_use_id, tool, call.input)
        try:
            event = buf._emit(
                ToolConfirmationRequired,
                tool_use_id=call.tool_use_id,
                name=tool.name,
                input=call.input,
                message=tool.confirmation_text(call.input),
            )
            if self.agent.on_tool_confirmation is not None:
                decision = await call_hook(self.agent.on_tool_confirmation, event)
                if decision is not None and call.tool_use_id in self.confirmations:
                    if not isinstance(decision, Decision):
                        raise TypeError(
                            "Agent.on_tool_confirmation must return a Decision or None, "
                            f"got {type(decision).__name__}"
                        )
                    pending.decide(decision)
            decision = await pending.wait(tool.confirmation_timeout)
        finally:
            if call.tool_use_id in self.confirmations:
                pending.decide(Decision(False, reason="execution ended"))
        buf._emit(
            ToolConfirmationResult,
            tool_use_id=call.tool_use_id,
            approved=decision.approved,
            reason=decision.reason,
            modified_arguments=decision.modified_arguments,
            always=decision.always,
        )
        if decision.always:
            self.host.remember(
                tool.name, Decision(decision.approved, reason=decision.reason, always=True)
            )
        return decision

    def _end_children(self, reason: str) -> None:
        for child in list(self._children):
            child.handle._cancel(reason)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


async def _close_stream(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
        await aclose()


def _text(result: ToolResultBlock) -> str:
    return "".join(b.text for b in result.content if isinstance(b, TextBlock))
