"""The command line of ``trio-session``: its arguments and the model they name."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..models._base import Model
from ._demo import DEFAULT_DELAY, DemoModel

__all__ = [
    "BASE_URL_NEEDS_PROVIDER",
    "EPILOG",
    "SPEED_VARIABLE",
    "TRY",
    "build_model",
    "default_db_path",
    "make_parser",
    "parse_speed",
]

SPEED_VARIABLE = "TRIO_SESSION_DEMO_SPEED"
"""The environment variable that sets the demo model's seconds per word."""

BASE_URL_NEEDS_PROVIDER = "--base-url needs --model openai:NAME or anthropic:NAME"

TRY = (
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
            raise ValueError(BASE_URL_NEEDS_PROVIDER)
        return DemoModel(delay=delay)
    if provider == "openai" and name:
        from ..models._openai import OpenAIModel

        _needs_key("OPENAI_API_KEY", spec, base_url)
        return OpenAIModel(name, base_url=base_url)
    if provider == "anthropic" and name:
        from ..models._anthropic import AnthropicModel

        _needs_key("ANTHROPIC_API_KEY", spec, base_url, "ANTHROPIC_AUTH_TOKEN")
        return AnthropicModel(name, base_url=base_url)
    raise ValueError(f"--model must be demo, openai:NAME or anthropic:NAME, got {spec!r}")


EPILOG: Final = """\
in the chat:
  /events toggles the raw event view, /sessions lists the stored sessions,
  /resume ID opens one, /new starts a new one, /quit leaves. Ctrl-C aborts a
  running answer; a line typed while it runs is queued into it.

the HTTP gateway:
  trio-session serve [...]   serve sessions over HTTP (needs trio-session[server];
                             see trio-session serve --help)

exit status:
  0    the input ended (or /quit) and, when not interactive, every answer completed
  1    the run failed: when not interactive, an answer ended in error (a refused
       connection, HTTP 401 or 429...), was aborted or cancelled; the message is
       on stderr and the remaining lines are still answered
  2    usage: a bad option or variable, a missing extra or API key, an unusable
       session store
  130  interrupted outside the chat
"""


def _needs_key(variable: str, spec: str, base_url: str | None, *also: str) -> None:
    # The adapters' own message speaks to a programmer (api_key=...); this one to a CLI user.
    if any(os.environ.get(name) for name in (variable, *also)):
        return
    hint = (
        f" (a server that ignores keys accepts any value: {variable}=none)"
        if base_url is not None
        else ", or choose another --model (the default, demo, needs no key)"
    )
    raise ValueError(f"--model {spec} needs an API key: set {variable}{hint}")


def parse_speed(text: str) -> float:
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
    parser = argparse.ArgumentParser(
        prog="trio-session",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Chat with an AI agent in the terminal. The default agent is an offline demo "
            "(no key, no network) with a calculator, a clock, notes and a research tool."
        ),
        epilog=EPILOG,
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
        type=parse_speed,
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
    parser.add_argument(
        "--no-color", action="store_true", help="no ANSI colors and no markdown rendering"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="read plain lines, without the line editor of the cli extra "
        "(pip install 'trio-session[cli]')",
    )
    return parser
