"""The terminal chat of ``python -m trio_session``.

One nursery holds the chat: a task that reads the input lines (stdin in a
worker thread, so the event loop never blocks on the terminal), a task that
turns SIGINT into "abort the running execution", and the conversation loop,
which sends each line and renders the execution's events as they arrive.

While an execution runs, a second task takes the lines typed meanwhile: the
answer to a pending confirmation, or a message queued into the running
execution with ``handle.queue_message``.
"""

from __future__ import annotations

import codecs
import enum
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TextIO, cast

import attrs
import trio

from .._agent import Agent
from .._errors import InvalidToolArguments, UnknownToolUse
from .._events import (
    ExecutionEnd,
    StreamEvent,
    ToolConfirmationRequired,
    ToolConfirmationResult,
)
from .._handle import SessionExecutionHandle
from .._session import Session, open_session
from ..stores import SessionSnapshot, SessionStore
from ._input import Confirmations, Edit, Retry, Submit
from ._render import BOLD, DIM, RED, USER_ABORT, YELLOW, EventRenderer, Piece, format_call
from ._terminal import Terminal

__all__ = ["HELP", "PROMPT", "Chat", "ChatOptions", "read_lines"]

PROMPT: Final = "you> "
"""What the interactive chat shows when it waits for a line."""

HELP: Final = """\
Commands:
  /events    show every event as a JSON line (again: back to the normal view)
  /new       start a new session
  /sessions  list the stored sessions
  /resume ID continue a stored session
  /quit      leave (Ctrl-D does too)
While an answer streams: type a line to queue it into the running execution;
Ctrl-C aborts the execution and returns to the prompt; Ctrl-C at the prompt twice leaves."""

Approve = Literal["yes", "no"]


@attrs.frozen
class ChatOptions:
    """How the chat behaves.

    Args:
        interactive: A person at a terminal: show a prompt, read lines while an
            execution runs (queued messages, confirmation answers), ask before
            running a tool that needs confirmation. Otherwise lines are handled
            one after the other and confirmations answered by ``approve``.
        approve: Answer every confirmation ``"yes"`` or ``"no"`` without asking;
            None asks when interactive and denies otherwise.
        show_events: Start in the raw event view (one JSON line per event).
        color: Use ANSI colors for everything that is not the answer itself.
        handle_sigint: Turn SIGINT (Ctrl-C) into `Chat.interrupt`.
        banner: Printed once when the chat starts (interactive only).
    """

    interactive: bool = False
    approve: Approve | None = attrs.field(default=None)
    show_events: bool = False
    color: bool = False
    handle_sigint: bool = False
    banner: str | None = None

    @approve.validator
    def _check_approve(self, _attr: object, value: object) -> None:
        if value not in (None, "yes", "no"):
            raise ValueError(f"ChatOptions.approve must be 'yes', 'no' or None, got {value!r}")


async def read_lines(
    fd: int, send: trio.MemorySendChannel[str | None], *, encoding: str | None = None
) -> None:
    """Read lines from a file descriptor into ``send``; None marks the end of input.

    ``os.read`` runs in a worker thread, so the event loop never blocks on the
    terminal. Unlike ``sys.stdin.readline`` it holds no lock of the ``sys.stdin``
    object, so a read still pending when the program exits cannot stall the
    interpreter's shutdown.
    """
    decoder = codecs.getincrementaldecoder(encoding or _stdin_encoding())(errors="replace")
    pending = ""
    async with send:
        while True:
            try:
                data = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
            except OSError:  # no stdin at all (a closed descriptor): no input
                data = b""
            if not data:
                break
            pending += decoder.decode(data)
            *lines, pending = pending.split("\n")
            for line in lines:
                send.send_nowait(line.removesuffix("\r"))
        pending += decoder.decode(b"", final=True)
        if pending:
            send.send_nowait(pending.removesuffix("\r"))
        send.send_nowait(None)


def _stdin_encoding() -> str:
    return getattr(sys.stdin, "encoding", None) or "utf-8"


_NO_STORE: Final = "no stored sessions: run with --session ID or --db PATH to keep them"
_TITLE_LIMIT: Final = 60


class _Next(enum.Enum):
    """What comes after a command, besides a session id (/resume) or None (/new)."""

    LEAVE = enum.auto()
    STAY = enum.auto()


_LEAVE: Final = _Next.LEAVE
_STAY: Final = _Next.STAY


def _describe(snapshot: SessionSnapshot | None) -> tuple[str, str]:
    """When a stored session was last saved, and its title: its first user message."""
    if snapshot is None:
        return "", ""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(snapshot.updated_at))
    first = next((m.text for m in snapshot.timeline if m.role == "user" and m.text), "")
    title = " ".join(first.split())
    if len(title) > _TITLE_LIMIT:
        title = title[: _TITLE_LIMIT - 3] + "..."
    return when, title


class Chat:
    """A chat with an agent in a terminal, or driven by lines of text.

    Each line is sent to the session; the answer streams as it is produced,
    tool calls and their results are shown compactly as
    ``[tool name(args)] -> result``, and execution errors are printed as
    ``error: ...`` without ending the chat. Lines that start with ``/`` are
    commands: ``/events``, ``/new``, ``/sessions``, ``/help``, ``/quit``.

    Args:
        agent: What the sessions run.
        options: See `ChatOptions`.
        store: Where sessions are kept; None keeps them in memory.
        session_id: The session to open (and resume, when the store has it);
            a new one when None.
        out: Where the conversation is written.
        err: Where notices go when not interactive (interactive: ``out``).

    Example:
        >>> import io, trio
        >>> from trio_session._cli import demo_agent
        >>> async def main():
        ...     out = io.StringIO()
        ...     send, receive = trio.open_memory_channel(10)
        ...     send.send_nowait("what is 6 * 7")
        ...     send.close()
        ...     await Chat(demo_agent(delay=0), out=out).run(receive)
        ...     return out.getvalue()
        >>> print(trio.run(main), end="")
        Let me calculate that.
        [tool calculator(expression="6 * 7")] -> 42
        6 * 7 = 42.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        options: ChatOptions | None = None,
        store: SessionStore | None = None,
        session_id: str | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        terminal: Terminal | None = None,
    ) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"Chat takes an Agent, got {type(agent).__name__}")
        self.agent = agent
        self.options = options if options is not None else ChatOptions()
        self.store = store
        self.session_id = session_id
        self._terminal = terminal
        self._out: TextIO = (
            cast(TextIO, terminal)
            if terminal is not None
            else out
            if out is not None
            else sys.stdout
        )
        self._err: TextIO = err if err is not None else sys.stderr
        self._renderer = EventRenderer(
            interactive=self.options.interactive, show_events=self.options.show_events
        )
        self.session: Session | None = None
        inbox_send, self._inbox = trio.open_memory_channel[str | None](math.inf)
        self._inbox_send: trio.MemorySendChannel[str | None] = inbox_send
        self._col0 = True
        # The running execution, while one runs.
        self._busy = False
        self._handle: SessionExecutionHandle | None = None
        self._abort_requested = False
        self._quit = False
        self._failed = False
        self._armed = False
        # Per execution: confirmations asked, and those waiting for an answer.
        self._asked: set[str] = set()
        self._confirmations = Confirmations()

    @property
    def show_events(self) -> bool:
        """Whether the chat shows every event as a JSON line (``/events`` toggles it)."""
        return self._renderer.show_events

    # -- running ------------------------------------------------------------

    async def run(self, lines: trio.abc.ReceiveChannel[str] | None = None) -> int:
        """Chat until the input ends, ``/quit``, or a second Ctrl-C at the prompt.

        Args:
            lines: The input lines; stdin (read in a worker thread) when None.
                Closing the channel ends the input, like Ctrl-D.

        Returns:
            The exit status: 1 when not interactive and an execution did not
            complete (its error went to ``err``), else 0.

        Raises:
            SnapshotError: The stored session cannot be restored.
        """
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if self.options.handle_sigint:
                await nursery.start(self._watch_sigint)
            if lines is None and self._terminal is not None:
                nursery.start_soon(
                    self._terminal.read_lines, self._inbox_send.clone(), self.interrupt
                )
            elif lines is None:
                nursery.start_soon(read_lines, 0, self._inbox_send.clone())
            else:
                nursery.start_soon(self._pump, lines, self._inbox_send.clone())
            try:
                await self._chat()
            except Exception as exc:
                # Raised unwrapped below, not as the nursery's exception group.
                failure = exc
            finally:
                if self._terminal is not None:
                    self._terminal.stop()
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return 1 if self._failed and not self.options.interactive else 0

    def interrupt(self) -> None:
        """What Ctrl-C does: abort the running execution, else arm (then do) the exit.

        While an execution runs, it is aborted with reason ``"interrupted by
        user"`` and the chat returns to the prompt. At the prompt, the first
        call prints a hint and the second one ends the chat, like Ctrl-D.
        """
        if self._busy:
            handle = self._handle
            if handle is None:
                self._abort_requested = True
            elif not handle.done:
                handle.abort(USER_ABORT)
            return
        if self._armed:
            self._inbox_send.send_nowait(None)
            return
        self._armed = True
        self._line(self._style("(Ctrl-C again or Ctrl-D to leave)", DIM))
        self._prompt()

    async def _watch_sigint(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.interrupt()

    @staticmethod
    async def _pump(
        lines: trio.abc.ReceiveChannel[str], send: trio.MemorySendChannel[str | None]
    ) -> None:
        async with send:
            async for line in lines:
                send.send_nowait(line)
            send.send_nowait(None)

    async def _chat(self) -> None:
        if self.options.interactive and self.options.banner:
            self._line(self.options.banner)
        session_id = self.session_id
        while True:
            async with open_session(self.agent, session_id=session_id, store=self.store) as session:
                self.session = session
                self._announce(session, resumed=session_id is not None and bool(session.timeline))
                following = await self._conversation(session)
            if following is _LEAVE or following is _STAY:
                return
            session_id = following

    def _announce(self, session: Session, *, resumed: bool) -> None:
        if resumed:
            self._note(f"session {session.id} (resumed, {len(session.timeline)} messages)")
        elif self.store is not None or self.options.interactive:
            self._note(f"session {session.id} (new)")

    async def _conversation(self, session: Session) -> str | _Next | None:
        """Handle lines until the input ends (`_LEAVE`), ``/new`` (None) or ``/resume ID``."""
        while True:
            if session.queued_messages and not self._quit:
                self._note("[answering the queued messages]")
                await self._execute(session.render)
                continue
            if self._quit:
                return _LEAVE
            self._prompt()
            line = await self._inbox.receive()
            if line is None:
                self._end_line()
                return _LEAVE
            self._col0 = True  # the terminal echoed the line and its newline
            self._armed = False
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                action = await self._command(text, session)
                if action is not _STAY:
                    return action
                continue
            await self._execute(functools.partial(session.send, text))

    async def _command(self, text: str, session: Session) -> str | _Next | None:
        command, *arguments = text.split()
        command = command.lower()
        if command in ("/quit", "/exit"):
            return _LEAVE
        if command == "/new":
            return None
        if command == "/resume":
            return await self._resume(arguments, session)
        if command == "/events":
            self._toggle_events()
        elif command == "/sessions":
            await self._list_sessions(session)
        elif command == "/help":
            self._line(HELP)
        else:
            self._line(f"unknown command {command} (try /help)")
        return _STAY

    def _toggle_events(self) -> None:
        self._renderer.show_events = not self.show_events
        self._line(self._style(f"[events view {'on' if self.show_events else 'off'}]", DIM))

    async def _list_sessions(self, session: Session) -> None:
        if self.store is None:
            self._line(_NO_STORE)
            return
        ids = await self.store.list()
        if not ids:
            self._line("no stored sessions")
        rows: list[tuple[str, str, str]] = []
        for sid in ids:
            snapshot = await self.store.load(sid)
            rows.append((sid, *_describe(snapshot)))
        width = max((len(sid) for sid, _, _ in rows), default=0)
        for sid, when, title in rows:
            marker = "*" if sid == session.id else " "
            self._line(f"{marker} {sid.ljust(width)}  {when}  {title}".rstrip())

    async def _resume(self, arguments: list[str], session: Session) -> str | _Next:
        if self.store is None:
            self._line(_NO_STORE)
            return _STAY
        if len(arguments) != 1:
            self._line("usage: /resume ID (the ids are in /sessions)")
            return _STAY
        (target,) = arguments
        if target == session.id:
            self._line(f"already in session {target}")
            return _STAY
        if target not in await self.store.list():
            self._line(f"no stored session {target!r} (see /sessions)")
            return _STAY
        return target

    # -- one execution ------------------------------------------------------

    async def _execute(self, start: Callable[[], Awaitable[SessionExecutionHandle]]) -> None:
        self._busy = True
        if self._terminal is not None:
            self._terminal.busy(True)
        self._renderer.start()
        self._asked.clear()
        try:
            handle = await start()
            self._handle = handle
            if self._abort_requested:
                handle.abort(USER_ABORT)
            async with trio.open_nursery() as nursery:
                if self.options.interactive:
                    nursery.start_soon(self._take_input, handle)
                async with handle.events.subscribe() as events:
                    async for event in events:
                        self._show(event, handle)
                nursery.cancel_scope.cancel()
            # Until the final save is done, so /sessions and the next send see it.
            await handle.wait()
        finally:
            self._busy = False
            if self._terminal is not None:
                self._terminal.busy(False)
                self._terminal.end_answer()
            self._handle = None
            self._abort_requested = False
            self._confirmations.clear()

    async def _take_input(self, handle: SessionExecutionHandle) -> None:
        while True:
            line = await self._inbox.receive()
            if line is None:
                # Ctrl-D while it works: let the answer finish, then leave.
                self._quit = True
                return
            self._col0 = True
            self._on_line_while_running(line, handle)

    def _on_line_while_running(self, line: str, handle: SessionExecutionHandle) -> None:
        if self._confirmations:
            self._answer(line, handle)
            return
        text = line.strip()
        if not text:
            return
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command == "/events":
                self._toggle_events()
            elif command in ("/quit", "/exit"):
                self._quit = True
                handle.abort("quit")
            elif command == "/help":
                self._line(HELP)
            else:
                self._line(self._style(f"[{command} waits until the answer is done]", DIM))
            return
        session = self.session
        before = len(session.queued_messages) if session is not None else 0
        handle.queue_message(text)
        if session is not None and len(session.queued_messages) > before:
            # Past its last tick: the message waits for the next execution.
            self._line(self._style(f"[queued for the next answer] {text}", DIM))

    # -- confirmations ------------------------------------------------------

    def _confirmation_required(
        self, event: ToolConfirmationRequired, handle: SessionExecutionHandle
    ) -> None:
        self._asked.add(event.tool_use_id)
        policy = self.options.approve
        if policy is None and not self.options.interactive:
            policy = "no"
        if policy is None:
            if self._confirmations.add(event):
                self._ask(event)
            return
        approved = policy == "yes"
        try:
            handle.submit_tool_result(
                event.tool_use_id,
                approved=approved,
                reason=None if approved else "denied by --approve no",
            )
        except UnknownToolUse:
            return  # answered by someone else in the meantime
        if not self.show_events:  # there, the tool_confirmation_result line says it
            self._line(self._style(f"[confirm {event.name}: {event.message}] -> {policy}", YELLOW))

    def _ask(self, event: ToolConfirmationRequired) -> None:
        self._line(self._style(f"? {format_call(event.name, event.input)}", YELLOW))
        self._line(f"  {event.message}")
        self._question()

    def _answer(self, line: str, handle: SessionExecutionHandle) -> None:
        action = self._confirmations.answer(line)
        if isinstance(action, Retry):
            self._retry(action.message)
        elif isinstance(action, Edit):
            self._line(f"  the arguments now: {action.arguments}")
            self._question()
        else:
            self._submit(handle, action)

    def _submit(self, handle: SessionExecutionHandle, answer: Submit) -> None:
        try:
            handle.submit_tool_result(
                answer.tool_use_id,
                approved=answer.approved,
                modified_arguments=answer.modified_arguments,
                reason=answer.reason,
                always=answer.always,
            )
        except InvalidToolArguments as exc:
            self._retry(f"error: {exc}")
            return
        except UnknownToolUse:
            self._line(self._style("[that confirmation is no longer pending]", DIM))
        self._next_confirmation()

    def _retry(self, message: str) -> None:
        self._line(self._style(message, RED))
        self._question()

    def _question(self) -> None:
        if self._terminal is not None:
            self._terminal.set_prompt(self._confirmations.question())
        else:
            self._write(self._confirmations.question())

    def _next_confirmation(self) -> None:
        following = self._confirmations.advance()
        if following is not None:
            self._ask(following)
        elif self._terminal is not None:
            self._prompt()

    def _confirmation_result(self, event: ToolConfirmationResult) -> None:
        calls = self._renderer.calls
        call = calls.get(event.tool_use_id)
        if call is not None and event.modified_arguments is not None:
            # The result line shows the arguments the tool really ran with.
            calls[event.tool_use_id] = (call[0], event.modified_arguments)
        ended, current = self._confirmations.ended(event.tool_use_id)
        if ended is not None:
            # Ended without our answer: the execution ended, or a timeout.
            self._line(self._style(f"[confirmation of {ended.name} ended: {event.reason}]", DIM))
            if current and self._confirmations:
                self._ask(self._confirmations.current)
            elif current and self._terminal is not None:
                self._prompt()
            return
        if event.tool_use_id not in self._asked and not self.show_events:
            name = calls.get(event.tool_use_id, ("the tool", {}))[0]
            verdict = "approved" if event.approved else "denied"
            self._line(self._style(f"[{name} {verdict}: {event.reason}]", DIM))

    # -- rendering ----------------------------------------------------------

    def _show(self, event: StreamEvent, handle: SessionExecutionHandle) -> None:
        if isinstance(event, ExecutionEnd) and not event.spawn_path:
            self._failed |= event.status != "completed"
        self._emit(self._renderer.render(event))
        if isinstance(event, ToolConfirmationRequired):
            self._confirmation_required(event, handle)
        elif isinstance(event, ToolConfirmationResult):
            self._confirmation_result(event)

    def _emit(self, pieces: list[Piece]) -> None:
        for piece in pieces:
            if piece.failure and not self.options.interactive:
                self._break()
                self._err.write(piece.text + "\n")
                self._err.flush()
            elif piece.answer and self._terminal is not None:
                self._terminal.answer(piece.text)
                self._col0 = True  # the terminal ends the answer's lines itself
            elif piece.line:
                if self._terminal is not None:
                    self._terminal.end_answer()
                self._break()
                if piece.text:
                    self._write(self._style(piece.text, piece.style) + "\n")
            else:
                self._write(piece.text, piece.style)

    # -- output -------------------------------------------------------------

    def _style(self, text: str, code: str | None) -> str:
        if code is None or not self.options.color or not text:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def _write(self, text: str, code: str | None = None) -> None:
        if not text:
            return
        self._out.write(self._style(text, code))
        self._out.flush()
        self._col0 = text.endswith("\n")

    def _break(self) -> None:
        if not self._col0:
            self._write("\n")

    def _end_line(self) -> None:
        self._break()
        self._renderer.line_ended()

    def _line(self, text: str) -> None:
        self._end_line()
        self._write(text + "\n")

    def _note(self, text: str) -> None:
        """A notice: in the conversation when interactive, else on ``err``."""
        if self.options.interactive:
            self._line(self._style(text, DIM))
        else:
            self._err.write(text + "\n")
            self._err.flush()

    def _prompt(self) -> None:
        if self._terminal is not None:
            self._terminal.set_prompt(self._style(PROMPT, BOLD))
        elif self.options.interactive:
            self._end_line()
            self._write(self._style(PROMPT, BOLD))
