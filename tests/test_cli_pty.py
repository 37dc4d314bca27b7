"""The chat with its line editor (the ``cli`` extra), in a pseudo-terminal, read as a screen.

pexpect runs the chat; pyte, a terminal emulator, turns what it prints into the screen a
person would see, because prompt_toolkit redraws its input line in place. Every wait is a
pexpect read with a timeout, until the expected text is on the screen; nothing sleeps.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")
pytest.importorskip("prompt_toolkit")
pytest.importorskip("rich")

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals need a POSIX system"),
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

TIMEOUT = 20
ROWS, COLUMNS = 60, 120
STORY_END = "happily ever after."
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
UP = "\x1b[A"


class Screen:
    """A chat in a pseudo-terminal, and the screen it draws."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)

    @property
    def text(self) -> str:
        return "\n".join(self.screen.display)  # unstripped: "you> " keeps its space

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def expect(self, text: str, count: int = 1) -> None:
        """Read until ``text`` is on the screen (``count`` times)."""
        # The input line is redrawn ten times a second, so reads never time out by
        # themselves: the wait is bounded here, as pexpect's own expect bounds it.
        # A read waits at most until the deadline (an idle screen prints nothing), and
        # a timeout shows the screen as it is.
        deadline = time.monotonic() + TIMEOUT
        while self.text.count(text) < count:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise pexpect.TIMEOUT("deadline")
                self.stream.feed(self.child.read_nonblocking(65536, timeout=left))
            except pexpect.TIMEOUT:
                raise AssertionError(
                    f"{text!r} (x{count}) not on the screen:\n{self.text}"
                ) from None


Spawn = Callable[..., Screen]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    children: list[Any] = []

    def start(*args: str, speed: str = "0", **env_extra: str) -> Screen:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TRIO_SESSION_", "OPENAI_", "ANTHROPIC_"))
            and key not in ("NO_COLOR",)
        }
        env.update(
            HOME=str(tmp_path),
            XDG_DATA_HOME=str(tmp_path / "data"),
            TERM="xterm-256color",
            # pexpect answers no cursor-position request: do not ask.
            PROMPT_TOOLKIT_NO_CPR="1",
            **env_extra,
        )
        child = pexpect.spawn(
            sys.executable,
            ["-m", "trio_session", "--speed", speed, *args],
            encoding="utf-8",
            timeout=TIMEOUT,
            env=env,
            dimensions=(ROWS, COLUMNS),
        )
        children.append(child)
        screen = Screen(child)
        screen.expect("you> ")
        return screen

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def leaves(screen: Screen) -> None:
    screen.child.sendcontrol("d")
    screen.child.expect(pexpect.EOF)
    screen.child.close()
    assert screen.child.exitstatus == 0


def test_history_recall_with_up_is_kept_per_user(spawn: Spawn, tmp_path: Path) -> None:
    screen = spawn()
    screen.child.send("what is 2 + 3\r")
    screen.expect("2 + 3 = 5.")
    screen.expect("you> ", count=2)  # the echoed line, and the new input line
    screen.child.send(UP)
    screen.expect("you> what is 2 + 3", count=2)  # recalled into the input line
    screen.child.send("\r")
    screen.expect("2 + 3 = 5.", count=2)
    leaves(screen)
    assert "what is 2 + 3" in (tmp_path / "data" / "trio-session" / "history").read_text()

    again = spawn()
    again.child.send(UP)
    again.expect("you> what is 2 + 3")
    again.child.send("\r")
    again.expect("2 + 3 = 5.")
    leaves(again)


def test_bracketed_paste_is_one_message(spawn: Spawn) -> None:
    screen = spawn()
    screen.child.send(f"{PASTE_START}first line\nsecond line\nthird line{PASTE_END}\r")
    screen.expect("(1 tick,")
    text = screen.text
    assert 'You said "first line' in text
    assert "[queued" not in text
    assert text.count("(1 tick,") == 1
    leaves(screen)


def test_alt_enter_makes_a_multi_line_message(spawn: Spawn) -> None:
    screen = spawn()
    screen.child.send("one\x1b\rtwo\r")
    screen.expect("(1 tick,")
    assert 'You said "one' in screen.text
    assert screen.text.count("(1 tick,") == 1
    leaves(screen)


def test_typing_during_a_stream_stays_on_the_input_line(spawn: Spawn) -> None:
    screen = spawn(speed="0.05")
    screen.child.send("tell me a story\r")
    screen.expect("Once upon")
    screen.child.send("zebra")
    screen.expect("you> zebra")
    screen.expect(STORY_END)
    screen.expect("(1 tick,")
    story = [line for line in screen.lines() if not line.startswith("you>")]
    assert not any("zebra" in line for line in story)
    screen.expect("you> zebra")  # still on the input line, under the answer
    screen.child.send("\r")  # now it is sent, as a message of its own
    screen.expect('You said "zebra"')
    leaves(screen)


def test_spinner_while_the_model_waits(spawn: Spawn) -> None:
    # A server that accepts the connection and never answers: the model is "thinking".
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        screen = spawn(
            "--model", "openai:m", "--base-url", f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="k"
        )
        screen.child.send("hello?\r")
        screen.expect(" working ")
        frame = next(line for line in screen.lines() if " working " in line)
        assert frame[0] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
        assert frame.rstrip().endswith("s")
        screen.child.sendcontrol("c")
        screen.expect("[aborted]")
        leaves(screen)


def test_markdown_is_rendered(spawn: Spawn) -> None:
    screen = spawn()
    screen.child.send("show me some markdown\r")
    screen.expect("another one")
    text = screen.text
    assert "• a list item" in text
    assert "**bold**" not in text and "## Markdown" not in text
    leaves(screen)


def test_markdown_is_plain_with_no_color(spawn: Spawn) -> None:
    screen = spawn(NO_COLOR="1")
    screen.child.send("show me some markdown\r")
    screen.expect("- another one")
    assert "**bold**" in screen.text
    leaves(screen)


def test_resume_a_stored_session(spawn: Spawn, tmp_path: Path) -> None:
    screen = spawn("--session", "garden", "--db", str(tmp_path / "chat.db"))
    screen.child.send("what is 1 + 1\r")
    screen.expect("1 + 1 = 2.")
    screen.child.send("/new\r")
    screen.expect("(new)", count=2)
    screen.child.send("/sessions\r")
    screen.expect("what is 1 + 1")
    screen.child.send("/resume garden\r")
    screen.expect("session garden (resumed, 4 messages)")
    leaves(screen)
