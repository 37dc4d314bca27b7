"""OpenTelemetry spans for executions, model calls and tool calls.

With ``opentelemetry-api`` installed (extra ``trio-session[otel]``), every
execution is a span ``invoke_agent {agent}``, every model call a child span
``chat {model}`` and every tool call a child span ``execute_tool {tool}``, with
the GenAI semantic-convention attributes. Without it, the engine gets
`NO_TRACE`, whose methods do nothing, and ``opentelemetry`` is never imported.

Spans are only made current inside ``with`` blocks that one task owns (the
engine's ``with`` statements), never across a ``yield`` of an async generator,
where OpenTelemetry cannot detach the context (opentelemetry-python#2606).
Trio copies the context into a child task when it is spawned, so tool tasks
started inside an execution's ``with`` block see its span, and a child spawned
by a tool sees that tool's span.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import trio

from ._errors import ModelError
from ._usage import Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["NO_TRACE", "ExecutionTrace", "start_execution"]

_UNLOADED: Any = object()
_api: ModuleType | None = _UNLOADED
_tracer: Any = None
# The tracer `_trace_api` got: a ProxyTracer, a no-op until a global provider is set.
_proxy_tracer: Any = None


def _trace_api() -> ModuleType | None:
    """``opentelemetry.trace``, imported on first use; None when not installed."""
    global _api, _tracer, _proxy_tracer
    if _api is _UNLOADED:
        try:
            _api = importlib.import_module("opentelemetry.trace")
        except ImportError:
            _api = None
        else:
            # A ProxyTracer when no provider is set yet: it follows the provider
            # set later, so caching it here is safe.
            _tracer = _proxy_tracer = _api.get_tracer("trio_session")
    return _api


def provider_name(model: object) -> str:
    """The ``gen_ai.provider.name`` of a model: its ``provider`` or its class.

    Example:
        >>> from trio_session import ScriptedModel
        >>> provider_name(ScriptedModel([]))
        'scripted'
    """
    provider = getattr(model, "provider", None)
    if isinstance(provider, str):
        return provider
    return type(model).__name__.removesuffix("Model").lower() or type(model).__name__


def _record_error(span: Span, error: BaseException, kind: str | None = None) -> None:
    api = _api
    assert api is not None
    span.record_exception(error)
    span.set_attribute("error.type", kind or type(error).__qualname__)
    span.set_status(api.Status(api.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _error_kind(error: BaseException) -> str:
    return error.code if isinstance(error, ModelError) else type(error).__qualname__


class _Traced:
    """A span made current in the ``with`` block of the task that enters it.

    Ends the span on exit. An exception leaving the block is recorded as the
    span's error, except `trio.Cancelled` (an abort or a closing session is
    not an error of the operation). Without a span, it does nothing.
    """

    __slots__ = ("_span", "_use")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._use: Any = None

    def __enter__(self) -> Self:
        if self._span is not None:
            api = _api
            assert api is not None
            self._use = api.use_span(
                self._span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            )
            self._use.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._span is None:
            return
        if error is not None and not isinstance(error, trio.Cancelled):
            _record_error(self._span, error, _error_kind(error))
        self._use.__exit__(kind, error, tb)


class ChatSpan(_Traced):
    """The span of one model call; `finish` records what the model answered."""

    __slots__ = ()

    def finish(self, usage: Usage, stop_reason: str) -> None:
        """Record the call's token counts and finish reason."""
        if self._span is not None:
            self._span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.response.finish_reasons": (stop_reason,),
                }
            )


class ToolSpan(_Traced):
    """The span of one tool call; `finish` records an error result."""

    __slots__ = ()

    def finish(self, is_error: bool, message: str) -> None:
        """Record the result: an ``is_error`` result sets the span's error status."""
        if self._span is not None and is_error:
            api = _api
            assert api is not None
            self._span.set_attribute("error.type", "tool_error")
            self._span.set_status(api.Status(api.StatusCode.ERROR, message[:500]))


class ExecutionTrace(_Traced):
    """The span of one execution, and the factory of its children's spans.

    Made by `start_execution` when the execution is scheduled, so the handle
    has its ``trace_id`` from the start; made current by the execution's task
    with ``with trace:``, which ends it.
    """

    __slots__ = ("_session_id", "trace_id")

    def __init__(self, span: Span | None, session_id: str) -> None:
        self.trace_id: str | None = None
        """The span's trace id (32 hex digits), or None without a valid one."""
        if span is not None:
            context = span.get_span_context()
            if context.is_valid:
                self.trace_id = format(context.trace_id, "032x")
            if not span.is_recording():
                # No provider, or sampled out: the children would not be
                # recorded either, so none are made (the cost of tracing off).
                span = None
        super().__init__(span)
        self._session_id = session_id

    def chat(self, model: object) -> ChatSpan:
        """A span for one call of ``model``, a child of the execution's span."""
        if self._span is None:
            return _NO_CHAT
        span = self._child(
            f"chat {getattr(model, 'name', '')}".rstrip(),
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_name(model),
                "gen_ai.request.model": str(getattr(model, "name", "")),
                "gen_ai.conversation.id": self._session_id,
            },
            client=True,
        )
        return ChatSpan(span)

    def tool(self, name: str, tool_use_id: str) -> ToolSpan:
        """A span for one tool call, a child of the execution's span."""
        if self._span is None:
            return _NO_TOOL
        span = self._child(
            f"execute_tool {name}",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": tool_use_id,
                "gen_ai.conversation.id": self._session_id,
            },
        )
        return ToolSpan(span)

    def finish(
        self,
        status: str,
        usage: Usage,
        *,
        stop_reason: str | None = None,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        """Record how the execution ended; ``failed`` and ``error`` set the error status."""
        span = self._span
        if span is None:
            return
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "trio_session.execution.status": status,
            }
        )
        if stop_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", (stop_reason,))
        if reason is not None:
            span.set_attribute("trio_session.execution.reason", reason)
        if error is not None and status in ("failed", "error"):
            _record_error(span, error, _error_kind(error))

    def _child(
        self, name: str, attributes: Mapping[str, Any], *, client: bool = False
    ) -> Span | None:
        if self._span is None:
            return None
        api = _api
        assert api is not None
        return _tracer.start_span(  # type: ignore[no-any-return]
            name,
            context=api.set_span_in_context(self._span),
            kind=api.SpanKind.CLIENT if client else api.SpanKind.INTERNAL,
            attributes=attributes,
        )


# Without a span they do nothing and keep no state: one of each serves every call.
_NO_CHAT = ChatSpan(None)
_NO_TOOL = ToolSpan(None)

NO_TRACE = ExecutionTrace(None, "")
"""What `start_execution` gives without OpenTelemetry: every method does nothing."""


def start_execution(
    *, agent: str, model: object, session_id: str, execution_id: str
) -> ExecutionTrace:
    """Start the span of an execution, a child of the caller's current span.

    Called where the execution is scheduled: for a child spawned by a tool,
    that is inside the tool's span, which becomes the parent.
    """
    api = _trace_api()
    if api is None:
        return NO_TRACE
    if (
        _tracer is _proxy_tracer
        and isinstance(api.get_tracer_provider(), api.ProxyTracerProvider)
        and not api.get_current_span().get_span_context().is_valid
    ):
        # No provider was set, so the tracer is a no-op; and no span is current, so
        # its span would carry no trace id either: nothing to build (once per
        # execution, the cost of tracing off).
        return NO_TRACE
    span = _tracer.start_span(
        f"invoke_agent {agent}",
        kind=api.SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.provider.name": provider_name(model),
            "gen_ai.request.model": str(getattr(model, "name", "")),
            "gen_ai.conversation.id": session_id,
            "trio_session.execution.id": execution_id,
        },
    )
    return ExecutionTrace(span, session_id)
