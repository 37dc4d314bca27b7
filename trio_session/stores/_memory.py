"""A store in process memory, for tests and demos."""

from __future__ import annotations

import builtins

import attrs
import trio

from .._messages import Message
from .._serde import to_json
from ._base import (
    SessionSnapshot,
    check_session_id,
    check_snapshot,
    check_timeline,
    check_version,
    decode,
    extends,
)

__all__ = ["MemoryStore"]


@attrs.define
class _Stored:
    # The snapshot without its timeline, as JSON; then one JSON text per message,
    # so that a save after a tick serializes only that tick's messages. The
    # version is kept beside the header, to refuse a newer format before
    # decoding it.
    version: int
    header: str
    message_ids: builtins.list[str]
    messages: builtins.list[str]


class MemoryStore:
    """A `SessionStore` that keeps sessions in memory, serialized as JSON.

    It behaves like a real store: a snapshot that JSON cannot represent fails
    at ``save``, ``load`` returns fresh objects, and saving after a tick
    serializes only the new messages. Everything is lost with the process.
    Every method is a checkpoint; a cancelled call did nothing.

    Example:
        >>> import trio
        >>> from trio_session import SessionSnapshot, user
        >>> async def main():
        ...     store = MemoryStore()
        ...     snap = SessionSnapshot(session_id="s1", timeline=[user("hi")],
        ...                            created_at=0.0, updated_at=0.0)
        ...     await store.save(snap)
        ...     return (await store.load("s1")) == snap, await store.list()
        >>> trio.run(main)
        (True, ['s1'])
    """

    def __init__(self) -> None:
        self._sessions: dict[str, _Stored] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._sessions)} session(s)>"

    async def __aenter__(self) -> MemoryStore:
        # An async context manager like every built-in store, so code can swap them.
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; the sessions stay in memory."""
        await trio.lowlevel.checkpoint()

    async def save(self, snapshot: SessionSnapshot) -> None:
        """Store ``snapshot``, replacing what was stored under its id.

        Raises:
            SerializationError: The snapshot holds a value JSON cannot
                represent; the stored snapshot is unchanged.
        """
        check_snapshot(snapshot)
        await trio.lowlevel.checkpoint()
        # Everything is serialized before anything is changed, and nothing
        # awaits from here on: a failed save leaves the old snapshot whole.
        header = to_json(attrs.evolve(snapshot, timeline=()))
        timeline = snapshot.timeline
        stored = self._sessions.get(snapshot.session_id)
        ids = stored.message_ids if stored is not None else []
        if stored is not None and extends(
            len(ids), ids[0] if ids else None, ids[-1] if ids else None, timeline
        ):
            start = len(ids)
            new = [to_json(m) for m in timeline[start:]]
            stored.version = snapshot.version
            stored.header = header
            stored.message_ids.extend(m.id for m in timeline[start:])
            stored.messages.extend(new)
        else:
            self._sessions[snapshot.session_id] = _Stored(
                snapshot.version, header, [m.id for m in timeline], [to_json(m) for m in timeline]
            )

    async def load(self, session_id: str) -> SessionSnapshot | None:
        """The snapshot stored under ``session_id``, or None.

        Raises:
            SnapshotError: It was written by a newer trio-session.
        """
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        stored = self._sessions.get(session_id)
        if stored is None:
            return None
        check_version(session_id, stored.version)
        header: SessionSnapshot = decode(session_id, "header", SessionSnapshot, stored.header)
        timeline: tuple[Message, ...] = tuple(
            decode(session_id, f"message {i}", Message, text)
            for i, text in enumerate(stored.messages)
        )
        check_timeline(session_id, timeline)
        return attrs.evolve(header, timeline=timeline)

    async def delete(self, session_id: str) -> None:
        """Forget ``session_id``; nothing happens if it is unknown."""
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        self._sessions.pop(session_id, None)

    async def list(self) -> builtins.list[str]:
        """Every stored session id, sorted."""
        await trio.lowlevel.checkpoint()
        return sorted(self._sessions)
