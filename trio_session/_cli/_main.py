"""The entry point of ``python -m trio_session`` (also installed as ``trio-session``).

An interactive chat with an agent in the terminal. By default the agent is the
offline `DemoModel` (no key, no network) with a calculator, a clock, notes
that ask for confirmation, and a research tool that spawns a child agent::

    python -m trio_session                         # the offline demo
    python -m trio_session --session work          # kept in SQLite, resumed next time
    python -m trio_session --model openai:gpt-4o-mini
    python -m trio_session --model openai:llama3.1 --base-url http://localhost:11434/v1
    python -m trio_session --model anthropic:claude-sonnet-4-5
    printf 'what is 6 * 7\\nremember milk\\n' | python -m trio_session --approve yes

When stdin is not a terminal (or with ``--no-tty``) it reads one message per
line, prints each answer on stdout and each failure on stderr, answers
confirmations per ``--approve``, and exits at the end of the input.

``python -m trio_session serve ...`` runs the HTTP gateway instead
(``trio_session.server``, the ``server`` extra).

Exit status: 0 when all went well; 1 when the run failed (not interactive: an
answer ended in error, was aborted or cancelled); 2 for a usage error (a bad
option, a missing extra or API key, an unusable session store); 130 when
interrupted outside the chat.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import trio

from .._errors import SnapshotError, TrioSessionError
from ..models._base import Model
from ..stores import SQLiteStore
from ._args import (
    BASE_URL_NEEDS_PROVIDER,
    SPEED_VARIABLE,
    TRY,
    build_model,
    default_db_path,
    make_parser,
    parse_speed,
)
from ._chat import Chat, ChatOptions
from ._demo import DEFAULT_DELAY, demo_agent
from ._terminal import Terminal, available

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
"""The run failed: an answer ended in error, was aborted or cancelled (not interactive)."""
EXIT_USAGE: Final = 2
"""A bad option or variable, a missing extra or API key, an unusable session store."""


def _use_color(args: argparse.Namespace, interactive: bool) -> bool:
    return (
        interactive
        and not args.no_color
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
        and sys.stdout.isatty()
    )


def _terminal(args: argparse.Namespace, interactive: bool, color: bool) -> Terminal | None:
    # The line editor needs the cli extra and a terminal that is not a dumb one.
    if not interactive or args.plain or not available() or os.environ.get("TERM") == "dumb":
        return None
    history = default_db_path().parent / "history"
    return Terminal(history=history, markdown=color)


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, kind):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(kind) is not None


async def _run(
    model: Model,
    options: ChatOptions,
    *,
    db: Path | None,
    session_id: str | None,
    terminal: Terminal | None,
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        aclose: Any = getattr(model, "aclose", None)
        if aclose is not None:
            stack.push_async_callback(aclose)
        store: SQLiteStore | None = None
        if db is not None:
            store = SQLiteStore(db)
            try:
                await stack.enter_async_context(store)
            except (sqlite3.Error, OSError, TrioSessionError) as exc:
                print(f"trio-session: cannot open the session store {db}: {exc}", file=sys.stderr)
                return EXIT_USAGE
        chat = Chat(
            demo_agent(model),
            options=options,
            store=store,
            session_id=session_id,
            terminal=terminal,
        )
        try:
            return await chat.run()
        except SnapshotError as exc:
            print(f"trio-session: {exc}", file=sys.stderr)
            return EXIT_USAGE


def _serve(argv: list[str]) -> int:
    # Imported only here: the gateway and its dependencies are the `server` extra.
    try:
        module = importlib.import_module("trio_session.server._cli")
    except ModuleNotFoundError as exc:
        print(
            "trio-session: serve needs the server extra: "
            f"pip install 'trio-session[server]' ({exc})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    serve: Callable[[list[str]], int] = module.main
    return serve(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the terminal chat (or, for ``serve ...``, the HTTP gateway); returns the exit status.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` when None.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.model == "demo" and args.base_url is not None:
            parser.error(BASE_URL_NEEDS_PROVIDER)
    except SystemExit as exc:  # --help, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    speed: float | None = args.speed
    if speed is None:
        try:
            speed = parse_speed(os.environ.get(SPEED_VARIABLE, str(DEFAULT_DELAY)))
        except argparse.ArgumentTypeError as exc:
            print(f"trio-session: error: ${SPEED_VARIABLE} {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        model = build_model(args.model, base_url=args.base_url, delay=speed)
    except (ModuleNotFoundError, ValueError, TypeError) as exc:
        # A missing SDK (the message names the extra to install), no API key...
        print(f"trio-session: {exc}", file=sys.stderr)
        return EXIT_USAGE

    db: Path | None = None
    if args.session is not None or args.db is not None:
        db = (args.db or default_db_path()).expanduser()
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"trio-session: cannot create {db.parent}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    interactive = not args.no_tty and sys.stdin is not None and sys.stdin.isatty()
    for stream in (sys.stdout, sys.stderr):
        # A terminal that cannot show a character gets "?" rather than a crash.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    label = "the offline demo agent" if args.model == "demo" else args.model
    banner = f"trio-session: chatting with {label}. /help for commands, Ctrl-C aborts an answer."
    if args.model == "demo":
        banner += "\n" + TRY
    options = ChatOptions(
        interactive=interactive,
        approve=args.approve,
        show_events=args.events,
        color=_use_color(args, interactive),
        handle_sigint=interactive,
        banner=banner,
    )
    try:
        return trio.run(
            functools.partial(
                _run,
                model,
                options,
                db=db,
                session_id=args.session,
                terminal=_terminal(args, interactive, options.color),
            )
        )
    except BaseException as exc:
        # ASYNC104 (Cancelled not re-raised): this is outside trio.run, which no Cancelled
        # leaves; what becomes an exit status here is Ctrl-C or a closed stdout.
        if _contains(exc, KeyboardInterrupt):
            print("\ninterrupted", file=sys.stderr)
            return 130  # noqa: ASYNC104
        if _contains(exc, BrokenPipeError):
            # The reader went away (`| head`): leave quietly, as if killed by SIGPIPE,
            # and keep Python from complaining when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141  # noqa: ASYNC104
        raise
