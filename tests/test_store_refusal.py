"""A store's own `StoreError` is final: the session does not try the save again (SPEC §9, §14)."""

from __future__ import annotations

import pytest
import trio

from trio_session import (
    Agent,
    MemoryStore,
    ScriptedModel,
    SessionSnapshot,
    StoreError,
    open_session,
)
from trio_session.cluster import FencedOut


class RefusingStore(MemoryStore):
    """Refuses every save the way a fenced-out cluster node's store does."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def save(self, snapshot: SessionSnapshot) -> None:
        self.attempts += 1
        raise FencedOut(snapshot.session_id, "a newer lease holder owns this session")


async def test_a_fenced_out_save_is_not_retried(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore()
    agent = Agent(ScriptedModel(["hello"]))
    with pytest.raises(StoreError) as closing:
        async with open_session(agent, session_id="s", store=store) as session:
            with pytest.raises(StoreError) as caught:
                await session.send("hi").result
            saves = store.attempts
    assert isinstance(caught.value.__cause__, FencedOut)
    assert caught.value.session_id == "s"
    # The execution's save and the close's save, each tried once; no retry was logged.
    assert saves >= 1
    assert store.attempts == saves + 1
    assert isinstance(closing.value.__cause__, FencedOut)
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]
