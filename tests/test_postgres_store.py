"""PostgresStore on a real PostgreSQL: the contract, incremental saves, fencing, cancellation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import psycopg
import pytest
import trio
import trio.testing
from _postgres import postgres_dsn as postgres_dsn, postgres_server as postgres_server
from _snapshots import conversation, snap, tick

from trio_session import (
    Agent,
    Decision,
    Message,
    ScriptedModel,
    SnapshotError,
    StoreError,
    ToolUseBlock,
    open_session,
)
from trio_session.cluster import FencedOut, PostgresStore
from trio_session.stores import PendingConfirmation
from trio_session.testing import check_store

__all__ = ["postgres_dsn", "postgres_server"]

LOCK_WAIT_TIMEOUT = 30.0
"""Seconds a test waits for a save to block on a lock the test holds (the server is real)."""


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(postgres_dsn) as store:
        yield store


@contextmanager
def raw(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection of the test's own, beside the store's."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def message_versions(dsn: str, session_id: str) -> dict[int, str]:
    """Each stored message's row version (``xmin``, the transaction that wrote it), by index."""
    with raw(dsn) as conn:
        rows = conn.execute(
            "SELECT idx, xmin::text FROM trio_session_messages WHERE session_id = %s",
            (session_id,),
        ).fetchall()
    return {int(str(idx)): str(xmin) for idx, xmin in rows}


def wait_until_blocked(dsn: str) -> None:
    """Wait until some connection of the server waits on a lock (a real server: polled)."""
    deadline = time.monotonic() + LOCK_WAIT_TIMEOUT
    with raw(dsn) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the save never waited on the test's lock")
            time.sleep(0.02)


# --- the contract -------------------------------------------------------------------------


async def test_check_store_on_one_shared_database(postgres_dsn: str) -> None:
    await check_store(lambda: PostgresStore(postgres_dsn))


async def test_check_store_on_one_open_store(store: PostgresStore) -> None:
    class Borrowed:
        """The test's one open store, which check_store must not close."""

        save = store.save
        load = store.load
        delete = store.delete
        list = store.list

    await check_store(Borrowed)


async def test_many_stores_create_the_tables_at_once(postgres_dsn: str) -> None:
    stores = [PostgresStore(postgres_dsn, max_connections=1) for _ in range(6)]
    async with trio.open_nursery() as nursery:
        for s in stores:
            nursery.start_soon(s.__aenter__)
    try:
        await stores[0].save(snap("s1", conversation(2)))
        for s in stores:
            assert await s.list() == ["s1"]
    finally:
        for s in stores:
            await s.aclose()


async def test_closed_store_refuses_calls(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)
    await store.save(snap("s1"))
    await store.aclose()
    await store.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await store.load("s1")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        PostgresStore("postgresql://x", max_connections=0)
    with pytest.raises(TypeError, match="dsn"):
        PostgresStore(b"postgresql://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token"):
        PostgresStore("postgresql://x").fenced("s1", -1)


async def test_a_session_id_with_nul_is_refused(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="NUL"):
        await store.save(snap("a\x00b"))
    assert await store.list() == []


# --- incremental saves --------------------------------------------------------------------


async def test_a_save_writes_only_the_new_messages(store: PostgresStore, postgres_dsn: str) -> None:
    timeline = tick("1") + tick("2")
    await store.save(snap("s1", timeline))
    first = message_versions(postgres_dsn, "s1")
    assert sorted(first) == list(range(6))
    assert len(set(first.values())) == 1  # one transaction wrote them all

    timeline += tick("3")
    await store.save(snap("s1", timeline, last_seq=9))
    second = message_versions(postgres_dsn, "s1")
    # The six stored rows are the very rows written before; only three are new.
    assert {idx: second[idx] for idx in range(6)} == first
    new = {second[idx] for idx in range(6, 9)}
    assert len(new) == 1 and new.isdisjoint(first.values())

    loaded = await store.load("s1")
    assert loaded is not None
    assert loaded.timeline == timeline
    assert loaded.last_seq == 9


async def test_a_rewrite_replaces_every_message(store: PostgresStore, postgres_dsn: str) -> None:
    await store.save(snap("s1", tick("1") + tick("2")))
    before = message_versions(postgres_dsn, "s1")
    rewritten = (Message("user", "a summary", id="summary"), *tick("2"))
    await store.save(snap("s1", rewritten))
    after = message_versions(postgres_dsn, "s1")
    assert sorted(after) == [0, 1, 2, 3]
    assert set(after.values()).isdisjoint(before.values())
    loaded = await store.load("s1")
    assert loaded is not None and loaded.timeline == rewritten


# --- what a snapshot holds ----------------------------------------------------------------


async def test_pending_confirmations_and_remembered_answers_round_trip(
    store: PostgresStore,
) -> None:
    asking = Message("assistant", [ToolUseBlock("c1", "wipe", {"path": "/x"})], id="ask")
    snapshot = snap(
        "s1",
        (Message("user", "wipe /x", id="u1"),),
        pending_message=asking,
        pending_confirmations=(
            PendingConfirmation(
                tool_use_id="c1",
                name="wipe",
                input={"path": "/x"},
                message="Wipe /x?",
                execution_id="e1",
                created_at=12.5,
            ),
        ),
        remembered={"calc": Decision(True, always=True), "rm": Decision(False, reason="no")},
        state={"nested": {"list": [1, "two", None]}},
        last_seq=41,
    )
    await store.save(snapshot)
    loaded = await store.load("s1")
    assert loaded == snapshot
    assert loaded is not None and loaded.pending_confirmations[0].input == {"path": "/x"}


async def test_a_corrupt_message_row_raises_snapshot_error(
    store: PostgresStore, postgres_dsn: str
) -> None:
    await store.save(snap("s1", conversation(3)))
    with raw(postgres_dsn) as conn:
        conn.execute(
            "UPDATE trio_session_messages SET body = '{\"role\": 7' "
            "WHERE session_id = 's1' AND idx = 1"
        )
    with pytest.raises(SnapshotError, match="message 1") as caught:
        await store.load("s1")
    assert caught.value.session_id == "s1"
    # Left untouched: the row is still there, as broken as it was.
    with raw(postgres_dsn) as conn:
        row = conn.execute(
            "SELECT body FROM trio_session_messages WHERE session_id = 's1' AND idx = 1"
        ).fetchone()
    assert row == ('{"role": 7',)


@pytest.mark.parametrize(
    ("update", "complaint"),
    [
        ("UPDATE trio_session_sessions SET message_count = 5", "counts 5"),
        ("UPDATE trio_session_sessions SET state = '[1, 2]'", "state"),
        ("UPDATE trio_session_sessions SET version = 99", "newer"),
        ("DELETE FROM trio_session_messages WHERE idx = 2", "message row"),
        ("UPDATE trio_session_messages SET message_id = 'other' WHERE idx = 0", "row says"),
    ],
)
async def test_corrupt_session_rows_raise_snapshot_error(
    store: PostgresStore, postgres_dsn: str, update: str, complaint: str
) -> None:
    await store.save(snap("s1", conversation(3)))
    with raw(postgres_dsn) as conn:
        conn.execute(update)
    with pytest.raises(SnapshotError, match=complaint):
        await store.load("s1")


# --- fencing ------------------------------------------------------------------------------


async def test_a_stale_holder_is_fenced_out(store: PostgresStore) -> None:
    assert await store.fence_of("s1") == 0
    await store.claim("s1", 5)
    old = store.fenced("s1", 5)
    await old.save(snap("s1", tick("1")))
    assert await store.fence_of("s1") == 5

    await store.claim("s1", 7)  # a new holder
    with pytest.raises(FencedOut) as caught:
        await old.save(snap("s1", tick("1") + tick("2")))
    assert caught.value.session_id == "s1"
    with pytest.raises(FencedOut):
        await old.delete("s1")
    loaded = await store.load("s1")
    assert loaded is not None and loaded.timeline == tick("1")  # nothing written

    with pytest.raises(FencedOut):
        await store.claim("s1", 6)  # an older token cannot claim back
    await store.claim("s1", 7)  # claiming again with the same token is fine
    new = store.fenced("s1", 7)
    await new.save(snap("s1", tick("1") + tick("3")))
    assert await store.fence_of("s1") == 7
    loaded = await new.load("s1")
    assert loaded is not None and loaded.timeline == tick("1") + tick("3")
    assert await new.list() == ["s1"]


async def test_a_fenced_save_raises_the_fence_to_its_token(store: PostgresStore) -> None:
    # A holder that saves before claiming (or whose claim was lost) still fences the rest.
    await store.fenced("s1", 3).save(snap("s1"))
    assert await store.fence_of("s1") == 3
    with pytest.raises(FencedOut):
        await store.fenced("s1", 2).save(snap("s1", conversation(1)))
    await store.fenced("s1", 4).delete("s1")
    assert await store.load("s1") is None
    # A delete keeps the fence: the stale holder cannot bring the session back.
    assert await store.fence_of("s1") == 4
    with pytest.raises(FencedOut):
        await store.fenced("s1", 3).save(snap("s1"))
    assert await store.list() == []


async def test_a_fenced_view_is_for_its_session_only(store: PostgresStore) -> None:
    view = store.fenced("s1", 1)
    with pytest.raises(ValueError, match="'s2'"):
        await view.save(snap("s2"))
    with pytest.raises(ValueError, match="'s2'"):
        await view.delete("s2")
    assert await store.list() == []
    assert await store.fence_of("s1") == 0


async def test_concurrent_claims_from_two_nodes_leave_the_highest(postgres_dsn: str) -> None:
    claimed: dict[int, bool] = {}
    async with PostgresStore(postgres_dsn) as a, PostgresStore(postgres_dsn) as b:

        async def claim(node: PostgresStore, token: int) -> None:
            try:
                await node.claim("s1", token)
            except FencedOut:
                claimed[token] = False
            else:
                claimed[token] = True

        async with trio.open_nursery() as nursery:
            for token in range(1, 41):
                nursery.start_soon(claim, a if token % 2 else b, token)
        assert await a.fence_of("s1") == await b.fence_of("s1") == 40
    assert claimed[40]
    assert len(claimed) == 40


async def test_the_higher_token_wins_concurrent_saves(postgres_dsn: str) -> None:
    async with PostgresStore(postgres_dsn) as a, PostgresStore(postgres_dsn) as b:
        await a.claim("s1", 1)
        await a.fenced("s1", 1).save(snap("s1", tick("0")))
        outcomes: dict[str, BaseException | None] = {}

        async def node(name: str, store: PostgresStore, token: int) -> None:
            try:
                await store.claim("s1", token)
                await store.fenced("s1", token).save(snap("s1", tick("0") + tick(name)))
            except FencedOut as exc:
                outcomes[name] = exc
            else:
                outcomes[name] = None

        # Round after round, the two nodes race: 2 against 3, 4 against 5, ...
        for round_ in range(1, 6):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node, f"a{round_}", a, 2 * round_)
                nursery.start_soon(node, f"b{round_}", b, 2 * round_ + 1)
            assert outcomes[f"b{round_}"] is None  # the higher token always gets through
            loaded = await a.load("s1")
            assert loaded is not None
            # Whatever order they ran in, the stored snapshot is the higher token's.
            assert loaded.timeline == tick("0") + tick(f"b{round_}")
            assert await b.fence_of("s1") == 2 * round_ + 1


@pytest.mark.slow  # the session retries its save, with real backoff (threads and autojump mix ill)
async def test_a_fenced_out_session_fails_its_save_with_store_error(store: PostgresStore) -> None:
    await store.claim("s1", 1)
    agent = Agent(ScriptedModel(["first answer"]))
    with pytest.raises(StoreError) as caught:
        async with open_session(agent, session_id="s1", store=store.fenced("s1", 1)) as session:
            await session.send("one").result
            await store.claim("s1", 2)  # another node took the lease
            session.queue("not to be saved")
    # The closing save was refused: the stored snapshot is the last one of the old holder's
    # that went through.
    assert isinstance(caught.value.__cause__, FencedOut)
    loaded = await store.load("s1")
    assert loaded is not None
    assert [m.text for m in loaded.timeline] == ["one", "first answer"]
    assert loaded.queued_messages == ()


# --- cancellation -------------------------------------------------------------------------


async def test_a_save_cancelled_mid_transaction_leaves_the_store_as_before(
    store: PostgresStore, postgres_dsn: str
) -> None:
    before = snap("s1", tick("1"), last_seq=3)
    await store.save(before)
    with raw(postgres_dsn) as blocker, blocker.transaction():
        # The save deletes and inserts its message rows, then waits on this lock to
        # update the session's row: cancelled there, it has written half of itself.
        blocker.execute("SELECT * FROM trio_session_sessions WHERE session_id = 's1' FOR UPDATE")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.save, snap("s1", tick("1") + tick("2"), last_seq=9))
                await trio.to_thread.run_sync(wait_until_blocked, postgres_dsn)
                scope.cancel()
        assert scope.cancelled_caught
    assert await store.load("s1") == before
    assert sorted(message_versions(postgres_dsn, "s1")) == [0, 1, 2]
    # The interrupted connection did not go back to the pool to fail someone else.
    after = snap("s1", tick("1") + tick("3"), last_seq=12)
    for _ in range(10):
        await store.save(after)
    assert await store.load("s1") == after


async def test_a_save_cancelled_before_it_starts_writes_nothing(store: PostgresStore) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save(snap("s1"))
    assert scope.cancelled_caught
    assert await store.load("s1") is None


async def test_a_save_waiting_for_a_connection_can_be_cancelled(
    postgres_dsn: str,
) -> None:
    async with PostgresStore(postgres_dsn, max_connections=1) as store:
        await store.save(snap("s1"))
        with raw(postgres_dsn) as blocker, blocker.transaction():
            blocker.execute(
                "SELECT * FROM trio_session_sessions WHERE session_id = 's1' FOR UPDATE"
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.save, snap("s1", conversation(1)))
                await trio.to_thread.run_sync(wait_until_blocked, postgres_dsn)
                with trio.CancelScope() as waiting:
                    nursery.start_soon(store.save, snap("s1", conversation(2)))
                    await trio.testing.wait_all_tasks_blocked()
                    waiting.cancel()
                    # (the second save waits for the only connection; the first holds it)
                nursery.cancel_scope.cancel()
        loaded = await store.load("s1")
        assert loaded is not None and loaded.timeline == ()


# --- sessions -----------------------------------------------------------------------------


async def test_open_session_restores_from_postgres(postgres_dsn: str) -> None:
    async with PostgresStore(postgres_dsn) as store:
        agent = Agent(ScriptedModel(["Hello."]))
        async with open_session(agent, store=store, session_id="chat") as session:
            handle = await session.send("hi")
            await handle.result
            session.queue("later")
            last_seq = handle.events.history[-1].seq
            timeline = list(session.timeline)
    async with PostgresStore(postgres_dsn) as store:
        agent = Agent(ScriptedModel(["Again."]))
        async with open_session(agent, store=store, session_id="chat") as restored:
            assert list(restored.timeline) == timeline
            assert [m.text for m in restored.queued_messages] == ["later"]
            handle = await restored.send("more")
            await handle.result
            assert handle.events.history[0].seq == last_seq + 1
        assert await store.list() == ["chat"]
