"""PostgresStore: the cluster's source of truth for snapshots, with fencing tokens.

psycopg 3's async API does not run under trio, so every call runs psycopg's synchronous API
on a pooled connection in a worker thread, at most ``max_connections`` at a time.
"""

from __future__ import annotations

import builtins
import importlib.util
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

from .._messages import Message
from ..stores._base import (
    ClosingStore,
    SessionSnapshot,
    SessionStore,
    Statements,
    check_session_id,
    check_snapshot,
    check_version,
    first_new,
    message_rows,
    restore,
    session_row,
)
from ._errors import FencedOut

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresStore"]

logger = logging.getLogger("trio_session.cluster")

T = TypeVar("T")

_SESSIONS = "trio_session_sessions"
_MESSAGES = "trio_session_messages"
_FENCES = "trio_session_fences"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_SESSIONS} (
    session_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    queued TEXT NOT NULL,
    state TEXT NOT NULL,
    usage TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    pending_message TEXT NOT NULL,
    pending_confirmations TEXT NOT NULL,
    remembered TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {_MESSAGES} (
    session_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, idx)
);
CREATE TABLE IF NOT EXISTS {_FENCES} (
    session_id TEXT PRIMARY KEY,
    fence BIGINT NOT NULL
)
"""

_SQL = Statements.of(_SESSIONS, _MESSAGES, "%s")

# Advisory lock keys (the two-int form): one for creating the tables, so that nodes starting
# together do not race CREATE TABLE IF NOT EXISTS; one space for the sessions' writers, so
# that two writers of one session (even of a session not stored yet) take turns.
_LOCK_SPACE = 0x7472696F  # "trio"
_SCHEMA_LOCK = 0
_LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(%s, %s)"
_LOCK_SESSION = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

# Raises the fence to the token, in one statement; no row back means a higher fence is stored.
_CLAIM = f"""
INSERT INTO {_FENCES} (session_id, fence) VALUES (%s, %s)
ON CONFLICT (session_id) DO UPDATE SET fence = excluded.fence
WHERE {_FENCES}.fence <= excluded.fence
RETURNING fence
"""
_ENSURE_FENCE = f"INSERT INTO {_FENCES} (session_id, fence) VALUES (%s, 0) ON CONFLICT DO NOTHING"
_LOCK_FENCE = f"SELECT fence FROM {_FENCES} WHERE session_id = %s FOR UPDATE"
_SET_FENCE = f"UPDATE {_FENCES} SET fence = %s WHERE session_id = %s"
_FENCE_OF = f"SELECT fence FROM {_FENCES} WHERE session_id = %s"

INTERRUPT_TIMEOUT = 5.0
"""Seconds to wait for the server to take a request to cancel an interrupted call's statement."""

CLOSE_TIMEOUT = 5.0
"""Seconds ``aclose`` waits for the pool's connections to close."""


class PostgresStore(ClosingStore):
    """A `SessionStore` in PostgreSQL, shared by every node of a cluster (SPEC §14).

    Snapshots are kept as SQLiteStore keeps them: a row of the session's fields and a row
    per message, so a save after a tick writes that tick's new messages only. Each save is
    one transaction. Beside the snapshots the store keeps each session's fencing token (the
    counter of its Redis lease): `claim` records a new holder's token, and the store of
    `fenced` refuses a save or delete from a holder whose token is older (`FencedOut`).

    psycopg 3 runs in worker threads (`trio.to_thread`), on a pool of at most
    ``max_connections`` connections. A call is never abandoned halfway: when it is
    cancelled while its transaction runs, the store asks the server to cancel the
    statement and waits for the transaction to end. So a cancelled ``save`` either wrote
    nothing and raises `trio.Cancelled`, or (when it had already committed) returns, and
    the cancellation is delivered at the caller's next checkpoint.

    The tables (``trio_session_sessions``, ``trio_session_messages``,
    ``trio_session_fences``) are created on first use if missing, under an advisory lock,
    so that many nodes can start at once.

    Args:
        dsn: A libpq connection string or URI (``postgresql://user@host/db``).
        max_connections: The most connections (and worker threads) used at once.

    Raises:
        ModuleNotFoundError: psycopg or psycopg_pool is not installed.
        psycopg_pool.PoolTimeout: (on first use) the server could not be reached in 30 s.

    Example:
        ::

            async with PostgresStore("postgresql://postgres@127.0.0.1/app") as store:
                async with open_session(agent, store=store, session_id="s1") as session:
                    ...
    """

    def __init__(self, dsn: str, *, max_connections: int = 8) -> None:
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str, got {type(dsn).__name__}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, got {type(max_connections).__name__}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        for module in ("psycopg", "psycopg_pool"):
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(
                    f"PostgresStore needs {module}: pip install 'trio-session[cluster]'",
                    name=module,
                )
        self._dsn = dsn
        self._max_connections = max_connections
        self._limiter = trio.CapacityLimiter(max_connections)
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        self._opening = trio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._pool is not None else "not opened"
        return f"<PostgresStore ({state})>"

    async def __aenter__(self) -> PostgresStore:
        # Opening eagerly reports an unreachable server at the `async with`.
        await self._open()
        return self

    async def aclose(self) -> None:
        """Close the pool; later calls raise `trio.ClosedResourceError`.

        Closing twice does nothing.
        """
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            await trio.lowlevel.checkpoint()
            return
        # Shielded: the connections must not outlive the store; bounded by the pool's own
        # timeout, after which it drops the connections that have not closed.
        with trio.move_on_after(CLOSE_TIMEOUT + 1, shield=True) as bound:
            await trio.to_thread.run_sync(pool.close, CLOSE_TIMEOUT)
        if bound.cancelled_caught:
            logger.warning("closing the PostgresStore's pool took over %g s", CLOSE_TIMEOUT + 1)

    # --- the SessionStore -----------------------------------------------------------------

    async def save(self, snapshot: SessionSnapshot) -> None:
        """Store ``snapshot`` in one transaction, writing only the new messages.

        Not fenced: for a store used by one process. A cluster node saves through
        `fenced`. If this raises — `trio.Cancelled` included — nothing was written.

        Raises:
            SerializationError: The snapshot holds a value JSON cannot represent.
            trio.ClosedResourceError: The store was closed.
        """
        check_snapshot(snapshot)
        await self._run(_save, snapshot.timeline, _check_row(session_row(snapshot)), None)

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The snapshot stored under ``session_id``, or None.

        Raises:
            SnapshotError: The stored snapshot is from a newer format version or corrupt;
                it is left as it is.
            trio.ClosedResourceError: The store was closed.
        """
        return await self._run(_load, _check_id(session_id))

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id``'s snapshot; nothing happens if it is unknown.

        Its fencing token is kept: a fence only ever rises.
        """
        await self._run(_delete, _check_id(session_id), None)

    async def list(self) -> builtins.list[str]:
        """Every stored session id, sorted."""
        return await self._run(_list)

    # --- fencing --------------------------------------------------------------------------

    async def claim(self, session_id: str, token: int) -> None:
        """Record ``token`` as the session's fence, unless a higher one is stored.

        A new lease holder claims before it restores the session, so that the holder
        before it can no longer save.

        Raises:
            FencedOut: A higher token is stored; nothing changed.
        """
        await self._run(_claim, _check_id(session_id), _check_token(token))

    def fenced(self, session_id: str, token: int) -> SessionStore:
        """A view of this store for the holder of ``token``: its writes are fenced.

        Its ``save`` (of ``session_id`` only) and ``delete`` succeed only while the stored
        fence is at most ``token``, checked (``SELECT ... FOR UPDATE``) in the transaction
        that writes, which also raises the fence to ``token``; otherwise they raise
        `FencedOut` and write nothing. ``load`` and ``list`` are this store's.

        Raises:
            ValueError: (from the view's ``save``) a snapshot of another session.
        """
        return FencedPostgresStore(self, _check_id(session_id), _check_token(token))

    async def fence_of(self, session_id: str) -> int:
        """The session's stored fencing token; 0 when it has none."""
        return await self._run(_fence_of, _check_id(session_id))

    # --- what the view calls --------------------------------------------------------------

    async def save_fenced(self, snapshot: SessionSnapshot, token: int) -> None:
        check_snapshot(snapshot)
        await self._run(_save, snapshot.timeline, _check_row(session_row(snapshot)), token)

    async def delete_fenced(self, session_id: str, token: int) -> None:
        await self._run(_delete, session_id, token)

    # --- running calls in worker threads --------------------------------------------------

    async def _open(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        async with self._opening:
            if self._closed:
                raise trio.ClosedResourceError("this PostgresStore was closed")
            if self._pool is None:
                self._pool = await trio.to_thread.run_sync(
                    _open_pool, self._dsn, self._max_connections, limiter=self._limiter
                )
            return self._pool

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._pool if self._pool is not None else await self._open()
        call = _Call(pool, fn, args)
        await self._limiter.acquire_on_behalf_of(call)
        try:
            result: T = await call.run()
            return result
        finally:
            self._limiter.release_on_behalf_of(call)


class FencedPostgresStore:
    """`PostgresStore.fenced`: a `SessionStore` whose writes carry a fencing token."""

    def __init__(self, store: PostgresStore, session_id: str, token: int) -> None:
        self._store = store
        self._session_id = session_id
        self._token = token

    def __repr__(self) -> str:
        return f"<PostgresStore.fenced({self._session_id!r}, {self._token})>"

    async def save(self, snapshot: SessionSnapshot) -> None:
        """Store ``snapshot`` if the stored fence is at most this view's token.

        Raises:
            FencedOut: A newer holder's token is stored; nothing was written.
            ValueError: ``snapshot`` is of another session than the view's.
        """
        check_snapshot(snapshot)
        if snapshot.session_id != self._session_id:
            raise ValueError(
                f"this store is fenced for session {self._session_id!r}, "
                f"not {snapshot.session_id!r}"
            )
        await self._store.save_fenced(snapshot, self._token)

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """`PostgresStore.load`."""
        return await self._store.load(session_id)

    async def delete(self, session_id: str) -> None:
        """Forget the session if the stored fence is at most this view's token.

        Raises:
            FencedOut: A newer holder's token is stored; nothing was deleted.
            ValueError: ``session_id`` is another session than the view's.
        """
        if _check_id(session_id) != self._session_id:
            raise ValueError(
                f"this store is fenced for session {self._session_id!r}, not {session_id!r}"
            )
        await self._store.delete_fenced(session_id, self._token)

    async def list(self) -> builtins.list[str]:
        """`PostgresStore.list`."""
        return await self._store.list()


class _Call:
    """One call of a function on a pooled connection, in a worker thread.

    Not `trio.to_thread.run_sync`: that can abandon the thread (and so the transaction,
    which may yet commit) or ignore the cancellation until the statement ends (which may be
    never, on a lost network). Instead a cancellation asks the server to cancel the running
    statement, and waits for the thread, whose outcome then says what happened.
    """

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self._pool = pool
        self._fn = fn
        self._args = args
        # Guards _conn: the interrupting thread must not cancel a connection that has gone
        # back to the pool and now runs someone else's statement.
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._interrupted = False

    async def run(self) -> Any:
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome[Any]) -> None:
            # Wrapped: the task gets the outcome itself, to look at before unwrapping.
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(result))

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            trio.lowlevel.start_thread_soon(self._interrupt, _ignore, name="PostgresStore cancel")
            return trio.lowlevel.Abort.FAILED

        await trio.lowlevel.checkpoint_if_cancelled()
        trio.lowlevel.start_thread_soon(self._call, deliver, name="PostgresStore call")
        result: outcome.Outcome[Any] = await trio.lowlevel.wait_task_rescheduled(abort)
        if self._interrupted and isinstance(result, outcome.Error):
            # Our interruption (or a failure it raced with) ended the call: nothing was
            # written, so the caller's cancellation is what to report.
            await trio.lowlevel.checkpoint_if_cancelled()
        return result.unwrap()

    def _call(self) -> Any:
        with self._pool.connection() as conn:
            with self._lock:
                if self._interrupted:
                    raise _Interrupted
                self._conn = conn
            try:
                return self._fn(conn, *self._args)
            finally:
                with self._lock:
                    self._conn = None
                    if self._interrupted:
                        # The server may yet deliver the cancel request, to whatever runs
                        # on this connection next: it must not go back to the pool.
                        conn.close()

    def _interrupt(self) -> None:
        with self._lock:
            if self._interrupted:
                return
            self._interrupted = True
            if self._conn is not None:
                try:
                    self._conn.cancel_safe(timeout=INTERRUPT_TIMEOUT)
                except Exception:
                    logger.warning("could not cancel a PostgreSQL statement", exc_info=True)


class _Interrupted(Exception):
    """The call was cancelled before it took its connection: it did nothing."""


def _ignore(_result: outcome.Outcome[Any]) -> None:
    pass


def _check_id(session_id: object) -> str:
    session_id = check_session_id(session_id)
    if "\x00" in session_id:
        raise ValueError(f"session_id must not contain NUL characters: {session_id!r}")
    return session_id


def _check_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    _check_id(row[0])
    return row


def _check_token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int):
        raise TypeError(f"token must be an int, got {type(token).__name__}")
    if not 0 <= token < 2**63:
        raise ValueError(f"token must be between 0 and 2**63 - 1, got {token}")
    return token


# --- in the worker thread -------------------------------------------------------------------


def _open_pool(dsn: str, size: int) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
    import psycopg_pool

    pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        open=False,
        kwargs={"autocommit": True},
        name="trio-session",
    )
    try:
        pool.open(wait=True)
        with pool.connection() as conn, conn.transaction():
            conn.execute(_LOCK_SCHEMA, (_LOCK_SPACE, _SCHEMA_LOCK))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
    except BaseException:
        pool.close()
        raise
    return pool


def _lock_session(conn: psycopg.Connection[Any], session_id: str, token: int | None) -> None:
    """Take the session's write lock; with a token, check and raise the fence too."""
    conn.execute(_LOCK_SESSION, (_LOCK_SPACE, session_id))
    if token is None:
        return
    conn.execute(_ENSURE_FENCE, (session_id,))
    row = conn.execute(_LOCK_FENCE, (session_id,)).fetchone()
    fence = row[0] if row is not None else 0
    if fence > token:
        raise FencedOut(
            session_id,
            f"fenced at token {fence}; this holder's token is {token}",
        )
    if fence < token:
        conn.execute(_SET_FENCE, (token, session_id))


def _save(
    conn: psycopg.Connection[Any],
    timeline: tuple[Message, ...],
    row: tuple[Any, ...],
    token: int | None,
) -> None:
    session_id = row[0]
    with conn.transaction():
        _lock_session(conn, session_id, token)
        start = first_new(conn.execute(_SQL.head, (session_id,)).fetchone(), timeline)
        with conn.cursor() as cursor:
            # Also clears rows a corrupt or foreign writer left past the stored count.
            cursor.execute(_SQL.delete_messages_from, (session_id, start))
            rows = message_rows(session_id, timeline, start)
            if rows:
                cursor.executemany(_SQL.insert_messages, rows)
            cursor.execute(_SQL.upsert, row)


def _load(conn: psycopg.Connection[Any], session_id: str) -> SessionSnapshot | None:
    # One snapshot of the database, so the row and its messages come from one commit.
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(_SQL.select, (session_id,)).fetchone()
        if row is None:
            return None
        # First, so that a newer format is reported as such, not as corruption.
        check_version(session_id, row[0])
        messages = conn.execute(_SQL.messages, (session_id,)).fetchall()
    return restore(session_id, row, messages)


def _delete(conn: psycopg.Connection[Any], session_id: str, token: int | None) -> None:
    with conn.transaction():
        _lock_session(conn, session_id, token)
        conn.execute(f"DELETE FROM {_MESSAGES} WHERE session_id = %s", (session_id,))
        conn.execute(f"DELETE FROM {_SESSIONS} WHERE session_id = %s", (session_id,))


def _list(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(f"SELECT session_id FROM {_SESSIONS}").fetchall()
    return sorted(row[0] for row in rows)


def _claim(conn: psycopg.Connection[Any], session_id: str, token: int) -> None:
    if conn.execute(_CLAIM, (session_id, token)).fetchone() is None:
        fence = _fence_of(conn, session_id)
        raise FencedOut(session_id, f"fenced at token {fence}; {token} is older")


def _fence_of(conn: psycopg.Connection[Any], session_id: str) -> int:
    row = conn.execute(_FENCE_OF, (session_id,)).fetchone()
    return 0 if row is None else int(row[0])
