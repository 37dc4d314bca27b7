"""The public types reach the user: `mypy --strict` accepts a user program and refuses mistakes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# The README's snippets are terse (unannotated helpers), so untyped definitions are allowed,
# but their bodies are checked and the library's types must hold in them. The gateway
# snippet is left out: httpx types aiter_lines() as an AsyncIterator, without the aclose()
# that the snippet calls on the async generator it really is.
README_HEADER = "# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs\n"
README_BLOCKS = [
    block
    for block in re.findall(
        r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S
    )
    if "import httpx" not in block
]

GOOD = '''
from typing import assert_type

import trio

from trio_session import (
    Agent,
    ContentDelta,
    Decision,
    Event,
    Message,
    ModelRequest,
    Reply,
    ScriptedModel,
    SendResult,
    Session,
    SessionExecutionHandle,
    StreamEvent,
    TickContext,
    TickResult,
    ToolConfirmationRequired,
    ToolContext,
    ToolResultEvent,
    open_session,
    procedure,
    tool,
)


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"Sunny in {city}"


@procedure
async def add(a: int, b: int) -> int:
    return a + b


researcher = Agent(ScriptedModel(["330 m."]), name="researcher")


@tool
async def research(ctx: ToolContext, question: str) -> str:
    """Ask the researcher; a tool that uses its context."""
    assert_type(ctx.session, Session)
    seen: int = len(ctx.session.timeline)
    first: Message = ctx.session.timeline[0]
    if ctx.execution is not None:
        assert_type(ctx.execution, SessionExecutionHandle)
        ticks: int = ctx.execution.current_tick
        ctx.state["ticks"] = ticks
    ctx.emit("progress", {"seen": seen, "first": first.text, "tick": ctx.tick})
    child = await ctx.spawn(researcher, question, max_ticks=2)
    assert_type(child, SessionExecutionHandle)
    assert_type(await child.result, SendResult)
    return (await child.result).response + str(ctx.props.get("unit", ""))


def _double(x: int) -> int:
    """Double a number."""
    return 2 * x


double = tool(_double, name="double", description="Double it.")


@tool(requires_confirmation=True, confirmation_message="Delete {path}?")
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def build(ctx: TickContext) -> ModelRequest:
    return ctx.default_request()


async def on_tick_end(result: TickResult) -> None:
    print(result.tick, result.stop_reason, len(result.tool_results))


def on_message(message: Message, session: Session) -> None:
    print(message.text, session.id)


async def policy(event: ToolConfirmationRequired) -> Decision | None:
    return Decision(event.name != "delete_file")


hooked = Agent(
    ScriptedModel(["Hi"]),
    tools=[research, double, delete_file],
    build=build,
    should_continue=lambda result: None if result.should_continue else False,
    on_message=on_message,
    on_tick_start=lambda ctx: print(ctx.props, len(ctx.timeline)),
    on_tick_end=on_tick_end,
    on_complete=lambda result: print(result.response),
    on_error=lambda error: print(repr(error)),
    on_tool_confirmation=policy,
)


async def follow(session: Session, handle: SessionExecutionHandle) -> None:
    async with session.subscribe(types={"content_delta", "tool_result"}) as events:
        event = await events.receive()
        assert_type(event, Event)
        if event.type == "content_delta":
            assert_type(event, ContentDelta)
            print(event.delta)
        batch = await events.receive_batch(max_items=10)
        assert_type(batch, list[Event])
    async for each in handle:
        if each.type == "tool_result":
            assert_type(each, ToolResultEvent)
    def on_confirmation(event: Event) -> None:
        if event.type == "tool_confirmation_required":
            assert_type(event, ToolConfirmationRequired)
            handle.submit_tool_result(event.tool_use_id, approved=True)

    def log_any(event: StreamEvent) -> None:
        print(event.seq)

    handle.events.on("tool_confirmation_required", on_confirmation)
    handle.events.on(log_any)
    handle.events.on(lambda event: print(event.type))
    # Every Event is a StreamEvent: SPEC's ReceiveChannel[StreamEvent] holds.
    channel: trio.abc.ReceiveChannel[StreamEvent] = handle.events.subscribe()
    await channel.aclose()


model = ScriptedModel([Reply(tool_calls=[("get_weather", {"city": "Oslo"})]), "Sunny!"])


async def main() -> None:
    async with open_session(Agent(model, tools=[get_weather])) as session:
        handle = await session.send("Weather in Oslo?", max_ticks=2)
        assert_type(handle, SessionExecutionHandle)
        async for event in handle:
            print(event.seq, event.type)
        result = await session.send("again").result
        assert_type(result, SendResult)
        words: str = result.response
        print(words.upper())
        timed = session.send.with_timeout(5).with_context(user="a").with_metadata(k=1)
        assert_type(await timed("x").result, SendResult)
        assert_type(await add.use().with_timeout(1)(1, 2), int)
        assert_type(await add(1, 2).result, int)


trio.run(main)
'''

BAD = {
    "wrong_message_type": "await session.send(123)",
    "unknown_keyword": 'await session.send("hi", max_tick=3)',
    "field_as_wrong_type": 'n: int = (await session.send("hi").result).response',
    "procedure_wrong_argument": 'await add("1", 2)',
    # ToolContext is typed: spawn takes an Agent, execution may be None (dispatch).
    "spawn_wrong_argument": 'await ctx.spawn("researcher", "hi")',
    "execution_may_be_none": "ctx.execution.abort()",
    "spawn_result_wrong_type": "r: str = await (await ctx.spawn(session.agent)).result",
    # Hooks are typed: on_tick_end gets a TickResult (no props), on_complete one argument.
    "hook_wrong_parameter": 'Agent(ScriptedModel(["hi"]), on_tick_end=lambda ctx: ctx.props)',
    "hook_two_parameters": 'Agent(ScriptedModel(["hi"]), on_complete=lambda r, extra: None)',
    "hook_wrong_return": 'Agent(ScriptedModel(["hi"]), should_continue=lambda r: "yes")',
    "tool_name_not_str": "tool(add, name=3)",
    "subscription_unnarrowed": "print((await session.subscribe().receive()).delta)",
}

BAD_TEMPLATE = """
from trio_session import Agent, ScriptedModel, ToolContext, open_session, procedure, tool


@procedure
async def add(a: int, b: int) -> int:
    return a + b


async def main(ctx: ToolContext) -> None:
    async with open_session(Agent(ScriptedModel(["hi"]))) as session:
        {line}
"""


def test_mypy_accepts_a_user_program_and_the_readme_and_refuses_mistakes(tmp_path: Path) -> None:
    # mypy is a developers' tool (the dev group): .ci/run runs this file again once it is in.
    pytest.importorskip("mypy")
    # One mypy run for every program: each run costs most of a minute on a busy machine.
    (tmp_path / "good.py").write_text(GOOD)
    for mistake, line in BAD.items():
        (tmp_path / f"bad_{mistake}.py").write_text(BAD_TEMPLATE.format(line=line))
    assert len(README_BLOCKS) >= 5
    for index, block in enumerate(README_BLOCKS):
        (tmp_path / f"readme_{index}.py").write_text(README_HEADER + block)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if "good.py" in e], done.stdout
    assert not [e for e in errors if "readme_" in e], done.stdout
    for mistake in BAD:
        # Each mistake is refused, on the line that makes it, and only there.
        mine = [e for e in errors if f"bad_{mistake}.py:" in e]
        assert mine, (mistake, done.stdout)
        assert all(f"bad_{mistake}.py:12:" in e for e in mine), (mistake, done.stdout)
