"""Snapshot version 2: pending confirmations, the pending tick and remembered answers (§7, §9)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

import trio_session
from trio_session import (
    Decision,
    MemoryStore,
    Message,
    PendingConfirmation,
    SessionSnapshot,
    SnapshotError,
    SQLiteStore,
    from_json,
    to_json,
)
from trio_session.stores import SNAPSHOT_VERSION


def _pending(**changes: Any) -> PendingConfirmation:
    fields: dict[str, Any] = {
        "tool_use_id": "t1",
        "name": "rm",
        "input": {"path": "/x"},
        "message": "Delete /x?",
        "execution_id": "e1",
        "created_at": 5.0,
    }
    fields.update(changes)
    return PendingConfirmation(**fields)


def _snapshot() -> SessionSnapshot:
    return SessionSnapshot(
        session_id="s1",
        timeline=[Message("user", "rm /x", id="m1")],
        created_at=1.0,
        updated_at=2.0,
        pending_message=Message("assistant", "deleting", id="m2"),
        pending_confirmations=(_pending(),),
        remembered={"ls": Decision(True, always=True)},
    )


def test_pending_confirmation_is_a_frozen_exported_value() -> None:
    pending = _pending()
    assert trio_session.PendingConfirmation is PendingConfirmation
    assert "PendingConfirmation" in trio_session.__all__
    with pytest.raises(AttributeError):
        pending.name = "other"  # type: ignore[misc]
    assert from_json(PendingConfirmation, to_json(pending)) == pending


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"name": 3}, "name"), ({"input": [1]}, "input"), ({"created_at": "now"}, "created_at")],
)
def test_pending_confirmation_refuses_bad_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TypeError, match=field):
        _pending(**changes)


def test_snapshot_v2_json_round_trip() -> None:
    snapshot = _snapshot()
    assert SNAPSHOT_VERSION == 2
    assert snapshot.version == 2
    again = from_json(SessionSnapshot, to_json(snapshot))
    assert again == snapshot
    assert again.pending_confirmations[0].input == {"path": "/x"}
    assert again.remembered["ls"].always


def test_snapshot_defaults_have_nothing_pending() -> None:
    snapshot = SessionSnapshot(session_id="s", timeline=(), created_at=0, updated_at=0)
    assert snapshot.pending_message is None
    assert snapshot.pending_confirmations == ()
    assert snapshot.remembered == {}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pending_message": "hi"}, "pending_message"),
        ({"pending_confirmations": [{"tool_use_id": "t"}]}, "pending_confirmations"),
        ({"remembered": {"ls": True}}, "remembered"),
    ],
)
def test_snapshot_refuses_bad_durable_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TypeError, match=field):
        SessionSnapshot(session_id="s", timeline=(), created_at=0, updated_at=0, **changes)


# A header as trio-session wrote it before version 2, kept as text.
V1_JSON = json.dumps(
    {
        "version": 1,
        "session_id": "old",
        "timeline": [],
        "queued_messages": [],
        "state": {"n": 1},
        "last_seq": 9,
        "created_at": 1.0,
        "updated_at": 2.0,
    }
)


def test_version_1_snapshot_loads() -> None:
    snapshot = from_json(SessionSnapshot, V1_JSON)
    assert snapshot.version == 1
    assert snapshot.state == {"n": 1}
    assert snapshot.pending_message is None
    assert snapshot.pending_confirmations == ()
    assert snapshot.remembered == {}


async def test_memory_store_keeps_the_durable_fields() -> None:
    store = MemoryStore()
    snapshot = _snapshot()
    await store.save(snapshot)
    assert await store.load("s1") == snapshot


async def test_newer_snapshot_version_raises_snapshot_error() -> None:
    store = MemoryStore()
    await store.save(SessionSnapshot(
        version=SNAPSHOT_VERSION + 1, session_id="new", timeline=(), created_at=0, updated_at=0
    ))
    with pytest.raises(SnapshotError, match="newer"):
        await store.load("new")


async def test_sqlite_store_keeps_the_durable_fields(tmp_path: Any) -> None:
    async with SQLiteStore(str(tmp_path / "s.db")) as store:
        snapshot = _snapshot()
        await store.save(snapshot)
        assert await store.load("s1") == snapshot


async def test_sqlite_layout_1_file_is_migrated_and_its_sessions_load(tmp_path: Any) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    # The tables as trio-session wrote them before snapshot version 2.
    conn.executescript(
        """
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL,
            message_count INTEGER NOT NULL, queued TEXT NOT NULL, state TEXT NOT NULL,
            usage TEXT NOT NULL, last_seq INTEGER NOT NULL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL);
        CREATE TABLE messages (
            session_id TEXT NOT NULL, idx INTEGER NOT NULL, message_id TEXT NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (session_id, idx));
        PRAGMA user_version = 1;
        """
    )
    message = Message("user", "hello", id="m1")
    conn.execute(
        "INSERT INTO sessions VALUES (?, 1, 1, '[]', '{\"n\": 1}', ?, 4, 1.0, 2.0)",
        ("old", to_json(trio_session.Usage())),
    )
    conn.execute("INSERT INTO messages VALUES ('old', 0, 'm1', ?)", (to_json(message),))
    conn.commit()
    conn.close()
    async with SQLiteStore(path) as store:
        loaded = await store.load("old")
        assert loaded is not None
        assert loaded.version == 1
        assert loaded.timeline == (message,)
        assert loaded.state == {"n": 1}
        assert loaded.pending_confirmations == ()
        assert loaded.remembered == {}
        # The migrated file takes version-2 snapshots, incrementally.
        snapshot = _snapshot()
        await store.save(snapshot)
        assert await store.load("s1") == snapshot
