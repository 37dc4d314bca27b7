"""Fake provider servers: HTTP/1.1 on 127.0.0.1 that speak the providers' streaming wire formats.

The server runs on trio in the test's nursery, records every request (method, path, headers,
JSON body), and answers each one with the next scripted `Reply`. Replies are sent with chunked
transfer encoding, one chunk per scripted part, so the SDK sees a real streaming response.

A reply can end in three ways:

- ``"end"``: the body is finished normally;
- ``"drop"``: the server closes the socket mid-body (no terminating chunk), like a crash;
- ``"hang"``: the server keeps the connection open and waits until the *client* closes it, then
  sets `FakeServer.client_closed` — this is how the abort tests observe that the HTTP stream
  was really closed;
- ``"stall"``: like ``"hang"``, but before sending anything, not even the status line.

Helpers build the providers' exact event encodings: `openai_sse` (``data: {...}`` lines and
``data: [DONE]``) and `anthropic_sse` (``event:`` + ``data:`` pairs).

The adapter tests also share their client side from here: the `server` fixture (import it
into a test module as ``from _servers import server as server``), `collect` / `collect_into`
for a model's stream, the `WEATHER` tool spec, and `construct_without_sdks`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Literal, Protocol

import attrs
import h11
import pytest
import trio

from trio_session import ModelChunk, ModelRequest, ToolSpec

__all__ = [
    "WEATHER",
    "Adapter",
    "Ending",
    "FakeServer",
    "RecordedRequest",
    "Reply",
    "anthropic_message_events",
    "anthropic_sse",
    "collect",
    "collect_into",
    "construct_without_sdks",
    "json_reply",
    "openai_chunk",
    "openai_sse",
    "server",
    "sse_reply",
]

Ending = Literal["end", "drop", "hang", "stall"]


@attrs.frozen
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Reply:
    """A scripted response.

    Args:
        status: The HTTP status code.
        headers: Extra response headers.
        parts: Body parts, each sent as its own chunk (with a checkpoint in between).
        ending: How the body ends: ``"end"``, ``"drop"``, ``"hang"`` or ``"stall"``.
    """

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    parts: Sequence[bytes] = ()
    ending: Ending = "end"


def sse_reply(parts: Iterable[bytes], *, ending: Ending = "end") -> Reply:
    """A ``200 text/event-stream`` reply."""
    return Reply(
        200,
        (("content-type", "text/event-stream"), ("cache-control", "no-cache")),
        tuple(parts),
        ending,
    )


def json_reply(status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """A JSON reply, typically an error."""
    return Reply(
        status,
        (("content-type", "application/json"), *headers),
        (json.dumps(body).encode(),),
    )


# -- OpenAI Chat Completions wire format --------------------------------------------------------


def openai_chunk(
    delta: Mapping[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = "gpt-test",
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` object.

    With ``delta=None`` and ``usage`` set, the chunk has no choices: the usage-only chunk that
    ``stream_options={"include_usage": True}`` asks for.
    """
    chunk: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
    }
    if delta is not None or finish_reason is not None:
        chunk["choices"] = [
            {
                "index": 0,
                "delta": dict(delta or {}),
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ]
    if usage is not None:
        chunk["usage"] = {**usage, "total_tokens": sum(usage.values())}
    else:
        chunk["usage"] = None
    return chunk


def openai_sse(chunks: Iterable[Mapping[str, Any]], *, done: bool = True) -> list[bytes]:
    """Encode chunks as OpenAI SSE: ``data: {json}`` per chunk, then ``data: [DONE]``."""
    parts = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    if done:
        parts.append(b"data: [DONE]\n\n")
    return parts


# -- Anthropic Messages wire format -------------------------------------------------------------


def anthropic_sse(events: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """Encode events as Anthropic SSE: ``event: <type>`` and ``data: {json}`` pairs."""
    return [
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events
    ]


def anthropic_message_events(
    blocks: Sequence[Mapping[str, Any]],
    *,
    stop_reason: str | None = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 5,
    model: str = "claude-test",
    ping: bool = True,
    finish: bool = True,
) -> list[dict[str, Any]]:
    """The events of one streamed message.

    Each block is ``{"type": "text", "text": "..."}``, ``{"type": "thinking", "thinking": "...",
    "signature": "..."}``, ``{"type": "redacted_thinking", "data": "..."}`` or
    ``{"type": "tool_use", "id": ..., "name": ..., "json": [parts]}``;
    text and thinking are streamed in two deltas each, tool input in the given JSON parts.
    With ``finish=False`` the events stop after the blocks (no message_delta / message_stop).
    """
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }
    ]
    if ping:
        events.append({"type": "ping"})
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            text = block["text"]
            half = len(text) // 2
            events.append(
                {"type": "content_block_start", "index": index,
                 "content_block": {"type": "text", "text": ""}}
            )
            for piece in (text[:half], text[half:]):
                events.append(
                    {"type": "content_block_delta", "index": index,
                     "delta": {"type": "text_delta", "text": piece}}
                )
        elif kind == "thinking":
            thinking = block["thinking"]
            half = len(thinking) // 2
            events.append(
                {"type": "content_block_start", "index": index,
                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
            )
            for piece in (thinking[:half], thinking[half:]):
                events.append(
                    {"type": "content_block_delta", "index": index,
                     "delta": {"type": "thinking_delta", "thinking": piece}}
                )
            events.append(
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "signature_delta", "signature": block.get("signature", "sig")}}
            )
        elif kind == "redacted_thinking":
            events.append(
                {"type": "content_block_start", "index": index,
                 "content_block": {"type": "redacted_thinking", "data": block["data"]}}
            )
        elif kind == "tool_use":
            events.append(
                {"type": "content_block_start", "index": index,
                 "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                   "input": {}}}
            )
            for piece in block["json"]:
                events.append(
                    {"type": "content_block_delta", "index": index,
                     "delta": {"type": "input_json_delta", "partial_json": piece}}
                )
        else:  # pragma: no cover - a test bug
            raise ValueError(f"unknown block type {kind!r}")
        events.append({"type": "content_block_stop", "index": index})
    if finish:
        events.append(
            {"type": "message_delta",
             "delta": {"stop_reason": stop_reason, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}}
        )
        events.append({"type": "message_stop"})
    return events


# -- The server ---------------------------------------------------------------------------------


class FakeServer:
    """A scripted HTTP/1.1 server on 127.0.0.1.

    Start it in a nursery with ``await nursery.start(server.serve)``; it listens on a free port
    (``server.base_url``) until the nursery is cancelled.

    Attributes:
        requests: Every request received, in order.
        client_closed: Set when a client closed the connection of a ``"hang"`` or ``"stall"``
            reply, or went away while a reply was being written.
        hanging: Set once a ``"hang"`` or ``"stall"`` reply waits for the client to close.
        connections: How many connections were accepted.
        closed_by_client: How many connections the client closed (EOF seen by the server).
    """

    def __init__(self, replies: Iterable[Reply] = ()) -> None:
        self._replies: deque[Reply] = deque(replies)
        self.requests: list[RecordedRequest] = []
        self.client_closed = trio.Event()
        self.hanging = trio.Event()
        self.connections = 0
        self.closed_by_client = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next requests."""
        self._replies.extend(replies)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests received so far."""
        return [r.json() for r in self.requests]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, stream)
                if request is None:
                    return
                self.requests.append(request)
                reply = (
                    self._replies.popleft()
                    if self._replies
                    else json_reply(
                        500, {"error": {"message": "fake server: no scripted reply"}}
                    )
                )
                if not await self._send(conn, stream, reply):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _receive_into(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        conn.receive_data(data)
        return bool(data)

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive_into(conn, stream) and head is None:
                    self.closed_by_client += 1
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                self.closed_by_client += 1
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return RecordedRequest(
                    method=head.method.decode(),
                    path=head.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in head.headers},
                    body=bytes(body),
                )

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> bool:
        """Send one reply; return whether the connection may serve another request."""
        if reply.ending == "stall":
            return await self._wait_for_close(stream)
        headers = [(k.encode(), v.encode()) for k, v in reply.headers]
        headers.append((b"transfer-encoding", b"chunked"))
        try:
            await stream.send_all(
                conn.send(h11.Response(status_code=reply.status, headers=headers))
            )
            for part in reply.parts:
                await stream.send_all(conn.send(h11.Data(data=part)))
                # One read per part on the client side, like a real streaming server.
                await trio.lowlevel.checkpoint()
        except trio.BrokenResourceError:
            # The client went away while we were still writing: that is a close too.
            self._client_went_away()
            return False
        if reply.ending == "drop":
            return False
        if reply.ending == "hang":
            return await self._wait_for_close(stream)
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return True

    async def _wait_for_close(self, stream: trio.SocketStream) -> bool:
        self.hanging.set()
        # The client sends nothing more on this connection; EOF means it closed it.
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self._client_went_away()
                return False

    def _client_went_away(self) -> None:
        self.closed_by_client += 1
        self.client_closed.set()


@pytest.fixture
async def server(nursery: trio.Nursery) -> FakeServer:
    """A `FakeServer` serving in the test's nursery, with no replies queued yet."""
    server = FakeServer()
    await nursery.start(server.serve)
    return server


# -- The client side, shared by the adapter tests ------------------------------------------------


WEATHER = ToolSpec(
    "get_weather",
    "Get the weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class Adapter(Protocol):
    """A model whose ``stream`` is an async generator, as the provider adapters' are."""

    def stream(self, request: ModelRequest) -> AsyncGenerator[ModelChunk, None]: ...


async def collect(model: Adapter, request: ModelRequest) -> list[ModelChunk]:
    """Every chunk of the model's reply to ``request``; the stream is closed afterwards."""
    async with aclosing(model.stream(request)) as stream:
        return [chunk async for chunk in stream]


async def collect_into(got: list[ModelChunk], model: Adapter, request: ModelRequest) -> None:
    """Like `collect`, but the chunks received before an error stay in ``got``."""
    async with aclosing(model.stream(request)) as stream:
        async for chunk in stream:
            got.append(chunk)


def construct_without_sdks(module: str, construct: str) -> str:
    """Build an adapter in a fresh interpreter where neither provider SDK can be imported.

    The interpreter imports `trio_session` and the adapter ``module`` (which must work), then
    evaluates ``construct`` (which must fail with ModuleNotFoundError). Returns that error's
    message; raises if anything else happened.
    """
    code = (
        "import sys; sys.modules['openai'] = sys.modules['anthropic'] = None\n"
        f"import trio_session, {module}\n"
        "assert trio_session.Message('user', 'hi').text == 'hi'\n"
        "try:\n"
        f"    {construct}\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no ModuleNotFoundError')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout
