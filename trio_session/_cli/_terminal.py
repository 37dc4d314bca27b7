"""The chat's front end for a person at a terminal, with the ``cli`` extra.

prompt_toolkit keeps an input line at the bottom of the screen, always: line
editing, history kept per user, Alt-Enter for a new line, a bracketed paste as
one message. It runs in a worker thread (``trio.to_thread``): prompt_toolkit
brings its own asyncio loop, which cannot share trio's thread.

Everything the chat writes goes *above* that line: complete lines through
prompt_toolkit's thread-safe `StdoutProxy`, the unfinished part of the answer
in a live area just over the prompt, with a spinner and the elapsed time while
the model has said nothing yet. With rich (and colors), the answer is rendered
as markdown one finished block at a time.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import trio

__all__ = ["Terminal", "available"]

SPINNER: Final = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
"""The spinner's frames."""

_FENCE: Final = re.compile(r"^\s*(```|~~~)", re.MULTILINE)


def available() -> bool:
    """Whether prompt_toolkit (the ``cli`` extra) is installed."""
    try:
        import prompt_toolkit  # noqa: F401
    except ImportError:
        return False
    return True


class Terminal(io.TextIOBase):
    """The chat's input line and output, for a person at a terminal.

    It is a text stream: `write` puts complete lines above the input line and
    keeps the unfinished one in the live area.

    Args:
        history: The file that keeps the input history (made if missing).
        markdown: Render the answer as markdown (needs rich).
    """

    def __init__(self, *, history: Path | None, markdown: bool) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        store: Any = InMemoryHistory()
        if history is not None:
            try:
                history.parent.mkdir(parents=True, exist_ok=True)
                store = FileHistory(str(history))
            except OSError:
                pass  # no history file: the history lasts as long as the chat
        self._session: Any = PromptSession(
            history=store,
            key_bindings=keys,
            erase_when_done=True,
            refresh_interval=0.1,
            enable_suspend=True,
        )
        # Held by the proxy's write thread while it writes straight to the terminal
        # (no prompt running), and taken by each prompt before it first draws.
        self._writing = threading.Lock()
        self._proxy: Any = _stdout_proxy(self._writing)
        self._markdown = markdown and _has_rich()
        self._prompt = ""
        self._pending = ""  # written, not yet a complete line
        self._answer = ""  # the answer's unfinished markdown block
        self._busy_since: float | None = None
        self._stopping = False

    # -- what prompt_toolkit shows (called in its thread) -------------------

    def _message(self) -> Any:
        from prompt_toolkit.formatted_text import ANSI

        live = self._answer or self._pending
        if not live and self._busy_since is not None:
            elapsed = time.monotonic() - self._busy_since
            frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
            live = f"\x1b[2m{frame} working {elapsed:.1f}s\x1b[0m"
        return ANSI(f"{live}\n{self._prompt}" if live else self._prompt)

    # -- what the chat calls ------------------------------------------------

    def set_prompt(self, text: str) -> None:
        """What the input line asks: the prompt, or a confirmation's question."""
        self._prompt = text

    def busy(self, running: bool) -> None:
        """An execution runs (show the spinner when nothing streams) or ended."""
        self._busy_since = time.monotonic() if running else None

    def write(self, text: str) -> int:
        self._end_answer()
        self._pending += text
        lines, _, self._pending = self._pending.rpartition("\n")
        if _:
            self._proxy.write(lines + "\n")
            self._proxy.flush()
        return len(text)

    def flush(self) -> None:
        return

    def answer(self, text: str) -> None:
        """A piece of the answer: markdown, rendered one finished block at a time."""
        if not self._markdown:
            self.write(text)
            return
        self._answer += text
        # A block ends at a blank line outside a code fence.
        while (end := self._answer.find("\n\n")) >= 0:
            block = self._answer[: end + 2]
            if len(_FENCE.findall(block)) % 2:
                closing = _FENCE.search(self._answer, end + 2)
                if closing is None:
                    return
                end = self._answer.find("\n", closing.end())
                if end < 0:
                    return
                block = self._answer[: end + 1]
            self._answer = self._answer[len(block) :]
            self._print_markdown(block)

    def _end_answer(self) -> None:
        if self._answer:
            block, self._answer = self._answer, ""
            self._print_markdown(block)

    def end_answer(self) -> None:
        """The answer is over: render what is left of it."""
        self._end_answer()

    def _print_markdown(self, block: str) -> None:
        from rich.console import Console
        from rich.markdown import Markdown

        buffer = io.StringIO()
        width = shutil.get_terminal_size().columns
        Console(file=buffer, force_terminal=True, width=width, color_system="standard").print(
            Markdown(block.strip("\n"))
        )
        self._proxy.write(buffer.getvalue())
        self._proxy.flush()

    # -- input --------------------------------------------------------------

    async def read_lines(
        self, send: trio.MemorySendChannel[str | None], interrupt: Callable[[], None]
    ) -> None:
        """Read lines into ``send`` (None at the end: Ctrl-D); Ctrl-C calls ``interrupt``."""
        async with send:
            while True:
                try:
                    # Not abandoned on cancel: `stop` ends the prompt, so the terminal
                    # is always given back in its normal mode.
                    line = await trio.to_thread.run_sync(self._read)
                except KeyboardInterrupt:
                    interrupt()
                    continue
                except EOFError:
                    break
                self._proxy.write(f"{self._prompt}{line}\n")
                self._proxy.flush()
                send.send_nowait(line)
            send.send_nowait(None)

    def _read(self) -> str:
        if self._stopping:
            raise EOFError
        line: str = self._session.prompt(self._message, pre_run=self._before_drawing)
        return line

    def _before_drawing(self) -> None:
        # The prompt is registered as running, so the proxy's next write goes through
        # it (above the input line); a write already going straight to the terminal
        # ends first, or the prompt would draw under it and later erase it.
        with self._writing:
            pass
        if self._stopping:
            self._session.app.exit(exception=EOFError())

    def stop(self) -> None:
        """End the input: the prompt returns, and the terminal is as it was."""
        self._stopping = True
        self._end_answer()
        if self._pending:
            self._proxy.write(self._pending + "\n")
            self._pending = ""
        app = self._session.app
        if app.is_running:
            app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()))
        self._proxy.close()


def _stdout_proxy(writing: threading.Lock) -> Any:
    """prompt_toolkit's `StdoutProxy`, whose direct writes a starting prompt waits for.

    The proxy's thread looks whether a prompt runs, then writes through it or, if
    none, straight to the terminal. Between prompts (one per line, each in a
    worker thread) the next one could start drawing in between the look and the
    write: the text would land inside the new input area and be erased with it at
    the next redraw. Looking and writing under ``writing`` closes that gap.
    """
    import asyncio

    from prompt_toolkit.patch_stdout import StdoutProxy

    class _Proxy(StdoutProxy):
        def _write_and_flush(self, loop: asyncio.AbstractEventLoop | None, text: str) -> None:
            with writing:
                super()._write_and_flush(self._get_app_loop(), text)

    return _Proxy(raw=True, sleep_between_writes=0.02)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
