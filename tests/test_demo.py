"""The terminal demo: DemoModel and its tools, the chat loop, and ``python -m trio_session``.

The chat is driven three ways: in process through a memory channel (deterministic, with
the mock clock), as a subprocess with piped stdin (the non-interactive mode users script),
and through a pseudo-terminal (tests/test_demo_pty.py).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _helpers import (
    assert_transcript_integrity,
    assert_well_formed,
    collect,
    narrow,
    text_of,
    types_of,
)
from _servers import (
    FakeServer,
    anthropic_message_events,
    anthropic_sse,
    json_reply,
    openai_chunk,
    openai_sse,
    server as server,
    sse_reply,
)
from hypothesis import given, settings, strategies as st

from trio_session import (
    Agent,
    ContentDelta,
    Decision,
    MemoryStore,
    ModelError,
    ModelRequest,
    Reply,
    ScriptedModel,
    StopChunk,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolConfirmationResult,
    ToolResultEvent,
    UsageChunk,
    from_json,
    open_session,
    user,
)
from trio_session._cli._args import build_model, default_db_path
from trio_session._cli._chat import PROMPT, Chat, ChatOptions, read_lines
from trio_session._cli._demo import (
    DEMO_TOOLS,
    STORY,
    DemoModel,
    calculator,
    demo_agent,
    evaluate,
    format_number,
)
from trio_session._cli._main import main
from trio_session._cli._render import format_call

SPECS = tuple(t.spec() for t in DEMO_TOOLS)


def approving(agent: Agent, approved: bool = True) -> Agent:
    async def decide(event: Any) -> Decision:
        return Decision(approved, reason=None if approved else "not today")

    return attrs.evolve(agent, on_tool_confirmation=decide)


# -- the calculator -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2", 3),
        ("12 * (3 + 4)", 84),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ** 10", 1024),
        ("-3 - -2", -1),
        ("(((1)))", 1),
        ("1.5 * 2", 3.0),
        ("2 ** -1", 0.5),
        (" 6*7 ", 42),
    ],
)
def test_evaluate_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os').system('true')", "a function call is not allowed"),
        ("x + 1", "a name is not allowed"),
        ("(1).real", "an attribute is not allowed"),
        ("1 < 2", "a comparison is not allowed"),
        ("True + 1", "the constant True is not allowed"),
        ("'a' * 3", "the constant 'a' is not allowed"),
        ("1j * 2", "the constant 1j is not allowed"),
        ("+3", "the operator UAdd is not allowed"),
        ("1 << 4", "the operator LShift is not allowed"),
        ("[1, 2]", "the syntax List is not allowed"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("9 ** 9 ** 9", "the result is too large"),
        ("2 ** 5000", "the result is too large"),
        ("1e308 * 10", "the result is too large"),
        ("(-8) ** 0.5", "the result is not a real number"),
        ("1 +", "is not an arithmetic expression"),
        ("", "the expression is empty"),
        ("1+" * 150 + "1", "characters long; the limit is 200"),
    ],
)
def test_evaluate_refuses(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate(expression)


def test_evaluate_takes_a_str() -> None:
    with pytest.raises(TypeError, match="expression must be a str, got int"):
        evaluate(42)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(10**12), 10**12),
    st.sampled_from(["+", "-", "*", "//", "%"]),
    st.integers(-(10**12), 10**12),
)
def test_evaluate_agrees_with_python_on_integers(a: int, op: str, b: int) -> None:
    expression = f"({a}) {op} ({b})"
    if op in ("//", "%") and b == 0:
        with pytest.raises(ValueError, match="division by zero"):
            evaluate(expression)
    else:
        assert (
            evaluate(expression)
            == {
                "+": a + b,
                "-": a - b,
                "*": a * b,
                "//": a // b if b else 0,
                "%": a % b if b else 0,
            }[op]
        )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/%(). e", max_size=40))
def test_evaluate_any_text_gives_a_number_or_a_value_error(text: str) -> None:
    try:
        value = evaluate(text)
    except ValueError:
        return  # refused, with a message: fine
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert not isinstance(value, float) or math.isfinite(value)


def test_calculator_tool() -> None:
    assert calculator.input_schema["required"] == ["expression"]
    assert calculator("12 * (3 + 4)") == "84"
    assert calculator("0.1 + 0.2") == "0.3"
    assert format_number(2**70) == "1180591620717411303424"


# -- DemoModel ------------------------------------------------------------------------------


def plan_for(*lines: str, tools: Sequence[Any] = SPECS) -> tuple[str, list[tuple[str, Any]]]:
    request = ModelRequest(None, tuple(user(line) for line in lines), tools=tuple(tools))
    plan = DemoModel(delay=0).plan(request)
    return plan.text, [(name, arguments) for name, arguments in plan.calls]


@pytest.mark.parametrize(
    ("line", "call"),
    [
        ("what is 12 * (3 + 4)?", ("calculator", {"expression": "12 * (3 + 4)"})),
        ("6 x 7", ("calculator", {"expression": "6 * 7"})),
        ("2^8 please", ("calculator", {"expression": "2**8"})),
        ("what time is it?", ("clock", {"timezone": "local"})),
        ("the date in UTC", ("clock", {"timezone": "utc"})),
        ("remember to buy milk", ("notes", {"action": "add", "text": "buy milk"})),
        ("Please note: call Bob", ("notes", {"action": "add", "text": "call Bob"})),
        ("show my notes", ("notes", {"action": "list"})),
        ("research structured concurrency", ("research", {"question": "structured concurrency"})),
        (
            "can you find out about the Eiffel tower?",
            ("research", {"question": "the Eiffel tower"}),
        ),
        ("this should fail", ("calculator", {"expression": "1 / 0"})),
        ("hello", None),
        ("tell me a story", None),
        ("the sky is blue", None),
    ],
)
def test_demo_model_rules(line: str, call: tuple[str, Any] | None) -> None:
    text, calls = plan_for(line)
    assert calls == ([call] if call else [])
    assert text


def test_demo_model_texts() -> None:
    assert plan_for("tell me a story")[0] == STORY
    assert plan_for("give me a long answer")[0] == STORY
    assert STORY not in plan_for("how long is a piece of string")[0]
    assert plan_for("hello")[0].startswith("Hello! I am the offline demo agent.")
    echoed = plan_for("the sky is blue")[0]
    assert echoed.startswith('You said "the sky is blue".')
    # Several new lines at once (queued messages): each one is answered.
    text, calls = plan_for("the sky is blue", "what is 1 + 1")
    assert 'You also said "the sky is blue".' in text
    assert calls == [("calculator", {"expression": "1 + 1"})]
    # A story asked for earlier is not told in the middle of a later answer.
    assert STORY not in plan_for("tell me a story", "hi")[0]


def test_demo_model_uses_only_the_tools_it_has() -> None:
    text, calls = plan_for("what is 6 * 7", tools=())
    assert calls == []
    assert text.startswith('You said "what is 6 * 7".')
    text, calls = plan_for("remember 2 + 2", tools=[s for s in SPECS if s.name != "notes"])
    assert calls == [("calculator", {"expression": "2 + 2"})]


def test_demo_model_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="delay must be a finite number >= 0"):
        DemoModel(delay=-1)
    with pytest.raises(TypeError, match="delay must be a number, got str"):
        DemoModel(delay="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="persona must be 'assistant' or 'researcher'"):
        DemoModel(persona="poet")  # type: ignore[arg-type]
    assert DemoModel(delay=0.5).researcher().persona == "researcher"
    assert DemoModel(delay=0.5).researcher().delay == 0.5


async def test_demo_model_streams_word_by_word(autojump_clock: trio.testing.MockClock) -> None:
    model = DemoModel(delay=0.25)
    request = ModelRequest(None, (user("tell me a story"),), tools=SPECS)
    chunks = [chunk async for chunk in model.stream(request)]
    texts = [c.text for c in chunks if isinstance(c, TextChunk)]
    assert "".join(texts) == STORY
    assert len(texts) == len(STORY.split())
    assert texts[0] == "Once "
    assert isinstance(chunks[-2], UsageChunk) and chunks[-2].output_tokens > 0
    assert chunks[-1] == StopChunk("end_turn")
    # One delay between two words: the words are spread out, not sent at once.
    assert trio.current_time() == pytest.approx(0.25 * (len(texts) - 1))


async def test_demo_model_tool_call_chunks() -> None:
    request = ModelRequest(None, (user("what is 2 + 2"),), tools=SPECS)
    chunks = [chunk async for chunk in DemoModel(delay=0).stream(request)]
    calls = [c for c in chunks if isinstance(c, ToolCallChunk)]
    assert [(c.name, dict(c.input)) for c in calls] == [("calculator", {"expression": "2 + 2"})]
    assert chunks[-1] == StopChunk("tool_use")


# -- the demo agent in a session ------------------------------------------------------------


async def test_demo_agent_answers_with_the_tool_result() -> None:
    async with open_session(demo_agent(delay=0)) as session:
        handle = await session.send("what is 12 * (3 + 4)?")
        result = await handle.result
        events = await collect(handle)
    assert result.response == "12 * (3 + 4) = 84."
    assert result.usage.ticks == 2 and result.usage.total_tokens > 0
    assert_well_formed(events)
    assert_transcript_integrity(session.timeline)


async def test_notes_need_confirmation_and_live_in_the_state() -> None:
    async with open_session(approving(demo_agent(delay=0))) as session:
        handle = await session.send("remember to buy milk")
        result = await handle.result
        assert "tool_confirmation_required" in types_of(await collect(handle))
        assert result.response == "Done. Saved note #1: buy milk."
        assert session.state["notes"] == ["buy milk"]
        listed = await session.send("show my notes").result
        assert listed.response == "Your notes: 1. buy milk"
    async with open_session(approving(demo_agent(delay=0), approved=False)) as session:
        denied = await session.send("remember to buy milk").result
        assert denied.response == "OK, I did not run notes (not today)."
        assert "notes" not in session.state
        empty = await session.send("what are my notes?").result
        assert empty.response == "You have no notes yet."


async def test_notes_dispatch_errors_on_empty_text() -> None:
    async with open_session(demo_agent(delay=0)) as session:
        with pytest.raises(ValueError, match="the note is empty"):
            await session.dispatch("notes", {"text": ""})


async def test_research_spawns_a_child_agent() -> None:
    async with open_session(demo_agent(delay=0)) as session:
        handle = await session.send("research trio")
        result = await handle.result
        events = await collect(handle)
    assert result.response.startswith("My research assistant says: Trio is a Python library")
    types = types_of(events)
    assert types.index("spawn_start") < types.index("spawn_end")
    forwarded = [e for e in events if e.spawn_path]
    assert forwarded and "content_delta" in types_of(forwarded)
    assert {e.session_id for e in forwarded} != {session.id}
    assert_well_formed(events)


async def test_research_uses_the_parent_model_when_it_is_not_the_demo() -> None:
    model = ScriptedModel(
        [Reply(tool_calls=[("research", {"question": "q"})]), "child answer", "parent answer"]
    )
    async with open_session(demo_agent(model)) as session:
        handle = await session.send("go")
        result = await handle.result
        events = await collect(handle)
    results = [e for e in events if e.type == "tool_result" and not e.spawn_path]
    assert text_of(results[0].content[0]) == "child answer"
    assert result.response == "parent answer"
    assert model.requests[1].system is not None and "research assistant" in model.requests[1].system


async def test_fail_shows_a_tool_error_and_goes_on() -> None:
    async with open_session(demo_agent(delay=0)) as session:
        handle = await session.send("please fail")
        result = await handle.result
        events = await collect(handle)
    errors = [e for e in events if e.type == "tool_result" and e.is_error]
    assert len(errors) == 1
    assert handle.status == "completed"
    assert "division by zero" in result.response


async def test_queued_message_is_answered_in_the_same_execution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session(demo_agent(delay=0.5)) as session:
        handle = await session.send("tell me a story")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            assert narrow(await deltas.receive(), ContentDelta).delta == "Once "
        handle.queue_message("what is 6 * 7")
        result = await handle.result
        events = await collect(handle)
    assert result.response == "6 * 7 = 42."
    assert result.usage.ticks == 3
    assert "message_delivered" in types_of(events)
    assert STORY in [m.text for m in session.timeline]


async def test_abort_mid_story(autojump_clock: trio.testing.MockClock) -> None:
    async with open_session(demo_agent(delay=0.5)) as session:
        handle = await session.send("tell me a story")
        async with handle.events.subscribe(types={"content_delta"}) as deltas:
            for _ in range(3):
                await deltas.receive()
        handle.abort("enough")
        await handle.wait()
    assert handle.status == "aborted"
    assert [m.text for m in session.timeline] == ["tell me a story"]


# -- the chat, in process -------------------------------------------------------------------


class Terminal:
    """An in-process chat fed through a memory channel; reads what it printed, like pexpect."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.out: io.StringIO = chat._out  # type: ignore[assignment]
        self.send, self.receive = trio.open_memory_channel[str](math.inf)
        self.position = 0
        self.exit_code: int | None = None

    async def run(self) -> None:
        self.exit_code = await self.chat.run(self.receive)

    async def exited(self) -> int:
        """Wait (in virtual time) for the chat to end; return its exit status."""
        with trio.fail_after(60):
            while self.exit_code is None:
                await trio.sleep(1)
        return self.exit_code

    def type(self, line: str) -> None:
        self.send.send_nowait(line)

    async def expect(self, text: str) -> str:
        """Wait (in virtual time) for ``text``; return what was printed before it."""
        with trio.fail_after(3600):
            while (found := self.out.getvalue().find(text, self.position)) < 0:
                await trio.sleep(0.1)
        before = self.out.getvalue()[self.position : found]
        self.position = found + len(text)
        return before


def make_chat(
    agent: Agent | None = None,
    *,
    store: MemoryStore | None = None,
    session_id: str | None = None,
    out: io.StringIO | None = None,
    err: io.StringIO | None = None,
    **options: Any,
) -> Chat:
    """A chat (of the demo agent, streaming at once, by default) that writes to StringIOs."""
    return Chat(
        agent or demo_agent(delay=0),
        options=ChatOptions(**options),
        store=store,
        session_id=session_id,
        out=out if out is not None else io.StringIO(),
        err=err if err is not None else io.StringIO(),
    )


def terminal(agent: Agent | None = None, **options: Any) -> Terminal:
    options.setdefault("interactive", True)
    return Terminal(make_chat(agent, **options))


async def started(nursery: trio.Nursery, agent: Agent | None = None, **options: Any) -> Terminal:
    """A `terminal` running in ``nursery``, at its first prompt."""
    term = terminal(agent, **options)
    nursery.start_soon(term.run)
    await term.expect(PROMPT)
    return term


async def telling_a_story(nursery: trio.Nursery) -> Terminal:
    """A `terminal` whose agent has begun a slow story (a word a second)."""
    term = await started(nursery, demo_agent(delay=1.0))
    term.type("tell me a story")
    await term.expect("Once ")
    return term


async def run_chat(
    lines: Sequence[str], agent: Agent | None = None, *, status: int = 0, **options: Any
) -> tuple[str, str]:
    """Run a chat over ``lines`` to the end (exit ``status``); return its ``out`` and ``err``."""
    send, receive = trio.open_memory_channel[str](math.inf)
    for line in lines:
        send.send_nowait(line)
    send.close()
    out, err = io.StringIO(), io.StringIO()
    assert await make_chat(agent, out=out, err=err, **options).run(receive) == status
    return out.getvalue(), err.getvalue()


async def chat_output(lines: Sequence[str], agent: Agent | None = None, **options: Any) -> str:
    return (await run_chat(lines, agent, **options))[0]


async def test_chat_non_interactive_transcript() -> None:
    out = await chat_output(["what is 6 * 7", "", "fail", "/bogus", "hi"])
    lines = out.splitlines()
    assert lines[:3] == [
        "Let me calculate that.",
        '[tool calculator(expression="6 * 7")] -> 42',
        "6 * 7 = 42.",
    ]
    assert lines[3] == "Let me try a calculation that cannot work, to show a tool error."
    assert lines[4] == (
        '[tool calculator(expression="1 / 0")] -> '
        "error: Tool 'calculator' failed: ValueError: division by zero"
    )
    assert "division by zero" in lines[5]
    assert lines[6] == "unknown command /bogus (try /help)"
    assert lines[7].startswith("Hello! I am the offline demo agent.")
    assert PROMPT not in out


async def test_chat_non_interactive_denies_confirmations_unless_told() -> None:
    denied = await chat_output(["remember to buy milk", "show my notes"])
    assert '[confirm notes: Save the note "buy milk" in this session?] -> no' in denied
    assert "OK, I did not run notes (denied by --approve no)." in denied
    assert "You have no notes yet." in denied
    approved = await chat_output(["remember to buy milk", "show my notes"], approve="yes")
    assert "-> yes" in approved
    assert '[tool notes(action="add", text="buy milk")] -> Saved note #1: buy milk' in approved
    assert "Your notes: 1. buy milk" in approved


async def test_chat_prints_execution_errors_and_goes_on() -> None:
    model = ScriptedModel([ModelError("the server is overloaded", code="overloaded"), "fine"])
    out, err = await run_chat(["one", "two"], Agent(model), status=1)
    # Answers on stdout, failures on stderr; the run failed, so the exit status is 1.
    assert out == "fine\n"
    assert err == "error: ModelError: the server is overloaded\n"


async def test_chat_interactive_errors_do_not_fail_the_run() -> None:
    model = ScriptedModel([ModelError("the server is overloaded", code="overloaded"), "fine"])
    out, err = await run_chat(["one", "two"], Agent(model), interactive=True)
    assert "error: ModelError: the server is overloaded\n" in out
    assert err == ""


async def test_chat_events_view_prints_json_lines() -> None:
    out = await chat_output(["research trio", "/events", "hi"], show_events=True)
    lines = out.splitlines()
    off = lines.index("[events view off]")
    events: list[StreamEvent] = [from_json(StreamEvent, line) for line in lines[:off]]
    assert_well_formed(events)
    assert {"spawn_start", "spawn_end", "tool_result", "result"} <= set(types_of(events))
    assert any(e.spawn_path for e in events)
    assert lines[off + 1].startswith("Hello!")


async def test_chat_sessions_and_new_session() -> None:
    store = MemoryStore()
    out = await chat_output(
        ["hi", "/sessions", "/new", "hi", "/sessions", "/help"], store=store, session_id="first"
    )
    ids = await store.list()
    assert len(ids) == 2 and "first" in ids
    (second,) = set(ids) - {"first"}
    # Each stored session with when it was last saved and its title, its first message.
    row = r"  \d{4}-\d\d-\d\d \d\d:\d\d  hi$"
    assert re.search(r"^\* first" + row, out, re.M)
    assert re.search(rf"^\* {second}" + row, out, re.M)
    assert re.search(r"^  first *" + row, out, re.M)
    assert "/events" in out and "/quit" in out and "/resume ID" in out
    memory = await chat_output(["/sessions"])
    assert memory.startswith("no stored sessions: run with --session ID or --db PATH")


async def test_chat_resume_command() -> None:
    store = MemoryStore()
    await chat_output(["remember to buy milk"], store=store, session_id="s1", approve="yes")
    out, err = await run_chat(
        ["/resume", "/resume nope", "/resume s1", "/resume s1", "show my notes"], store=store
    )
    assert "usage: /resume ID" in out
    assert "no stored session 'nope' (see /sessions)" in out
    assert "already in session s1" in out
    assert "Your notes: 1. buy milk" in out
    assert "session s1 (resumed, 4 messages)" in err
    memory = await chat_output(["/resume s1"])
    assert memory.startswith("no stored sessions: run with --session ID")


async def test_chat_resumes_a_stored_session() -> None:
    store = MemoryStore()
    await chat_output(["remember to buy milk"], store=store, session_id="s1", approve="yes")
    out, err = await run_chat(["show my notes"], store=store, session_id="s1")
    assert "Your notes: 1. buy milk" in out
    assert err == "session s1 (resumed, 4 messages)\n"


async def test_chat_quit_stops_reading() -> None:
    out = await chat_output(["hi", "/quit", "what is 1 + 1"])
    assert "1 + 1 = 2" not in out


async def test_chat_options_are_checked() -> None:
    with pytest.raises(ValueError, match="approve must be 'yes', 'no' or None"):
        ChatOptions(approve="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Chat takes an Agent"):
        Chat("agent")  # type: ignore[arg-type]


async def test_interactive_confirmation_yes_no_always(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = terminal(banner="welcome")
    nursery.start_soon(term.run)
    await term.expect("welcome")
    await term.expect(PROMPT)
    term.type("remember to buy milk")
    await term.expect("[y]es / [n]o / [a]lways / [e]dit: ")
    term.type("maybe")
    await term.expect("please answer y (yes), n (no), a (always) or e (edit)")
    term.type("y")
    assert "Done. Saved note #1: buy milk." in await term.expect(PROMPT)

    term.type("remember eggs")
    await term.expect("[e]dit: ")
    term.type("n")
    assert "OK, I did not run notes (denied by the user)." in await term.expect(PROMPT)

    term.type("remember cheese")
    await term.expect("[e]dit: ")
    term.type("always")
    assert "Saved note #2: cheese" in await term.expect(PROMPT)
    term.type("remember bread")
    shown = await term.expect(PROMPT)
    assert "[e]dit" not in shown
    assert "[notes approved: remembered for this session]" in shown
    assert "Saved note #3: bread" in shown
    assert term.chat.session is not None
    assert term.chat.session.state["notes"] == ["buy milk", "cheese", "bread"]
    term.send.close()
    await term.expect("\n")  # the chat ends its line on EOF


async def test_interactive_confirmation_edit(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await started(nursery)
    term.type("remember to buy milk")
    await term.expect("[e]dit: ")
    term.type("e")
    await term.expect('the arguments now: {"action": "add", "text": "buy milk"}')
    await term.expect("change one argument (name=value) or give them all (a JSON object): ")
    term.type("{not json")
    await term.expect("error: not JSON")
    term.type("[1, 2]")
    await term.expect('error: type name=value (e.g. text="oat milk") or a JSON object')
    term.type('{"text": 5}')
    await term.expect("error: invalid arguments for tool 'notes': text:")
    term.type("text=5")  # one field changed, the others kept: 5 is JSON, an int
    await term.expect("error: invalid arguments for tool 'notes': text:")
    term.type("text=oat milk")  # not JSON: the bare text
    shown = await term.expect(PROMPT)
    assert '[tool notes(action="add", text="oat milk")] -> Saved note #1: oat milk' in shown
    assert term.chat.session is not None
    assert term.chat.session.state["notes"] == ["oat milk"]


async def test_interactive_interrupt_aborts_only_the_execution(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await telling_a_story(nursery)
    term.chat.interrupt()
    shown = await term.expect("[aborted]")
    assert "ever after" not in shown
    await term.expect(PROMPT)
    term.type("what is 2 + 3")
    assert "2 + 3 = 5." in await term.expect(PROMPT)
    # At the prompt: the first Ctrl-C only warns, the second one leaves.
    term.chat.interrupt()
    await term.expect("(Ctrl-C again or Ctrl-D to leave)")
    term.chat.interrupt()
    assert await term.exited() == 0


async def test_interactive_interrupt_during_a_confirmation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await started(nursery)
    term.type("remember to buy milk")
    await term.expect("[e]dit: ")
    term.chat.interrupt()
    await term.expect("[aborted]")
    await term.expect(PROMPT)
    # The next line is a message again, not the answer to the confirmation.
    term.type("what is 1 + 1")
    assert "1 + 1 = 2." in await term.expect(PROMPT)
    assert term.chat.session is not None
    assert "notes" not in term.chat.session.state
    assert_transcript_integrity(term.chat.session.timeline)


async def test_interactive_line_is_queued_into_the_running_execution(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await telling_a_story(nursery)
    term.type("what is 6 * 7")
    await term.expect("[queued] what is 6 * 7")
    answer = await term.expect("(3 ticks,")
    assert PROMPT not in answer
    assert "ever after." in answer and "6 * 7 = 42." in answer
    await term.expect(PROMPT)


async def test_interactive_commands_while_running(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await telling_a_story(nursery)
    term.type("/sessions")
    await term.expect("[/sessions waits until the answer is done]")
    term.type("/events")
    await term.expect("[events view on]")
    await term.expect('{"type": "content_delta"')
    term.type("/quit")
    await term.expect('{"type": "execution_end"')
    await term.expect('"status": "aborted", "reason": "quit"')
    await term.exited()


async def test_interactive_eof_while_running_lets_the_answer_finish(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    term = await telling_a_story(nursery)
    term.send.close()
    await term.expect("ever after.")
    assert await term.exited() == 0


async def test_read_lines_from_a_file_descriptor() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, "one\ntwo\r\n\nd\u00e9j\u00e0".encode())
        os.close(write_fd)
        send, receive = trio.open_memory_channel[str | None](math.inf)
        await read_lines(read_fd, send, encoding="utf-8")
        got = [receive.receive_nowait() for _ in range(5)]
    finally:
        os.close(read_fd)
    assert got == ["one", "two", "", "d\u00e9j\u00e0", None]


def test_format_call() -> None:
    assert format_call("notes", {"action": "add", "text": 'a "b"'}) == (
        'notes(action="add", text="a \\"b\\"")'
    )
    assert format_call("clock", {}) == "clock()"
    assert len(format_call("x", {"text": "y" * 1000})) == 200


# -- the command line, in process -----------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"HOME": "/home/u", "XDG_DATA_HOME": "/xdg"}, "/xdg/trio-session/sessions.db"),
        ("linux", {"HOME": "/home/u"}, "/home/u/.local/share/trio-session/sessions.db"),
        (
            "linux",
            {"HOME": "/home/u", "XDG_DATA_HOME": "relative"},
            "/home/u/.local/share/trio-session/sessions.db",
        ),
        (
            "darwin",
            {"HOME": "/Users/u"},
            "/Users/u/Library/Application Support/trio-session/sessions.db",
        ),
        ("win32", {"HOME": "/h", "APPDATA": "/appdata"}, "/appdata/trio-session/sessions.db"),
        ("win32", {"HOME": "/h"}, "/h/AppData/Roaming/trio-session/sessions.db"),
    ],
)
def test_default_db_path(platform: str, environ: Mapping[str, str], expected: str) -> None:
    assert default_db_path(platform=platform, environ=environ).as_posix() == expected


def test_build_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_session import AnthropicModel, OpenAIModel

    assert isinstance(build_model("demo", delay=0), DemoModel)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    model = build_model("openai:llama3.1", base_url="http://localhost:11434/v1")
    assert isinstance(model, OpenAIModel) and model.name == "llama3.1"
    assert str(model.client.base_url).startswith("http://localhost:11434/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert isinstance(build_model("anthropic:claude-x"), AnthropicModel)
    with pytest.raises(ValueError, match="--model must be demo, openai:NAME or anthropic:NAME"):
        build_model("gemini:pro")
    with pytest.raises(ValueError, match="--base-url needs --model openai:NAME"):
        build_model("demo", base_url="http://x")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        build_model("openai:gpt-4o-mini")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "gemini:pro"], "use demo, openai:NAME or anthropic:NAME"),
        (["--model", "openai:"], "use demo, openai:NAME or anthropic:NAME"),
        (["--speed", "-1"], "must be a number of seconds >= 0"),
        (["--speed", "fast"], "not a number"),
        (["--session", " "], "must not be empty"),
        (["--approve", "maybe"], "invalid choice"),
        (["--base-url", "http://x"], "--base-url needs --model openai:NAME or anthropic:NAME"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: trio-session" in err
    assert message in err


def test_bad_speed_variable_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIO_SESSION_DEMO_SPEED", "slow")
    assert main([]) == 2
    assert "$TRIO_SESSION_DEMO_SPEED not a number: 'slow'" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--model", "--base-url", "--session", "--db", "--approve", "--speed"):
        assert option in out


# -- the command line, as a subprocess ------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TRIO_SESSION_", "OPENAI_", "ANTHROPIC_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, input: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_session", "--speed", "0", *args],
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env if env is not None else clean_env(),
        timeout=120,
    )


def test_cli_answers_line_by_line_and_survives_a_tool_error() -> None:
    done = run_cli(input="what is 12 * (3 + 4)?\nfail\nwhat time is it\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '[tool calculator(expression="12 * (3 + 4)")] -> 84\n12 * (3 + 4) = 84.\n' in out
    assert '[tool calculator(expression="1 / 0")] -> error: ' in out
    assert "The calculator tool reported an error (division by zero)" in out
    assert re.search(r"\[tool clock\(timezone=\"local\"\)\] -> \w+day \d\d \w+ \d{4}", out)
    assert out.index("84") < out.index("division by zero") < out.index("It is ")
    assert done.stderr == ""


def test_cli_confirmations_both_ways() -> None:
    script = "remember to buy milk\nshow my notes\n"
    denied = run_cli(input=script)
    assert denied.returncode == 0, denied.stderr
    assert '[confirm notes: Save the note "buy milk" in this session?] -> no' in denied.stdout
    assert "You have no notes yet." in denied.stdout
    approved = run_cli("--approve", "yes", input=script)
    assert approved.returncode == 0, approved.stderr
    assert "-> yes" in approved.stdout
    assert "Your notes: 1. buy milk" in approved.stdout


def test_cli_session_resumes_across_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "nested" / "chat.db")
    first = run_cli(
        "--session", "work", "--db", db, "--approve", "yes", input="remember to buy milk\n"
    )
    assert first.returncode == 0, first.stderr
    assert "Saved note #1: buy milk" in first.stdout
    assert "session work (new)" in first.stderr
    second = run_cli("--session", "work", "--db", db, input="show my notes\n/sessions\n")
    assert second.returncode == 0, second.stderr
    assert "Your notes: 1. buy milk" in second.stdout
    assert re.search(r"^\* work  \S+ \S+  remember to buy milk$", second.stdout, re.M)
    assert "session work (resumed, 4 messages)" in second.stderr
    other = run_cli("--session", "home", "--db", db, input="show my notes\n/sessions\n")
    assert "You have no notes yet." in other.stdout
    assert re.search(r"^\* home  \S+ \S+  show my notes\n  work  ", other.stdout, re.M)


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG data path is for Linux")
def test_cli_session_uses_the_per_user_data_path(tmp_path: Path) -> None:
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path / "home"))
    done = run_cli("--session", "s", env=env, input="hi\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "trio-session" / "sessions.db").is_file()
    again = run_cli("--session", "s", env=env, input="")
    assert "session s (resumed, 2 messages)" in again.stderr


def test_cli_events_are_json_lines() -> None:
    done = run_cli("--events", input="what is 1 + 1\nremember milk\nfail\n")
    assert done.returncode == 0, done.stderr
    # Only JSON lines, even for the confirmation answered by --approve and the tool error.
    events: list[StreamEvent] = [from_json(StreamEvent, line) for line in done.stdout.splitlines()]
    assert [json.loads(line)["type"] for line in done.stdout.splitlines()] == types_of(events)
    ends = [i for i, e in enumerate(events) if e.type == "execution_end"]
    assert len(ends) == 3
    assert_well_formed(events[: ends[0] + 1])
    assert_well_formed(events[ends[0] + 1 : ends[1] + 1])
    denial = [e for e in events if isinstance(e, ToolConfirmationResult)]
    assert len(denial) == 1 and denial[0].approved is False
    assert sum(1 for e in events if isinstance(e, ToolResultEvent) and e.is_error) == 2


@pytest.mark.parametrize(("provider", "module"), [("openai", "openai"), ("anthropic", "anthropic")])
def test_cli_missing_sdk_exits_2(provider: str, module: str) -> None:
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from trio_session._cli import main\n"
        f"sys.exit(main(['--model', '{provider}:m']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(OPENAI_API_KEY="k", ANTHROPIC_API_KEY="k"),
        timeout=120,
    )
    assert done.returncode == 2
    assert f"pip install 'trio-session[{provider}]'" in done.stderr


def test_cli_missing_api_key_exits_2() -> None:
    done = run_cli("--model", "openai:gpt-4o-mini", input="hi\n")
    assert done.returncode == 2
    assert "set OPENAI_API_KEY" in done.stderr
    assert "api_key=" not in done.stderr


def test_cli_unreadable_store_exits_2(tmp_path: Path) -> None:
    db = tmp_path / "not-a-database.db"
    db.write_bytes(b"this is not sqlite" * 100)
    done = run_cli("--db", str(db), input="hi\n")
    assert done.returncode == 2
    assert "cannot open the session store" in done.stderr


def test_console_script() -> None:
    script = Path(sys.executable).with_name("trio-session")
    found = str(script) if script.exists() else shutil.which("trio-session")
    if found is None:
        pytest.skip("the trio-session script is not installed next to this Python")
    done = subprocess.run(
        [found, "--speed", "0"],
        input="what is 2 ** 10\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 ** 10 = 1024." in done.stdout


# -- the command line with a real provider (a fake server speaking its wire format) ---------


async def run_cli_async(*args: str, input: str, env: dict[str, str]) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "trio_session", *args],
        stdin=input.encode(),
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cli_openai_model(server: FakeServer) -> None:
    def text(*pieces: str) -> Any:
        chunks = [openai_chunk({"role": "assistant", "content": ""})]
        chunks += [openai_chunk({"content": p}) for p in pieces]
        chunks += [
            openai_chunk(finish_reason="stop"),
            openai_chunk(usage={"prompt_tokens": 3, "completion_tokens": 2}),
        ]
        return sse_reply(openai_sse(chunks))

    server.push(
        text("Hello ", "from the server."),
        json_reply(400, {"error": {"message": "bad things", "type": "x", "code": None}}),
        text("Still here."),
    )
    code, out, err = await run_cli_async(
        "--model",
        "openai:gpt-test",
        "--base-url",
        server.base_url + "/v1",
        input="hi\nbreak\nagain\n",
        env=clean_env(OPENAI_API_KEY="test-key"),
    )
    assert code == 1, err
    assert out.splitlines() == ["Hello from the server.", "Still here."]
    assert err == "error: ModelError: HTTP 400: bad things\n"
    first = server.bodies[0]
    assert first["model"] == "gpt-test"
    assert {t["function"]["name"] for t in first["tools"]} == {t.name for t in DEMO_TOOLS}
    assert first["messages"][-1] == {"role": "user", "content": "hi"}


async def test_cli_anthropic_model(server: FakeServer) -> None:
    server.push(
        sse_reply(anthropic_sse(anthropic_message_events([{"type": "text", "text": "Bonjour!"}])))
    )
    code, out, err = await run_cli_async(
        "--model",
        "anthropic:claude-test",
        "--base-url",
        server.base_url,
        input="hi\n",
        env=clean_env(ANTHROPIC_API_KEY="test-key"),
    )
    assert code == 0, err
    assert out == "Bonjour!\n"
    assert server.bodies[0]["model"] == "claude-test"
