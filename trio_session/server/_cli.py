"""``python -m trio_session serve``: the demo agent (or a real model) behind the gateway."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import trio

from .._agent import Agent
from .._cli._args import build_model, parse_speed
from .._cli._demo import demo_agent
from .._errors import TrioSessionError
from ..stores import SQLiteStore
from ._gateway import open_gateway

__all__ = ["main", "make_parser"]

logger = logging.getLogger("trio_session.server")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return int(text)


def make_parser() -> argparse.ArgumentParser:
    """The command line of ``trio-session serve``."""
    parser = _Parser(
        prog="trio-session serve",
        description=(
            "Serve sessions over HTTP: a chat page at /, resumable Server-Sent Events and "
            "AG-UI. The default agent is the offline demo."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port, 0 for any (default: 8000)")
    parser.add_argument("--db", type=Path, help="keep sessions in this SQLite file")
    parser.add_argument("--token", help="the bearer token (default: a random one, in the URL)")
    parser.add_argument(
        "--model",
        default="demo",
        metavar="PROVIDER:NAME",
        help="demo (default), openai:NAME or anthropic:NAME",
    )
    parser.add_argument(
        "--speed", type=parse_speed, default=0.03, metavar="SECONDS", help="demo seconds per word"
    )
    cluster = parser.add_argument_group(
        "cluster", "run as one node of a cluster (the cluster extra); replaces --db"
    )
    cluster.add_argument("--postgres", metavar="DSN", help="PostgreSQL holding the sessions")
    cluster.add_argument("--redis", metavar="URL", help="Redis carrying events, commands, leases")
    cluster.add_argument("--worker-id", metavar="ID", help="this node's name (default: generated)")
    cluster.add_argument(
        "--lease-ttl",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long a dead node keeps its sessions (default: 10)",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _cluster_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the cluster options, if anything."""
    clustered = args.postgres is not None or args.redis is not None
    if not clustered:
        if args.worker_id is not None:
            return "--worker-id needs --postgres and --redis"
        return None
    if args.db is not None:
        return "--db and --postgres/--redis exclude each other (a cluster stores in PostgreSQL)"
    if args.postgres is None or args.redis is None:
        return "a cluster node needs both --postgres DSN and --redis URL"
    return None


async def _serve(args: argparse.Namespace) -> int:
    problem = _cluster_error(args)
    if problem is not None:
        print(f"trio-session: {problem}", file=sys.stderr)
        return 2
    try:
        model = build_model(args.model, delay=args.speed)
    except (ModuleNotFoundError, ValueError, TypeError) as exc:
        print(f"trio-session: {exc}", file=sys.stderr)
        return 2
    async with contextlib.AsyncExitStack() as stack:
        aclose: Any = getattr(model, "aclose", None)
        if aclose is not None:
            stack.push_async_callback(aclose)
        store: SQLiteStore | None = None
        if args.db is not None:
            store = SQLiteStore(args.db.expanduser())
            try:
                await stack.enter_async_context(store)
            except (sqlite3.Error, OSError, TrioSessionError) as exc:
                print(f"trio-session: cannot open {args.db}: {exc}", file=sys.stderr)
                return 2
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                gateway_cm = _open(args, demo_agent(model), store)
                async with gateway_cm as gateway:
                    print(f"trio-session serving on {gateway.url}", flush=True)
                    async for signum in signals:
                        logger.info("%s: closing", signal.Signals(signum).name)
                        break
            except (TrioSessionError, ValueError, ModuleNotFoundError) as exc:
                if args.postgres is None:
                    raise
                print(f"trio-session: cannot join the cluster: {exc}", file=sys.stderr)
                return 2
            except OSError as exc:
                print(
                    f"trio-session: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr
                )
                return 2
            except Exception as exc:
                if args.postgres is None:
                    raise
                # psycopg's own errors (PostgreSQL unreachable, refused login, ...).
                logger.debug("the cluster node failed", exc_info=True)
                print(
                    f"trio-session: cannot join the cluster: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
                return 2
    return 0


def _open(args: argparse.Namespace, agent: Agent, store: SQLiteStore | None) -> Any:
    if args.postgres is None:
        return open_gateway(agent, store=store, host=args.host, port=args.port, token=args.token)
    from ..cluster import open_cluster_gateway

    return open_cluster_gateway(
        agent,
        postgres=args.postgres,
        redis=args.redis,
        worker_id=args.worker_id,
        lease_ttl=args.lease_ttl,
        host=args.host,
        port=args.port,
        token=args.token,
    )


def main(argv: list[str]) -> int:
    """Run ``serve``; returns the exit status (0 after SIGINT / SIGTERM).

    Args:
        argv: The arguments after ``serve``.
    """
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error
        return exc.code if isinstance(exc.code, int) else 1
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    return trio.run(_serve, args)
