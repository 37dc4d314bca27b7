"""Tools for testing code built on trio-session.

`check_store` runs the whole `SessionStore` contract against a store, so a
third-party store (Postgres, Redis, a web service) can prove that sessions
survive in it exactly as they do in the built-in ones.

`RecordingModel` and `ReplayModel` record a session's model calls once and
replay them offline, so a test recorded against a real provider runs in CI
without a key or a network.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import attrs
import trio

from ._engine import bounded
from ._errors import ModelError, SerializationError, SnapshotError, TrioSessionError
from ._messages import (
    ImageBlock,
    JsonBlock,
    Message,
    ReasoningBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ._serde import converter, from_json, to_json
from ._tools import Decision
from ._usage import Usage
from .models._base import Model, ModelChunk, ModelRequest
from .stores._base import SNAPSHOT_VERSION, PendingConfirmation, SessionSnapshot, SessionStore

__all__ = ["RecordingModel", "ReplayMismatch", "ReplayModel", "StoreFactory", "check_store"]

StoreFactory: TypeAlias = Callable[[], SessionStore | Awaitable[SessionStore]]
"""A zero-argument callable that returns a store, or an awaitable of one."""


async def check_store(make_store: StoreFactory) -> None:
    """Check that a store keeps the whole `SessionStore` contract.

    Each check gets a fresh store from ``make_store``; a store with an
    ``aclose()`` coroutine is closed after its check. Stores from one factory
    may share a backend (one database): every check uses session ids of its
    own, and only looks at those.

    The contract checked:

    - the store is a `SessionStore`; ``load`` of an unknown id gives None;
    - ``save`` then ``load`` gives an equal snapshot — every kind of block,
      message metadata, unicode, nested state, queued messages, usage,
      ``last_seq``, timestamps — as fresh objects, messages in order;
    - saving again after appending messages (the incremental path), after
      changing only the other fields, and after rewriting the history
      (shorter, different, empty) gives an equal snapshot each time (a
      changed message always carries a new id, so a store may tell appends
      from rewrites by the ids of the stored first and last messages);
    - sessions are isolated from each other;
    - ``list`` is sorted and holds exactly the stored ids;
    - ``delete`` forgets a session, and does nothing for an unknown id;
    - a snapshot of a format version newer than `SNAPSHOT_VERSION` saves, and
      then raises `SnapshotError` naming the session at ``load``, every time;
    - a snapshot holding a value JSON cannot represent — in its state or in a
      new message — fails at ``save`` (`TrioSessionError`, `TypeError` or
      `ValueError`) and the snapshot stored before is intact;
    - a ``save`` or ``delete`` cancelled before it could start either did
      nothing and raised `trio.Cancelled`, or completed.

    Args:
        make_store: Returns a new store (or an awaitable of one) each call.

    Raises:
        AssertionError: The store breaks the contract; the message says which
            check failed and how.

    Example:
        A third-party store's test suite (pytest with pytest-trio)::

            from trio_session.testing import check_store

            async def test_redis_store_contract(redis_url):
                await check_store(lambda: RedisStore(redis_url))

            async def test_postgres_store_contract(dsn):
                async def make():
                    return await PostgresStore.connect(dsn)
                await check_store(make)
    """
    if not callable(make_store):
        raise TypeError(
            f"make_store must be a callable returning a store, got {type(make_store).__name__}"
        )
    run = uuid.uuid4().hex[:12]
    for check in _CHECKS:
        name = check.__name__.removeprefix("_check_")
        store = await _make(make_store, name)
        try:
            await check(store, _Ids(f"check-store-{run}-{name}"))
        except AssertionError as exc:
            raise AssertionError(f"check_store [{name}] failed for {store!r}: {exc}") from None
        except Exception as exc:
            exc.add_note(f"(raised by {store!r} during check_store [{name}])")
            raise
        finally:
            # Maybe while the check is being cancelled: shielded so the store is still
            # closed, bounded so a close that hangs cannot hang us.
            with trio.CancelScope(shield=True), bounded("closing the store"):
                await _close(store)


async def _make(make_store: StoreFactory, name: str) -> SessionStore:
    store: Any = make_store()
    if inspect.isawaitable(store):
        store = await store
    if not isinstance(store, SessionStore):
        missing = [
            method
            for method in ("save", "load", "delete", "list")
            if not callable(getattr(store, method, None))
        ]
        raise AssertionError(
            f"check_store [{name}]: make_store() returned {store!r}, which is not a "
            f"SessionStore (missing: {', '.join(missing)})"
        )
    return store


async def _close(store: SessionStore) -> None:
    aclose = getattr(store, "aclose", None)
    if aclose is None:
        return
    await aclose()


@attrs.frozen
class _Ids:
    prefix: str

    def __call__(self, name: str) -> str:
        return f"{self.prefix}-{name}"


# --- snapshots to store -------------------------------------------------------


def _rich_timeline(tag: str) -> tuple[Message, ...]:
    """A conversation with every kind of block, metadata and awkward text."""
    return (
        Message("system", "You are terse. Ünïcödé — 你好 — 🌍", id=f"{tag}-sys"),
        Message(
            "user",
            (
                TextBlock('What is in this picture? "quotes", \\backslash\\, tab\t, newline\n'),
                ImageBlock("https://example.com/cat.png", media_type="image/png"),
                ImageBlock("data:image/gif;base64,R0lGODlhAQABAAAAACw="),
            ),
            id=f"{tag}-u1",
            metadata={"source": "web", "nested": {"list": [1, 2.5, None, True, "é"]}},
        ),
        Message(
            "assistant",
            (
                ReasoningBlock("The user wants a description; call the tool."),
                TextBlock("Let me look."),
                ToolUseBlock("call-1", "describe", {"url": "https://example.com/cat.png"}),
                ToolUseBlock("call-2", "lookup", {"query": "cat", "limit": 3, "deep": {"a": []}}),
            ),
            id=f"{tag}-a1",
            metadata={"model": "scripted", "tick": 1},
        ),
        Message(
            "tool",
            (
                ToolResultBlock(
                    "call-1",
                    "describe",
                    (TextBlock("A cat."), JsonBlock({"labels": ["cat", "sofa"], "score": 0.97})),
                ),
                ToolResultBlock("call-2", "lookup", "lookup failed: timeout", is_error=True),
            ),
            id=f"{tag}-t1",
        ),
        Message("event", (JsonBlock([1, "two", {"three": 3}, None]),), id=f"{tag}-e1"),
        Message("assistant", "A cat on a sofa. 🐈", id=f"{tag}-a2", metadata={"final": True}),
    )


def _rich_snapshot(session_id: str) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        timeline=_rich_timeline(session_id),
        queued_messages=(
            Message("user", "and a dog?", id=f"{session_id}-q1", metadata={"priority": 2}),
            Message("user", (TextBlock("ok"), JsonBlock({"k": "v"})), id=f"{session_id}-q2"),
        ),
        state={
            "counter": 3,
            "ratio": 0.1,
            "big": 2**70,
            "negative": -7,
            "flags": {"seen": True, "none": None},
            "items": [{"name": "ä", "tags": ["x", "y"]}, [], {}],
            "text": "línea 1\nline 2 — 🚀",
        },
        usage=Usage(input_tokens=1234, output_tokens=567, total_tokens=1801, ticks=3),
        last_seq=42,
        created_at=1_700_000_000.25,
        updated_at=1_700_000_123.5,
        pending_message=Message("assistant", "deleting it", id=f"{session_id}-pending"),
        pending_confirmations=(
            PendingConfirmation(
                tool_use_id=f"{session_id}-call",
                name="rm",
                input={"path": "/tmp/ä", "force": True},
                message="Delete /tmp/ä?",
                execution_id=f"{session_id}-exec",
                created_at=1_700_000_100.5,
            ),
        ),
        remembered={
            "ls": Decision(True, always=True),
            "mv": Decision(False, reason="never", always=True),
        },
    )


def _turn(session_id: str, n: int) -> tuple[Message, ...]:
    """One tick's new messages: a user message, a tool call and its result."""
    return (
        Message("user", f"question {n}", id=f"{session_id}-turn{n}-u"),
        Message(
            "assistant",
            (TextBlock(f"answer {n}"), ToolUseBlock(f"c{n}", "calc", {"n": n})),
            id=f"{session_id}-turn{n}-a",
        ),
        Message(
            "tool",
            (ToolResultBlock(f"c{n}", "calc", str(n * n)),),
            id=f"{session_id}-turn{n}-t",
            metadata={"n": n},
        ),
    )


def _next(snapshot: SessionSnapshot, **changes: Any) -> SessionSnapshot:
    """The snapshot a session would take one tick later."""
    changes.setdefault("updated_at", snapshot.updated_at + 1.0)
    changes.setdefault("last_seq", snapshot.last_seq + 7)
    return attrs.evolve(snapshot, **changes)


# --- assertions ---------------------------------------------------------------


def _difference(expected: SessionSnapshot, actual: object) -> str | None:
    """Where ``actual`` differs from ``expected``, in words; None if equal."""
    if not isinstance(actual, SessionSnapshot):
        return f"load() returned {type(actual).__name__} {actual!r}, not a SessionSnapshot"
    if actual == expected:
        return None
    for field in attrs.fields(SessionSnapshot):
        want, got = getattr(expected, field.name), getattr(actual, field.name)
        if want == got:
            continue
        if field.name in ("timeline", "queued_messages"):
            if len(want) != len(got):
                return f"{field.name} has {len(got)} message(s), expected {len(want)}"
            for i, (w, g) in enumerate(zip(want, got, strict=True)):
                if w != g:
                    return f"{field.name}[{i}] is {g!r}, expected {w!r}"
        return f"{field.name} is {got!r}, expected {want!r}"
    return f"the snapshots differ: got {actual!r}, expected {expected!r}"


async def _assert_stored(store: SessionStore, expected: SessionSnapshot, after: str) -> None:
    loaded = await store.load(expected.session_id)
    if loaded is None:
        raise AssertionError(f"after {after}, load({expected.session_id!r}) returned None")
    problem = _difference(expected, loaded)
    if problem is not None:
        raise AssertionError(f"after {after}, the loaded snapshot differs: {problem}")


async def _assert_absent(store: SessionStore, session_id: str, after: str) -> None:
    loaded = await store.load(session_id)
    if loaded is not None:
        raise AssertionError(f"after {after}, load({session_id!r}) returned {loaded!r}, not None")


async def _listed(store: SessionStore, prefix: str) -> list[str]:
    """``store.list()``, checked to be a sorted list of str, narrowed to our ids."""
    ids = await store.list()
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise AssertionError(f"list() must return a list of str, got {ids!r}")
    if ids != sorted(ids):
        raise AssertionError(f"list() is not sorted: {ids!r}")
    return [i for i in ids if i.startswith(prefix)]


# --- the checks ---------------------------------------------------------------


async def _check_unknown(store: SessionStore, ids: _Ids) -> None:
    await _assert_absent(store, ids("never-saved"), "nothing was saved")


async def _check_round_trip(store: SessionStore, ids: _Ids) -> None:
    snapshot = _rich_snapshot(ids("rich"))
    await store.save(snapshot)
    await _assert_stored(store, snapshot, "saving a snapshot with every kind of content")
    await _assert_stored(store, snapshot, "loading the same snapshot twice")

    # A snapshot's state is a mutable dict: neither the saved snapshot nor a
    # loaded one may share it (or anything else) with what the store keeps.
    saved_state: Any = snapshot.state
    saved_state["counter"] = -1
    loaded = await store.load(snapshot.session_id)
    assert loaded is not None
    loaded_state: Any = loaded.state
    loaded_state["items"][0]["tags"].append("mutated")
    loaded_state["added"] = True
    await _assert_stored(
        store,
        _rich_snapshot(snapshot.session_id),
        "mutating the state of saved and loaded snapshots",
    )

    minimal = SessionSnapshot(
        session_id=ids("minimal"), timeline=(), created_at=0.0, updated_at=0.0
    )
    await store.save(minimal)
    await _assert_stored(store, minimal, "saving an empty snapshot")


async def _check_incremental(store: SessionStore, ids: _Ids) -> None:
    sid = ids("growing")
    snapshot = attrs.evolve(_rich_snapshot(sid), queued_messages=())
    await store.save(snapshot)
    # More than ten turns, so that ordering by index as text would show.
    for n in range(12):
        snapshot = _next(
            snapshot,
            timeline=snapshot.timeline + _turn(sid, n),
            state={**snapshot.state, "counter": n, "history": list(range(n))},
            usage=snapshot.usage + Usage(input_tokens=10, output_tokens=5, ticks=1),
        )
        await store.save(snapshot)
        await _assert_stored(store, snapshot, f"appending turn {n} and saving again")

    snapshot = _next(snapshot, state={"only": "state changed"})
    await store.save(snapshot)
    await _assert_stored(store, snapshot, "saving with the same timeline and a new state")

    snapshot = _next(snapshot, queued_messages=(Message("user", "queued", id=f"{sid}-q"),))
    await store.save(snapshot)
    await _assert_stored(store, snapshot, "saving with a message queued")

    snapshot = _next(snapshot, pending_message=None, pending_confirmations=(), remembered={})
    await store.save(snapshot)
    await _assert_stored(store, snapshot, "saving with the pending confirmations answered")

    snapshot = _next(snapshot, timeline=snapshot.timeline + snapshot.queued_messages)
    snapshot = attrs.evolve(snapshot, queued_messages=())
    await store.save(snapshot)
    await _assert_stored(store, snapshot, "delivering the queued message into the timeline")


async def _check_rewrite(store: SessionStore, ids: _Ids) -> None:
    sid = ids("rewritten")
    base = _rich_snapshot(sid)
    long = _next(base, timeline=base.timeline + _turn(sid, 1) + _turn(sid, 2))
    await store.save(long)
    await _assert_stored(store, long, "saving a long timeline")

    steps: Sequence[tuple[str, tuple[Message, ...]]] = [
        ("truncating the timeline", long.timeline[:4]),
        (
            "compacting the history into a summary, keeping the last turn",
            (
                Message("system", "summary of earlier turns", id=f"{sid}-summary"),
                *long.timeline[-3:],
            ),
        ),
        (
            "replacing the last message (same length)",
            (
                *long.timeline[:-1],
                Message("tool", long.timeline[-1].content, id=f"{sid}-new-last"),
            ),
        ),
        (
            "replacing an early message and appending",
            (Message("user", "edited", id=f"{sid}-edited"), *long.timeline[1:], *_turn(sid, 3)),
        ),
        ("clearing the timeline", ()),
        ("starting again after clearing", _turn(sid, 4)),
        ("appending after the rewrite", _turn(sid, 4) + _turn(sid, 5)),
    ]
    snapshot = long
    for what, timeline in steps:
        snapshot = _next(snapshot, timeline=timeline)
        await store.save(snapshot)
        await _assert_stored(store, snapshot, what)


async def _check_isolation(store: SessionStore, ids: _Ids) -> None:
    a = _rich_snapshot(ids("a"))
    b = _next(_rich_snapshot(ids("b")), state={"who": "b"}, last_seq=1)
    # Same message ids in another session must not collide.
    c = _next(a, session_id=ids("c"), state={"who": "c"})
    for snapshot in (a, b, c):
        await store.save(snapshot)
    a2 = _next(a, timeline=a.timeline + _turn(a.session_id, 1), state={"who": "a2"})
    await store.save(a2)
    b2 = _next(b, timeline=b.timeline[:2])
    await store.save(b2)
    await _assert_stored(store, a2, "saving three sessions and updating two")
    await _assert_stored(store, b2, "saving three sessions and updating two")
    await _assert_stored(store, c, "updating two other sessions")
    await store.delete(b2.session_id)
    await _assert_absent(store, b2.session_id, "deleting it")
    await _assert_stored(store, a2, "deleting another session")
    await _assert_stored(store, c, "deleting another session")


async def _check_list(store: SessionStore, ids: _Ids) -> None:
    prefix = ids("")
    if await _listed(store, prefix):
        raise AssertionError("list() shows session ids that were never saved")
    names = [prefix + suffix for suffix in ("b", "a", "Z", "a-1", "é", "10", "9")]
    for name in names:
        await store.save(SessionSnapshot(session_id=name, timeline=(), created_at=0, updated_at=0))
    await store.save(SessionSnapshot(session_id=names[0], timeline=(), created_at=0, updated_at=1))
    listed = await _listed(store, prefix)
    if listed != sorted(names):
        raise AssertionError(f"list() gave {listed!r}, expected {sorted(names)!r}")
    await store.delete(names[1])
    listed = await _listed(store, prefix)
    if listed != sorted(names[:1] + names[2:]):
        raise AssertionError(f"after delete, list() gave {listed!r}")


async def _check_delete(store: SessionStore, ids: _Ids) -> None:
    await store.delete(ids("never-saved"))
    snapshot = _rich_snapshot(ids("doomed"))
    await store.save(snapshot)
    await store.delete(snapshot.session_id)
    await _assert_absent(store, snapshot.session_id, "deleting it")
    await store.delete(snapshot.session_id)
    # A deleted session can be saved again from scratch.
    again = _next(snapshot, timeline=snapshot.timeline[:2])
    await store.save(again)
    await _assert_stored(store, again, "saving a deleted session again")


async def _check_newer_version(store: SessionStore, ids: _Ids) -> None:
    sid = ids("from-the-future")
    await store.save(attrs.evolve(_rich_snapshot(sid), version=SNAPSHOT_VERSION + 1))
    for attempt in ("the first", "a second"):
        try:
            loaded = await store.load(sid)
        except SnapshotError as exc:
            if exc.session_id != sid or sid not in str(exc):
                raise AssertionError(
                    f"the SnapshotError does not name session {sid!r}: {exc!r}"
                ) from None
        else:
            raise AssertionError(
                f"{attempt} load of a snapshot with version {SNAPSHOT_VERSION + 1} "
                f"(newer than {SNAPSHOT_VERSION}) returned {loaded!r} instead of raising "
                "SnapshotError"
            )
    if sid not in await store.list():
        raise AssertionError("a snapshot that failed to load disappeared from list()")


async def _check_unserializable(store: SessionStore, ids: _Ids) -> None:
    sid = ids("bad-state")
    good = _rich_snapshot(sid)
    await store.save(good)
    bad_snapshots = {
        "an object() in the state": _next(good, state={"ok": 1, "bad": object()}),
        "a set in the state": _next(good, state={"bad": {1, 2}}),
        "an object() in a new message": _next(
            good,
            timeline=good.timeline
            + _turn(sid, 1)
            + (Message("assistant", (JsonBlock({"bad": object()}),), id=f"{sid}-bad"),),
        ),
        "a float('nan') in a rewritten history": _next(
            good, timeline=(Message("user", "hi", metadata={"x": float("nan")}),)
        ),
    }
    for what, bad in bad_snapshots.items():
        try:
            await store.save(bad)
        except (TrioSessionError, TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"save() accepted a snapshot with {what}")
        await _assert_stored(store, good, f"a failed save of a snapshot with {what}")


async def _check_cancelled(store: SessionStore, ids: _Ids) -> None:
    sid = ids("cancelled")
    old = _rich_snapshot(sid)
    await store.save(old)
    new = _next(old, timeline=old.timeline + _turn(sid, 1), state={"new": True})
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save(new)
    if scope.cancelled_caught:
        await _assert_stored(store, old, "a save() that raised Cancelled")
    else:
        await _assert_stored(store, new, "a save() that completed in a cancelled scope")
        old = new
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.delete(sid)
    if scope.cancelled_caught:
        await _assert_stored(store, old, "a delete() that raised Cancelled")
    else:
        await _assert_absent(store, sid, "a delete() that completed in a cancelled scope")


_CHECKS: tuple[Callable[[SessionStore, _Ids], Awaitable[None]], ...] = (
    _check_unknown,
    _check_round_trip,
    _check_incremental,
    _check_rewrite,
    _check_isolation,
    _check_list,
    _check_delete,
    _check_newer_version,
    _check_unserializable,
    _check_cancelled,
)


# --- Record and replay ------------------------------------------------------


class ReplayMismatch(AssertionError):
    """A `ReplayModel` got a request that its recording does not hold.

    Raised from the model's stream, so the execution ends ``failed`` and
    ``await handle.result`` raises it. The message holds a unified diff of
    the recorded and the actual request (as JSON, one key per line).
    """


@attrs.frozen
class _RecordedError:
    message: str
    code: str
    retryable: bool


@attrs.frozen
class _Exchange:
    """One line of a recording: a request and what the model answered."""

    model: str
    request: ModelRequest
    chunks: tuple[ModelChunk, ...]
    error: _RecordedError | None = None
    # False when the consumer closed the stream before the model finished
    # (an abort): the replay then stops at the same place and waits.
    complete: bool = True


class RecordingModel:
    """Passes every request to a model and records the exchange to a file.

    Each call of ``stream`` appends one JSON line to ``path`` once the stream
    is over: the request, every chunk the inner model produced, a
    `ModelError` it raised, and whether the stream ran to its end (it does
    not when the execution was aborted mid-stream). Lines are written through
    the library's converter, so `ReplayModel` reads them back exactly.
    Exceptions other than `ModelError` pass through unrecorded.

    Args:
        inner: The model to record (a real provider, usually).
        path: The JSON-lines file to append to; created when missing.

    Example:
        Record once against the real provider, then replay in CI::

            model = RecordingModel(OpenAIModel("gpt-4o-mini"), "tests/recordings/weather.jsonl")
            # later, offline:
            model = ReplayModel("tests/recordings/weather.jsonl")
    """

    def __init__(self, inner: Model, path: str | os.PathLike[str]) -> None:
        if not isinstance(inner, Model):
            raise TypeError(f"inner must be a Model, got {type(inner).__name__}")
        self.inner = inner
        self.path = Path(path)
        self.name: str = inner.name

    def __repr__(self) -> str:
        return f"RecordingModel({self.inner!r}, {str(self.path)!r})"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the inner model's reply to ``request``, recording it."""
        chunks: list[ModelChunk] = []
        error: _RecordedError | None = None
        complete = False
        try:
            async for chunk in self.inner.stream(request):
                chunks.append(chunk)
                yield chunk
            complete = True
        except ModelError as exc:
            error = _RecordedError(exc.message, exc.code, exc.retryable)
            complete = True
            raise
        finally:
            exchange = _Exchange(self.name, request, tuple(chunks), error, complete)
            # A plain write: this `finally` also runs while the stream is being
            # cancelled, where nothing may be awaited, and one appended line is
            # a write no reader can see half of.
            with self.path.open("a", encoding="utf-8") as file:
                file.write(to_json(exchange) + "\n")


class ReplayModel:
    """Answers requests from a file written by `RecordingModel`, offline.

    Matching, with ``match="exact"`` (the default): a request is answered by
    the first unused recording whose request is equal to it — system prompt,
    messages, tools with their schemas, tick and settings — except for the
    messages' ``id`` fields, which are random on every run. Tool-use ids are
    compared: they come from the recording, so a faithful replay reproduces
    them. Several executions sharing the model may interleave their requests
    in any order.

    With ``match="tick"``: the n-th request is answered by the n-th recording,
    and only its ``tick`` must be equal; everything else in the request may
    have changed (a reworded prompt, a new tool).

    A recording that ended with a `ModelError` raises it again; one that the
    consumer cut off (an abort) yields its chunks, then waits until it is
    cancelled, as the original did.

    Args:
        path: A JSON-lines file written by `RecordingModel`.
        match: ``"exact"`` or ``"tick"``, as above.

    Raises:
        ReplayMismatch: From ``stream``, when no unused recording matches the
            request; the message diffs the request against the next unused
            recording. Also when the recordings are used up.
        SerializationError: At construction, when a line is not a recording.

    Example:
        >>> import os, tempfile, trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> path = os.path.join(tempfile.mkdtemp(), "hello.jsonl")
        >>> async def run(model):
        ...     async with open_session(Agent(model)) as session:
        ...         return (await (await session.send("hi")).result).response
        >>> trio.run(run, RecordingModel(ScriptedModel(["Hello!"]), path))
        'Hello!'
        >>> trio.run(run, ReplayModel(path))
        'Hello!'
    """

    def __init__(
        self, path: str | os.PathLike[str], *, match: Literal["exact", "tick"] = "exact"
    ) -> None:
        if match not in ("exact", "tick"):
            raise ValueError(f"match must be 'exact' or 'tick', got {match!r}")
        self.path = Path(path)
        self.match = match
        self._exchanges: list[_Exchange] = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    self._exchanges.append(from_json(_Exchange, line))
                except SerializationError as exc:
                    raise SerializationError(f"{self.path}:{number}: {exc}") from None
        self._used = [False] * len(self._exchanges)
        self.name: str = self._exchanges[0].model if self._exchanges else "replay"

    def __repr__(self) -> str:
        return f"ReplayModel({str(self.path)!r}, match={self.match!r})"

    @property
    def unused(self) -> int:
        """How many recordings no request has used yet."""
        return self._used.count(False)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the recorded reply to ``request``."""
        await trio.lowlevel.checkpoint()
        exchange = self._take(request)
        for chunk in exchange.chunks:
            yield chunk
            await trio.lowlevel.checkpoint()
        if exchange.error is not None:
            error = exchange.error
            raise ModelError(error.message, code=error.code, retryable=error.retryable)
        if not exchange.complete:
            await trio.sleep_forever()

    def _take(self, request: ModelRequest) -> _Exchange:
        unused = [i for i, used in enumerate(self._used) if not used]
        if not unused:
            raise ReplayMismatch(
                f"{self.path} holds {len(self._exchanges)} recordings, all used; "
                f"no answer for the request of tick {request.tick}:\n{_rendering(request)}"
            )
        if self.match == "tick":
            index = unused[0]
            recorded = self._exchanges[index].request
            if recorded.tick != request.tick:
                raise ReplayMismatch(
                    f"recording {index + 1} of {self.path} is for tick {recorded.tick}, "
                    f"the request is for tick {request.tick}"
                )
        else:
            actual = _rendering(request)
            found = [i for i in unused if _rendering(self._exchanges[i].request) == actual]
            if not found:
                expected = _rendering(self._exchanges[unused[0]].request)
                diff = difflib.unified_diff(
                    expected.splitlines(),
                    actual.splitlines(),
                    f"recorded (recording {unused[0] + 1} of {self.path})",
                    "requested",
                    lineterm="",
                )
                raise ReplayMismatch(
                    f"the request of tick {request.tick} matches no unused recording "
                    f"in {self.path}:\n" + "\n".join(diff)
                )
            index = found[0]
        self._used[index] = True
        return self._exchanges[index]


def _rendering(request: ModelRequest) -> str:
    """The request as exact matching compares it: JSON without message ids."""
    data = converter.unstructure(request)
    for message in data["messages"]:
        message.pop("id", None)
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
