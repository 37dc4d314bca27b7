"""The embedded default store: one SQLite file, through the standard library."""

from __future__ import annotations

import builtins
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import outcome
import trio

from .._errors import SnapshotError, TrioSessionError
from .._messages import Message
from ._base import (
    ClosingStore,
    SessionSnapshot,
    Statements,
    check_session_id,
    check_snapshot,
    check_version,
    first_new,
    message_rows,
    restore,
    session_row,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

Durability = Literal["normal", "full"]

_SYNCHRONOUS: Final[dict[str, str]] = {"normal": "NORMAL", "full": "FULL"}

MAX_BATCH = 256
"""The most saves one transaction of a group commit takes."""

logger = logging.getLogger("trio_session")

CLOSE_GRACE = 5.0
"""Seconds `SQLiteStore.aclose` waits beyond ``busy_timeout`` for a call in progress."""

SCHEMA_VERSION = 2
"""The layout of the tables, kept in ``PRAGMA user_version``."""

# Layout 2 adds the durable-confirmation columns; a layout-1 file gets them
# (with their empty defaults) when it is first opened.
_MIGRATE_1_TO_2 = """
ALTER TABLE sessions ADD COLUMN pending_message TEXT NOT NULL DEFAULT 'null';
ALTER TABLE sessions ADD COLUMN pending_confirmations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sessions ADD COLUMN remembered TEXT NOT NULL DEFAULT '{}'
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    queued TEXT NOT NULL,
    state TEXT NOT NULL,
    usage TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    pending_message TEXT NOT NULL DEFAULT 'null',
    pending_confirmations TEXT NOT NULL DEFAULT '[]',
    remembered TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, idx)
);
"""

_SQL = Statements.of("sessions", "messages", "?")


class SQLiteStore(ClosingStore):
    """A `SessionStore` in one SQLite file: the embedded default.

    It uses the standard library's `sqlite3` in a worker thread
    (`trio.to_thread`), so the event loop never blocks on the disk. The file
    is in WAL mode, so readers do not block the writer; each ``save`` is one
    transaction, so a crash or a cancellation leaves either the old snapshot
    or the new one, never a mix. Several processes can share one file: a
    writer waits up to ``busy_timeout`` seconds for another to finish.

    Durability: with ``"normal"`` (the default, ``synchronous=NORMAL``) a
    committed save survives any crash of the process, the crash this library
    promises to survive; only a power loss or an operating-system crash may
    undo the last saves (never half of one). ``"full"`` (``synchronous=FULL``)
    syncs the file at every commit, so a save also survives a power loss, at
    the cost of one fsync per commit.

    Group commit: saves that arrive while another save is being written (from
    several sessions sharing this store) are written together, in one
    transaction and one sync, each in a savepoint of its own: each save is
    still atomic, and each caller gets its own result — a snapshot that fails
    (one JSON cannot represent) fails alone.

    Saving is incremental: after a tick, a save writes that tick's new
    messages and the session's fields, not the whole timeline again. Messages
    are told apart by id: when the new timeline has the stored first and last
    messages' ids at the same positions, the stored messages are kept and the
    rest appended; any other timeline replaces them. So a message that is
    changed (rather than appended) needs a new id, as a new `Message` gets.

    The connection opens on first use (or on ``async with``); close the store
    with ``await store.aclose()`` or by leaving ``async with``.

    Args:
        path: The database file; created if missing. ``":memory:"`` gives a
            private in-memory database.
        durability: ``"normal"`` or ``"full"``, as above.
        busy_timeout: Seconds to wait for another connection's write lock
            before failing with `sqlite3.OperationalError`.

    Raises:
        ValueError: ``durability`` is neither ``"normal"`` nor ``"full"``.
        TrioSessionError: (on first use) the file was written by a newer
            trio-session with a different table layout.

    Example:
        >>> import trio, tempfile, os
        >>> from trio_session import SessionSnapshot, user
        >>> async def main(path):
        ...     async with SQLiteStore(path) as store:
        ...         await store.save(SessionSnapshot(
        ...             session_id="s1", timeline=[user("hi")],
        ...             created_at=0.0, updated_at=0.0))
        ...     async with SQLiteStore(path) as store:
        ...         return (await store.load("s1")).timeline[0].text
        >>> trio.run(main, os.path.join(tempfile.mkdtemp(), "sessions.db"))
        'hi'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        busy_timeout: float = 30.0,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise TypeError(f"busy_timeout must be a number, got {type(busy_timeout).__name__}")
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        if not isinstance(durability, str) or durability not in _SYNCHRONOUS:
            raise ValueError(f'durability must be "normal" or "full", got {durability!r}')
        self._path: str = os.fspath(path)
        self._durability: Durability = durability
        self._busy_timeout = float(busy_timeout)
        self._conn: sqlite3.Connection | None = None
        # One connection, used by one worker thread at a time: the lock is the
        # only thing that serializes access, because check_same_thread is off.
        self._lock = trio.Lock()
        self._closed = False
        # The group commit: saves waiting to be written, and whether one of the
        # saving tasks is writing (it then writes whatever waits, as one batch).
        self._queue: list[_Save] = []
        self._writing = False

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def durability(self) -> Durability:
        """``"normal"`` or ``"full"``: what a committed save survives."""
        return self._durability

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteStore {self._path!r} ({state})>"

    async def __aenter__(self) -> SQLiteStore:
        # Opening eagerly reports a bad file at the `async with`, not at the first save.
        await self._run(_noop)
        return self

    async def aclose(self) -> None:
        """Close the connection; later calls raise `trio.ClosedResourceError`.

        Waits for a call in progress to finish (a write is never abandoned
        halfway), even when cancelled, for up to ``busy_timeout`` + 5 s; then
        that call closes the connection when it returns. Closing twice does nothing.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        # Shielded: the connection must not outlive the store. Bounded: the holder
        # of the lock is a worker thread that finishes within busy_timeout, and
        # waiters behind us see _closed and leave. Cut off, the worker closes
        # the connection itself when it returns (see _call).
        bound = self._busy_timeout + CLOSE_GRACE
        with trio.move_on_after(bound, shield=True) as scope:
            async with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
        if scope.cancelled_caught:
            logger.warning("closing %r took over %g s; its worker closes it", self, bound)

    async def save(self, snapshot: SessionSnapshot) -> None:
        """Store ``snapshot`` in one transaction, writing only what changed.

        Saves from several tasks at once are written together (group commit),
        each in a savepoint of its own, so each is atomic on its own.

        If this raises — `trio.Cancelled` included — nothing was written.
        A cancellation that arrives while the transaction runs waits for it
        to finish (it is never abandoned halfway) and the save completes.

        Raises:
            SerializationError: The snapshot holds a value JSON cannot
                represent; the stored snapshot is unchanged.
            trio.ClosedResourceError: The store was closed.
        """
        check_snapshot(snapshot)
        # The small fields are serialized here, so a bad state fails before the
        # database is touched; new messages are serialized in the worker,
        # which alone knows which ones are new.
        request = _Save(snapshot.timeline, session_row(snapshot))
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("this SQLiteStore was closed")
        self._queue.append(request)
        if self._writing and not await self._wait(request):
            return request.result.unwrap()
        # This task writes: its own save and whatever else waits by then.
        self._writing = True
        try:
            await self._write_batch(request)
        finally:
            self._pass_on()
        return request.result.unwrap()

    async def _wait(self, request: _Save) -> bool:
        """Wait until ``request`` is written (False) or its task is to write (True)."""
        request.task = trio.lowlevel.current_task()

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            if request.taken:
                # Being written: it is not abandoned halfway, as a save in a
                # thread is not; the cancellation reaches the caller after it.
                return trio.lowlevel.Abort.FAILED
            self._queue.remove(request)
            return trio.lowlevel.Abort.SUCCEEDED

        lead: bool = await trio.lowlevel.wait_task_rescheduled(abort)
        return lead

    async def _write_batch(self, request: _Save) -> None:
        try:
            await self._lock.acquire()
        except BaseException:
            # Cancelled while a load or delete runs: nothing written.
            self._queue.remove(request)
            raise
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            for queued in batch:
                queued.taken = True
            if self._closed:
                for queued in batch:
                    queued.result = outcome.Error(
                        trio.ClosedResourceError("this SQLiteStore was closed")
                    )
            else:
                # Shielded: the batch is taken and its savers wait for their
                # results; a write is never abandoned halfway.
                with trio.CancelScope(shield=True):
                    written = await trio.to_thread.run_sync(
                        outcome.capture, self._call, _save_batch, (batch,)
                    )
                if isinstance(written, outcome.Value):
                    for queued, result in zip(batch, written.unwrap(), strict=True):
                        queued.result = result
                else:
                    # The transaction as a whole failed (BEGIN, COMMIT, the
                    # disk): every save of the batch failed with it.
                    for queued in batch:
                        queued.result = outcome.Error(written.error)
        finally:
            self._lock.release()
            # Whatever happened, no saver is left waiting.
            for queued in batch:
                if queued is not request:
                    assert queued.task is not None
                    trio.lowlevel.reschedule(queued.task, outcome.Value(False))

    def _pass_on(self) -> None:
        """Hand the writing over to the first waiting save, if any."""
        if self._queue:
            task = self._queue[0].task
            assert task is not None
            trio.lowlevel.reschedule(task, outcome.Value(True))
        else:
            self._writing = False

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The snapshot stored under ``session_id``, or None.

        Raises:
            SnapshotError: The stored snapshot is from a newer format version
                or corrupt; it is left as it is.
            trio.ClosedResourceError: The store was closed.
        """
        check_session_id(session_id)
        try:
            return await self._run(_load, session_id)
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            # A damaged file (or not a database at all): nothing was written to it.
            raise SnapshotError(session_id, f"corrupt database file {self._path!r}: {exc}") from exc

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id`` and its messages; nothing happens if it is unknown."""
        check_session_id(session_id)
        await self._run(_delete, session_id)

    async def list(self) -> builtins.list[str]:
        """Every stored session id, sorted."""
        return await self._run(_list)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("this SQLiteStore was closed")
            # Never abandoned on cancellation: the worker owns the connection
            # until it returns, and a write must not be left halfway.
            return await trio.to_thread.run_sync(self._call, fn, args, abandon_on_cancel=False)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # In a worker thread, under the lock.
        if self._conn is None:
            self._conn = _connect(self._path, self._busy_timeout, self._durability)
        try:
            return fn(self._conn, *args)
        finally:
            if self._closed and self._conn is not None:
                # aclose() stopped waiting for this call: the connection is ours to close.
                conn, self._conn = self._conn, None
                conn.close()


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file is damaged (not busy, locked or out of space)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return not isinstance(exc, sqlite3.OperationalError)


def _connect(path: str, busy_timeout: float, durability: Durability) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write below runs
    # inside an explicit BEGIN IMMEDIATE ... COMMIT.
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        # Checked before switching to WAL, which rewrites the file header: a
        # file of a newer layout is left exactly as it was.
        (schema,) = conn.execute("PRAGMA user_version").fetchone()
        _check_layout(path, schema)
        _use_wal(conn, busy_timeout)
        # Per connection, not kept in the file.
        conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}")
        if schema != SCHEMA_VERSION:
            with _transaction(conn):
                # Again under the write lock: another process may have won the race.
                (schema,) = conn.execute("PRAGMA user_version").fetchone()
                _check_layout(path, schema)
                if schema in (0, 1):
                    # Not executescript(): it would commit the transaction first.
                    script = _SCHEMA if schema == 0 else _MIGRATE_1_TO_2
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode, which it then keeps for good."""
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if mode.lower() in ("wal", "memory"):
        return
    # The switch needs an exclusive lock, and SQLite reports a conflict at
    # once instead of calling the busy handler (when two processes open a
    # new file together): retry until busy_timeout runs out.
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _check_layout(path: str, schema: int) -> None:
    if schema > SCHEMA_VERSION:
        raise TrioSessionError(
            f"{path}: the session database has layout version {schema}, "
            f"newer than this trio-session supports ({SCHEMA_VERSION})"
        )


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""

    def __init__(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> None:
        self._conn = conn
        self._mode = mode

    def __enter__(self) -> None:
        self._conn.execute(f"BEGIN {self._mode}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the
                # transaction open, and the connection unusable with it.
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _noop(conn: sqlite3.Connection) -> None:
    pass


class _Save:
    """One save waiting for (or in) a group commit."""

    __slots__ = ("result", "row", "taken", "task", "timeline")

    def __init__(self, timeline: Sequence[Message], row: tuple[Any, ...]) -> None:
        self.timeline = timeline
        self.row = row
        self.task: trio.lowlevel.Task | None = None  # set while it waits
        self.taken = False  # in a batch being written
        self.result: outcome.Outcome[None] = outcome.Error(RuntimeError("not written"))


def _save_batch(conn: sqlite3.Connection, batch: list[_Save]) -> list[outcome.Outcome[None]]:
    """Write the batch in one transaction, each save in a savepoint of its own."""
    results: list[outcome.Outcome[None]] = []
    with _transaction(conn):
        for save in batch:
            conn.execute("SAVEPOINT save")
            try:
                _write(conn, save.timeline, save.row)
            except Exception as exc:
                # Undo this save alone. If even that fails, the exception
                # leaves the transaction, and every save of the batch fails.
                conn.execute("ROLLBACK TO save")
                conn.execute("RELEASE save")
                results.append(outcome.Error(exc))
            else:
                conn.execute("RELEASE save")
                results.append(outcome.Value(None))
    return results


def _write(conn: sqlite3.Connection, timeline: Sequence[Message], row: tuple[Any, ...]) -> None:
    session_id = row[0]
    start = first_new(conn.execute(_SQL.head, (session_id,)).fetchone(), timeline)
    # Also clears rows a corrupt or foreign writer left past the stored count.
    conn.execute(_SQL.delete_messages_from, (session_id, start))
    conn.executemany(_SQL.insert_messages, message_rows(session_id, timeline, start))
    conn.execute(_SQL.upsert, row)


def _load(conn: sqlite3.Connection, session_id: str) -> SessionSnapshot | None:
    # One read transaction, so the row and its messages come from one commit.
    with _transaction(conn, "DEFERRED"):
        row = conn.execute(_SQL.select, (session_id,)).fetchone()
        if row is None:
            return None
        # First, so that a newer format is reported as such, not as corruption.
        check_version(session_id, row[0])
        messages = conn.execute(_SQL.messages, (session_id,)).fetchall()
    return restore(session_id, row, messages)


def _delete(conn: sqlite3.Connection, session_id: str) -> None:
    with _transaction(conn):
        conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
        conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))


def _list(conn: sqlite3.Connection) -> list[str]:
    return sorted(row[0] for row in conn.execute("SELECT session_id FROM sessions"))
