"""A session process killed with SIGKILL at random moments, then restored."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from trio_session import Agent, ScriptedModel, SQLiteStore, open_session

TRIALS = 24

CHILD = textwrap.dedent(
    """
    import sys
    import trio
    from trio_session import Agent, ScriptedModel, SQLiteStore, open_session, tool
    from trio_session.models import Reply

    @tool
    def note(n: int) -> str:
        '''Note a number.

        Args:
            n: The number.
        '''
        return str(n)

    def show(event):
        line = f"{event.type} {event.seq}"
        if event.type == "entry_committed":
            line += f" {event.index}"
        print(line, flush=True)

    async def main(path):
        script = []
        for i in range(400):
            script.append(Reply("thinking " * 5, tool_calls=[("note", {"n": i})]))
            script.append("done " * 10)
        model = ScriptedModel(script, chunk_size=3)
        async with SQLiteStore(path) as store:
            async with open_session(
                Agent(model, tools=[note]), session_id="crash", store=store
            ) as session:
                for i in range(400):
                    handle = await session.send(f"question {i}")
                    handle.events.on(show)
                    await handle.wait()

    trio.run(main, sys.argv[1])
    """
)


def run_and_kill(path: Path, script: Path, lines_before_kill: int) -> tuple[int, list[list[str]]]:
    """Run the child until it printed that many lines, then SIGKILL it.

    Returns the line count at the kill, and every line it printed before it died
    (each event is printed, flushed, as it is published).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    lines: list[list[str]] = []
    try:
        for line in child.stdout:
            lines.append(line.split())
            if len(lines) >= lines_before_kill:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    at_kill = len(lines)
    lines.extend(line.split() for line in child.stdout.read().splitlines())
    child.stdout.close()
    return at_kill, lines


async def restore(path: Path) -> tuple[int, int]:
    """Open the killed session's file; (stored entries, first seq after restore)."""
    async with SQLiteStore(path) as store:
        # load checks transcript integrity: no orphan tool_use survives.
        snapshot = await store.load("crash")
        assert snapshot is not None
        stored = len(snapshot.timeline)
        async with open_session(
            Agent(ScriptedModel(["after the crash"])), session_id="crash", store=store
        ) as session:
            handle = await session.send("are you there?")
            await handle.wait()
            first = handle.events.history[0].seq
    return stored, first


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restore(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(9)
    report: list[tuple[int, int, int]] = []
    for trial in range(TRIALS):
        path = tmp_path / f"crash-{trial}.db"
        at_kill, printed = run_and_kill(path, script, rng.randrange(20, 1500))
        # A line cut by the kill is ignored.
        printed = [fields for fields in printed if len(fields) >= 2 and fields[1].isdigit()]
        seqs = [int(fields[1]) for fields in printed]
        committed = [int(fields[2]) for fields in printed if fields[0] == "entry_committed"]

        stored, first = trio.run(restore, path)
        # No seq handed out before the crash is handed out again.
        assert first > max(seqs)
        in_memory = max(committed) + 1 if committed else 0
        lost = in_memory - stored
        # At most the tick in flight: its assistant message and tool results (2 entries),
        # or the execution's input when its first save did not finish.
        assert 0 <= lost <= 2, (trial, in_memory, stored)
        report.append((trial, at_kill, lost))
    print("trial, events read before SIGKILL, entries lost:", report)
