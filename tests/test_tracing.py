"""OpenTelemetry spans: the tree, the GenAI attributes, and nothing without the API."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from trio_session import (
    Agent,
    ModelError,
    Reply,
    ScriptedModel,
    SessionExecutionHandle,
    SpawnStart,
    StreamEvent,
    ToolContext,
    Usage,
    _tracing,
    open_session,
    tool,
)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of this test only, through a provider of its own (the global one is set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing._trace_api()
    monkeypatch.setattr(_tracing, "_tracer", provider.get_tracer("trio_session"))
    yield exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    finished = exporter.get_finished_spans()
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [span.name for span in finished]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def test_helpers_make_the_tree_and_attributes(spans: InMemorySpanExporter) -> None:
    model = ScriptedModel([])
    trace = _tracing.start_execution(
        agent="helper", model=model, session_id="s1", execution_id="e1"
    )
    assert trace.trace_id is not None and len(trace.trace_id) == 32
    with trace:
        with trace.chat(model) as chat:
            chat.finish(Usage(10, 4, 14, 1), "tool_use")
        with trace.tool("add", "call_1") as call:
            call.finish(False, "5")
        with trace.tool("fail", "call_2") as call:
            call.finish(True, "Tool 'fail' failed: boom")
        trace.finish("completed", Usage(10, 4, 14, 1), stop_reason="end_turn")

    named = by_name(spans)
    root = named["invoke_agent helper"]
    assert format(root.context.trace_id, "032x") == trace.trace_id
    assert root.parent is None
    assert dict(root.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "helper",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.conversation.id": "s1",
        "trio_session.execution.id": "e1",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.response.finish_reasons": ("end_turn",),
        "trio_session.execution.status": "completed",
    }
    assert root.status.status_code is StatusCode.UNSET
    chat_span = named["chat scripted"]
    assert parent_of(chat_span) == span_id(root)
    assert dict(chat_span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.conversation.id": "s1",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.response.finish_reasons": ("tool_use",),
    }
    ok, failed = named["execute_tool add"], named["execute_tool fail"]
    assert parent_of(ok) == parent_of(failed) == span_id(root)
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "add",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.conversation.id": "s1",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "Tool 'fail' failed: boom"


def test_errors_set_the_status_and_cancellation_does_not(spans: InMemorySpanExporter) -> None:
    model = ScriptedModel([])
    trace = _tracing.start_execution(agent="a", model=model, session_id="s", execution_id="e")
    with trace:
        with pytest.raises(ModelError), trace.chat(model):
            raise ModelError("slow down", code="rate_limit", retryable=True)
        trace.finish("error", Usage(), error=ModelError("slow down", code="rate_limit"))

    async def cancelled() -> None:
        aborted = _tracing.start_execution(agent="b", model=model, session_id="s", execution_id="f")
        with trio.move_on_after(0), aborted:
            with aborted.tool("slow", "call_9"):
                await trio.sleep(1)
            aborted.finish("aborted", Usage(), reason="enough")

    trio.run(cancelled)
    named = by_name(spans)
    chat = named["chat scripted"]
    assert chat.status.status_code is StatusCode.ERROR
    assert dict(chat.attributes or {})["error.type"] == "rate_limit"
    assert [event.name for event in chat.events] == ["exception"]
    root = named["invoke_agent a"]
    assert root.status.status_code is StatusCode.ERROR
    assert dict(root.attributes or {})["trio_session.execution.status"] == "error"
    slow = named["execute_tool slow"]
    assert slow.status.status_code is StatusCode.UNSET
    assert named["invoke_agent b"].status.status_code is StatusCode.UNSET


def test_a_span_started_inside_another_is_its_child(spans: InMemorySpanExporter) -> None:
    model = ScriptedModel([])
    parent = _tracing.start_execution(agent="p", model=model, session_id="s", execution_id="e")
    with parent, parent.tool("delegate", "call_1"):
        child = _tracing.start_execution(agent="c", model=model, session_id="t", execution_id="f")
    with child:
        pass
    named = by_name(spans)
    assert parent_of(named["invoke_agent c"]) == span_id(named["execute_tool delegate"])
    assert child.trace_id == parent.trace_id


BLOCK_OPENTELEMETRY = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, Refuse())
"""


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


SESSION = """
import trio
from trio_session import Agent, Reply, ScriptedModel, open_session, tool

@tool
def add(a: int, b: int) -> int:
    \"\"\"Add.\"\"\"
    return a + b

async def main():
    model = ScriptedModel([Reply("", tool_calls=[("add", {"a": 1, "b": 2})]), "3"])
    async with open_session(Agent(model, tools=[add])) as session:
        handle = await session.send("1+2?")
        result = await handle.result
    return handle.trace_id, result.response

trace_id, response = trio.run(main)
"""


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported() -> None:
    out = run_python(
        BLOCK_OPENTELEMETRY
        + SESSION
        + """
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
print(response, len(trace_id), loaded)
"""
    )
    assert out.split() == ["3", "32", "[]"]


def test_trace_id_is_the_opentelemetry_trace_id_with_a_global_provider() -> None:
    out = run_python(
        """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""
        + SESSION
        + """
root = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent agent"]
print(response, trace_id == format(root[0].context.trace_id, "032x"))
print(sorted(s.name for s in exporter.get_finished_spans()))
"""
    )
    assert out.splitlines() == [
        "3 True",
        "['chat scripted', 'chat scripted', 'execute_tool add', 'invoke_agent agent']",
    ]


# -- through the engine -------------------------------------------------------


def tree(exporter: InMemorySpanExporter) -> list[tuple[str, str | None, dict[str, object]]]:
    """(name, parent's name, attributes) of every span, in start order."""
    finished = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    names = {span_id(s): s.name for s in finished}
    return [
        (s.name, names.get(parent_of(s)) if s.parent else None, dict(s.attributes or {}))  # type: ignore[arg-type]
        for s in finished
    ]


async def test_the_span_tree_of_an_execution(
    spans: InMemorySpanExporter, autojump_clock: trio.testing.MockClock
) -> None:
    """Two ticks, a tool that spawns a child, and an abort in the second tick."""
    child_model = ScriptedModel(["42"])

    @tool
    async def delegate(ctx: ToolContext, question: str) -> str:
        """Ask a helper."""
        child: SessionExecutionHandle = await ctx.spawn(Agent(child_model, name="helper"), question)
        return (await child.result).response

    model = ScriptedModel(
        [
            Reply("", tool_calls=[("delegate", {"question": "6*7?"}, "call_1")]),
            "a very long answer " * 10,
        ],
        chunk_size=5,
        delay=1.0,
    )
    async with open_session(Agent(model, name="boss", tools=[delegate])) as session:
        handle = await session.send("go")

        def abort_in_tick_two(event: StreamEvent) -> None:
            if event.tick == 2 and not event.spawn_path:
                handle.abort("enough")

        handle.events.on("content_delta", abort_in_tick_two)
        await handle.wait()
    assert handle.status == "aborted"
    (spawned,) = (e for e in handle.events.history if isinstance(e, SpawnStart))
    child_session = spawned.child_session_id

    got = tree(spans)
    conversation = {"gen_ai.conversation.id": session.id}
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
    }
    root_attributes = got[0][2]
    assert got[0][:2] == ("invoke_agent boss", None)
    assert root_attributes == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "boss",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        **conversation,
        "trio_session.execution.id": handle.execution_id,
        "gen_ai.usage.input_tokens": root_attributes["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": root_attributes["gen_ai.usage.output_tokens"],
        "trio_session.execution.status": "aborted",
        "trio_session.execution.reason": "enough",
    }
    first_chat = got[1][2]
    assert got[1][:2] == ("chat scripted", "invoke_agent boss")
    assert first_chat == {
        **chat,
        **conversation,
        "gen_ai.usage.input_tokens": first_chat["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": first_chat["gen_ai.usage.output_tokens"],
        "gen_ai.response.finish_reasons": ("tool_use",),
    }
    assert got[2] == (
        "execute_tool delegate",
        "invoke_agent boss",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "delegate",
            "gen_ai.tool.call.id": "call_1",
            **conversation,
        },
    )
    assert got[3][:2] == ("invoke_agent helper", "execute_tool delegate")
    assert got[3][2]["gen_ai.conversation.id"] == child_session
    assert got[3][2]["trio_session.execution.status"] == "completed"
    assert got[3][2]["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert got[4][:2] == ("chat scripted", "invoke_agent helper")
    assert got[4][2]["gen_ai.conversation.id"] == child_session
    # The second tick's model call, cut off by the abort: no finish reason.
    assert got[5] == ("chat scripted", "invoke_agent boss", {**chat, **conversation})
    assert len(got) == 6

    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {handle.trace_id}
    assert all(s.status.status_code is StatusCode.UNSET for s in finished)


async def test_errors_of_tools_models_and_executions_set_the_status(
    spans: InMemorySpanExporter,
) -> None:
    @tool
    def explode() -> str:
        """Fails."""
        raise RuntimeError("boom")

    model = ScriptedModel(
        [Reply("", tool_calls=[("explode", {})]), ModelError("overloaded", code="overloaded")]
    )
    agent = Agent(model, tools=[explode])
    async with open_session(agent) as session:
        handle = await session.send("go")
        await handle.wait()
    assert handle.status == "error"
    by_start = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in by_start] == [
        "invoke_agent agent",
        "chat scripted",
        "execute_tool explode",
        "chat scripted",
    ]
    root, _, tool_span, failed_chat = by_start
    assert tool_span.status.status_code is StatusCode.ERROR
    assert "boom" in (tool_span.status.description or "")
    assert failed_chat.status.status_code is StatusCode.ERROR
    assert dict(failed_chat.attributes or {})["error.type"] == "overloaded"
    assert root.status.status_code is StatusCode.ERROR
    assert dict(root.attributes or {})["error.type"] == "overloaded"


# -- tracing off: the cost of nothing ---------------------------------------------


def test_without_a_provider_or_a_current_span_no_span_is_made() -> None:
    _tracing._trace_api()
    trace = _tracing.start_execution(
        agent="a", model=ScriptedModel([]), session_id="s", execution_id="e"
    )
    assert trace is _tracing.NO_TRACE
    assert trace.trace_id is None


def test_without_a_provider_a_current_span_still_gives_its_trace_id() -> None:
    from opentelemetry import trace as api

    _tracing._trace_api()
    context = api.SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=api.TraceFlags(1)
    )
    with api.use_span(api.NonRecordingSpan(context)):
        trace = _tracing.start_execution(
            agent="a", model=ScriptedModel([]), session_id="s", execution_id="e"
        )
    assert trace.trace_id == format(0x1234, "032x")
    with trace:
        # Not recording: children are not made either.
        assert trace.chat(ScriptedModel([])) is _tracing._NO_CHAT


def test_a_provider_set_after_an_execution_traces_the_next_one() -> None:
    out = run_python(
        """
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from trio_session import Agent, ScriptedModel, open_session

exporter = InMemorySpanExporter()

async def main():
    async with open_session(Agent(ScriptedModel(["one", "two"]))) as session:
        await session.send("a").result
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        handle = await session.send("b")
        await handle.result
    return handle.trace_id

trace_id = trio.run(main)
roots = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
print(len(roots), trace_id == format(roots[0].context.trace_id, "032x"))
"""
    )
    assert out.split() == ["1", "True"]
