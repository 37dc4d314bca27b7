"""A cluster node: the gateway of SPEC §13 over PostgreSQL and Redis (SPEC §14).

Every node serves every session. A session runs on the node that holds its Redis lease
(with the lease's fencing token, checked by Postgres on every save and by Redis on every
event append); any other node forwards the session's commands to the holder through the
session's command stream, and every node's SSE reads the session's Redis stream.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import coredis.exceptions
import trio

from .._agent import Agent
from .._engine import CLEANUP_TIMEOUT, bounded, reraise, unwrap
from .._events import ExecutionEnd, ExecutionStart, StreamEvent
from .._messages import Message
from .._serde import converter, from_json, to_json
from .._session import Session, open_session
from ..server._agui import AGUITranslator, RunInput
from ..server._gateway import (
    AgentFactory,
    Authenticate,
    Authorize,
    Entry,
    Gateway,
    LocalSession,
    Produce,
    Unavailable,
    check_gateway_options,
    serve_gateway,
)
from ..server._protocol import KEEPALIVE, HTTPError, sse_frame, valid_id
from ..stores import SessionSnapshot, SessionStore
from ._errors import FencedOut
from ._lease import Lease
from ._postgres import PostgresStore
from ._redis import (
    CommandFailed,
    Commands,
    EventLog,
    RedisUnavailable,
    SeqConflict,
    Workers,
    open_redis,
)

__all__ = ["open_cluster_gateway"]

logger = logging.getLogger("trio_session.cluster")

PREFIX: Final = "trio-session"
"""The namespace of every Redis key of the cluster."""

RETENTION: Final = 10_000
"""Events kept in a session's stream behind its latest durable snapshot (no bound set)."""

REPLIES_KEPT: Final = 1000
"""Command replies a holder remembers, so that a command delivered twice runs once."""

APPEND_ATTEMPTS: Final = 3
"""Tries of one batch's append when the Redis connection breaks."""

NODE_LOST: Final = "node lost"
"""The reason of an orphaned execution's ``execution_end``."""


def encode_event(event: StreamEvent) -> bytes:
    """A stream entry: the event's type, a newline, its JSON (the SSE needs both)."""
    return f"{event.type}\n{to_json(event)}".encode()


def decode_entry(value: bytes) -> tuple[str, str]:
    """``(type, json)`` of a stream entry made by `encode_event`."""
    kind, _, data = value.partition(b"\n")
    return kind.decode(), data.decode()


# ---------------------------------------------------------------------------
# The node's own Redis keys: heartbeats, running executions, accepted messages
# ---------------------------------------------------------------------------


class _Registry:
    """What nodes tell each other beyond events, leases, commands and heartbeats.

    - ``{prefix}::running``: session id -> ``{"execution_id", "worker"}`` while an execution
      runs (scanned for orphans); an empty ``execution_id`` means the orphan's end was
      published and the new holder must still continue it;
    - ``{prefix}:{session_id}:inbox``: messages accepted (answered 202) that no durable
      snapshot holds yet; a new holder queues those its snapshot lacks.
    """

    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = _Retrying(redis)
        self._prefix = prefix
        self._running = f"{prefix}::running"

    async def mark_running(self, session_id: str, execution_id: str, worker: str) -> None:
        record = json.dumps({"execution_id": execution_id, "worker": worker})
        await self._redis.hset(self._running, {session_id: record})

    async def mark_done(self, session_id: str) -> None:
        await self._redis.hdel(self._running, [session_id])

    async def running(self) -> dict[str, dict[str, str]]:
        found = await self._redis.hgetall(self._running)
        return {_text(k): json.loads(v) for k, v in found.items()}

    async def running_of(self, session_id: str) -> dict[str, str] | None:
        record = await self._redis.hget(self._running, session_id)
        return None if record is None else dict(json.loads(record))

    def _inbox(self, session_id: str) -> str:
        return f"{self._prefix}:{session_id}:inbox"

    async def inbox_put(self, session_id: str, message: Message) -> None:
        await self._redis.hset(self._inbox(session_id), {message.id: to_json(message)})

    async def inbox(self, session_id: str) -> list[Message]:
        found = await self._redis.hgetall(self._inbox(session_id))
        return [from_json(Message, value) for value in found.values()]

    async def inbox_drop(self, session_id: str, ids: Sequence[str]) -> None:
        if ids:
            await self._redis.hdel(self._inbox(session_id), list(ids))

    async def clear(self, session_id: str) -> None:
        await self._redis.delete([self._inbox(session_id)])
        await self._redis.hdel(self._running, [session_id])


class _Retrying:
    """The registry's commands (all idempotent), each tried again once on a lost connection."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        command = getattr(self._redis, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await command(*args, **kwargs)
            except coredis.exceptions.ConnectionError:
                logger.warning("Redis %s: the connection was lost; trying again", name)
                return await command(*args, **kwargs)

        return call


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------
# A session this node holds
# ---------------------------------------------------------------------------


@attrs.define(eq=False)
class _Held:
    """A session running here, under the lease of fencing token ``token``."""

    session_id: str
    token: int
    scope: trio.CancelScope
    entry: Entry | None = None
    started: bool = False
    finished: trio.Event = attrs.Factory(trio.Event)
    delete_requested: bool = False
    forwarded: int = 0
    trimmed: int = 0
    inbox: set[str] = attrs.Factory(set)
    replies: OrderedDict[str, dict[str, Any]] = attrs.Factory(OrderedDict)


class _HolderStore:
    """The holder's store: Postgres fenced by its token, and the cluster's bookkeeping.

    A save that is refused (`FencedOut`) cancels this node's copy of the session. A save
    that succeeds lets go of the accepted messages it holds and trims the stream.
    ``load`` starts ``seq`` above ``min_seq`` (an orphan's published ``execution_end``).
    """

    def __init__(
        self,
        fenced: SessionStore,
        *,
        saved: Callable[[SessionSnapshot], Awaitable[None]],
        fenced_out: Callable[[], None],
        min_seq: int,
    ) -> None:
        self._fenced = fenced
        self._saved = saved
        self._fenced_out = fenced_out
        self._min_seq = min_seq

    async def save(self, snapshot: SessionSnapshot) -> None:
        try:
            await self._fenced.save(snapshot)
        except FencedOut:
            self._fenced_out()
            raise
        try:
            await self._saved(snapshot)
        except Exception:
            # Bookkeeping only: the snapshot is stored; the next save tries again.
            logger.warning("after saving session %r", snapshot.session_id, exc_info=True)

    async def load(self, session_id: str) -> SessionSnapshot | None:
        snapshot = await self._fenced.load(session_id)
        if snapshot is not None and snapshot.last_seq < self._min_seq:
            snapshot = attrs.evolve(snapshot, last_seq=self._min_seq)
        return snapshot

    async def delete(self, session_id: str) -> None:
        await self._fenced.delete(session_id)

    async def list(self) -> list[str]:
        return list(await self._fenced.list())


# ---------------------------------------------------------------------------
# The cluster backend of the gateway
# ---------------------------------------------------------------------------


class _Cluster:
    """The gateway's `Backend` on a cluster node."""

    def __init__(
        self,
        agent: Agent | AgentFactory,
        *,
        postgres: PostgresStore,
        redis: Any,
        worker_id: str,
        lease_ttl: float,
        idle_timeout: float,
        max_buffered_events: int | None,
        prefix: str = PREFIX,
    ) -> None:
        self._agent = agent
        self.postgres = postgres
        self.events = EventLog(redis, prefix=prefix)
        self.lease = Lease(redis, prefix=prefix)
        self.commands = Commands(redis, prefix=prefix)
        self.registry = _Registry(redis, prefix)
        self.workers = Workers(redis, prefix=prefix)
        self.node: str | None = worker_id
        self.worker_id = worker_id
        self.ttl = lease_ttl
        self._idle_timeout = idle_timeout
        self._retention = max_buffered_events or RETENTION
        self._held: dict[str, _Held] = {}
        self._opening: dict[str, trio.Event] = {}
        self._deleting: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._background = trio.CancelScope()
        self.closing = False

    # -- the Backend protocol ----------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._background_tasks)

    async def _background_tasks(self) -> None:
        with self._background:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._adopt_orphans)

    @asynccontextmanager
    async def use(self, session_id: str, *, create: bool = False) -> AsyncIterator[_Ref]:
        ref, _ = await self.acquire(session_id, create=create)
        try:
            yield ref
        finally:
            ref.release()

    async def acquire(self, session_id: str, *, create: bool = False) -> tuple[_Ref, bool]:
        if not valid_id(session_id):
            raise HTTPError(404, f"no session {session_id[:64]!r}")
        self._check_open(session_id)
        if session_id in self._held or session_id in self._opening:
            return _Ref(self, session_id), False
        if await self.lease.holder(session_id) is not None:
            return _Ref(self, session_id), False
        if await self.postgres.load(session_id) is not None:
            return _Ref(self, session_id), False
        if not create:
            raise HTTPError(404, f"no session {session_id!r}")
        taken = await self._take(session_id, create=True)
        return _Ref(self, session_id), taken == "created"

    async def list_ids(self) -> list[str]:
        ids = list(await self.postgres.list())
        known = set(ids)
        ids.extend(sorted(sid for sid in self._held if sid not in known))
        return ids

    async def delete(self, session_id: str) -> None:
        if not valid_id(session_id):
            raise HTTPError(404, f"no session {session_id[:64]!r}")
        where = await self.route(session_id)
        self._deleting.add(session_id)
        try:
            if isinstance(where, str):
                await self.forward(session_id, where, {"op": "delete"})
                await self._gone(session_id, where)
                return
            where.release()
            await self.delete_held(session_id)
        finally:
            self._deleting.discard(session_id)

    def close_all(self) -> None:
        self.closing = True
        self._background.cancel()
        for held in self._held.values():
            if held.entry is not None:
                held.entry.close_requested = True
                held.entry.poke()

    # -- where a session runs ----------------------------------------------

    def _check_open(self, session_id: str) -> None:
        if self.closing:
            raise HTTPError(409, "the gateway is closing")
        if session_id in self._deleting:
            raise HTTPError(409, f"session {session_id!r} is being deleted")

    async def route(self, session_id: str) -> LocalSession | str:
        """The session here (its user count raised), or the live node that holds it.

        Takes the lease when nobody holds it; waits for a dead holder's lease to expire,
        at most twice ``lease_ttl``.

        Raises:
            HTTPError: 404 (unknown), 409 (closing, being deleted), 503 (still held by a
                node that stopped answering).
        """
        deadline = trio.current_time() + 2 * self.ttl
        while True:
            self._check_open(session_id)
            held = self._held.get(session_id)
            if held is not None and held.entry is not None:
                entry = held.entry
                if not entry.closing:
                    entry.users += 1
                    return LocalSession(entry, accepting=self._accepting(held))
                await entry.closed.wait()
                continue
            opening = self._opening.get(session_id)
            if opening is not None:
                await opening.wait()
                continue
            holder = await self.lease.holder(session_id)
            if holder is None:
                if await self._take(session_id) == "missing":
                    raise HTTPError(404, f"no session {session_id!r}")
                continue
            if holder != self.worker_id and await self.workers.is_alive(holder):
                return holder
            # A holder that stopped beating (or our own lease, being let go of).
            left = deadline - trio.current_time()
            if left <= 0:
                raise Unavailable(
                    f"session {session_id!r} is held by node {holder!r}, which does not answer",
                    retry_after=self.ttl,
                )
            await trio.sleep(min(self.ttl / 4, left))

    async def forward(
        self, session_id: str, worker: str, command: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run a command on the holder ``worker``; its HTTP errors are raised here."""
        try:
            reply = await self.commands.call(session_id, command, timeout=2 * self.ttl)
        except CommandFailed as exc:
            raise HTTPError(500, str(exc)) from None
        except TimeoutError:
            raise Unavailable(
                f"node {worker!r} holding session {session_id!r} did not answer",
                retry_after=self.ttl,
            ) from None
        status = int(reply.get("status", 500))
        if reply.get("moving"):
            raise _Moving
        if status >= 400:
            error = reply.get("error") or {}
            message = error.get("message", "") if isinstance(error, Mapping) else str(error)
            if status == 503:
                raise Unavailable(message, retry_after=self.ttl)
            raise HTTPError(status, message)
        result = reply.get("result")
        return dict(result) if isinstance(result, Mapping) else {}

    async def _take(self, session_id: str, *, create: bool = False) -> str:
        """Try to become the session's holder: ``taken``, ``created``, ``busy`` or ``missing``."""
        if session_id in self._opening or session_id in self._held:
            return "busy"
        done = self._opening[session_id] = trio.Event()
        try:
            token = await self.lease.acquire(session_id, self.worker_id, self.ttl)
            if token is None:
                return "busy"
            try:
                await self.postgres.claim(session_id, token)
                snapshot = await self.postgres.load(session_id)
            except BaseException:
                with trio.CancelScope(shield=True), bounded(f"the lease release of {session_id!r}"):
                    await self._release(session_id, token)
                raise
            if snapshot is None and not create:
                with trio.CancelScope(shield=True), bounded(f"the lease release of {session_id!r}"):
                    await self._release(session_id, token)
                return "missing"
            assert self._nursery is not None
            await self._nursery.start(self._hold, session_id, token, snapshot)
            return "taken" if snapshot is not None else "created"
        finally:
            del self._opening[session_id]
            done.set()

    async def _release(self, session_id: str, token: int) -> None:
        """Give the lease up; callers shield and bound it (`bounded`), as it is cleanup."""
        try:
            await self.lease.release(session_id, self.worker_id, token)
        except Exception:
            logger.warning("releasing the lease of %r failed", session_id, exc_info=True)

    # -- holding a session ----------------------------------------------------

    async def _agent_for(self, session_id: str) -> Agent:
        made = self._agent(session_id) if callable(self._agent) else self._agent
        agent = await made if inspect.isawaitable(made) else made
        if not isinstance(agent, Agent):
            raise TypeError(f"the agent factory must return an Agent, got {type(agent).__name__}")
        return agent

    async def _hold(  # noqa: ASYNC128 - _run calls task_status.started()
        self,
        session_id: str,
        token: int,
        snapshot: SessionSnapshot | None,
        *,
        task_status: trio.TaskStatus[_Held],
    ) -> None:
        held = _Held(session_id, token, trio.CancelScope())
        try:
            with held.scope:
                async with trio.open_nursery() as lease_nursery:
                    lease_nursery.start_soon(self._renew, held)
                    await self._run(held, snapshot, task_status)
                    lease_nursery.cancel_scope.cancel()
            if held.scope.cancelled_caught:
                logger.warning(
                    "node %r lost the lease of session %r: its copy is cancelled",
                    self.worker_id,
                    session_id,
                )
        except BaseExceptionGroup as group:
            if not held.started:
                reraise(unwrap(group))
            logger.error("session %r failed on its node", session_id, exc_info=group)
        except Exception:
            # Before it started, the caller of nursery.start gets the error.
            if not held.started:
                raise
            logger.exception("session %r failed on its node", session_id)
        finally:
            if self._held.get(session_id) is held:
                del self._held[session_id]
            if held.entry is not None:
                held.entry.closing = True
                held.entry.closed.set()
            with trio.CancelScope(shield=True), bounded(f"the lease release of {session_id!r}"):
                await self._release(session_id, token)
            held.finished.set()

    async def _run(
        self,
        held: _Held,
        snapshot: SessionSnapshot | None,
        task_status: trio.TaskStatus[_Held],
    ) -> None:
        session_id, token = held.session_id, held.token
        agent = await self._agent_for(session_id)
        orphan = await self.registry.running_of(session_id)
        if orphan is not None:
            min_seq = await self._end_orphan(held, orphan, snapshot)
        else:
            # Whatever happened before: never behind the stream (Redis refuses an old id).
            min_seq = await self.events.last_seq(session_id)
        store = _HolderStore(
            self.postgres.fenced(session_id, token),
            saved=_saved_hook(self, held),
            fenced_out=held.scope.cancel,
            min_seq=min_seq,
        )
        async with trio.open_nursery() as nursery:
            # No retention bound in the process: the forwarder must never lag behind and
            # lose events; readers read the stream, where the bound applies (`saved`).
            async with open_session(agent, session_id=session_id, store=store) as session:
                entry = held.entry = Entry(session, idle_since=trio.current_time())
                subscription = session.subscribe(after_seq=session.last_seq)
                held.forwarded = session.last_seq
                nursery.start_soon(self._forward, held, subscription)
                if snapshot is None:
                    # Created here: stored at once, so that every node lists it.
                    await store.save(session.snapshot())
                recovered = await self._recover_inbox(held, session)
                if orphan is not None or recovered:
                    if _waiting(session):
                        # The answer to the confirmation starts the next execution.
                        await self.registry.mark_done(session_id)
                    else:
                        await session.render()
                commands = trio.CancelScope()
                await nursery.start(self._serve_commands, held, commands)
                self._held[session_id] = held
                held.started = True
                task_status.started(held)
                await _watch(entry, self._idle_timeout)
                entry.closing = True
                await session.aclose()
            # The session's stream ended: the forwarder drains it, then stops.
            commands.cancel()
        if held.delete_requested:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True) as bound:
                await store.delete(session_id)
                await self.registry.clear(session_id)
                await self.events.delete(session_id)
            if bound.cancelled_caught:
                logger.error("deleting session %r timed out", session_id)

    async def _end_orphan(
        self, held: _Held, orphan: Mapping[str, str], snapshot: SessionSnapshot | None
    ) -> int:
        """Publish the orphaned execution's end; the new ``seq`` floor."""
        session_id = held.session_id
        floor = max(await self.events.last_seq(session_id), snapshot.last_seq if snapshot else 0)
        execution_id = orphan.get("execution_id", "")
        if not execution_id:
            return floor  # published by an earlier taker that died before continuing
        seq = floor + 1
        end = ExecutionEnd(
            seq=seq,
            session_id=session_id,
            execution_id=execution_id,
            status="cancelled",
            reason=NODE_LOST,
        )
        await self.events.append(session_id, [(seq, encode_event(end))], token=held.token)
        await self.registry.mark_running(session_id, "", self.worker_id)
        logger.warning(
            "node %r took session %r from node %r: execution %r ended (node lost)",
            self.worker_id,
            session_id,
            orphan.get("worker"),
            execution_id,
        )
        return seq

    async def _recover_inbox(self, held: _Held, session: Session) -> bool:
        """Queue accepted messages the snapshot lacks; whether there were any."""
        known = {m.id for m in session.timeline} | {m.id for m in session.queued_messages}
        accepted = await self.registry.inbox(held.session_id)
        stale = [m.id for m in accepted if m.id in known]
        await self.registry.inbox_drop(held.session_id, stale)
        missing = [m for m in accepted if m.id not in known]
        for message in missing:
            held.inbox.add(message.id)
            session.queue(message)
        return bool(missing)

    def _accepting(self, held: _Held) -> Callable[[Message], Awaitable[None]]:
        async def accepting(message: Message) -> None:
            # Durable before the 202: a holder lost before its next save loses no message.
            await self.registry.inbox_put(held.session_id, message)
            held.inbox.add(message.id)

        return accepting

    async def saved(self, held: _Held, snapshot: SessionSnapshot) -> None:
        """After a durable save: drop the accepted messages it holds; trim the stream."""
        if held.inbox:
            ids = {m.id for m in snapshot.timeline} | {m.id for m in snapshot.queued_messages}
            if snapshot.pending_message is not None:
                ids.add(snapshot.pending_message.id)
            covered = [i for i in held.inbox if i in ids]
            if covered:
                await self.registry.inbox_drop(held.session_id, covered)
                held.inbox.difference_update(covered)
        below = held.forwarded - self._retention
        if below > held.trimmed:
            await self.events.trim(held.session_id, below_seq=below)
            held.trimmed = below

    async def _forward(self, held: _Held, subscription: Any) -> None:
        """Append the session's events to its stream, one round trip per batch."""
        session_id = held.session_id
        with subscription:
            while True:
                try:
                    batch: list[StreamEvent] = await subscription.receive_batch()
                except trio.EndOfChannel:
                    return
                except Exception as exc:  # EventsLagged: a retention bound below the batch
                    logger.error("session %r: events lost before the stream: %s", session_id, exc)
                    continue
                starts = [e for e in batch if isinstance(e, ExecutionStart) and not e.spawn_path]
                if starts:
                    await self._note(
                        self.registry.mark_running(
                            session_id, starts[-1].execution_id, self.worker_id
                        )
                    )
                try:
                    await self._append(held, batch)
                except FencedOut:
                    logger.warning("session %r: fenced out of its stream", session_id)
                    held.scope.cancel()
                    return
                held.forwarded = batch[-1].seq
                ends = [e for e in batch if isinstance(e, ExecutionEnd) and not e.spawn_path]
                if ends and (not starts or batch.index(ends[-1]) > batch.index(starts[-1])):
                    await self._note(self.registry.mark_done(session_id))

    @staticmethod
    async def _note(bookkeeping: Awaitable[None]) -> None:
        # Only orphan detection depends on it: a failure is logged, the session goes on.
        try:
            await bookkeeping
        except Exception:
            logger.warning("updating the running sessions failed", exc_info=True)

    async def _append(self, held: _Held, batch: Sequence[StreamEvent]) -> None:
        """One fenced round trip; tried again when the connection broke on the way."""
        entries = [(e.seq, encode_event(e)) for e in batch]
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            conflict: SeqConflict | None = None
            try:
                await self.events.append(held.session_id, entries, token=held.token)
                return
            except SeqConflict as error:
                if attempt == 1:
                    raise
                conflict = error
            except RedisUnavailable:
                if attempt == APPEND_ATTEMPTS:
                    raise
                logger.warning("session %r: appending events failed; trying again", held.session_id)
            if conflict is not None:
                # The lost attempt did write the batch (its reply was what got lost).
                if await self.events.last_seq(held.session_id) >= batch[-1].seq:
                    return
                raise conflict
            await trio.sleep(0.05 * attempt)

    async def _renew(self, held: _Held) -> None:
        while True:
            await trio.sleep(self.ttl / 3)
            try:
                ours = await self.lease.renew(held.session_id, self.worker_id, held.token, self.ttl)
            except Exception:
                logger.warning("renewing the lease of %r failed", held.session_id, exc_info=True)
                ours = False
            if not ours:
                held.scope.cancel()
                return

    async def _serve_commands(  # noqa: ASYNC128 - Commands.serve calls task_status.started()
        self,
        held: _Held,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def handler(command: Mapping[str, Any]) -> Mapping[str, Any]:
            return await self._handle(held, command)

        with scope:
            await self.commands.serve(held.session_id, handler, task_status=task_status)

    async def _handle(self, held: _Held, command: Mapping[str, Any]) -> dict[str, Any]:
        command_id = str(command.get("command_id", ""))
        if command_id and command_id in held.replies:
            return held.replies[command_id]
        reply = await self._run_command(held, command)
        if command_id:
            held.replies[command_id] = reply
            while len(held.replies) > REPLIES_KEPT:
                held.replies.popitem(last=False)
        return reply

    async def _run_command(self, held: _Held, command: Mapping[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        body = str(command.get("body", "")).encode("latin-1")
        entry = held.entry
        if entry is None or entry.closing:
            return {"status": 503, "moving": True, "error": {"message": "the session is closing"}}
        if op == "delete":
            # Not awaited here: the session's close ends this command loop. The node that
            # asked waits until the session is gone.
            self.request_delete(held)
            return {"status": 204}
        entry.users += 1
        ref = LocalSession(entry, accepting=self._accepting(held))
        try:
            if op == "describe":
                result = {**await ref.describe(), "node": self.worker_id}
            elif op == "send":
                result = await ref.send(body)
            elif op == "tool_result":
                result = await ref.tool_result(str(command.get("tool_use_id", "")), body)
            elif op == "abort":
                result = await ref.abort(body)
            elif op == "interrupt":
                result = await ref.interrupt(body)
            elif op == "agui":
                result = await _agui_start(ref, _run_from_json(command["run"]))
            else:
                return {"status": 400, "error": {"message": f"unknown command {op!r}"}}
        except HTTPError as exc:
            return {"status": exc.status, "error": exc.body()["error"]}
        finally:
            ref.release()
        return {"status": 200, "result": result}

    def request_delete(self, held: _Held) -> None:
        held.delete_requested = True
        if held.entry is not None:
            held.entry.close_requested = True
            held.entry.poke()

    async def delete_held(self, session_id: str) -> None:
        held = self._held.get(session_id)
        if held is None or held.entry is None:
            raise HTTPError(404, f"no session {session_id!r}")
        self.request_delete(held)
        await held.finished.wait()

    async def _gone(self, session_id: str, worker: str) -> None:
        """Wait until ``worker`` let go of the deleted session (bounded)."""
        with trio.move_on_after(2 * self.ttl + CLEANUP_TIMEOUT) as bound:
            # Another process: polled (Redis has no notification of a lease's release).
            while True:
                if await self.lease.holder(session_id) != worker:
                    break
                await trio.sleep(self.ttl / 10)
        if bound.cancelled_caught:
            logger.warning("node %r is slow to delete session %r", worker, session_id)

    async def describe_unheld(self, session_id: str) -> dict[str, Any] | None:
        """``GET /sessions/{id}`` of a session nobody holds (``"node": null``), from storage.

        None when a node holds it, or when it must be taken anyway (an orphan to continue).
        """
        if session_id in self._held or session_id in self._opening:
            return None
        if await self.lease.holder(session_id) is not None:
            return None
        if await self.registry.running_of(session_id) is not None:
            return None
        snapshot = await self.postgres.load(session_id)
        if snapshot is None:
            return None  # let the route say 404 (or find it created meanwhile)
        return {
            "session_id": session_id,
            "status": "idle",
            "last_seq": await self.events.last_seq(session_id),
            "usage": converter.unstructure(snapshot.usage),
            "timeline": [converter.unstructure(m) for m in snapshot.timeline],
            "queued_messages": [converter.unstructure(m) for m in snapshot.queued_messages],
            "pending_confirmations": [
                converter.unstructure(p) for p in snapshot.pending_confirmations
            ],
            "current_execution": None,
            "node": None,
        }

    # -- background work of the node ----------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.workers.beat(self.worker_id, self.ttl)
            except Exception:
                logger.warning("node %r: heartbeat failed", self.worker_id, exc_info=True)
            await trio.sleep(self.ttl / 3)

    async def _adopt_orphans(self) -> None:
        """Take running sessions whose holder is gone, every ``lease_ttl / 2``."""
        while True:
            await trio.sleep(self.ttl / 2)
            if self.closing:
                return
            try:
                await self.adopt_orphans()
            except Exception:
                logger.warning("node %r: looking for orphans failed", self.worker_id, exc_info=True)

    async def adopt_orphans(self) -> None:
        for session_id in await self.registry.running():
            if session_id in self._held or session_id in self._opening or self.closing:
                continue
            if await self.lease.holder(session_id) is None:
                try:
                    await self._take(session_id)
                except FencedOut:
                    continue  # another node took it between our two steps


def _saved_hook(cluster: _Cluster, held: _Held) -> Callable[[SessionSnapshot], Awaitable[None]]:
    async def saved(snapshot: SessionSnapshot) -> None:
        await cluster.saved(held, snapshot)

    return saved


def _waiting(session: Session) -> bool:
    """Whether the session waits on a confirmation (then the next execution waits too)."""
    return bool(session.pending_confirmations)


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _watch(entry: Entry, idle_timeout: float) -> None:
    """Return when the held session should close: asked to, or idle long enough."""
    session = entry.session
    while not entry.close_requested:
        entry.changed = trio.Event()
        handle = session.current_execution
        if entry.users or session.status == "running":
            if handle is not None and not handle.done:
                # Woken by the end of the execution, or a change (a close asked for).
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_then_cancel, handle.wait, nursery.cancel_scope)
                    nursery.start_soon(_then_cancel, entry.changed.wait, nursery.cancel_scope)
            else:
                await entry.changed.wait()
            entry.idle_since = trio.current_time()
            continue
        with trio.move_on_at(entry.idle_since + idle_timeout):
            await entry.changed.wait()
            continue
        return


# ---------------------------------------------------------------------------
# What the routes use
# ---------------------------------------------------------------------------


class _Moving(Exception):
    """The holder answered that it is closing its copy of the session."""


class _Ref:
    """A session of the cluster as the routes use it: run here, or forwarded."""

    def __init__(self, cluster: _Cluster, session_id: str) -> None:
        self._cluster = cluster
        self._id = session_id

    def release(self) -> None:
        pass

    async def _call(
        self,
        op: str,
        body: bytes,
        here: Callable[[LocalSession], Awaitable[dict[str, Any]]],
        **extra: Any,
    ) -> dict[str, Any]:
        deadline = trio.current_time() + 2 * self._cluster.ttl
        while True:
            where = await self._cluster.route(self._id)
            if not isinstance(where, str):
                try:
                    return await here(where)
                finally:
                    where.release()
            command = {"op": op, "body": body.decode("latin-1"), **extra}
            try:
                return await self._cluster.forward(self._id, where, command)
            except _Moving:
                # The holder was closing its copy: ask again, wherever it runs next.
                if trio.current_time() > deadline:
                    raise Unavailable(
                        f"session {self._id!r} is moving between nodes",
                        retry_after=self._cluster.ttl,
                    ) from None
                await trio.sleep(self._cluster.ttl / 10)

    async def describe(self) -> dict[str, Any]:
        unheld = await self._cluster.describe_unheld(self._id)
        if unheld is not None:
            return unheld

        async def here(local: LocalSession) -> dict[str, Any]:
            return {**await local.describe(), "node": self._cluster.worker_id}

        return await self._call("describe", b"", here)

    async def send(self, body: bytes) -> dict[str, Any]:
        return await self._call("send", body, lambda local: local.send(body))

    async def tool_result(self, tool_use_id: str, body: bytes) -> dict[str, Any]:
        return await self._call(
            "tool_result",
            body,
            lambda local: local.tool_result(tool_use_id, body),
            tool_use_id=tool_use_id,
        )

    async def abort(self, body: bytes) -> dict[str, Any]:
        return await self._call("abort", body, lambda local: local.abort(body))

    async def interrupt(self, body: bytes) -> dict[str, Any]:
        return await self._call("interrupt", body, lambda local: local.interrupt(body))

    def events(
        self, after: int | None, types: frozenset[str] | None, *, keepalive: float
    ) -> Produce:
        log = self._cluster.events
        session_id = self._id

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            cursor = after
            while True:
                entries = await log.read(session_id, after_seq=cursor, block=keepalive)
                if not entries:
                    await write(KEEPALIVE)
                    continue
                frames = []
                for seq, value in entries:
                    kind, data = decode_entry(value)
                    if types is None or kind in types:
                        frames.append(sse_frame(data, id=seq, event=kind))
                cursor = entries[-1][0]
                if frames:
                    await write(b"".join(frames))

        return produce

    async def agui(self, run: RunInput, *, keepalive: float) -> Produce:
        cluster, session_id = self._cluster, self._id
        where = await cluster.route(session_id)
        if isinstance(where, str):
            try:
                started = await cluster.forward(
                    session_id, where, {"op": "agui", "run": _run_to_json(run)}
                )
            except _Moving:
                raise Unavailable(
                    f"session {session_id!r} is moving between nodes", retry_after=cluster.ttl
                ) from None
        else:
            try:
                started = await _agui_start(where, run)
            finally:
                where.release()
        execution_id = str(started["execution_id"])
        translator = AGUITranslator(run.thread_id, run.run_id)

        def frames(events: list[dict[str, Any]]) -> bytes:
            return b"".join(
                sse_frame(json.dumps(e, ensure_ascii=False), event=None) for e in events
            )

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            await write(frames(translator.start(started["state"])))
            cursor = int(started["after_seq"])
            while not translator.finished:
                entries = await cluster.events.read(session_id, after_seq=cursor, block=keepalive)
                if not entries:
                    await write(KEEPALIVE)
                    continue
                cursor = entries[-1][0]
                out: list[dict[str, Any]] = []
                for _, value in entries:
                    event: StreamEvent = from_json(StreamEvent, decode_entry(value)[1])
                    # The run's execution only (a spawned child's events are forwarded in it).
                    if event.spawn_path or event.execution_id == execution_id:
                        out.extend(translator.feed(event))
                if out:
                    await write(frames(out))

        return produce


async def _agui_start(local: LocalSession, run: RunInput) -> dict[str, Any]:
    handle, after_seq = await local.agui_run(run)
    return {
        "execution_id": handle.execution_id,
        "after_seq": after_seq,
        "state": local.session.state,
    }


def _run_to_json(run: RunInput) -> dict[str, Any]:
    return {
        "thread_id": run.thread_id,
        "run_id": run.run_id,
        "messages": [to_json(m) for m in run.messages],
        "state": None if run.state is None else dict(run.state),
    }


def _run_from_json(data: Mapping[str, Any]) -> RunInput:
    return RunInput(
        thread_id=str(data["thread_id"]),
        run_id=str(data["run_id"]),
        messages=tuple(from_json(Message, m) for m in data["messages"]),
        state=data["state"],
    )


# ---------------------------------------------------------------------------
# open_cluster_gateway
# ---------------------------------------------------------------------------


def default_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@asynccontextmanager
async def open_cluster_gateway(
    agent_or_factory: Agent | AgentFactory,
    *,
    postgres: str,
    redis: str,
    worker_id: str | None = None,
    lease_ttl: float = 10.0,
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
    """Serve the gateway of SPEC §13 as one node of a cluster (SPEC §14).

    Sessions are stored in PostgreSQL and run on the node holding their Redis lease;
    every node answers for every session (forwarding to the holder), streams events
    from the session's Redis stream, and takes over sessions whose holder died.

    Args:
        agent_or_factory: The `Agent`, or a factory given the session id (as in
            `open_gateway`); every node must run the same.
        postgres: The PostgreSQL DSN (``postgresql://user@host:5432/db``).
        redis: The Redis URL (``redis://127.0.0.1:6379/0``).
        worker_id: This node's name in leases and ``X-Trio-Session-Node``
            (default: host, pid and a random suffix). Unique per live node.
        lease_ttl: Seconds a lease lasts without renewal (renewed every third of it):
            a dead node's sessions move within twice ``lease_ttl``.
        host: As in `open_gateway`, like the remaining options.
        port: As in `open_gateway`.
        token: As in `open_gateway`.
        authenticate: As in `open_gateway`.
        authorize: As in `open_gateway`.
        idle_timeout: Seconds an unused session stays on its node before its lease is
            let go of.
        max_body: As in `open_gateway`.
        max_buffered_events: How many events a session's stream keeps behind its latest
            durable snapshot (default `RETENTION`); readers with an older cursor resume
            from the oldest kept event.
        keepalive: As in `open_gateway`.

    Raises:
        ValueError: A bad option (as `open_gateway`), ``lease_ttl`` or ``worker_id``.
        OSError: The address cannot be bound.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with open_cluster_gateway(
        ...         demo_agent(), postgres="postgresql://localhost/trio", redis="redis://localhost"
        ...     ) as gateway:
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
    if (
        isinstance(lease_ttl, bool)
        or not isinstance(lease_ttl, int | float)
        or math.isnan(lease_ttl)
        or not lease_ttl > 0
    ):
        raise ValueError(f"lease_ttl must be a number of seconds > 0, got {lease_ttl!r}")
    if worker_id is None:
        worker_id = default_worker_id()
    elif not isinstance(worker_id, str) or not valid_id(worker_id) or not worker_id.isprintable():
        raise ValueError(f"worker_id must be a non-empty printable str, got {worker_id!r}")
    try:
        async with PostgresStore(postgres) as store, open_redis(redis) as client:
            cluster = _Cluster(
                agent_or_factory,
                postgres=store,
                redis=client,
                worker_id=worker_id,
                lease_ttl=float(lease_ttl),
                idle_timeout=float(idle_timeout),
                max_buffered_events=max_buffered_events,
            )
            await cluster.workers.beat(worker_id, float(lease_ttl))
            async with serve_gateway(
                cluster,
                host=host,
                port=port,
                token=token,
                authenticate=authenticate,
                authorize=authorize,
                max_body=max_body,
                keepalive=float(keepalive),
            ) as gateway:
                yield gateway
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True) as bound:
                try:
                    await cluster.workers.gone(worker_id)
                except Exception:
                    logger.warning("node %r: removing its heartbeat failed", worker_id)
            if bound.cancelled_caught:
                logger.warning("node %r: removing its heartbeat timed out", worker_id)
    except BaseExceptionGroup as group:
        reraise(unwrap(group))
