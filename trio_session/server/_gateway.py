"""The gateway: sessions over HTTP, on Starlette and Hypercorn's trio worker."""

from __future__ import annotations

import inspect
import json
import logging
import math
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache, partial
from importlib import resources
from typing import Any, Final, Protocol, TypeAlias, final

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message as ASGIMessage, Receive, Scope, Send

from .._agent import Agent
from .._engine import CLEANUP_TIMEOUT, reraise, unwrap
from .._errors import EventsLagged, InvalidToolArguments, SessionClosed, UnknownToolUse
from .._events import StreamEvent
from .._handle import SessionExecutionHandle
from .._messages import Message
from .._serde import converter, to_json
from .._session import Session, open_session
from ..stores import SessionStore
from ._agui import AGUITranslator, RunInput, parse_run_input
from ._protocol import (
    KEEPALIVE,
    RESERVED_STATE_KEY,
    HTTPError,
    IdempotencyLog,
    parse_abort,
    parse_cursor,
    parse_interrupt,
    parse_json,
    parse_send,
    parse_session_id,
    parse_tool_answer,
    parse_types,
    sse_frame,
    valid_id,
)

__all__ = ["Gateway", "open_gateway"]

logger = logging.getLogger("trio_session.server")

AgentFactory: TypeAlias = Callable[[str], "Agent | Awaitable[Agent]"]
Authenticate: TypeAlias = Callable[[Request], Any]
Authorize: TypeAlias = Callable[[Any, "str | None", str], "bool | Awaitable[bool]"]

FRAME_CACHE: Final = 4096
"""How many recent SSE frames a session keeps serialized for its readers."""

RECONNECT_DELAY_MS: Final = 1000
"""The ``retry:`` an SSE stream asks `EventSource` to wait before reconnecting."""

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Unavailable(HTTPError):
    """503: the session cannot be reached now (a cluster's lease holder is gone).

    Attributes:
        retry_after: Seconds after which the client may try again (``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(503, message)
        self.retry_after = retry_after


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns; cancel the others."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


# ---------------------------------------------------------------------------
# The seam between the routes and where sessions live
# ---------------------------------------------------------------------------

Produce: TypeAlias = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]
"""``produce(write)``: writes an SSE stream's frames until it returns."""


class SessionRef(Protocol):
    """One session as the routes use it, from `Backend.acquire`.

    Each method gets the raw request body and checks it itself, after the
    session was found (the SPEC's order: 404 before 400). Errors are `HTTPError`.
    """

    def release(self) -> None: ...
    async def describe(self) -> dict[str, Any]: ...
    async def send(self, body: bytes) -> dict[str, Any]: ...
    async def tool_result(self, tool_use_id: str, body: bytes) -> dict[str, Any]: ...
    async def abort(self, body: bytes) -> dict[str, Any]: ...
    async def interrupt(self, body: bytes) -> dict[str, Any]: ...
    def events(
        self, after: int | None, types: frozenset[str] | None, *, keepalive: float
    ) -> Produce: ...
    async def agui(self, run: RunInput, *, keepalive: float) -> Produce: ...


class Backend(Protocol):
    """Where the gateway's sessions live: this process (`_Sessions`) or a cluster.

    Attributes:
        node: The worker id sent as ``X-Trio-Session-Node``, or None (no header).
    """

    node: str | None

    def start(self, nursery: trio.Nursery) -> None:
        """Attach the nursery where sessions (and background tasks) run."""

    async def acquire(self, session_id: str, *, create: bool = False) -> tuple[SessionRef, bool]:
        """The session (404 when unknown, unless ``create``) and whether it was created."""

    def use(
        self, session_id: str, *, create: bool = False
    ) -> AbstractAsyncContextManager[SessionRef]:
        """`acquire`, released when the block ends."""

    async def list_ids(self) -> list[str]:
        """Every session id, open or stored."""

    async def delete(self, session_id: str) -> None:
        """Close the session and delete it from the store."""

    def close_all(self) -> None:
        """The gateway closes: close every session, refuse new requests (409)."""


# ---------------------------------------------------------------------------
# Sessions opened on demand
# ---------------------------------------------------------------------------


@attrs.define(eq=False)
class Entry:
    """One open session and who uses it."""

    session: Session
    users: int = 0
    idle_since: float = 0.0
    close_requested: bool = False
    closing: bool = False
    changed: trio.Event = attrs.Factory(trio.Event)
    closed: trio.Event = attrs.Factory(trio.Event)
    inflight_keys: dict[str, trio.Event] = attrs.Factory(dict)
    frames: dict[int, bytes] = attrs.Factory(dict)

    def frame(self, event: StreamEvent) -> bytes:
        """The event's SSE frame, serialized once for all of the session's readers."""
        frame = self.frames.get(event.seq)
        if frame is None:
            frame = sse_frame(to_json(event), id=event.seq, event=event.type)
            self.frames[event.seq] = frame
            if len(self.frames) > FRAME_CACHE:
                del self.frames[next(iter(self.frames))]
        return frame

    def poke(self) -> None:
        self.changed.set()

    def release(self) -> None:
        self.users -= 1
        self.idle_since = trio.current_time()
        self.poke()


class _Sessions:
    """The gateway's sessions: opened on demand, closed when idle or deleted."""

    def __init__(
        self,
        agent: Agent | AgentFactory,
        *,
        store: SessionStore | None,
        idle_timeout: float,
        max_buffered_events: int | None,
    ) -> None:
        self._agent = agent
        self.store = store
        self._idle_timeout = idle_timeout
        self._max_buffered_events = max_buffered_events
        self.node: str | None = None
        self._open: dict[str, Entry] = {}
        self._opening: dict[str, trio.Event] = {}
        self._deleting: set[str] = set()
        self.nursery: trio.Nursery | None = None
        self.closing = False

    def open_ids(self) -> list[str]:
        return [sid for sid, entry in self._open.items() if not entry.closing]

    def start(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    async def list_ids(self) -> list[str]:
        ids = list(await self.store.list()) if self.store is not None else []
        known = set(ids)
        ids.extend(sid for sid in self.open_ids() if sid not in known)
        return ids

    @asynccontextmanager
    async def use(self, session_id: str, *, create: bool = False) -> AsyncIterator[LocalSession]:
        """The open session, opened (or created) first if needed.

        Raises:
            HTTPError: 404 for a session neither open nor stored (unless
                ``create``); 409 while it is being deleted or the gateway closes.
        """
        ref, _ = await self.acquire(session_id, create=create)
        try:
            yield ref
        finally:
            ref.release()

    async def acquire(self, session_id: str, *, create: bool = False) -> tuple[LocalSession, bool]:
        """Like `use`, for callers that release later; also says if it was created."""
        entry, created = await self.acquire_entry(session_id, create=create)
        return LocalSession(entry), created

    async def acquire_entry(self, session_id: str, *, create: bool = False) -> tuple[Entry, bool]:
        """The open session's entry (its user count raised: call ``release``)."""
        if not valid_id(session_id):
            raise HTTPError(404, f"no session {session_id[:64]!r}")
        while True:
            if self.closing:
                raise HTTPError(409, "the gateway is closing")
            if session_id in self._deleting:
                raise HTTPError(409, f"session {session_id!r} is being deleted")
            entry = self._open.get(session_id)
            if entry is not None:
                if not entry.closing:
                    entry.users += 1
                    return entry, False
                await entry.closed.wait()
                continue
            opening = self._opening.get(session_id)
            if opening is not None:
                await opening.wait()
                continue
            done = self._opening[session_id] = trio.Event()
            try:
                entry, created = await self._open_one(session_id, create)
            finally:
                del self._opening[session_id]
                done.set()
            entry.users += 1
            return entry, created

    async def _open_one(self, session_id: str, create: bool) -> tuple[Entry, bool]:
        stored = self.store is not None and await self.store.load(session_id) is not None
        if not stored and not create:
            raise HTTPError(404, f"no session {session_id!r}")
        agent = await _maybe_await(
            self._agent(session_id) if callable(self._agent) else self._agent
        )
        if not isinstance(agent, Agent):
            raise TypeError(f"the agent factory must return an Agent, got {type(agent).__name__}")
        assert self.nursery is not None
        entry: Entry = await self.nursery.start(self._serve, session_id, agent)
        self._open[session_id] = entry
        return entry, not stored

    async def _serve(
        self, session_id: str, agent: Agent, *, task_status: trio.TaskStatus[Entry]
    ) -> None:
        entry: Entry | None = None
        try:
            async with open_session(
                agent,
                session_id=session_id,
                store=self.store,
                max_buffered_events=self._max_buffered_events,
            ) as session:
                entry = Entry(session, idle_since=trio.current_time())
                task_status.started(entry)
                await self._watch(entry)
                entry.closing = True
                await session.aclose()
        except Exception:
            if entry is None:
                raise
            logger.exception("session %r failed while closing", session_id)
        finally:
            if entry is not None:
                entry.closing = True
                if self._open.get(session_id) is entry:
                    del self._open[session_id]
                entry.closed.set()

    async def _watch(self, entry: Entry) -> None:
        """Return when the session should close: asked to, or idle long enough."""
        session = entry.session
        while not entry.close_requested:
            entry.changed = trio.Event()
            running = session.status == "running"
            if self.store is None or entry.users or running:
                handle = session.current_execution
                if running and handle is not None:
                    await _first(handle.wait, entry.changed.wait)
                else:
                    await entry.changed.wait()
                entry.idle_since = trio.current_time()
                continue
            with trio.move_on_at(entry.idle_since + self._idle_timeout):
                await entry.changed.wait()
                continue
            return

    async def delete(self, session_id: str) -> None:
        entry, _ = await self.acquire_entry(session_id)
        self._deleting.add(session_id)
        try:
            entry.close_requested = True
            entry.release()
            await entry.closed.wait()
            if self.store is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                    await self.store.delete(session_id)
                if scope.cancelled_caught:
                    logger.error("deleting session %r from the store timed out", session_id)
        finally:
            self._deleting.discard(session_id)

    def close_all(self) -> None:
        self.closing = True
        for entry in self._open.values():
            entry.close_requested = True
            entry.poke()


# ---------------------------------------------------------------------------
# Streaming responses
# ---------------------------------------------------------------------------


class _EventStream(Response):
    """An SSE response: ``produce(write)`` writes frames until it returns.

    A client disconnect cancels only the writing; ``on_close`` runs on every exit.
    """

    def __init__(self, produce: Produce, on_close: Callable[[], None]) -> None:
        super().__init__(status_code=200)
        self._produce = produce
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})

            async def write(data: bytes) -> None:
                await send({"type": "http.response.body", "body": data, "more_body": True})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_disconnect, receive, nursery.cancel_scope)
                await write(f"retry: {RECONNECT_DELAY_MS}\n\n".encode())
                await self._produce(write)
                nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._on_close()

    @staticmethod
    async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()


# ---------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------


@cache
def _page() -> str:
    return resources.files(__package__).joinpath("_page.html").read_text(encoding="utf-8")


def _pending_confirmations(session: Session) -> list[dict[str, Any]]:
    return [converter.unstructure(p) for p in session.pending_confirmations]


def _submit_tool_result(session: Session, tool_use_id: str, **answer: Any) -> None:
    session.submit_tool_result(tool_use_id, **answer)


@final
class Gateway:
    """A running gateway, from `open_gateway`.

    Attributes:
        url: The page's address, with ``?token=`` when a token is in use
            (the real port when opened with ``port=0``).
        app: The ASGI application (usable under any ASGI server while the
            gateway is open: its sessions live in the gateway's nursery).
        host: The host it listens on.
        port: The port it listens on.
    """

    def __init__(
        self,
        sessions: Backend,
        *,
        token: str | None,
        authenticate: Authenticate | None,
        authorize: Authorize | None,
        max_body: int,
        keepalive: float,
    ) -> None:
        self._sessions = sessions
        self._token = token
        self._authenticate_hook = authenticate
        self._authorize_hook = authorize
        self._max_body = max_body
        self._keepalive = keepalive
        self.host = ""
        self.port = 0
        self.url = ""
        self.app = self._make_app()

    def __repr__(self) -> str:
        return f"<Gateway {self.host}:{self.port}>"

    def _make_app(self) -> Starlette:
        routes = [
            Route("/", self._page, methods=["GET"]),
            Route("/sessions", self._create, methods=["POST"]),
            Route("/sessions", self._list, methods=["GET"]),
            Route("/sessions/{session_id}", self._get, methods=["GET"]),
            Route("/sessions/{session_id}", self._delete, methods=["DELETE"]),
            Route("/sessions/{session_id}/messages", self._send, methods=["POST"]),
            Route("/sessions/{session_id}/events", self._events, methods=["GET"]),
            Route(
                "/sessions/{session_id}/tool-results/{tool_use_id}",
                self._tool_result,
                methods=["POST"],
            ),
            Route("/sessions/{session_id}/abort", self._abort, methods=["POST"]),
            Route("/sessions/{session_id}/interrupt", self._interrupt, methods=["POST"]),
            Route("/ag-ui", self._agui, methods=["POST"]),
        ]
        middleware = []
        if self._sessions.node is not None:
            middleware.append(Middleware(_NodeHeader, node=self._sessions.node))
        return Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers={
                HTTPError: self._error_response,
                HTTPException: self._starlette_error,
                Exception: self._internal_error,
            },
        )

    # -- errors -------------------------------------------------------------

    @staticmethod
    async def _error_response(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        headers = None
        if exc.status == 401:
            headers = {"www-authenticate": "Bearer"}
        elif isinstance(exc, Unavailable):
            headers = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        elif exc.status == 413:
            # The rest of the body was not read: the connection cannot carry another request.
            headers = {"connection": "close"}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @staticmethod
    async def _starlette_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        if exc.status_code not in (404, 405):
            code = "bad_request"
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        error = HTTPError(500, f"internal error: {type(exc).__name__}: {exc}")
        # Answered outside the middleware stack: the node header is added here.
        node = self._sessions.node
        headers = {"x-trio-session-node": node} if node is not None else None
        return JSONResponse(error.body(), status_code=500, headers=headers)

    # -- the checks, in SPEC order: 401, 413, 403, 404, then 400/409/422 ----

    async def _authenticate(self, request: Request) -> Any:
        if self._authenticate_hook is not None:
            principal = await _maybe_await(self._authenticate_hook(request))
            if principal is None:
                raise HTTPError(401, "not authenticated")
            return principal
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer":
                raise HTTPError(401, "the Authorization header must be 'Bearer <token>'")
            given = given.strip()
        else:
            given = request.query_params.get("token", "")
        if not given:
            raise HTTPError(401, "a token is required (Authorization: Bearer, or ?token=)")
        assert self._token is not None
        if not secrets.compare_digest(given.encode(), self._token.encode()):
            raise HTTPError(401, "the token is not valid")
        return "token"

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self._max_body:
            raise HTTPError(413, f"the body is larger than {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise HTTPError(413, f"the body is larger than {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _authorize(self, principal: Any, session_id: str | None, action: str) -> None:
        if self._authorize_hook is None:
            return
        if not await _maybe_await(self._authorize_hook(principal, session_id, action)):
            raise HTTPError(403, f"not allowed to {action}")

    async def _checked(
        self, request: Request, action: str, session_id: str | None
    ) -> tuple[Any, bytes]:
        principal = await self._authenticate(request)
        body = await self._body(request)
        await self._authorize(principal, session_id, action)
        return principal, body

    async def _checked_json(
        self, request: Request, action: str, id_field: str, *, required: bool = True
    ) -> dict[str, Any]:
        """The checks for a route whose session id is in its body.

        ``authorize`` needs the id, so the body is decoded first; a body that
        does not decode is still reported (400) only after the 403 check.
        """
        principal = await self._authenticate(request)
        body = await self._body(request)
        try:
            data = parse_json(body, required=required)
        except HTTPError as exc:
            undecoded: HTTPError | None = exc
        else:
            undecoded = None
        if undecoded is not None:
            # Out of the except block (ASYNC120): cancelled in the check, the request
            # ends with the Cancelled alone, not with the 400 chained to it.
            await self._authorize(principal, None, action)
            raise undecoded
        session_id = data.get(id_field)
        await self._authorize(
            principal, session_id if isinstance(session_id, str) else None, action
        )
        return data

    # -- routes -------------------------------------------------------------

    async def _page(self, _request: Request) -> Response:
        return HTMLResponse(_page(), headers={"cache-control": "no-store"})

    async def _create(self, request: Request) -> Response:
        data = await self._checked_json(request, "send", "session_id", required=False)
        session_id = parse_session_id(data) or secrets.token_hex(16)
        if "/" in session_id:
            raise HTTPError(400, "session_id must not contain '/'")
        ref, created = await self._sessions.acquire(session_id, create=True)
        ref.release()
        return JSONResponse({"session_id": session_id}, status_code=201 if created else 200)

    async def _list(self, request: Request) -> Response:
        await self._checked(request, "admin", None)
        return JSONResponse({"sessions": await self._sessions.list_ids()})

    async def _get(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self._checked(request, "read", session_id)
        async with self._sessions.use(session_id) as ref:
            return JSONResponse(await ref.describe())

    async def _delete(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self._checked(request, "admin", session_id)
        await self._sessions.delete(session_id)
        return Response(status_code=204)

    async def _send(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        _, body = await self._checked(request, "send", session_id)
        async with self._sessions.use(session_id) as ref:
            return JSONResponse(await ref.send(body), status_code=202)

    async def _events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self._checked(request, "read", session_id)
        ref, _ = await self._sessions.acquire(session_id)
        try:
            after: int | None = None
            last_event_id = request.headers.get("last-event-id")
            if last_event_id is not None:
                after = parse_cursor(last_event_id, "Last-Event-ID")
            elif "after_seq" in request.query_params:
                after = parse_cursor(request.query_params["after_seq"], "after_seq")
            types_text = request.query_params.get("types")
            types = parse_types(types_text) if types_text is not None else None
            produce = ref.events(after, types, keepalive=self._keepalive)
        except BaseException:
            ref.release()
            raise
        return _EventStream(produce, ref.release)

    async def _tool_result(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        tool_use_id = request.path_params["tool_use_id"]
        _, body = await self._checked(request, "confirm", session_id)
        async with self._sessions.use(session_id) as ref:
            return JSONResponse(await ref.tool_result(tool_use_id, body))

    async def _abort(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        _, body = await self._checked(request, "abort", session_id)
        async with self._sessions.use(session_id) as ref:
            return JSONResponse(await ref.abort(body))

    async def _interrupt(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        _, body = await self._checked(request, "send", session_id)
        async with self._sessions.use(session_id) as ref:
            return JSONResponse(await ref.interrupt(body))

    async def _agui(self, request: Request) -> Response:
        run = parse_run_input(await self._checked_json(request, "send", "threadId"))
        if "/" in run.thread_id:
            raise HTTPError(400, "threadId must not contain '/'")
        ref, _ = await self._sessions.acquire(run.thread_id, create=True)
        try:
            produce = await ref.agui(run, keepalive=self._keepalive)
        except BaseException:
            ref.release()
            raise
        return _EventStream(produce, ref.release)


@final
class LocalSession:
    """What the routes do to one session open in this process (a `SessionRef`)."""

    def __init__(
        self, entry: Entry, *, accepting: Callable[[Message], Awaitable[None]] | None = None
    ) -> None:
        self._entry = entry
        # Called with each message before the session gets it (the cluster makes it durable).
        self._accepting = accepting

    @property
    def session(self) -> Session:
        return self._entry.session

    def release(self) -> None:
        self._entry.release()

    async def describe(self) -> dict[str, Any]:
        session = self._entry.session
        handle = session.current_execution
        current = None
        if handle is not None and not handle.done:
            current = {
                "execution_id": handle.execution_id,
                "status": handle.status,
                "current_tick": handle.current_tick,
            }
        await trio.lowlevel.checkpoint()
        return {
            "session_id": session.id,
            "status": session.status,
            "last_seq": session.last_seq,
            "usage": converter.unstructure(session.usage),
            "timeline": [converter.unstructure(m) for m in session.timeline],
            "queued_messages": [converter.unstructure(m) for m in session.queued_messages],
            "pending_confirmations": _pending_confirmations(session),
            "current_execution": current,
        }

    async def send(self, body: bytes) -> dict[str, Any]:
        entry = self._entry
        message, key = parse_send(parse_json(body))
        session = entry.session
        if key is None:
            return await self._accept(session, message)
        while (inflight := entry.inflight_keys.get(key)) is not None:
            await inflight.wait()
        answer = IdempotencyLog(session.state).get(key)
        if answer is not None:
            return answer
        done = entry.inflight_keys[key] = trio.Event()
        try:
            answer = await self._accept(session, message)
            IdempotencyLog(session.state).put(key, answer)
        finally:
            del entry.inflight_keys[key]
            done.set()
        return answer

    async def _accept(self, session: Session, message: Message) -> dict[str, Any]:
        # A client that goes away mid-request must not leave a message half-sent.
        with trio.CancelScope(shield=True):
            if self._accepting is not None:
                await self._accepting(message)
            after_seq = session.last_seq
            try:
                handle = await session.send(message)
            except SessionClosed as exc:
                raise HTTPError(409, str(exc)) from None
        return {"execution_id": handle.execution_id, "after_seq": after_seq}

    def events(
        self, after: int | None, types: frozenset[str] | None, *, keepalive: float
    ) -> Produce:
        entry = self._entry
        try:
            subscription = entry.session.subscribe(after_seq=after, types=types)
        except SessionClosed as exc:
            raise HTTPError(409, str(exc)) from None

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            with subscription:
                await _pump(entry, subscription, write, after if types is None else None, keepalive)

        return produce

    async def tool_result(self, tool_use_id: str, body: bytes) -> dict[str, Any]:
        session = self._entry.session
        pending = {p["tool_use_id"] for p in _pending_confirmations(session)}
        if tool_use_id not in pending:
            raise HTTPError(404, f"no confirmation is pending for tool use {tool_use_id!r}")
        answer = parse_tool_answer(parse_json(body))
        try:
            _submit_tool_result(session, tool_use_id, **attrs.asdict(answer))
        except UnknownToolUse as exc:
            raise HTTPError(404, str(exc)) from None
        except InvalidToolArguments as exc:
            raise HTTPError(422, str(exc)) from None
        except SessionClosed as exc:
            raise HTTPError(409, str(exc)) from None
        await trio.lowlevel.checkpoint()
        return {}

    async def abort(self, body: bytes) -> dict[str, Any]:
        reason = parse_abort(parse_json(body, required=False))
        await trio.lowlevel.checkpoint()
        handle = self._entry.session.current_execution
        if handle is None or handle.done:
            return {"aborted": False}
        handle.abort(reason)
        return {"aborted": True}

    async def interrupt(self, body: bytes) -> dict[str, Any]:
        message, reason = parse_interrupt(parse_json(body, required=False))
        with trio.CancelScope(shield=True):
            if message is not None and self._accepting is not None:
                await self._accepting(message)
            try:
                handle = await self._entry.session.interrupt(message, reason=reason)
            except SessionClosed as exc:
                raise HTTPError(409, str(exc)) from None
        return {"execution_id": handle.execution_id if handle else None}

    async def agui_run(self, run: RunInput) -> tuple[SessionExecutionHandle, int]:
        """Start (or join) the run of an AG-UI request: its handle and the ``seq`` before it."""
        session = self._entry.session
        known = {m.id for m in session.timeline} | {m.id for m in session.queued_messages}
        new = [m for m in run.messages if m.id not in known]
        with trio.CancelScope(shield=True):
            if new and self._accepting is not None:
                for message in new:
                    await self._accepting(message)
            if run.state is not None:
                reserved = session.state.get(RESERVED_STATE_KEY)
                state = dict(run.state)
                if reserved is not None:
                    state[RESERVED_STATE_KEY] = reserved
                session.state = state
            after_seq = session.last_seq
            try:
                handle = await (session.send(new) if new else session.render())
            except SessionClosed as exc:
                raise HTTPError(409, str(exc)) from None
        return handle, after_seq

    async def agui(self, run: RunInput, *, keepalive: float) -> Produce:
        session = self._entry.session
        handle, after_seq = await self.agui_run(run)
        subscription = handle.events.subscribe(after_seq=after_seq)
        translator = AGUITranslator(run.thread_id, run.run_id)

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            def frames(events: list[dict[str, Any]]) -> bytes:
                return b"".join(
                    sse_frame(json.dumps(e, ensure_ascii=False), event=None) for e in events
                )

            with subscription:
                await write(frames(translator.start(session.state)))
                while True:
                    with trio.move_on_after(keepalive) as waited:
                        try:
                            batch = await subscription.receive_batch()
                        except EventsLagged:
                            continue
                        except trio.EndOfChannel:
                            return
                    if waited.cancelled_caught:
                        await write(KEEPALIVE)
                        continue
                    await write(frames([e for event in batch for e in translator.feed(event)]))

        return produce


async def _pump(
    entry: Entry,
    subscription: Any,
    write: Callable[[bytes], Awaitable[None]],
    expect_after: int | None,
    keepalive: float,
) -> None:
    """Write frames until the session's stream ends."""
    while True:
        frames: list[bytes] = []
        with trio.move_on_after(keepalive):
            try:
                batch = await subscription.receive_batch()
            except EventsLagged as lagged:
                frames.append(_lagged_frame(lagged.missed))
                expect_after = None
            except trio.EndOfChannel:
                return
            else:
                # The session holds only its latest execution: a cursor older
                # than that is reported like a dropped one, never skipped silently.
                if expect_after is not None:
                    missed = batch[0].seq - expect_after - 1
                    if missed > 0:
                        frames.append(_lagged_frame(missed))
                    expect_after = None
                frames.extend(entry.frame(event) for event in batch)
        await write(b"".join(frames) if frames else KEEPALIVE)


class _NodeHeader:
    """Every response says which node answered: ``X-Trio-Session-Node``."""

    def __init__(self, app: ASGIApp, *, node: str) -> None:
        self._app = app
        self._header = (b"x-trio-session-node", node.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_header(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._header]}
            await send(message)

        await self._app(scope, receive, send_with_header)


def _lagged_frame(missed: int) -> bytes:
    return sse_frame(json.dumps({"missed": missed}), event="lagged")


@asynccontextmanager
async def open_gateway(
    agent_or_factory: Agent | AgentFactory,
    *,
    store: SessionStore | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    authenticate: Authenticate | None = None,
    authorize: Authorize | None = None,
    idle_timeout: float = 600.0,
    max_body: int = 1 << 20,
    max_buffered_events: int | None = None,
    keepalive: float = 15.0,
) -> AsyncIterator[Gateway]:
    """Serve sessions over HTTP (SSE, the browser page, AG-UI) in this trio run.

    Starlette runs on Hypercorn's trio worker inside a nursery of the caller's
    run; sessions are opened on demand (restored from ``store``) in the
    gateway's nursery. Leaving the block closes every session (a running
    execution is cancelled and saved), ends the event streams and stops the
    server.

    Args:
        agent_or_factory: The `Agent` of every session, or a callable given the
            session id that returns one (sync or async).
        store: Where sessions are persisted; with one, idle sessions close
            after ``idle_timeout`` and reopen on the next request.
        host: The interface to listen on.
        port: The TCP port; 0 picks a free one (see ``gateway.port``).
        token: The bearer token every route but ``GET /`` needs; a random one
            when None and ``authenticate`` is None.
        authenticate: ``(request) -> principal | None`` (sync or async),
            replacing the token check; None means 401.
        authorize: ``(principal, session_id, action) -> bool`` (sync or async)
            for the actions ``read``, ``send``, ``confirm``, ``abort``, ``admin``.
        idle_timeout: Seconds an unused session stays open (with a store).
        max_body: The largest request body accepted, chunked or not (bytes).
        max_buffered_events: The sessions' retention bound (lagging SSE
            readers get an ``event: lagged`` frame).
        keepalive: Seconds between ``: keepalive`` comments on idle streams.

    Raises:
        TypeError: ``agent_or_factory`` is neither an `Agent` nor callable.
        ValueError: A bad port, timeout, body limit or token.
        OSError: The address cannot be bound.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with open_gateway(demo_agent(), port=0) as gateway:
        ...         print(gateway.url)
        ...         await trio.sleep_forever()
    """
    token = check_gateway_options(
        agent_or_factory,
        port=port,
        token=token,
        authenticate=authenticate,
        idle_timeout=idle_timeout,
        max_body=max_body,
        keepalive=keepalive,
    )
    sessions = _Sessions(
        agent_or_factory,
        store=store,
        idle_timeout=float(idle_timeout),
        max_buffered_events=max_buffered_events,
    )
    async with serve_gateway(
        sessions,
        host=host,
        port=port,
        token=token,
        authenticate=authenticate,
        authorize=authorize,
        max_body=max_body,
        keepalive=float(keepalive),
    ) as gateway:
        yield gateway


def check_gateway_options(
    agent_or_factory: object,
    *,
    port: object,
    token: str | None,
    authenticate: Authenticate | None,
    idle_timeout: object,
    max_body: object,
    keepalive: object,
) -> str | None:
    """Check `open_gateway`'s arguments; returns the token in use (None with ``authenticate``).

    Raises:
        TypeError: ``agent_or_factory`` is neither an `Agent` nor callable.
        ValueError: A bad port, timeout, body limit or token.
    """
    if not isinstance(agent_or_factory, Agent) and not callable(agent_or_factory):
        raise TypeError(
            f"open_gateway() takes an Agent or a factory, got {type(agent_or_factory).__name__}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    for name, value in (("idle_timeout", idle_timeout), ("keepalive", keepalive)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if math.isnan(value):
            raise ValueError(f"{name} must not be NaN")
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ValueError(f"max_body must be a positive int, got {max_body!r}")
    if token is not None and (not isinstance(token, str) or not token or not token.isprintable()):
        raise ValueError("token must be a non-empty printable str or None")
    if token is None and authenticate is None:
        token = secrets.token_urlsafe(24)
    return token if authenticate is None else None


@asynccontextmanager
async def serve_gateway(
    sessions: Backend,
    *,
    host: str,
    port: int,
    token: str | None,
    authenticate: Authenticate | None,
    authorize: Authorize | None,
    max_body: int,
    keepalive: float,
) -> AsyncIterator[Gateway]:
    """Serve the routes over ``sessions`` (options checked by `check_gateway_options`)."""
    gateway_token = token
    gateway = Gateway(
        sessions,
        token=gateway_token,
        authenticate=authenticate,
        authorize=authorize,
        max_body=max_body,
        keepalive=float(keepalive),
    )
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logger
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as session_nursery:
                sessions.start(session_nursery)
                binds = await server_nursery.start(
                    partial(serve, gateway.app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
                )
                bound = urllib.parse.urlsplit(binds[0])
                gateway.host = host
                gateway.port = bound.port or port
                shown = f"[{host}]" if ":" in host else host
                quoted = urllib.parse.quote(gateway_token or "")
                query = f"?token={quoted}" if gateway_token is not None else ""
                gateway.url = f"http://{shown}:{gateway.port}/{query}"
                try:
                    yield gateway
                finally:
                    sessions.close_all()
            shutdown.set()
    except BaseExceptionGroup as group:
        reraise(unwrap(group))
