"""The terminal demo in a pseudo-terminal, used as a person uses it (through pexpect).

Every wait is a pexpect ``expect`` with a generous timeout; nothing here measures time.
The slow ``--speed`` of the streaming tests only makes sure that the end of the story
cannot have been printed yet when its first words are seen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_session._cli._chat import PROMPT

pexpect = pytest.importorskip("pexpect")

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals need a POSIX system"),
    # pexpect forks; newer Pythons warn about forking a process that has threads.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
    pytest.mark.slow,
]

TIMEOUT = 30
SLOW = "0.05"  # seconds per word: the story takes seconds, its first words come at once
STORY_END = "happily ever after."
EDIT = "change one argument (name=value) or give them all (a JSON object): "

# pexpect has no type hints: a child is Any.
Child = Any
Spawn = Callable[..., Child]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    children: list[Child] = []
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TRIO_SESSION_", "OPENAI_", "ANTHROPIC_"))
    }
    env["HOME"] = str(tmp_path)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")

    def start(*args: str, speed: str = "0") -> Child:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "trio_session", "--plain", "--no-color", "--speed", speed, *args],
            encoding="utf-8",
            timeout=TIMEOUT,
            env=env,
            dimensions=(50, 250),
        )
        children.append(child)
        child.expect_exact(PROMPT)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def exits_cleanly(child: Child) -> None:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def leaves_with_ctrl_d(child: Child) -> None:
    """Wait for the prompt, press Ctrl-D, and see the chat exit cleanly."""
    child.expect_exact(PROMPT)
    child.sendeof()
    exits_cleanly(child)


def telling_a_story(spawn: Spawn) -> Child:
    """A chat whose slow story has begun: its first words are on the screen."""
    child = spawn(speed=SLOW)
    child.sendline("tell me a story")
    child.expect_exact("Once upon")
    return child


def test_banner_and_new_session(spawn: Spawn) -> None:
    child = spawn()
    banner = child.before
    assert "trio-session: chatting with the offline demo agent." in banner
    assert "(new)" in banner
    child.sendline("/help")
    child.expect_exact("/sessions  list the stored sessions")
    leaves_with_ctrl_d(child)


def test_streaming_is_incremental(spawn: Spawn) -> None:
    child = telling_a_story(spawn)
    # The first words are on the screen while the last ones are still to come.
    assert STORY_END not in child.buffer
    child.expect_exact("a small task lived in a nursery.")
    assert STORY_END not in child.buffer
    child.expect_exact(STORY_END)
    child.expect_exact("(1 tick,")
    leaves_with_ctrl_d(child)


def test_ctrl_c_aborts_only_the_execution(spawn: Spawn) -> None:
    child = telling_a_story(spawn)
    child.sendintr()
    child.expect_exact("[aborted]")
    assert STORY_END not in child.before
    child.expect_exact(PROMPT)
    # The chat is still there, and the session too.
    child.sendline("what is 2 + 3")
    child.expect_exact("2 + 3 = 5.")
    child.expect_exact(PROMPT)
    assert child.isalive()
    child.sendeof()
    exits_cleanly(child)


def test_line_typed_while_working_is_queued_into_the_execution(spawn: Spawn) -> None:
    child = telling_a_story(spawn)
    child.sendline("what is 6 * 7")
    child.expect_exact("[queued] what is 6 * 7")
    child.expect_exact(STORY_END)
    child.expect_exact("6 * 7 = 42.")
    answered = child.before
    child.expect_exact("(3 ticks,")
    # No prompt in between: the story and the queued question are one execution.
    assert PROMPT not in answered
    assert '[tool calculator(expression="6 * 7")] -> 42' in answered
    leaves_with_ctrl_d(child)


def test_events_view_shows_the_queued_message_delivered(spawn: Spawn) -> None:
    child = spawn(speed=SLOW)
    child.sendline("/events")
    child.expect_exact("[events view on]")
    child.expect_exact(PROMPT)
    child.sendline("tell me a story")
    child.expect_exact('"delta": "Once "')
    child.sendline("what time is it")
    child.expect_exact('{"type": "message_queued"')
    child.expect_exact('{"type": "message_delivered"')
    child.expect_exact('"name": "clock"')
    child.expect_exact('{"type": "execution_end"')
    child.expect_exact('"status": "completed"')
    child.expect_exact(PROMPT)
    child.sendline("/events")
    child.expect_exact("[events view off]")
    child.sendline("/quit")
    exits_cleanly(child)


def test_confirmations_yes_no_always(spawn: Spawn) -> None:
    child = spawn()
    child.sendline("remember to buy milk")
    child.expect_exact('Save the note "buy milk" in this session?')
    child.expect_exact("[y]es / [n]o / [a]lways / [e]dit: ")
    child.sendline("y")
    child.expect_exact("Done. Saved note #1: buy milk.")
    child.expect_exact(PROMPT)

    child.sendline("remember eggs")
    child.expect_exact("[e]dit: ")
    child.sendline("n")
    child.expect_exact("OK, I did not run notes (denied by the user).")
    child.expect_exact(PROMPT)

    child.sendline("remember cheese")
    child.expect_exact("[e]dit: ")
    child.sendline("a")
    child.expect_exact("Saved note #2: cheese")
    child.expect_exact(PROMPT)
    child.sendline("remember bread")
    child.expect_exact("Saved note #3: bread")
    assert "[e]dit" not in child.before
    assert "[notes approved: remembered for this session]" in child.before
    child.expect_exact(PROMPT)

    child.sendline("show my notes")
    child.expect_exact("Your notes: 1. buy milk; 2. cheese; 3. bread")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    exits_cleanly(child)


def test_confirmation_edit_the_arguments(spawn: Spawn) -> None:
    child = spawn()
    child.sendline("remember to buy milk")
    child.expect_exact("[e]dit: ")
    child.sendline("e")
    child.expect_exact(EDIT)
    child.sendline("nope")
    child.expect_exact("error: type name=value")
    child.expect_exact(EDIT)
    child.sendline('{"action": "add", "text": 5}')
    child.expect_exact("error: invalid arguments for tool 'notes'")
    child.expect_exact(EDIT)
    child.sendline("text=oat milk")
    child.expect_exact('[tool notes(action="add", text="oat milk")] -> Saved note #1: oat milk')
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    exits_cleanly(child)


def test_ctrl_c_twice_at_the_prompt_leaves(spawn: Spawn) -> None:
    child = spawn()
    child.sendintr()
    child.expect_exact("(Ctrl-C again or Ctrl-D to leave)")
    child.expect_exact(PROMPT)
    child.sendintr()
    exits_cleanly(child)


def test_session_is_resumed(spawn: Spawn, tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    child = spawn("--session", "mine", "--db", db)
    child.sendline("remember to water the plants")
    child.expect_exact("[e]dit: ")
    child.sendline("y")
    child.expect_exact("Saved note #1: water the plants")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    exits_cleanly(child)

    again = spawn("--session", "mine", "--db", db)
    assert "session mine (resumed, 4 messages)" in again.before
    again.sendline("/sessions")
    again.expect_exact("* mine  ")
    again.expect_exact("  remember to water the plants")
    again.sendline("show my notes")
    again.expect_exact("Your notes: 1. water the plants")
    again.expect_exact(PROMPT)
    again.sendline("/new")
    again.expect_exact("(new)")
    again.expect_exact(PROMPT)
    again.sendline("show my notes")
    again.expect_exact("You have no notes yet.")
    leaves_with_ctrl_d(again)
