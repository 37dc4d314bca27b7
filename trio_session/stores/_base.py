"""What a store keeps: the session snapshot, and the protocol every store follows."""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import attrs

from .._errors import SerializationError, SnapshotError
from .._messages import Message, _copy_mapping
from .._serde import from_json, to_json
from .._timeline import trusted
from .._tools import Decision
from .._usage import Usage

__all__ = [
    "SNAPSHOT_VERSION",
    "PendingConfirmation",
    "SessionSnapshot",
    "SessionStore",
    "check_timeline",
]

T = TypeVar("T")

SNAPSHOT_VERSION = 2
"""The snapshot format this trio-session writes; stores refuse to load newer ones."""


def _check_version(_inst: object, _attr: object, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"SessionSnapshot.version must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"SessionSnapshot.version must be at least 1, got {value}")


def _check_session_id(_inst: object, _attr: object, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"SessionSnapshot.session_id must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError("SessionSnapshot.session_id must not be empty")


def _items(name: str, value: object, cls: type[T]) -> tuple[T, ...]:
    if trusted(value):
        # The session's own O(1) view: its messages were checked when committed,
        # and it stands for a tuple (equality, hashing, slicing, ``+``).
        return cast(tuple[T, ...], value)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise TypeError(
            f"SessionSnapshot.{name} must be a sequence of {cls.__name__}, "
            f"got {type(value).__name__}"
        )
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, cls):
            raise TypeError(
                f"SessionSnapshot.{name}[{i}] must be a {cls.__name__}, got {type(item).__name__}"
            )
    return items


def _messages(name: str, value: object) -> tuple[Message, ...]:
    return _items(name, value, Message)


def _to_timeline(value: object) -> tuple[Message, ...]:
    return _messages("timeline", value)


def _to_queued_messages(value: object) -> tuple[Message, ...]:
    return _messages("queued_messages", value)


def _to_state(value: object) -> dict[str, Any]:
    return _copy_mapping("SessionSnapshot.state", value)


def _check_usage(_inst: object, _attr: object, value: object) -> None:
    if not isinstance(value, Usage):
        raise TypeError(f"SessionSnapshot.usage must be a Usage, got {type(value).__name__}")


def _check_last_seq(_inst: object, _attr: object, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"SessionSnapshot.last_seq must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"SessionSnapshot.last_seq must not be negative, got {value}")


def _timestamp(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"SessionSnapshot.{name} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"SessionSnapshot.{name} must be finite, got {value!r}")
    return result


def _to_created_at(value: object) -> float:
    return _timestamp("created_at", value)


def _to_updated_at(value: object) -> float:
    return _timestamp("updated_at", value)


def _check_str(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")

    return check


def _to_input(value: object) -> dict[str, Any]:
    return _copy_mapping("PendingConfirmation.input", value)


def _to_pending_created_at(value: object) -> float:
    return _timestamp("pending_confirmations[].created_at", value)


@attrs.frozen(kw_only=True)
class PendingConfirmation:
    """A tool call waiting for approval, as a session lists and a store keeps it.

    ``session.pending_confirmations`` lists them, the ones of a running
    execution and, after a restart, the ones restored from the store; answer
    one with ``session.submit_tool_result(tool_use_id, approved=...)``.

    Attributes:
        tool_use_id: The id of the tool call.
        name: The tool's name.
        input: The arguments the model gave.
        message: The tool's confirmation message for this call.
        execution_id: The execution whose tick made the call.
        created_at: ``time.time()`` when confirmation was first asked for.

    Example:
        >>> from trio_session import to_json, from_json
        >>> p = PendingConfirmation(tool_use_id="t1", name="rm", input={"path": "/x"},
        ...                         message="Delete /x?", execution_id="e1", created_at=0.0)
        >>> from_json(PendingConfirmation, to_json(p)) == p
        True
    """

    tool_use_id: str = attrs.field(validator=_check_str("PendingConfirmation.tool_use_id"))
    name: str = attrs.field(validator=_check_str("PendingConfirmation.name"))
    input: Mapping[str, Any] = attrs.field(converter=_to_input)
    message: str = attrs.field(validator=_check_str("PendingConfirmation.message"))
    execution_id: str = attrs.field(validator=_check_str("PendingConfirmation.execution_id"))
    created_at: float = attrs.field(converter=_to_pending_created_at)


def _to_pending_message(value: object) -> Message | None:
    if value is not None and not isinstance(value, Message):
        raise TypeError(
            f"SessionSnapshot.pending_message must be a Message or None, got {type(value).__name__}"
        )
    return value


def _to_pending_confirmations(value: object) -> tuple[PendingConfirmation, ...]:
    return _items("pending_confirmations", value, PendingConfirmation)


def _to_remembered(value: object) -> dict[str, Decision]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"SessionSnapshot.remembered must be a mapping, got {type(value).__name__}"
        )
    result = dict(value)
    for name, decision in result.items():
        if not isinstance(name, str) or not isinstance(decision, Decision):
            raise TypeError(
                "SessionSnapshot.remembered must map tool names to Decision, "
                f"got {name!r}: {type(decision).__name__}"
            )
    return result


@attrs.frozen(kw_only=True)
class SessionSnapshot:
    """Everything needed to restore a session: what a `SessionStore` keeps.

    ``session.snapshot()`` makes one; ``open_session(..., store=...)`` saves one
    after every tick and restores from the last. It round-trips through JSON
    with `to_json` / `from_json`.

    Attributes:
        version: The snapshot format, `SNAPSHOT_VERSION` when written by this
            trio-session. Stores refuse to load a newer one (`SnapshotError`).
        session_id: The session's id; the store's key.
        timeline: The committed conversation, oldest first.
        queued_messages: Messages queued for the session's next execution.
        state: The session's JSON-able state.
        usage: Tokens and ticks of every execution so far.
        last_seq: The ``seq`` of the session's last event; a restored session
            numbers its events from ``last_seq + 1``.
        created_at: ``time.time()`` when the session was first created.
        updated_at: ``time.time()`` when this snapshot was taken.
        pending_message: The assistant message of a tick whose tool calls wait
            for confirmation; it joins the timeline with their results.
        pending_confirmations: Those tool calls' confirmations (§7).
        remembered: The ``always=True`` answers, by tool name.

    Raises:
        TypeError: A field of the wrong type; the message names it.
        ValueError: An empty session id, a negative ``last_seq``, a version
            below 1, or a timestamp that is not finite.

    Example:
        >>> from trio_session import user, to_json, from_json
        >>> snap = SessionSnapshot(session_id="s1", timeline=[user("hi")],
        ...                        created_at=0.0, updated_at=0.0)
        >>> from_json(SessionSnapshot, to_json(snap)) == snap
        True
    """

    version: int = attrs.field(default=SNAPSHOT_VERSION, validator=_check_version)
    session_id: str = attrs.field(validator=_check_session_id)
    timeline: tuple[Message, ...] = attrs.field(converter=_to_timeline)
    queued_messages: tuple[Message, ...] = attrs.field(default=(), converter=_to_queued_messages)
    state: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_state)
    usage: Usage = attrs.field(factory=Usage, validator=_check_usage)
    last_seq: int = attrs.field(default=0, validator=_check_last_seq)
    created_at: float = attrs.field(converter=_to_created_at)
    updated_at: float = attrs.field(converter=_to_updated_at)
    pending_message: Message | None = attrs.field(default=None, converter=_to_pending_message)
    pending_confirmations: tuple[PendingConfirmation, ...] = attrs.field(
        default=(), converter=_to_pending_confirmations
    )
    remembered: Mapping[str, Decision] = attrs.field(factory=dict, converter=_to_remembered)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions are saved and restored from.

    Implement these four coroutines to persist sessions anywhere (Postgres,
    Redis, a web service), then prove the implementation with
    `trio_session.testing.check_store`. The contract:

    - ``save`` is atomic: afterwards the store holds exactly that snapshot, or,
      if it raised (including `trio.Cancelled`), exactly what it held before.
      A snapshot holding a value JSON cannot represent fails here, not at load.
    - ``load`` returns an equal snapshot, as fresh objects, or None for an
      unknown id. A snapshot of a newer format version than `SNAPSHOT_VERSION`,
      or a corrupt one, raises `SnapshotError` and is left untouched.
    - ``delete`` of an unknown id does nothing.
    - ``list`` returns every stored session id, sorted.

    A save is made after every tick, so it should cost about the same for a
    long conversation as for a short one: write the new messages, not the
    whole timeline again. Messages are identified by their ids: a timeline
    extends the stored one when it has the stored first and last messages'
    ids at the same positions; anything else is a rewrite (`SQLiteStore`
    works this way). Give a changed message a new id.

    Example:
        >>> from trio_session import MemoryStore
        >>> isinstance(MemoryStore(), SessionStore)
        True
    """

    async def save(self, snapshot: SessionSnapshot) -> None:
        """Store ``snapshot`` under its ``session_id``, replacing what was there."""
        ...

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The stored snapshot of ``session_id``, or None if there is none."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id``; nothing happens if it is unknown."""
        ...

    async def list(self) -> builtins.list[str]:
        """Every stored session id, sorted."""
        ...


# Helpers shared by the built-in stores. Not public: third-party stores get
# the contract from the docstring above and check_store, not from these.


def check_snapshot(snapshot: object) -> SessionSnapshot:
    if not isinstance(snapshot, SessionSnapshot):
        raise TypeError(f"save() needs a SessionSnapshot, got {type(snapshot).__name__}")
    return snapshot


def check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
    return session_id


def extends(
    stored_count: int,
    stored_first_id: str | None,
    stored_last_id: str | None,
    timeline: Sequence[Message],
) -> bool:
    """Whether ``timeline`` continues a stored timeline, so only its tail needs writing.

    Messages are identified by id: the stored timeline is taken to be a prefix
    of ``timeline`` when ``timeline`` is at least as long and has the stored
    first and last messages' ids at the same positions. Checking two ids keeps
    a save O(new messages) however long the conversation; anything else is a
    rewrite. (A session only ever appends to its timeline; the first id also
    catches the common rewrite, a summary replacing the oldest messages.)
    """
    if stored_count == 0:
        return True
    return (
        0 < stored_count <= len(timeline)
        and timeline[0].id == stored_first_id
        and timeline[stored_count - 1].id == stored_last_id
    )


def check_version(session_id: str, version: object) -> int:
    """Refuse a snapshot that this trio-session cannot read, by its version."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise SnapshotError(session_id, f"corrupt snapshot: version is {version!r}")
    if version > SNAPSHOT_VERSION:
        raise SnapshotError(
            session_id,
            f"snapshot format version {version} is newer than this trio-session "
            f"supports ({SNAPSHOT_VERSION}); upgrade trio-session to load it",
        )
    if version < 1:
        raise SnapshotError(session_id, f"corrupt snapshot: version is {version}")
    return version


def check_timeline(session_id: str, timeline: Sequence[Message]) -> None:
    """Refuse a timeline that breaks transcript integrity (`SnapshotError`).

    Every ``tool_use`` must be answered, in the very next message, by its
    ``tool_result``, and every ``tool_result`` must answer a ``tool_use`` of
    the message just before: a provider rejects anything else.
    """
    asked: dict[str, int] = {}
    for index, message in enumerate(timeline):
        answered = {block.tool_use_id for block in message.tool_results}
        for tool_use_id in answered - asked.keys():
            raise SnapshotError(
                session_id,
                f"corrupt snapshot: message {index} has a tool_result for {tool_use_id!r} "
                "without its tool_use in the message before",
            )
        for tool_use_id, at in asked.items():
            if tool_use_id not in answered:
                raise SnapshotError(
                    session_id,
                    f"corrupt snapshot: message {at} has a tool_use {tool_use_id!r} "
                    "without its tool_result in the next message",
                )
        asked = {block.tool_use_id: index for block in message.tool_uses}
    for tool_use_id, at in asked.items():
        raise SnapshotError(
            session_id,
            f"corrupt snapshot: message {at} has a tool_use {tool_use_id!r} "
            "without its tool_result in the next message",
        )


def decode(session_id: str, what: str, cls: type[T] | Any, text: object) -> T:
    """``from_json`` for stored data: any failure is a `SnapshotError` naming ``what``."""
    if not isinstance(text, str):
        raise SnapshotError(
            session_id, f"corrupt snapshot: {what} is stored as {type(text).__name__}, not text"
        )
    try:
        result: T = from_json(cls, text)
    except SerializationError as exc:
        raise SnapshotError(session_id, f"corrupt snapshot: {what}: {exc}") from None
    return result


class ClosingStore:
    """``async with`` for a store that holds resources: leaving the block closes it."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# The layout both database stores share: a row of the snapshot's own fields per
# session, and a row per message, so that a save writes only the new messages.

SESSION_COLUMNS = (
    "session_id",
    "version",
    "message_count",
    "queued",
    "state",
    "usage",
    "last_seq",
    "created_at",
    "updated_at",
    "pending_message",
    "pending_confirmations",
    "remembered",
)
"""The columns of a session's row, in the order of `session_row`."""


@attrs.frozen
class Statements:
    """The SQL both database stores run, for their table names and placeholder."""

    head: str
    """The stored (message count, first message id, last message id) of a session."""
    select: str
    """A session's row, without the session id, in `SESSION_COLUMNS` order."""
    upsert: str
    """Insert or replace a session's row, given `session_row`."""
    messages: str
    """A session's message rows (index, message id, JSON), by index."""
    insert_messages: str
    """Insert a row of `message_rows`."""
    delete_messages_from: str
    """Delete a session's messages from an index on."""

    @classmethod
    def of(cls, sessions: str, messages: str, mark: str) -> Statements:
        fields = SESSION_COLUMNS[1:]
        return cls(
            head=f"""
SELECT s.message_count, first.message_id, last.message_id
FROM {sessions} AS s
LEFT JOIN {messages} AS first ON first.session_id = s.session_id AND first.idx = 0
LEFT JOIN {messages} AS last
    ON last.session_id = s.session_id AND last.idx = s.message_count - 1
WHERE s.session_id = {mark}
""",
            select=f"SELECT {', '.join(fields)} FROM {sessions} WHERE session_id = {mark}",
            upsert=(
                f"INSERT INTO {sessions} ({', '.join(SESSION_COLUMNS)}) "
                f"VALUES ({', '.join([mark] * len(SESSION_COLUMNS))}) "
                "ON CONFLICT (session_id) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in fields)
            ),
            messages=(
                f"SELECT idx, message_id, body FROM {messages} "
                f"WHERE session_id = {mark} ORDER BY idx"
            ),
            insert_messages=(
                f"INSERT INTO {messages} (session_id, idx, message_id, body) "
                f"VALUES ({mark}, {mark}, {mark}, {mark})"
            ),
            delete_messages_from=(
                f"DELETE FROM {messages} WHERE session_id = {mark} AND idx >= {mark}"
            ),
        )


def session_row(snapshot: SessionSnapshot) -> tuple[Any, ...]:
    """The values of ``snapshot``'s row, in `SESSION_COLUMNS` order.

    Everything but the timeline is serialized here, before the database is
    touched, so a state JSON cannot represent fails without writing anything.
    """
    return (
        snapshot.session_id,
        snapshot.version,
        len(snapshot.timeline),
        to_json(snapshot.queued_messages),
        to_json(snapshot.state),
        to_json(snapshot.usage),
        snapshot.last_seq,
        snapshot.created_at,
        snapshot.updated_at,
        to_json(snapshot.pending_message),
        to_json(snapshot.pending_confirmations),
        to_json(snapshot.remembered),
    )


def first_new(head: Sequence[Any] | None, timeline: Sequence[Message]) -> int:
    """The index of the first message of ``timeline`` that a save must write.

    ``head`` is what is stored: (message count, first message id, last message
    id), or None for a new session. The stored messages before the index are
    kept; those from it on are replaced.
    """
    if head is None:
        return 0
    count, first_id, last_id = head
    if isinstance(count, int) and extends(count, first_id, last_id, timeline):
        return count
    return 0


def message_rows(
    session_id: str, timeline: Sequence[Message], start: int
) -> builtins.list[tuple[str, int, str, str]]:
    """The rows (session id, index, message id, JSON) of the messages from ``start`` on."""
    return [
        (session_id, idx, timeline[idx].id, to_json(timeline[idx]))
        for idx in range(start, len(timeline))
    ]


def restore(
    session_id: str, row: Sequence[Any], messages: Sequence[Sequence[Any]]
) -> SessionSnapshot:
    """The snapshot a session's stored rows hold, or `SnapshotError` when they are corrupt.

    Args:
        session_id: The session.
        row: Its row's values in `SESSION_COLUMNS` order, without the session id.
        messages: Its message rows (index, message id, JSON), by index.
    """
    (version, count, queued, state, usage, last_seq, created_at, updated_at) = row[:8]
    pending_message, pending_confirmations, remembered = row[8:11]
    # First, so that a newer format is reported as such, not as corruption.
    check_version(session_id, version)
    if not isinstance(count, int) or len(messages) != count:
        raise SnapshotError(
            session_id,
            f"corrupt snapshot: {len(messages)} message row(s) stored, "
            f"but the session row counts {count!r}",
        )
    timeline: builtins.list[Message] = []
    for expected_idx, (idx, message_id, body) in enumerate(messages):
        if idx != expected_idx:
            raise SnapshotError(session_id, f"corrupt snapshot: message {expected_idx} is missing")
        message: Message = decode(session_id, f"message {idx}", Message, body)
        if message.id != message_id:
            raise SnapshotError(
                session_id,
                f"corrupt snapshot: message {idx} has id {message.id!r}, "
                f"but its row says {message_id!r}",
            )
        timeline.append(message)
    check_timeline(session_id, timeline)
    try:
        return SessionSnapshot(
            version=version,
            session_id=session_id,
            timeline=timeline,
            queued_messages=decode(session_id, "queued messages", tuple[Message, ...], queued),
            state=decode(session_id, "state", dict[str, Any], state),
            usage=decode(session_id, "usage", Usage, usage),
            last_seq=last_seq,
            created_at=created_at,
            updated_at=updated_at,
            pending_message=decode(session_id, "pending message", Message | None, pending_message),
            pending_confirmations=decode(
                session_id,
                "pending confirmations",
                tuple[PendingConfirmation, ...],
                pending_confirmations,
            ),
            remembered=decode(session_id, "remembered answers", dict[str, Decision], remembered),
        )
    except (TypeError, ValueError) as exc:
        raise SnapshotError(session_id, f"corrupt snapshot: {exc}") from None
