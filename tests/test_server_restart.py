"""A gateway restarted while a confirmation is pending: it is listed and answered after."""

from __future__ import annotations

from pathlib import Path

from _gateway_helpers import HTTPX_GENERATORS, SSE, ChannelModel, agent, is_end, running

from trio_session import ScriptedModel, SQLiteStore, StopChunk, ToolCallChunk

pytestmark = HTTPX_GENERATORS


async def test_a_pending_confirmation_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    model = ChannelModel()
    async with SQLiteStore(db) as store, running(agent(model), store=store) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "delete /tmp/a"})
        model.push(
            ToolCallChunk("call_1", "delete_file", {"path": "/tmp/a"}), StopChunk("tool_use")
        )
        async with SSE(client, "/sessions/s/events") as stream:
            before = await stream.until(lambda f: f.event == "tool_confirmation_required")
    last_seq = before[-1].id
    assert last_seq is not None

    async with (
        SQLiteStore(db) as store,
        running(agent(ScriptedModel(["Deleted it."])), store=store) as (_, client),
    ):
        state = (await client.get("/sessions/s")).json()
        assert [
            (p["tool_use_id"], p["name"], p["input"]) for p in state["pending_confirmations"]
        ] == [("call_1", "delete_file", {"path": "/tmp/a"})]
        assert state["last_seq"] >= last_seq
        async with SSE(
            client, "/sessions/s/events", params={"after_seq": state["last_seq"]}
        ) as stream:
            answer = await client.post("/sessions/s/tool-results/call_1", json={"approved": True})
            assert (answer.status_code, answer.json()) == (200, {})
            after = await stream.until(is_end)
        assert all(f.id is not None and f.id > last_seq for f in after)
        result = next(f for f in after if f.event == "tool_result")
        assert result.data["content"][0]["text"] == "deleted /tmp/a"
        assert after[-1].data["status"] == "completed"
        again = await client.post("/sessions/s/tool-results/call_1", json={"approved": True})
        assert again.status_code == 404  # never answered twice
        state = (await client.get("/sessions/s")).json()
        assert state["pending_confirmations"] == []
        texts = [b.get("text") for m in state["timeline"] for b in m["content"]]
        assert "Deleted it." in texts
