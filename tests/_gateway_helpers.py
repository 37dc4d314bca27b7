"""Helpers for the gateway tests: a model the test feeds, an SSE client, a running gateway."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import attrs
import httpx
import pytest
import trio

from trio_session import Agent, ModelChunk, ModelRequest, StopChunk, TextChunk, tool
from trio_session.server import Gateway, open_gateway

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class ChannelModel:
    """A model that streams exactly the chunks the test pushes; a StopChunk ends a reply."""

    name = "channel"

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[ModelChunk](math.inf)
        self.requests: list[ModelRequest] = []

    def push(self, *chunks: ModelChunk) -> None:
        for chunk in chunks:
            self._send.send_nowait(chunk)

    def reply(self, *texts: str) -> None:
        self.push(*(TextChunk(t) for t in texts), StopChunk("end_turn"))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        while True:
            chunk = await self._receive.receive()
            yield chunk
            if isinstance(chunk, StopChunk):
                return


@tool(requires_confirmation=True, confirmation_message="Delete {path}?")
def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: The file.
    """
    return f"deleted {path}"


def agent(model: Any) -> Agent:
    return Agent(model, tools=[delete_file])


@attrs.frozen
class Frame:
    id: int | None
    event: str | None
    data: Any


class SSE:
    """An SSE reader over httpx; frames parsed as the WHATWG algorithm does."""

    def __init__(
        self, client: httpx.AsyncClient, path: str, *, method: str = "GET", **kwargs: Any
    ) -> None:
        self._cm = client.stream(method, path, **kwargs)
        self.response: httpx.Response | None = None
        self.comments: list[str] = []

    async def __aenter__(self) -> SSE:
        self.response = await self._cm.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._lines.aclose()  # type: ignore[attr-defined]
        await self._cm.__aexit__(exc_type, exc, tb)

    async def frame(self) -> Frame | None:
        """The next frame with data; None at the end of the stream."""
        fields: dict[str, list[str]] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    raw_id = fields.get("id", [None])[-1]
                    return Frame(
                        int(raw_id) if raw_id is not None else None,
                        fields.get("event", [None])[-1],
                        json.loads("\n".join(fields["data"])),
                    )
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        return None

    async def until(self, done: Callable[[Frame], bool]) -> list[Frame]:
        frames = []
        while (frame := await self.frame()) is not None:
            frames.append(frame)
            if done(frame):
                break
        return frames


def is_end(frame: Frame) -> bool:
    return frame.event == "execution_end"


@asynccontextmanager
async def running(
    agent_or_factory: Any, **options: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    options.setdefault("token", TOKEN)
    async with (
        open_gateway(agent_or_factory, port=0, **options) as gateway,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", headers=AUTH, timeout=None
        ) as client,
    ):
        yield gateway, client


# httpx's nested response generators (aiter_lines -> aiter_text -> ...) are left to the
# garbage collector when a reader stops early; that is the test client's, not the gateway's.
HTTPX_GENERATORS = [
    pytest.mark.filterwarnings("ignore:Async generator 'httpx:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
