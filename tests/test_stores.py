"""SessionSnapshot, the SessionStore protocol, MemoryStore and the check_store kit."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _profiles import examples
from _snapshots import conversation, snap
from hypothesis import given, settings, strategies as st

import trio_session
from trio_session import (
    JsonBlock,
    MemoryStore,
    Message,
    SerializationError,
    SessionSnapshot,
    SessionStore,
    SnapshotError,
    SQLiteStore,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    from_json,
    to_json,
    user,
)
from trio_session.stores import SNAPSHOT_VERSION
from trio_session.testing import check_store

# --- SessionSnapshot ----------------------------------------------------------


def test_snapshot_defaults() -> None:
    s = SessionSnapshot(session_id="x", timeline=[user("hi")], created_at=1, updated_at=2)
    assert s.version == SNAPSHOT_VERSION == 2
    assert s.queued_messages == ()
    assert s.state == {}
    assert s.usage == Usage()
    assert s.last_seq == 0
    assert isinstance(s.timeline, tuple)
    assert (s.created_at, s.updated_at) == (1.0, 2.0)
    assert isinstance(s.created_at, float)


def test_snapshot_is_exported_from_the_package() -> None:
    assert trio_session.SessionSnapshot is SessionSnapshot
    assert trio_session.SessionStore is SessionStore
    assert trio_session.MemoryStore is MemoryStore
    assert trio_session.SQLiteStore is SQLiteStore


def test_snapshot_copies_state() -> None:
    state = {"a": 1}
    s = snap(state=state)
    state["a"] = 2
    assert s.state == {"a": 1}


def test_snapshot_json_round_trip() -> None:
    s = snap(
        timeline=(
            user("hi", lang="en"),
            Message("assistant", (TextBlock("x"), ToolUseBlock("c1", "t", {"a": [1]}))),
            Message("tool", (ToolResultBlock("c1", "t", "ok"),)),
        ),
        queued_messages=(user("later"),),
        state={"nested": {"list": [1, 2.5, None, "é"]}},
        usage=Usage(1, 2, 3, 4),
        last_seq=17,
    )
    text = to_json(s)
    assert '"version": 2' in text
    assert from_json(SessionSnapshot, text) == s


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"session_id": ""}, ValueError, "session_id"),
        ({"session_id": 5}, TypeError, "session_id"),
        ({"version": 0}, ValueError, "version"),
        ({"version": "1"}, TypeError, "version"),
        ({"version": True}, TypeError, "version"),
        ({"timeline": "hello"}, TypeError, "timeline"),
        ({"timeline": [user("a"), "b"]}, TypeError, "timeline[1]"),
        ({"queued_messages": [None]}, TypeError, "queued_messages[0]"),
        ({"state": [("a", 1)]}, TypeError, "state"),
        ({"state": {1: "a"}}, TypeError, "state keys"),
        ({"usage": {"ticks": 1}}, TypeError, "usage"),
        ({"last_seq": -1}, ValueError, "last_seq"),
        ({"last_seq": 1.5}, TypeError, "last_seq"),
        ({"created_at": "now"}, TypeError, "created_at"),
        ({"updated_at": math.inf}, ValueError, "updated_at"),
        ({"updated_at": math.nan}, ValueError, "updated_at"),
    ],
)
def test_snapshot_refuses_bad_fields(changes: dict[str, Any], error: type, field: str) -> None:
    fields: dict[str, Any] = {
        "session_id": "s",
        "timeline": (),
        "created_at": 0.0,
        "updated_at": 0.0,
        **changes,
    }
    with pytest.raises(error, match=re.escape(f"SessionSnapshot.{field}")):
        SessionSnapshot(**fields)


def test_snapshot_from_json_refuses_bad_documents() -> None:
    good = to_json(snap(timeline=(user("x"),)))
    with pytest.raises(SerializationError, match="last_seq"):
        from_json(SessionSnapshot, good.replace('"last_seq": 0', '"last_seq": "0"'))
    with pytest.raises(SerializationError, match="unknown"):
        from_json(SessionSnapshot, good.replace('"version": 2', '"version": 2, "extra": 1'))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
messages = st.builds(
    Message,
    role=st.sampled_from(["system", "user", "assistant", "event"]),
    content=st.lists(
        st.one_of(
            st.text().map(TextBlock),
            json_values.map(JsonBlock),
        ),
        max_size=3,
    ),
    metadata=st.dictionaries(st.text(), json_values, max_size=3),
)


@settings(max_examples=examples(60), deadline=None)
@given(
    timeline=st.lists(messages, max_size=5),
    state=st.dictionaries(st.text(), json_values, max_size=5),
    last_seq=st.integers(min_value=0),
    created_at=st.floats(allow_nan=False, allow_infinity=False),
)
def test_snapshot_json_round_trip_property(
    timeline: list[Message], state: dict[str, Any], last_seq: int, created_at: float
) -> None:
    s = SessionSnapshot(
        session_id="s",
        timeline=timeline,
        state=state,
        last_seq=last_seq,
        created_at=created_at,
        updated_at=created_at,
    )
    assert from_json(SessionSnapshot, to_json(s)) == s


# --- the protocol -------------------------------------------------------------


def test_built_in_stores_are_session_stores(tmp_path: Any) -> None:
    assert isinstance(MemoryStore(), SessionStore)
    assert isinstance(SQLiteStore(tmp_path / "x.db"), SessionStore)

    class NoList:
        async def save(self, snapshot: SessionSnapshot) -> None: ...
        async def load(self, session_id: str) -> SessionSnapshot | None: ...
        async def delete(self, session_id: str) -> None: ...

    assert not isinstance(NoList(), SessionStore)


# --- MemoryStore --------------------------------------------------------------


async def test_memory_store_passes_check_store() -> None:
    await check_store(MemoryStore)


async def test_memory_store_round_trip_gives_fresh_objects() -> None:
    store = MemoryStore()
    original = snap(
        timeline=conversation(3), state={"deep": {"x": [1]}}, queued_messages=(user("q"),)
    )
    await store.save(original)
    loaded = await store.load("s1")
    assert loaded == original
    assert loaded is not original
    assert loaded.timeline[0] is not original.timeline[0]
    assert loaded.state["deep"] is not original.state["deep"]
    assert loaded.queued_messages == (original.queued_messages[0],)


async def test_memory_store_serializes_only_new_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    import trio_session.stores._memory as memory

    serialized: list[str] = []

    def counting_to_json(obj: Any) -> str:
        serialized.append(type(obj).__name__)
        return to_json(obj)

    monkeypatch.setattr(memory, "to_json", counting_to_json)
    store = MemoryStore()
    base = snap(timeline=conversation(50))
    await store.save(base)
    assert serialized.count("Message") == 50

    serialized.clear()
    grown = attrs.evolve(base, timeline=base.timeline + conversation(3, "new"), last_seq=9)
    await store.save(grown)
    assert serialized == ["SessionSnapshot", "Message", "Message", "Message"]
    assert await store.load("s1") == grown

    serialized.clear()
    rewritten = attrs.evolve(grown, timeline=conversation(2, "other"))
    await store.save(rewritten)
    assert serialized.count("Message") == 2
    assert await store.load("s1") == rewritten


async def test_memory_store_refuses_unserializable_and_keeps_old() -> None:
    store = MemoryStore()
    good = snap(timeline=conversation(2), state={"ok": True})
    await store.save(good)
    with pytest.raises(SerializationError, match="not JSON serializable"):
        await store.save(attrs.evolve(good, state={"bad": object()}))
    with pytest.raises(SerializationError):
        await store.save(
            attrs.evolve(good, timeline=(*good.timeline, Message("user", [JsonBlock({1, 2})])))
        )
    assert await store.load("s1") == good


async def test_memory_store_refuses_newer_versions_and_keeps_them() -> None:
    store = MemoryStore()
    await store.save(snap(version=SNAPSHOT_VERSION + 1, timeline=conversation(2)))
    for _ in range(2):
        with pytest.raises(SnapshotError, match="newer") as info:
            await store.load("s1")
        assert info.value.session_id == "s1"
    assert await store.list() == ["s1"]


async def test_memory_store_methods_are_checkpoints() -> None:
    store = MemoryStore()
    with trio.testing.assert_checkpoints():
        await store.save(snap())
    with trio.testing.assert_checkpoints():
        await store.load("s1")
    with trio.testing.assert_checkpoints():
        await store.list()
    with trio.testing.assert_checkpoints():
        await store.delete("s1")


async def test_memory_store_cancelled_save_does_nothing() -> None:
    store = MemoryStore()
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save(snap())
    assert scope.cancelled_caught
    assert await store.list() == []


async def test_memory_store_refuses_bad_arguments() -> None:
    store = MemoryStore()
    with pytest.raises(TypeError, match="SessionSnapshot"):
        await store.save({"session_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        await store.load(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        await store.delete(None)  # type: ignore[arg-type]
    assert "0 session" in repr(store)


# --- the check_store kit ------------------------------------------------------


class ReferenceStore:
    """Keeps snapshots as objects: misses the JSON contract."""

    def __init__(self) -> None:
        self.data: dict[str, SessionSnapshot] = {}

    async def save(self, snapshot: SessionSnapshot) -> None:
        await trio.lowlevel.checkpoint()
        self.data[snapshot.session_id] = snapshot

    async def load(self, session_id: str) -> SessionSnapshot | None:
        await trio.lowlevel.checkpoint()
        return self.data.get(session_id)

    async def delete(self, session_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self.data.pop(session_id, None)

    async def list(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(self.data)


class UnsortedStore(MemoryStore):
    async def list(self) -> list[str]:
        return sorted(await super().list(), reverse=True)


class AppendBlindStore(MemoryStore):
    """Writes the timeline only the first time: the incremental path is broken."""

    async def save(self, snapshot: SessionSnapshot) -> None:
        old = await super().load(snapshot.session_id)
        if old is not None:
            snapshot = attrs.evolve(snapshot, timeline=old.timeline)
        await super().save(snapshot)


class NoVersionCheckStore(MemoryStore):
    async def save(self, snapshot: SessionSnapshot) -> None:
        await super().save(attrs.evolve(snapshot, version=SNAPSHOT_VERSION))


class DeleteFailsWhenUnknownStore(MemoryStore):
    async def delete(self, session_id: str) -> None:
        if await self.load(session_id) is None:
            raise KeyError(session_id)
        await super().delete(session_id)


@pytest.mark.parametrize(
    ("factory", "check", "complaint"),
    [
        (ReferenceStore, "round_trip", "mutating the state of saved and loaded snapshots"),
        (UnsortedStore, "list", "not sorted"),
        (AppendBlindStore, "incremental", "appending turn 0"),
        (NoVersionCheckStore, "newer_version", "instead of raising SnapshotError"),
        (lambda: object(), "unknown", "not a SessionStore (missing: save, load, delete, list)"),
    ],
)
async def test_check_store_catches_broken_stores(factory: Any, check: str, complaint: str) -> None:
    with pytest.raises(AssertionError) as info:
        await check_store(factory)
    message = str(info.value)
    assert f"check_store [{check}]" in message
    assert complaint in message


async def test_check_store_reports_store_errors_with_the_check() -> None:
    with pytest.raises(KeyError) as info:
        await check_store(DeleteFailsWhenUnknownStore)
    assert any("check_store [delete]" in note for note in info.value.__notes__)


async def test_check_store_accepts_async_factories_and_closes_stores() -> None:
    made: list[ClosingStore] = []

    class ClosingStore(MemoryStore):
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    async def make() -> ClosingStore:
        await trio.lowlevel.checkpoint()
        store = ClosingStore()
        made.append(store)
        return store

    await check_store(make)
    assert len(made) >= 5
    assert all(store.closed for store in made)


async def test_check_store_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="make_store"):
        await check_store(MemoryStore())  # type: ignore[arg-type]
