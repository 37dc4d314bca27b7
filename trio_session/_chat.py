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
import functools
import json
import math
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Literal, TextIO

import attrs
import trio

from ._agent import Agent
from ._errors import InvalidToolArguments, UnknownToolUse
from ._events import (
    ContentDelta,
    ExecutionEnd,
    MessageEvent,
    MessageQueued,
    ReasoningDelta,
    StreamEvent,
    ToolCall,
    ToolConfirmationRequired,
    ToolConfirmationResult,
    ToolResultEvent,
)
from ._handle import SessionExecutionHandle
from ._messages import ContentBlock, ImageBlock, JsonBlock, ReasoningBlock, TextBlock
from ._serde import to_json
from ._session import Session, open_session
from .stores import SessionStore

__all__ = ["PROMPT", "USER_ABORT", "Chat", "ChatOptions", "format_call", "read_lines"]

PROMPT: Final = "you> "
"""What the interactive chat shows when it waits for a line."""

USER_ABORT: Final = "interrupted by user"
"""The abort reason of an execution stopped with Ctrl-C."""

_RESULT_LIMIT: Final = 400
_CALL_LIMIT: Final = 200

_DIM: Final = "2"
_BOLD: Final = "1"
_RED: Final = "31"
_YELLOW: Final = "33"
_CYAN: Final = "36"

HELP: Final = """\
Commands:
  /events    show every event as a JSON line (again: back to the normal view)
  /new       start a new session
  /sessions  list the stored sessions
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


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """Show a tool call compactly, as ``name(key=<JSON value>, ...)``.

    Example:
        >>> format_call("calculator", {"expression": "6 * 7"})
        'calculator(expression="6 * 7")'
    """
    shown = ", ".join(
        f"{key}={json.dumps(value, ensure_ascii=False, default=repr)}"
        for key, value in arguments.items()
    )
    return _shorten(f"{name}({shown})", _CALL_LIMIT)


def _format_content(blocks: Sequence[ContentBlock]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, TextBlock | ReasoningBlock):
            parts.append(block.text)
        elif isinstance(block, JsonBlock):
            parts.append(json.dumps(block.data, ensure_ascii=False, default=repr))
        elif isinstance(block, ImageBlock):
            parts.append(f"[image {block.media_type or ''}]".replace(" ]", "]"))
        else:
            parts.append(f"[{block.type}]")
    return _shorten(" ".join(" ".join(parts).split()), _RESULT_LIMIT)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        >>> from trio_session._demo import demo_agent
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
    ) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"Chat takes an Agent, got {type(agent).__name__}")
        self.agent = agent
        self.options = options if options is not None else ChatOptions()
        self.store = store
        self.session_id = session_id
        self._out: TextIO = out if out is not None else sys.stdout
        self._err: TextIO = err if err is not None else sys.stderr
        self.show_events = self.options.show_events
        self.session: Session | None = None
        inbox_send, self._inbox = trio.open_memory_channel[str | None](math.inf)
        self._inbox_send: trio.MemorySendChannel[str | None] = inbox_send
        self._col0 = True
        self._owner: tuple[tuple[str, ...], bool] | None = None
        # The running execution, while one runs.
        self._busy = False
        self._handle: SessionExecutionHandle | None = None
        self._abort_requested = False
        self._quit = False
        self._armed = False
        # Per execution: tool calls seen, confirmations asked / waiting for an answer.
        self._calls: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._asked: set[str] = set()
        self._waiting: deque[ToolConfirmationRequired] = deque()
        self._editing = False

    # -- running ------------------------------------------------------------

    async def run(self, lines: trio.abc.ReceiveChannel[str] | None = None) -> int:
        """Chat until the input ends, ``/quit``, or a second Ctrl-C at the prompt.

        Args:
            lines: The input lines; stdin (read in a worker thread) when None.
                Closing the channel ends the input, like Ctrl-D.

        Returns:
            The exit status: 0.

        Raises:
            SnapshotError: The stored session cannot be restored.
        """
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if self.options.handle_sigint:
                await nursery.start(self._watch_sigint)
            if lines is None:
                nursery.start_soon(read_lines, 0, self._inbox_send.clone())
            else:
                nursery.start_soon(self._pump, lines, self._inbox_send.clone())
            try:
                await self._chat()
            except Exception as exc:
                # Raised unwrapped below, not as the nursery's exception group.
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return 0

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
        self._line(self._style("(Ctrl-C again or Ctrl-D to leave)", _DIM))
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
                new = await self._conversation(session)
            if not new:
                return
            session_id = None

    def _announce(self, session: Session, *, resumed: bool) -> None:
        if resumed:
            self._note(f"session {session.id} (resumed, {len(session.timeline)} messages)")
        elif self.store is not None or self.options.interactive:
            self._note(f"session {session.id} (new)")

    async def _conversation(self, session: Session) -> bool:
        """Handle lines until the input ends; True when ``/new`` asked for a new session."""
        while True:
            if session.queued_messages and not self._quit:
                self._note("[answering the queued messages]")
                await self._execute(session.render)
                continue
            if self._quit:
                return False
            self._prompt()
            line = await self._inbox.receive()
            if line is None:
                self._end_line()
                return False
            self._col0 = True  # the terminal echoed the line and its newline
            self._armed = False
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                action = await self._command(text, session)
                if action == "quit":
                    return False
                if action == "new":
                    return True
                continue
            await self._execute(functools.partial(session.send, text))

    async def _command(self, text: str, session: Session) -> str | None:
        command = text.split()[0].lower()
        if command in ("/quit", "/exit"):
            return "quit"
        if command == "/new":
            return "new"
        if command == "/events":
            self._toggle_events()
        elif command == "/sessions":
            await self._list_sessions(session)
        elif command == "/help":
            self._line(HELP)
        else:
            self._line(f"unknown command {command} (try /help)")
        return None

    def _toggle_events(self) -> None:
        self.show_events = not self.show_events
        self._line(self._style(f"[events view {'on' if self.show_events else 'off'}]", _DIM))

    async def _list_sessions(self, session: Session) -> None:
        if self.store is None:
            self._line("no stored sessions: run with --session ID or --db PATH to keep them")
            return
        ids = await self.store.list()
        if not ids:
            self._line("no stored sessions")
        for sid in ids:
            self._line(f"{'*' if sid == session.id else ' '} {sid}")

    # -- one execution ------------------------------------------------------

    async def _execute(self, start: Callable[[], Awaitable[SessionExecutionHandle]]) -> None:
        self._busy = True
        self._calls.clear()
        self._asked.clear()
        self._owner = None
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
            self._handle = None
            self._abort_requested = False
            self._waiting.clear()
            self._editing = False

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
        if self._waiting:
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
                self._line(self._style(f"[{command} waits until the answer is done]", _DIM))
            return
        session = self.session
        before = len(session.queued_messages) if session is not None else 0
        handle.queue_message(text)
        if session is not None and len(session.queued_messages) > before:
            # Past its last tick: the message waits for the next execution.
            self._line(self._style(f"[queued for the next answer] {text}", _DIM))

    # -- confirmations ------------------------------------------------------

    def _confirmation_required(
        self, event: ToolConfirmationRequired, handle: SessionExecutionHandle
    ) -> None:
        self._asked.add(event.tool_use_id)
        policy = self.options.approve
        if policy is None and not self.options.interactive:
            policy = "no"
        if policy is None:
            self._waiting.append(event)
            if len(self._waiting) == 1:
                self._ask()
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
            self._line(self._style(f"[confirm {event.name}: {event.message}] -> {policy}", _YELLOW))

    def _ask(self) -> None:
        event = self._waiting[0]
        self._line(self._style(f"? {format_call(event.name, event.input)}", _YELLOW))
        self._line(f"  {event.message}")
        self._question()

    def _answer(self, line: str, handle: SessionExecutionHandle) -> None:
        event = self._waiting[0]
        text = line.strip()
        if self._editing:
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError as exc:
                self._retry(f"error: not JSON: {exc}")
                return
            if not isinstance(arguments, dict):
                self._retry(f"error: the arguments must be a JSON object, got {text}")
                return
            self._submit(handle, event, approved=True, modified_arguments=arguments)
            return
        answer = text.lower()
        if answer in ("y", "yes"):
            self._submit(handle, event, approved=True)
        elif answer in ("n", "no"):
            self._submit(handle, event, approved=False, reason="denied by the user")
        elif answer in ("a", "always"):
            self._submit(handle, event, approved=True, always=True)
        elif answer in ("e", "edit"):
            self._editing = True
            self._line(f"  the arguments now: {json.dumps(dict(event.input), ensure_ascii=False)}")
            self._question()
        else:
            self._retry("please answer y (yes), n (no), a (always) or e (edit)")

    def _submit(
        self,
        handle: SessionExecutionHandle,
        event: ToolConfirmationRequired,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None = None,
        reason: str | None = None,
        always: bool = False,
    ) -> None:
        try:
            handle.submit_tool_result(
                event.tool_use_id,
                approved=approved,
                modified_arguments=modified_arguments,
                reason=reason,
                always=always,
            )
        except InvalidToolArguments as exc:
            self._retry(f"error: {exc}")
            return
        except UnknownToolUse:
            self._line(self._style("[that confirmation is no longer pending]", _DIM))
        self._next_confirmation()

    def _retry(self, message: str) -> None:
        self._line(self._style(message, _RED))
        self._question()

    def _question(self) -> None:
        self._write(
            "  new arguments, as a JSON object: "
            if self._editing
            else "  [y]es / [n]o / [a]lways / [e]dit: "
        )

    def _next_confirmation(self) -> None:
        self._waiting.popleft()
        self._editing = False
        if self._waiting:
            self._ask()

    def _confirmation_result(self, event: ToolConfirmationResult) -> None:
        call = self._calls.get(event.tool_use_id)
        if call is not None and event.modified_arguments is not None:
            # The result line shows the arguments the tool really ran with.
            self._calls[event.tool_use_id] = (call[0], event.modified_arguments)
        for i, waiting in enumerate(self._waiting):
            if waiting.tool_use_id == event.tool_use_id:
                # Ended without our answer: the execution ended, or a timeout.
                self._line(
                    self._style(f"[confirmation of {waiting.name} ended: {event.reason}]", _DIM)
                )
                if i == 0:
                    self._next_confirmation()
                else:
                    del self._waiting[i]
                return
        if event.tool_use_id not in self._asked and not self.show_events:
            name = self._calls.get(event.tool_use_id, ("the tool", {}))[0]
            verdict = "approved" if event.approved else "denied"
            self._line(self._style(f"[{name} {verdict}: {event.reason}]", _DIM))

    # -- rendering ----------------------------------------------------------

    def _show(self, event: StreamEvent, handle: SessionExecutionHandle) -> None:
        if isinstance(event, ToolCall):
            self._calls[event.tool_use_id] = (event.name, event.input)
        if self.show_events:
            self._line(to_json(event))
        else:
            self._render(event)
        if isinstance(event, ToolConfirmationRequired):
            self._confirmation_required(event, handle)
        elif isinstance(event, ToolConfirmationResult):
            self._confirmation_result(event)
        elif isinstance(event, ExecutionEnd) and not event.spawn_path:
            self._finish(event)

    def _render(self, event: StreamEvent) -> None:
        path = event.spawn_path
        if isinstance(event, ContentDelta):
            if not path or self.options.interactive:
                self._delta(path, event.delta, reasoning=False)
        elif isinstance(event, ReasoningDelta):
            if self.options.interactive:
                self._delta(path, event.delta, reasoning=True)
        elif isinstance(event, MessageEvent):
            self._end_line()
        elif isinstance(event, ToolResultEvent):
            name, arguments = self._calls.get(event.tool_use_id, (event.name, {}))
            result = _format_content(event.content)
            if event.is_error:
                result = self._style(f"error: {result}", _RED)
            self._line(f"{'  ' * len(path)}[tool {format_call(name, arguments)}] -> {result}")
        elif isinstance(event, MessageQueued) and not path:
            self._line(self._style(f"[queued] {event.message.text}", _CYAN))

    def _delta(self, path: tuple[str, ...], text: str, *, reasoning: bool) -> None:
        key = (path, reasoning)
        prefix = "  " * len(path) + "| " if path else ""
        if self._owner != key:
            self._end_line()
            self._owner = key
            if prefix:
                self._write(prefix, _DIM)
        if prefix:
            text = text.replace("\n", "\n" + prefix)
        self._write(text, _DIM if reasoning or path else None)

    def _finish(self, event: ExecutionEnd) -> None:
        if self.show_events:
            # The execution_end line says it all, and the output stays pure JSON lines.
            return
        if event.status == "completed":
            if self.options.interactive:
                usage = event.usage
                self._line(
                    self._style(
                        f"({usage.ticks} tick{'s' if usage.ticks != 1 else ''}, "
                        f"{usage.total_tokens} tokens)",
                        _DIM,
                    )
                )
        elif event.status == "aborted":
            reason = event.reason
            self._line(
                self._style("[aborted]" if reason == USER_ABORT else f"[aborted: {reason}]", _RED)
            )
        elif event.status == "cancelled":
            self._line(self._style(f"[cancelled: {event.reason}]", _RED))
        else:
            self._line(self._style(f"error: {event.error}", _RED))
        self._end_line()

    # -- output -------------------------------------------------------------

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.options.color and text else text

    def _write(self, text: str, code: str | None = None) -> None:
        if not text:
            return
        self._out.write(self._style(text, code) if code is not None else text)
        self._out.flush()
        self._col0 = text.endswith("\n")

    def _end_line(self) -> None:
        if not self._col0:
            self._write("\n")
        self._owner = None

    def _line(self, text: str) -> None:
        self._end_line()
        self._write(text + "\n")

    def _note(self, text: str) -> None:
        """A notice: in the conversation when interactive, else on ``err``."""
        if self.options.interactive:
            self._line(self._style(text, _DIM))
        else:
            self._err.write(text + "\n")
            self._err.flush()

    def _prompt(self) -> None:
        if self.options.interactive:
            self._end_line()
            self._write(self._style(PROMPT, _BOLD))
