"""The gateway over real HTTP: routes, status codes, SSE resume, hostile bodies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _gateway_helpers import (
    AUTH,
    HTTPX_GENERATORS,
    SSE,
    TOKEN,
    ChannelModel,
    Frame,
    agent,
    is_end,
    running,
)
from starlette.requests import Request

from trio_session import Agent, MemoryStore, ScriptedModel, StopChunk, TextChunk, ToolCallChunk

pytestmark = HTTPX_GENERATORS


def seqs(frames: list[Frame]) -> list[int]:
    return [f.id for f in frames if f.id is not None]


def id_of(frame: Frame) -> int:
    assert frame.id is not None, frame
    return frame.id


def text_of(frames: list[Frame]) -> str:
    return "".join(f.data["delta"] for f in frames if f.event == "content_delta")


async def test_create_list_get_delete() -> None:
    async with running(Agent(ScriptedModel(["Hello!"]))) as (gateway, client):
        assert gateway.url == f"http://127.0.0.1:{gateway.port}/?token={TOKEN}"
        created = await client.post("/sessions", json={"session_id": "a"})
        assert (created.status_code, created.json()) == (201, {"session_id": "a"})
        again = await client.post("/sessions", json={"session_id": "a"})
        assert (again.status_code, again.json()) == (200, {"session_id": "a"})
        fresh = await client.post("/sessions")
        assert fresh.status_code == 201
        new_id = fresh.json()["session_id"]
        listed = (await client.get("/sessions")).json()["sessions"]
        assert sorted(listed) == sorted(["a", new_id])

        sent = await client.post("/sessions/a/messages", json={"message": "hi"})
        assert sent.status_code == 202
        assert sent.json()["after_seq"] == 0
        async with SSE(client, "/sessions/a/events") as stream:
            frames = await stream.until(is_end)
        assert frames[-1].data["status"] == "completed"
        state = (await client.get("/sessions/a")).json()
        assert set(state) == {
            "session_id",
            "status",
            "last_seq",
            "usage",
            "timeline",
            "queued_messages",
            "pending_confirmations",
            "current_execution",
        }
        assert state["status"] == "idle"
        assert state["last_seq"] == frames[-1].id
        assert [m["role"] for m in state["timeline"]] == ["user", "assistant"]
        assert state["timeline"][1]["content"][0]["text"] == "Hello!"
        assert state["current_execution"] is None
        assert state["usage"]["ticks"] == 1

        assert (await client.delete("/sessions/a")).status_code == 204
        assert (await client.get("/sessions/a")).status_code == 404
        assert (await client.get("/sessions")).json()["sessions"] == [new_id]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sessions/nope", None),
        ("DELETE", "/sessions/nope", None),
        ("POST", "/sessions/nope/messages", {"message": "hi"}),
        ("GET", "/sessions/nope/events", None),
        ("POST", "/sessions/nope/tool-results/t1", {"approved": True}),
        ("POST", "/sessions/nope/abort", None),
        ("POST", "/sessions/nope/interrupt", None),
        ("GET", "/no/such/route", None),
    ],
)
async def test_unknown_session_is_404_and_never_created(method: str, path: str, body: Any) -> None:
    async with running(Agent(ScriptedModel([]))) as (_, client):
        response = await client.request(method, path, json=body)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert (await client.get("/sessions")).json() == {"sessions": []}


async def test_auth_token_header_query_and_order() -> None:
    async with running(Agent(ScriptedModel([])), max_body=100) as (gateway, client):
        base = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=base, timeout=None) as anon:
            page = await anon.get("/")
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            missing = await anon.get("/sessions")
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
            assert (await anon.get("/sessions", params={"token": TOKEN})).status_code == 200
            # The header wins over ?token=.
            both = await anon.get(
                "/sessions", params={"token": TOKEN}, headers={"authorization": "Bearer x"}
            )
            assert both.status_code == 401
            basic = await anon.get("/sessions", headers={"authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401
            # 401 before 413: a stranger's huge body is not read.
            huge = await anon.post("/sessions", content=b"x" * 1000)
            assert huge.status_code == 401
        assert (await client.post("/sessions", content=b"x" * 1000)).status_code == 413


async def test_generated_token_is_in_the_url() -> None:
    async with running(Agent(ScriptedModel([])), token=None) as (gateway, _):
        token = gateway.url.split("?token=")[1]
        assert len(token) >= 24
        async with httpx.AsyncClient(base_url=gateway.url.split("?")[0], timeout=None) as c:
            assert (await c.get("/sessions", params={"token": token})).status_code == 200
            assert (await c.get("/sessions")).status_code == 401


async def test_authenticate_and_authorize_hooks_and_check_order() -> None:
    calls: list[tuple[Any, str | None, str]] = []

    async def authenticate(request: Request) -> str | None:
        return request.headers.get("x-user")

    def authorize(principal: Any, session_id: str | None, action: str) -> bool:
        calls.append((principal, session_id, action))
        return principal == "admin" or action in ("read", "send")

    async with running(
        Agent(ScriptedModel(["ok"] * 5)),
        token=None,
        authenticate=authenticate,
        authorize=authorize,
        max_body=200,
    ) as (gateway, client):
        assert "token" not in gateway.url
        user = {"x-user": "bob"}
        admin = {"x-user": "admin"}
        assert (await client.get("/sessions", headers={})).status_code == 401
        assert (await client.get("/sessions", headers=user)).status_code == 403
        assert calls[-1] == ("bob", None, "admin")
        created = await client.post("/sessions", json={}, headers=user)
        assert created.status_code == 201
        assert calls[-1] == ("bob", None, "send")
        sid = created.json()["session_id"]
        assert (
            await client.post("/sessions", json={"session_id": "x"}, headers=user)
        ).status_code == 201
        # mypy keeps the None it narrowed calls[-1] to above, across the await.
        assert calls[-1] == ("bob", "x", "send")  # type: ignore[comparison-overlap]
        # 413 before 403, 403 before 404, 404 before 400.
        big = await client.post(f"/sessions/{sid}/abort", content=b"{" * 500, headers=user)
        assert big.status_code == 413
        assert (await client.post("/sessions/nope/abort", headers=user)).status_code == 403
        assert (await client.post("/sessions/nope/abort", headers=admin)).status_code == 404
        bad = await client.post("/sessions/nope/messages", content=b"{", headers=admin)
        assert bad.status_code == 404
        assert (
            await client.post(f"/sessions/{sid}/messages", content=b"{", headers=user)
        ).status_code == 400
        confirm = await client.post(
            f"/sessions/{sid}/tool-results/t", json={"approved": True}, headers=user
        )
        assert confirm.status_code == 403
        assert calls[-1] == ("bob", sid, "confirm")
        assert (await client.delete(f"/sessions/{sid}", headers=user)).status_code == 403
        assert (await client.delete(f"/sessions/{sid}", headers=admin)).status_code == 204


async def test_bad_bodies_get_documented_errors_and_nothing_is_lost() -> None:
    async with running(Agent(ScriptedModel(["one", "two"])), max_body=4096) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        hostile: list[tuple[bytes, int]] = [
            (b"", 400),
            (b"not json", 400),
            (b"[1, 2]", 400),
            (b'"text"', 400),
            (b"{" * 300, 400),
            (b'{"message": ' + b"[" * 100 + b"]" * 100 + b"}", 400),
            (b'{"message": 5}', 400),
            (b'{"message": ""}', 400),
            (b'{"message": {"role": "assistant", "content": "x"}}', 400),
            (b'{"message": {"role": "user", "content": [{"type": "nope"}]}}', 400),
            (b'{"message": "hi", "extra": 1}', 400),
            (b'{"message": "hi", "idempotency_key": 7}', 400),
            (b'{"message": "hi", "idempotency_key": ""}', 400),
            (b'{"message": NaN}', 400),
            (b"\xff\xfe", 400),
            (b'{"message": "' + b"x" * 5000 + b'"}', 413),
        ]
        for body, status in hostile:
            response = await client.post(
                "/sessions/s/messages", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == status, body[:40]
            assert response.json()["error"]["code"] == (
                "bad_request" if status == 400 else "payload_too_large"
            )

        async def chunked() -> Any:
            for _ in range(10):
                yield b"x" * 1000

        streamed = await client.post("/sessions/s/messages", content=chunked())
        assert streamed.status_code == 413
        for odd in ["", "a/b", "x" * 300, "\x00bad", 5]:
            response = await client.post("/sessions", json={"session_id": odd})
            assert response.status_code == 400, odd
        assert (await client.get("/sessions/" + "x" * 300)).status_code == 404
        unicode = await client.post("/sessions", json={"session_id": "チャット 1"})
        assert unicode.status_code == 201
        assert (await client.get("/sessions/チャット 1")).status_code == 200

        message = {"role": "user", "content": [{"type": "text", "text": "as JSON"}], "id": "m1"}
        assert (
            await client.post("/sessions/s/messages", json={"message": message})
        ).status_code == 202
        async with SSE(client, "/sessions/s/events") as stream:
            await stream.until(is_end)
        timeline = (await client.get("/sessions/s")).json()["timeline"]
        assert [(m["role"], m["id"] if m["role"] == "user" else None) for m in timeline] == [
            ("user", "m1"),
            ("assistant", None),
        ]


async def test_idempotency_key_returns_the_first_answer_and_sends_once() -> None:
    store = MemoryStore()
    model = ScriptedModel(["first", "second"])
    async with running(Agent(model), store=store) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        body = {"message": "hello", "idempotency_key": "k-1"}
        first = await client.post("/sessions/s/messages", json=body)
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def again() -> None:
                answers.append(await client.post("/sessions/s/messages", json=body))

            for _ in range(5):
                nursery.start_soon(again)
        assert {r.status_code for r in answers} == {202}
        assert all(r.json() == first.json() for r in answers)
        async with SSE(client, "/sessions/s/events") as stream:
            await stream.until(is_end)
        state = (await client.get("/sessions/s")).json()
        assert [m["role"] for m in state["timeline"]] == ["user", "assistant"]
    # Kept with the session: a restarted gateway still knows the key.
    async with running(Agent(model), store=store) as (_, client):
        repeat = await client.post("/sessions/s/messages", json=body)
        assert repeat.json() == first.json()
        assert len((await client.get("/sessions/s")).json()["timeline"]) == 2
        snapshot = await store.load("s")
        assert snapshot is not None


async def test_resume_after_disconnect_mid_answer_has_no_gap_and_no_duplicate() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        sent = await client.post("/sessions/s/messages", json={"message": "tell me"})
        model.push(TextChunk("Once "), TextChunk("upon "))
        async with SSE(client, "/sessions/s/events", params={"after_seq": 0}) as stream:
            first = await stream.until(lambda f: f.data.get("delta") == "upon ")
        # Disconnected: the answer goes on meanwhile.
        model.push(TextChunk("a "), TextChunk("time."), StopChunk("end_turn"))
        last = first[-1].id
        async with SSE(
            client,
            "/sessions/s/events",
            headers={"last-event-id": str(last)},
            params={"after_seq": 0},  # Last-Event-ID wins
        ) as stream:
            rest = await stream.until(is_end)
        every = first + rest
        assert seqs(every) == list(range(1, id_of(rest[-1]) + 1))
        assert text_of(every) == "Once upon a time."
        assert sent.json()["after_seq"] == 0


async def test_resume_mid_confirmation_and_answer_through_the_route() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "delete it"})
        model.push(
            ToolCallChunk("call_1", "delete_file", {"path": "/tmp/a"}), StopChunk("tool_use")
        )
        async with SSE(client, "/sessions/s/events") as stream:
            first = await stream.until(lambda f: f.event == "tool_confirmation_required")
        assert first[-1].data["message"] == "Delete /tmp/a?"
        pending = (await client.get("/sessions/s")).json()["pending_confirmations"]
        assert [(p["tool_use_id"], p["name"], p["input"]) for p in pending] == [
            ("call_1", "delete_file", {"path": "/tmp/a"})
        ]
        current = (await client.get("/sessions/s")).json()["current_execution"]
        assert current["status"] == "running"
        assert current["current_tick"] == 1
        # Decisions are checked against the pending confirmation.
        route = "/sessions/s/tool-results/"
        assert (await client.post(route + "other", json={"approved": True})).status_code == 404
        assert (await client.post(route + "call_1", json={"approved": "yes"})).status_code == 400
        not_object = await client.post(
            route + "call_1", json={"approved": True, "modified_arguments": [1]}
        )
        assert not_object.status_code == 422
        assert not_object.json()["error"]["code"] == "invalid_tool_arguments"
        wrong = await client.post(
            route + "call_1", json={"approved": True, "modified_arguments": {"path": 3}}
        )
        assert wrong.status_code == 422
        model.reply("Done.")
        ok = await client.post(
            route + "call_1", json={"approved": True, "modified_arguments": {"path": "/tmp/b"}}
        )
        assert (ok.status_code, ok.json()) == (200, {})
        assert (await client.post(route + "call_1", json={"approved": True})).status_code == 404
        async with SSE(
            client, "/sessions/s/events", headers={"last-event-id": str(first[-1].id)}
        ) as stream:
            rest = await stream.until(is_end)
        every = first + rest
        assert seqs(every) == list(range(1, id_of(every[-1]) + 1))
        result = next(f for f in rest if f.event == "tool_result")
        assert result.data["content"][0]["text"] == "deleted /tmp/b"
        assert rest[-1].data["status"] == "completed"


async def test_fifty_readers_see_identical_sequences() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "go"})
        results: list[list[tuple[int | None, str | None]]] = []
        connected = trio.Semaphore(0)

        async def read() -> None:
            async with SSE(client, "/sessions/s/events") as stream:
                first = await stream.frame()
                connected.release()
                assert first is not None
                rest = await stream.until(is_end)
            results.append([(f.id, f.event) for f in [first, *rest]])

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(read)
            for _ in range(50):
                await connected.acquire()
            model.reply(*[f"w{i} " for i in range(100)])
        assert len(results) == 50
        assert all(r == results[0] for r in results)
        assert [s for s, _ in results[0]] == list(range(1, len(results[0]) + 1))


async def test_types_filter_and_bad_cursors() -> None:
    async with running(Agent(ScriptedModel(["Hi there"]))) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "x"})
        params = {"types": "content_delta,execution_end"}
        async with SSE(client, "/sessions/s/events", params=params) as stream:
            frames = await stream.until(is_end)
        assert {f.event for f in frames} == {"content_delta", "execution_end"}
        for bad in [
            {"after_seq": ""},
            {"after_seq": "-1"},
            {"after_seq": "x"},
            {"types": "bogus"},
            {"types": ","},
        ]:
            response = await client.get("/sessions/s/events", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]["code"] == "bad_request"
        bad_header = await client.get("/sessions/s/events", headers={"last-event-id": "1.5"})
        assert bad_header.status_code == 400


async def test_a_dropped_cursor_gives_one_lagged_frame() -> None:
    async with running(
        Agent(ScriptedModel(["a b c d e f g h"], chunk_size=1)), max_buffered_events=5
    ) as (
        _,
        client,
    ):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "x"})
        async with SSE(client, "/sessions/s/events", params={"types": "execution_end"}) as stream:
            await stream.until(is_end)
        async with SSE(client, "/sessions/s/events", params={"after_seq": 0}) as stream:
            lagged = await stream.frame()
            rest = await stream.until(is_end)
        assert lagged is not None
        assert (lagged.event, lagged.id) == ("lagged", None)
        assert lagged.data["missed"] == id_of(rest[0]) - 1
        assert seqs(rest) == list(range(id_of(rest[0]), id_of(rest[-1]) + 1))
        assert not any(f.event == "lagged" for f in rest)


async def test_client_disconnect_never_cancels_anything() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "go"})
        model.push(TextChunk("part "))
        for _ in range(3):
            async with SSE(client, "/sessions/s/events") as stream:
                await stream.until(lambda f: f.event == "content_delta")
        model.reply("rest")
        async with SSE(client, "/sessions/s/events") as stream:
            frames = await stream.until(is_end)
        assert frames[-1].data["status"] == "completed"
        assert text_of(frames) == "part rest"


async def test_abort_and_interrupt() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        assert (await client.post("/sessions/s/abort")).json() == {"aborted": False}
        await client.post("/sessions/s/messages", json={"message": "go"})
        model.push(TextChunk("partial"))
        async with SSE(client, "/sessions/s/events") as stream:
            await stream.until(lambda f: f.event == "content_delta")
            aborted = await client.post("/sessions/s/abort", json={"reason": "stop"})
            assert aborted.json() == {"aborted": True}
            end = (await stream.until(is_end))[-1]
        assert (end.data["status"], end.data["reason"]) == ("aborted", "stop")
        assert (await client.post("/sessions/s/abort", json={"reason": 3})).status_code == 400
        assert (await client.post("/sessions/s/interrupt")).json() == {"execution_id": None}
        model.reply("new answer")
        answer = await client.post("/sessions/s/interrupt", json={"message": "instead"})
        assert answer.status_code == 200
        execution_id = answer.json()["execution_id"]
        async with SSE(client, "/sessions/s/events") as stream:
            frames = await stream.until(
                lambda f: is_end(f) and f.data["execution_id"] == execution_id
            )
        assert frames[-1].data["status"] == "completed"


async def test_message_while_running_joins_the_run() -> None:
    model = ChannelModel()
    async with running(agent(model)) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        first = (await client.post("/sessions/s/messages", json={"message": "one"})).json()
        model.push(TextChunk("a"))
        async with SSE(client, "/sessions/s/events") as stream:
            await stream.until(lambda f: f.event == "content_delta")
            second = (await client.post("/sessions/s/messages", json={"message": "two"})).json()
            assert second["execution_id"] == first["execution_id"]
            queued = await stream.until(lambda f: f.event == "message_queued")
            assert queued[-1].id > second["after_seq"]
            model.push(StopChunk("end_turn"))
            model.reply("b")
            await stream.until(is_end)
        timeline = (await client.get("/sessions/s")).json()["timeline"]
        assert [m["role"] for m in timeline] == ["user", "assistant", "user", "assistant"]


async def test_idle_sessions_close_with_a_store_and_reopen(autojump_clock: Any) -> None:
    class CountingStore(MemoryStore):
        loads = 0

        async def load(self, session_id: str) -> Any:
            CountingStore.loads += 1
            return await super().load(session_id)

    store = CountingStore()
    async with running(Agent(ScriptedModel(["a", "b"])), store=store, idle_timeout=60) as (
        _,
        client,
    ):
        await client.post("/sessions", json={"session_id": "s"})
        loads = CountingStore.loads
        await client.get("/sessions/s")
        assert CountingStore.loads == loads  # still open
        await trio.sleep(61)
        assert (await client.get("/sessions")).json()["sessions"] == ["s"]
        await client.get("/sessions/s")
        assert CountingStore.loads > loads  # it was closed, and reopened from the store


async def test_keepalive_comments(autojump_clock: Any) -> None:
    async with running(Agent(ScriptedModel([])), keepalive=5) as (_, client):
        await client.post("/sessions", json={"session_id": "s"})
        async with SSE(client, "/sessions/s/events") as stream:
            with trio.move_on_after(12):
                await stream.frame()
        assert stream.comments.count("keepalive") >= 2


async def test_closing_the_gateway_ends_streams_and_saves() -> None:
    store = MemoryStore()
    model = ChannelModel()
    seen: list[Frame] = []
    async with (
        httpx.AsyncClient(headers=AUTH, timeout=None) as reader,
        trio.open_nursery() as nursery,
        running(agent(model), store=store) as (gateway, client),
    ):
        await client.post("/sessions", json={"session_id": "s"})
        await client.post("/sessions/s/messages", json={"message": "go"})
        model.push(TextChunk("x"))
        url = f"http://127.0.0.1:{gateway.port}/sessions/s/events"

        async def read(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with SSE(reader, url) as stream:
                seen.extend(await stream.until(lambda f: f.event == "content_delta"))
                task_status.started()
                seen.extend(await stream.until(lambda f: False))

        await nursery.start(read)
        # The gateway is closed: the reader's stream ended by itself (the nursery exits).
    assert seen[-1].event == "execution_end"
    assert seen[-1].data["status"] == "cancelled"
    snapshot = await store.load("s")
    assert snapshot is not None
    assert snapshot.timeline[0].text == "go"


async def test_bad_arguments_to_open_gateway() -> None:
    from trio_session.server import open_gateway

    with pytest.raises(TypeError, match="Agent or a factory"):
        async with open_gateway(object(), port=0):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="port"):
        async with open_gateway(Agent(ScriptedModel([])), port=70000):
            pass
    with pytest.raises(ValueError, match="max_body"):
        async with open_gateway(Agent(ScriptedModel([])), port=0, max_body=0):
            pass


async def test_agent_factory_gets_the_session_id() -> None:
    seen: list[str] = []

    async def factory(session_id: str) -> Agent:
        seen.append(session_id)
        return Agent(ScriptedModel([f"I am {session_id}"]))

    async with running(factory) as (_, client):
        await client.post("/sessions", json={"session_id": "z"})
        await client.post("/sessions/z/messages", json={"message": "who?"})
        async with SSE(client, "/sessions/z/events") as stream:
            frames = await stream.until(is_end)
        assert text_of(frames) == "I am z"
        assert seen == ["z"]
