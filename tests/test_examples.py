"""The examples in examples/ run offline, as users run them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    await load("quickstart").main()
    out = capsys.readouterr().out
    assert "Let me check the weather." in out
    assert "[calling get_weather({'city': 'Paris'})]" in out
    assert "[get_weather -> Sunny and 21 °C in Paris]" in out
    assert "response: 'It is sunny and 21 °C in Paris: a good day for a walk.'" in out
    assert "ticks: 2" in out


async def test_many_readers(capsys: pytest.CaptureFixture[str]) -> None:
    counts = await load("many_readers").main()
    out = capsys.readouterr().out
    assert "Three readers, one stream, nothing lost." in out
    assert counts["logger"] == counts["late"] > 10


async def test_approve_tools(capsys: pytest.CaptureFixture[str]) -> None:
    decisions = await load("approve_tools").main()
    out = capsys.readouterr().out
    # The two calls run concurrently, so they may be asked in either order.
    assert sorted(decisions) == ["approved with edits", "denied"]
    assert "delete_file: ok: deleted /tmp/cache.db-wal" in out
    assert "delete_file: error:" in out and "not that" in out
    assert "? Delete /home/me/thesis.tex?" in out


async def test_interrupt(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = await load("interrupt").main()
    out = capsys.readouterr().out
    assert outcomes == ["aborted", "ticks=2", "completed"]
    assert "[aborted: too long]" in out
    assert "Short answer: yes." in out


async def test_delegate(capsys: pytest.CaptureFixture[str]) -> None:
    forwarded = await load("delegate").main()
    out = capsys.readouterr().out
    assert forwarded > 5
    assert "spawn_start" in out and "spawn_end" in out
    assert "330 m" in out


def test_quickstart_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "response:" in done.stdout


async def test_record_replay(capsys: pytest.CaptureFixture[str]) -> None:
    recorded, replayed = await load("record_replay").main()
    out = capsys.readouterr().out
    assert "recorded: 'It is sunny and 21 °C in Paris.' (2 model calls)" in out
    assert "replayed: 'It is sunny and 21 °C in Paris.' (offline, 0 recordings left)" in out
    assert [e.type for e in recorded] == [e.type for e in replayed]
    assert "tool_result" in [e.type for e in replayed]
