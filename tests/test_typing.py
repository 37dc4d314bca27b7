"""The public types reach the user: `mypy --strict` accepts a user program and refuses mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

GOOD = '''
from typing import assert_type

import trio

from trio_session import (
    Agent, Reply, ScriptedModel, SendResult, SessionExecutionHandle, open_session, procedure, tool
)


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"Sunny in {city}"


@procedure
async def add(a: int, b: int) -> int:
    return a + b


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
    "wrong_message_type": 'await session.send(123)',
    "unknown_keyword": 'await session.send("hi", max_tick=3)',
    "field_as_wrong_type": 'n: int = (await session.send("hi").result).response',
    "procedure_wrong_argument": 'await add("1", 2)',
}

BAD_TEMPLATE = '''
from trio_session import Agent, ScriptedModel, open_session, procedure


@procedure
async def add(a: int, b: int) -> int:
    return a + b


async def main() -> None:
    async with open_session(Agent(ScriptedModel(["hi"]))) as session:
        {line}
'''


def test_mypy_accepts_a_user_program_and_refuses_mistakes(tmp_path: Path) -> None:
    # mypy is a developers' tool (the dev group): .ci/run runs this file again once it is in.
    pytest.importorskip("mypy")
    # One mypy run for every program: each run costs most of a minute on a busy machine.
    (tmp_path / "good.py").write_text(GOOD)
    for mistake, line in BAD.items():
        (tmp_path / f"bad_{mistake}.py").write_text(BAD_TEMPLATE.format(line=line))
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
    for mistake in BAD:
        # Each mistake is refused, on the line that makes it.
        assert any(f"bad_{mistake}.py:12:" in e for e in errors), (mistake, done.stdout)
