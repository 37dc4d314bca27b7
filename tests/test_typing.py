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


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "program.py"
    program.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_a_first_user_program_type_checks(tmp_path: Path) -> None:
    done = mypy(tmp_path, GOOD)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("mistake", sorted(BAD))
def test_mistakes_are_refused(tmp_path: Path, mistake: str) -> None:
    done = mypy(tmp_path, BAD_TEMPLATE.format(line=BAD[mistake]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error:" in done.stdout
    assert "program.py:12:" in done.stdout, done.stdout
