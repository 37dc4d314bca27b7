"""The terminal demo: ``python -m trio_session``, also installed as ``trio-session``.

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
line, prints each answer, answers confirmations per ``--approve`` and exits 0
at the end of the input.

Exit status: 0 at the end of the input or ``/quit``; 1 for a usage error; 2
when the model or the store cannot be set up (a missing SDK, no API key, an
unreadable database); 130 when interrupted outside the chat.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from ._chat import Chat, ChatOptions
from ._demo import DEFAULT_DELAY, DemoModel, demo_agent
from ._errors import SnapshotError, TrioSessionError
from .models._base import Model
from .stores import SQLiteStore

__all__ = ["build_model", "default_db_path", "main", "make_parser"]

SPEED_VARIABLE = "TRIO_SESSION_DEMO_SPEED"
"""The environment variable that sets the demo model's seconds per word."""

_BASE_URL_NEEDS_PROVIDER = "--base-url needs --model openai:NAME or anthropic:NAME"

_TRY = (
    "Try: what is 12 * (3 + 4) | what time is it | remember to buy milk | show my notes |\n"
    "     research structured concurrency | tell me a story | fail"
)


def default_db_path(
    *, platform: str | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Where ``--session`` keeps sessions unless ``--db`` says otherwise.

    ``$XDG_DATA_HOME/trio-session`` (default ``~/.local/share/trio-session``)
    on Linux and other Unixes, ``~/Library/Application Support/trio-session``
    on macOS, ``%APPDATA%\\trio-session`` on Windows; the file is ``sessions.db``.

    Args:
        platform: A ``sys.platform`` value; this one when None.
        environ: The environment; ``os.environ`` when None.

    Example:
        >>> default_db_path(platform="linux", environ={"XDG_DATA_HOME": "/data"}).as_posix()
        '/data/trio-session/sessions.db'
    """
    platform = sys.platform if platform is None else platform
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        base = Path(appdata) if appdata else home / "AppData" / "Roaming"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME", "")
        # The XDG spec says to ignore a relative path.
        base = Path(xdg) if os.path.isabs(xdg) else home / ".local" / "share"
    return base / "trio-session" / "sessions.db"


def build_model(spec: str, *, base_url: str | None = None, delay: float = DEFAULT_DELAY) -> Model:
    """The model that ``--model`` names.

    Args:
        spec: ``"demo"``, ``"openai:NAME"`` or ``"anthropic:NAME"``.
        base_url: The provider's API root (an OpenAI-compatible server, a proxy).
        delay: Seconds per word of the demo model.

    Raises:
        ValueError: An unknown spec, or the provider has no API key.
        ModuleNotFoundError: The provider's SDK is not installed; the message
            names the extra to install.

    Example:
        >>> build_model("demo", delay=0)
        DemoModel(delay=0.0, persona='assistant')
    """
    provider, _, name = spec.partition(":")
    if spec == "demo":
        if base_url is not None:
            raise ValueError(_BASE_URL_NEEDS_PROVIDER)
        return DemoModel(delay=delay)
    if provider == "openai" and name:
        from .models._openai import OpenAIModel

        return OpenAIModel(name, base_url=base_url)
    if provider == "anthropic" and name:
        from .models._anthropic import AnthropicModel

        return AnthropicModel(name, base_url=base_url)
    raise ValueError(f"--model must be demo, openai:NAME or anthropic:NAME, got {spec!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Usage errors exit 1; 2 is kept for a model or store that cannot be set up.
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _model_spec(text: str) -> str:
    provider, colon, name = text.partition(":")
    if text == "demo" or (provider in ("openai", "anthropic") and colon and name):
        return text
    raise argparse.ArgumentTypeError(f"use demo, openai:NAME or anthropic:NAME, not {text!r}")


def _session_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def make_parser() -> argparse.ArgumentParser:
    """The command line of ``trio-session``."""
    parser = _Parser(
        prog="trio-session",
        description=(
            "Chat with an AI agent in the terminal. The default agent is an offline demo "
            "(no key, no network) with a calculator, a clock, notes and a research tool."
        ),
        epilog=(
            "In the chat: /events toggles the raw event view, /new starts a new session, "
            "/sessions lists the stored ones, /quit leaves. Ctrl-C aborts a running answer; "
            "a line typed while it runs is queued into it."
        ),
    )
    parser.add_argument(
        "--model",
        default="demo",
        type=_model_spec,
        metavar="MODEL",
        help="demo (default), openai:NAME or anthropic:NAME; keys come from "
        "OPENAI_API_KEY / ANTHROPIC_API_KEY",
    )
    parser.add_argument(
        "--base-url", metavar="URL", help="the provider's API root (OpenAI-compatible servers)"
    )
    parser.add_argument(
        "--session",
        type=_session_id,
        metavar="ID",
        help="keep the conversation in the SQLite store under this id, and resume it",
    )
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help=f"the SQLite file for --session (default: {default_db_path()})",
    )
    parser.add_argument(
        "--approve",
        choices=("yes", "no"),
        help="answer every tool confirmation without asking (default when not a terminal: no)",
    )
    parser.add_argument(
        "--speed",
        type=_speed,
        metavar="SECONDS",
        help=f"seconds per streamed word of the demo model (default: ${SPEED_VARIABLE} "
        f"or {DEFAULT_DELAY})",
    )
    parser.add_argument(
        "--events", action="store_true", help="start in the raw event view (JSON lines)"
    )
    parser.add_argument(
        "--no-tty",
        action="store_true",
        help="read one message per line even when stdin is a terminal",
    )
    parser.add_argument("--no-color", action="store_true", help="no ANSI colors")
    return parser


def _use_color(args: argparse.Namespace, interactive: bool) -> bool:
    return (
        interactive
        and not args.no_color
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
        and sys.stdout.isatty()
    )


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, kind):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(kind) is not None


async def _run(
    model: Model, options: ChatOptions, *, db: Path | None, session_id: str | None
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
                return 2
        chat = Chat(demo_agent(model), options=options, store=store, session_id=session_id)
        try:
            return await chat.run()
        except SnapshotError as exc:
            print(f"trio-session: {exc}", file=sys.stderr)
            return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the terminal chat; returns the exit status.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` when None.
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.model == "demo" and args.base_url is not None:
            # A usage error (exit 1), found before build_model would report it as a setup one.
            parser.error(_BASE_URL_NEEDS_PROVIDER)
    except SystemExit as exc:  # --help, or a usage error
        return exc.code if isinstance(exc.code, int) else 1
    speed: float | None = args.speed
    if speed is None:
        try:
            speed = _speed(os.environ.get(SPEED_VARIABLE, str(DEFAULT_DELAY)))
        except argparse.ArgumentTypeError as exc:
            print(f"trio-session: error: ${SPEED_VARIABLE} {exc}", file=sys.stderr)
            return 1
    try:
        model = build_model(args.model, base_url=args.base_url, delay=speed)
    except (ModuleNotFoundError, ValueError, TypeError) as exc:
        # A missing SDK (the message names the extra to install), no API key...
        print(f"trio-session: {exc}", file=sys.stderr)
        return 2

    db: Path | None = None
    if args.session is not None or args.db is not None:
        db = (args.db or default_db_path()).expanduser()
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"trio-session: cannot create {db.parent}: {exc}", file=sys.stderr)
            return 2

    interactive = not args.no_tty and sys.stdin is not None and sys.stdin.isatty()
    for stream in (sys.stdout, sys.stderr):
        # A terminal that cannot show a character gets "?" rather than a crash.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    label = "the offline demo agent" if args.model == "demo" else args.model
    banner = f"trio-session: chatting with {label}. /help for commands, Ctrl-C aborts an answer."
    if args.model == "demo":
        banner += "\n" + _TRY
    options = ChatOptions(
        interactive=interactive,
        approve=args.approve,
        show_events=args.events,
        color=_use_color(args, interactive),
        handle_sigint=interactive,
        banner=banner,
    )
    try:
        return trio.run(functools.partial(_run, model, options, db=db, session_id=args.session))
    except BaseException as exc:
        if _contains(exc, KeyboardInterrupt):
            print("\ninterrupted", file=sys.stderr)
            return 130
        if _contains(exc, BrokenPipeError):
            # The reader went away (`| head`): leave quietly, as if killed by SIGPIPE,
            # and keep Python from complaining when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141
        raise


if __name__ == "__main__":
    sys.exit(main())
