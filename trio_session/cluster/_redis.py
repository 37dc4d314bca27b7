"""Redis for the cluster: a session's event log, its command stream, and the connection.

Every key of a session is ``f"{prefix}:{session_id}:..."`` (the prefix defaults to
``"trio-session"``):

- ``...:events``: the session's event log, a Redis Stream whose entry ids are ``<seq>-0``,
  and ``...:trimmed``, the highest ``seq`` trimmed from it;
- ``...:lease`` and ``...:fence``: the lease (see `Lease`, in ``_lease.py``);
- ``...:commands`` and ``...:reply:<command id>``: the command stream and its replies.

coredis runs under trio natively (through anyio). Three things about it shape this module:

- its client is an async context manager whose task group wraps everything raised in its body
  in an exception group, so `open_redis` unwraps it (callers catch our errors, never groups);
- a blocking command (``XREAD BLOCK``, ``BLPOP``) holds a connection of its own, and a cancel
  scope aborts it cleanly (the connection is closed, not returned half-read to the pool); the
  pool holds at most ``max_connections`` (64 by default) and makes every further command wait,
  the short ones too. So the blocking commands here take a slot of a `trio.CapacityLimiter`
  per client first, which keeps `RESERVED_CONNECTIONS` for the short commands (appends, lease
  renewals): many readers then wait for each other, never starve the lease. A node should
  still run one blocking reader per session and fan out locally (``bench/cluster_redis.py``);
- the client here never retries: every call is one attempt, so a batch append that reached
  Redis is never sent twice (a retry would be refused as a stale ``seq``).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from .._engine._unwrap import reraise, unwrap
from .._errors import StoreError, TrioSessionError
from ._errors import FencedOut

__all__ = [
    "DEFAULT_PREFIX",
    "CommandFailed",
    "Commands",
    "EventLog",
    "Redis",
    "RedisUnavailable",
    "SeqConflict",
    "Workers",
    "open_redis",
]

logger: Final = logging.getLogger("trio_session.cluster")

Redis: TypeAlias = "coredis.Redis[bytes]"
"""The client `open_redis` yields: responses are bytes (``decode_responses=False``)."""

DEFAULT_PREFIX: Final = "trio-session"

_SCHEMES: Final = ("redis", "rediss", "unix")

RESERVED_CONNECTIONS: Final = 4
"""Connections of a client's pool that blocking reads leave to the short commands."""

_blocking_slots: weakref.WeakKeyDictionary[Redis, trio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _slots(redis: Redis) -> trio.CapacityLimiter:
    """The client's limiter of blocking commands in progress."""
    limiter = _blocking_slots.get(redis)
    if limiter is None:
        size = max(1, redis.connection_pool.max_connections - RESERVED_CONNECTIONS)
        limiter = _blocking_slots[redis] = trio.CapacityLimiter(size)
    return limiter


class RedisUnavailable(TrioSessionError, ConnectionError):
    """Redis cannot be reached or used: a refused connection, a lost one, a bad database.

    Raised by `open_redis` when the server at the URL does not answer a ``PING`` (the message
    names the URL, without its password), and by every operation whose connection broke,
    including a blocking read cut off by the server's death. Nothing is retried: a write that
    raised this may or may not have happened.
    """


class SeqConflict(StoreError):
    """An append's first ``seq`` is not above the last ``seq`` of the session's event log.

    The writer holds the lease (its token matched) but its ``seq`` counter is behind the
    stream: a node restoring a session must continue above `EventLog.last_seq`, not only
    above its snapshot's ``last_seq``. Nothing of the batch was written.

    Attributes:
        session_id: The session whose event log refused the batch.
    """


class CommandFailed(TrioSessionError):
    """The lease holder's command handler raised instead of replying.

    The message carries the handler's error (type and text); the command counts as handled.
    """


def _safe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _check_url(url: str) -> None:
    if not isinstance(url, str):
        raise TypeError(f"the Redis URL must be a str, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a Redis URL: {_safe_url(url)!r} ({exc})") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"not a Redis URL: {_safe_url(url)!r}; it must start with redis://, rediss:// or "
            "unix:// (redis://host:6379/0)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"the Redis URL {_safe_url(url)!r} names no host")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"the Redis URL {_safe_url(url)!r} names no socket path")
    del port


def _lost(exc: BaseException) -> bool:
    return isinstance(exc, coredis.exceptions.ConnectionError)


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    max_connections: int = 64,
    connect_timeout: float = 5.0,
    pool_timeout: float = 30.0,
) -> AsyncIterator[Redis]:
    """Connect to Redis at ``url`` for the duration of the block.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://...`` or
            ``unix:///path/to/socket?db=0``.
        max_connections: The pool's bound. Every blocking read in progress (`EventLog.read`
            with ``block``, `Commands.serve`, `Commands.call`) holds one connection, at most
            ``max_connections - RESERVED_CONNECTIONS`` at a time (the next ones wait their
            turn); the other commands share the rest.
        connect_timeout: Seconds to establish a connection.
        pool_timeout: Seconds a command may wait for a free connection of the pool before
            it fails with `RedisUnavailable`.

    Raises:
        ValueError: ``url`` is not a Redis URL (the message says why).
        RedisUnavailable: Redis does not answer at ``url`` (or refuses the database), or
            the connection broke later in a way the block did not handle.

    Example::

        async with open_redis("redis://127.0.0.1:6379/0") as redis:
            log = EventLog(redis)
            await log.append("s1", [(1, b"{}")], token=token)
    """
    _check_url(url)
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    where = _safe_url(url)
    try:
        client: Redis = coredis.Redis.from_url(
            url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
    except (ValueError, TypeError, AssertionError) as exc:
        raise ValueError(f"not a usable Redis URL: {where!r} ({exc!r})") from None
    body_raised: list[BaseException] = []
    try:
        async with client:
            try:
                with trio.fail_after(connect_timeout + 1.0):
                    await client.ping()
            except (coredis.exceptions.RedisError, TimeoutError, trio.TooSlowError) as exc:
                reason = str(exc) or f"no answer within {connect_timeout + 1.0:g} s"
                raise RedisUnavailable(f"cannot use Redis at {where}: {reason}") from exc
            try:
                yield client
            except BaseException as exc:
                body_raised.append(exc)
                raise
    except BaseExceptionGroup as group:
        # The body's own error (even a group of its own) leaves as it is; else coredis's.
        if body_raised and _holds(group, body_raised[0]):
            reraise(body_raised[0])
        chosen = unwrap(group)
        surfaced = _surfaced(chosen, where)
        if surfaced is chosen:
            reraise(chosen)
        raise surfaced from chosen
    except coredis.exceptions.RedisError as exc:
        if body_raised and exc is body_raised[0]:
            raise
        raise _surfaced(exc, where) from exc


def _holds(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    return any(
        inner is exc or (isinstance(inner, BaseExceptionGroup) and _holds(inner, exc))
        for inner in group.exceptions
    )


def _surfaced(exc: BaseException, where: str) -> BaseException:
    """What a caller of `open_redis` sees for coredis's own error ``exc``."""
    if isinstance(exc, RedisUnavailable) or not isinstance(exc, coredis.exceptions.RedisError):
        return exc
    verb = "lost the connection to" if _lost(exc) else "cannot use"
    return RedisUnavailable(f"{verb} Redis at {where}: {exc}")


@contextmanager
def _translated(session_id: str, what: str) -> Iterator[None]:
    """A broken connection during ``what`` becomes `RedisUnavailable` naming the session."""
    try:
        yield
    except coredis.exceptions.ConnectionError as exc:
        raise RedisUnavailable(
            f"session {session_id!r}: the Redis connection broke during {what}: {exc}"
        ) from exc
    except TimeoutError as exc:  # coredis's: no connection of the pool became free in time
        raise RedisUnavailable(
            f"session {session_id!r}: no connection to Redis became free for {what} (the "
            "pool's max_connections are all in use)"
        ) from exc


def _check_session_id(session_id: str, name: str = "session_id") -> None:
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"{name} must be a non-empty str, got {session_id!r}")


def _check_seconds(name: str, value: float) -> int:
    """Seconds (> 0, finite) as whole milliseconds, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return max(1, math.ceil(value * 1000))


def _check_int(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _seq_of(identifier: bytes | str) -> int:
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.split("-", 1)[0])


# KEYS[1] the stream, KEYS[2] the fence; ARGV[1] the writer's token, then seq, payload pairs.
# The fence is checked before anything is written; the first XADD is the one Redis may refuse
# (its id not above the stream's last id), and the batch's seqs rise, so the rest cannot fail:
# a refused batch writes nothing. A refused batch that is exactly in the stream already (the
# same seqs and payloads: a retry after a lost reply) is accepted as written, once.
_APPEND: Final = """
local fence = redis.call('GET', KEYS[2])
if fence ~= ARGV[1] then
  return redis.error_reply('FENCED ' .. (fence or '0'))
end
local first = redis.pcall('XADD', KEYS[1], ARGV[2] .. '-0', 'e', ARGV[3])
if type(first) == 'table' and first.err then
  local n = (#ARGV - 1) / 2
  local held = redis.call('XRANGE', KEYS[1], ARGV[2] .. '-0', ARGV[#ARGV - 1] .. '-0')
  local same = #held == n
  for i = 1, n do
    if not same then break end
    local id, fields = held[i][1], held[i][2]
    same = id == ARGV[2 * i] .. '-0' and fields[1] == 'e' and fields[2] == ARGV[2 * i + 1]
  end
  if same then return 0 end
  local last = '0-0'
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
  end
  return redis.error_reply('STALE ' .. last)
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i] .. '-0', 'e', ARGV[i + 1])
end
return (#ARGV - 1) / 2
"""

# KEYS[1] the stream. The last id Redis handed out, which survives XTRIM and XDEL.
_LAST_ID: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
"""

# KEYS[1] the stream, KEYS[2] the highest seq trimmed; ARGV[1] below_seq. XTRIM MINID, and
# remember the highest seq it removed (Redis's own max-deleted-entry-id ignores XTRIM).
_TRIM: Final = """
local gone = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '-', 'COUNT', 1)
if #gone == 0 then return 0 end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1] .. '-0')
local seq = string.match(gone[1][1], '^(%d+)')
local before = redis.call('GET', KEYS[2])
if not before or tonumber(before) < tonumber(seq) then
  redis.call('SET', KEYS[2], seq)
end
return removed
"""


class EventLog:
    """The sessions' event logs: one Redis Stream per session, entry id ``<seq>-0``.

    Only the lease holder appends (`append` checks its fencing token); every node reads.

    Args:
        redis: A client from `open_redis`.
        prefix: The namespace of the keys.

    Example::

        log = EventLog(redis)
        await log.append("s1", [(1, b"a"), (2, b"b")], token=token)
        await log.read("s1", after_seq=None)        # [(1, b"a"), (2, b"b")]
        await log.read("s1", after_seq=2, block=5)  # waits up to 5 s for seq 3
    """

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._append = redis.register_script(_APPEND)
        self._last_id = redis.register_script(_LAST_ID)
        self._trim = redis.register_script(_TRIM)

    def key(self, session_id: str) -> str:
        """The Redis key of the session's stream."""
        return f"{self._prefix}:{session_id}:events"

    def _fence_key(self, session_id: str) -> str:
        return f"{self._prefix}:{session_id}:fence"

    def _trimmed_key(self, session_id: str) -> str:
        return f"{self._prefix}:{session_id}:trimmed"

    async def append(
        self, session_id: str, events: Sequence[tuple[int, bytes | str]], *, token: int
    ) -> None:
        """Append a batch of events in one round trip, if ``token`` is the session's fence.

        Args:
            session_id: The session.
            events: ``(seq, payload)`` pairs with rising ``seq`` (>= 1); a str payload is
                stored as UTF-8. An empty batch does nothing.
            token: The writer's fencing token, from `Lease.acquire`.

        Raises:
            FencedOut: Another node acquired the lease since (the fence is not ``token``).
            SeqConflict: The first ``seq`` is not above the stream's last one (unless the
                very same batch is there already: re-sending a batch after
                `RedisUnavailable` is safe, it is not written twice).
            RedisUnavailable: The connection broke; the batch may or may not be written.
            ValueError: The ``seq`` s do not rise, or are below 1.
        """
        _check_session_id(session_id)
        _check_int("token", token, minimum=1)
        if not events:
            return
        args: list[str | bytes | int] = [token]
        previous = 0
        for index, item in enumerate(events):
            seq, payload = item
            _check_int(f"events[{index}] seq", seq, minimum=1)
            if seq <= previous:
                raise ValueError(
                    f"session {session_id!r}: the batch's seqs must rise, but seq {seq} "
                    f"follows {previous}"
                )
            if not isinstance(payload, bytes | str):
                raise TypeError(
                    f"events[{index}] payload must be bytes or str, got {type(payload).__name__}"
                )
            previous = seq
            args += [seq, payload]
        try:
            with _translated(session_id, "an event log append"):
                await self._append([self.key(session_id), self._fence_key(session_id)], args)
        except coredis.exceptions.ResponseError as exc:
            reason = str(exc)
            if reason.startswith("FENCED"):
                fence = reason.split()[1] if len(reason.split()) > 1 else "?"
                raise FencedOut(
                    session_id,
                    f"event log append refused: the fence is {fence}, this writer's token is "
                    f"{token} (another node holds the lease); nothing was written",
                ) from None
            if reason.startswith("STALE"):
                last = reason.split()[1] if len(reason.split()) > 1 else "?"
                raise SeqConflict(
                    session_id,
                    f"event log append refused: seq {events[0][0]} is not above the stream's "
                    f"last id {last}; nothing was written",
                ) from None
            raise

    async def read(
        self,
        session_id: str,
        *,
        after_seq: int | None,
        count: int = 512,
        block: float | None = None,
    ) -> list[tuple[int, bytes]]:
        """Read up to ``count`` events after ``after_seq``, oldest first.

        Args:
            session_id: The session.
            after_seq: Return events with a greater ``seq``; None: from the oldest retained.
            count: At most this many.
            block: None: return at once. Seconds: when there is nothing yet, wait up to that
                long for the next append (``XREAD BLOCK``), ``math.inf`` without a bound.
                A cancel scope aborts the wait cleanly.

        Returns:
            ``(seq, payload)`` pairs; empty when there is nothing (after waiting).

        Raises:
            RedisUnavailable: The connection broke (also while waiting).
        """
        _check_session_id(session_id)
        if after_seq is not None:
            _check_int("after_seq", after_seq, minimum=0)
        _check_int("count", count, minimum=1)
        block_ms: int | None = None
        if block is not None:
            block_ms = 0 if block == math.inf else _check_seconds("block", block)
        key = self.key(session_id)
        start = "0-0" if after_seq is None else f"{after_seq}-0"
        with _translated(session_id, "an event log read"):
            if block_ms is None:
                reply = await self._redis.xread({key: start}, count=count)
            else:
                async with _slots(self._redis):
                    reply = await self._redis.xread({key: start}, count=count, block=block_ms)
        if not reply:
            return []
        events: list[tuple[int, bytes]] = []
        for entries in reply.values():
            for entry in entries:
                payload = entry.field_values[b"e"]
                assert isinstance(payload, bytes), payload
                events.append((_seq_of(entry.identifier), payload))
        return events

    async def last_seq(self, session_id: str) -> int:
        """The highest ``seq`` ever appended (it survives `trim`); 0 for a new session."""
        _check_session_id(session_id)
        with _translated(session_id, "reading the event log's last seq"):
            last: object = await self._last_id([self.key(session_id)], [])
        assert isinstance(last, bytes | str), last
        return _seq_of(last)

    async def trimmed_seq(self, session_id: str) -> int:
        """The highest ``seq`` that `trim` removed; 0 when none was.

        A reader resuming after ``after_seq < trimmed_seq(...)`` has missed events: `read`
        would go on from the oldest retained one, so tell that reader it lagged instead.
        """
        _check_session_id(session_id)
        with _translated(session_id, "reading the event log's trimmed seq"):
            value = await self._redis.get(self._trimmed_key(session_id))
        return 0 if value is None else int(value)

    async def trim(self, session_id: str, *, below_seq: int) -> None:
        """Drop the events with ``seq < below_seq`` (``XTRIM MINID``); the rest are kept.

        The highest ``seq`` dropped is remembered (`trimmed_seq`), in the same script.
        """
        _check_session_id(session_id)
        _check_int("below_seq", below_seq, minimum=0)
        if below_seq <= 1:
            return
        keys = [self.key(session_id), self._trimmed_key(session_id)]
        with _translated(session_id, "an event log trim"):
            await self._trim(keys, [below_seq])

    async def delete(self, session_id: str) -> None:
        """Remove the session's event log (the fence stays: tokens never go back)."""
        _check_session_id(session_id)
        with _translated(session_id, "deleting the event log"):
            await self._redis.delete([self.key(session_id), self._trimmed_key(session_id)])


# KEYS[1] the reply list, KEYS[2] the command stream; ARGV reply, reply ttl ms, entry id.
_FINISH: Final = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[3])
return 1
"""


def _encode(session_id: str, what: str, value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"session {session_id!r}: {what} is not JSON: {exc}") from None


class Commands:
    """A session's command stream: requests from any node to its lease holder.

    `call` adds the command to the stream (``XADD``) and waits for the reply on a list of its
    own (``BLPOP``); the holder's `serve` reads the stream, runs the handler, pushes the reply
    and deletes the command. Delivery is at least once: a command whose server was cancelled
    or died before it replied stays in the stream and is handled again by the next server, so
    handlers must be idempotent by ``command["command_id"]``. A command that nobody served
    before its caller's timeout is still handled later by the next server.

    Args:
        redis: A client from `open_redis`.
        prefix: The namespace of the keys.
        reply_ttl: Seconds a reply nobody collected is kept.
        poll: Seconds one ``XREAD BLOCK`` of `serve` waits before it asks again.

    Example::

        async with trio.open_nursery() as nursery:
            await nursery.start(commands.serve, "s1", handle)      # on the lease holder
            reply = await commands.call("s1", {"op": "abort"}, timeout=5)  # on any node
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        reply_ttl: float = 60.0,
        poll: float = 10.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._reply_ttl_ms = _check_seconds("reply_ttl", reply_ttl)
        self._poll_ms = _check_seconds("poll", poll)
        self._finish = redis.register_script(_FINISH)

    def key(self, session_id: str) -> str:
        """The Redis key of the session's command stream."""
        return f"{self._prefix}:{session_id}:commands"

    def _reply_key(self, session_id: str, command_id: str) -> str:
        return f"{self._prefix}:{session_id}:reply:{command_id}"

    async def call(
        self,
        session_id: str,
        command: Mapping[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 (the interface of SPEC §14's design: a bound per call)
    ) -> Mapping[str, Any]:
        """Send ``command`` to the session's lease holder and wait for its reply.

        Args:
            session_id: The session.
            command: A JSON object. Its ``"command_id"`` (a str), when given, is the
                idempotency key the handler sees; otherwise a fresh one is added.
            timeout: Seconds to wait for the reply.

        Returns:
            The handler's reply.

        A call cancelled once it sent the command leaves the command queued too: it is
        handled, only its reply is not collected.

        Raises:
            TimeoutError: No reply within ``timeout`` (nobody serves the session, or the
                handler is slow). The command stays queued: the next server handles it.
            CommandFailed: The handler raised.
            RedisUnavailable: The connection broke.
        """
        _check_session_id(session_id)
        timeout_ms = _check_seconds("timeout", timeout)
        if not isinstance(command, Mapping):
            raise TypeError(f"a command must be a mapping, got {type(command).__name__}")
        command_id = command.get("command_id")
        if command_id is None:
            command_id = uuid.uuid4().hex
        elif not isinstance(command_id, str) or not command_id:
            raise ValueError(f"command_id must be a non-empty str, got {command_id!r}")
        body = _encode(session_id, "the command", {**command, "command_id": command_id})
        reply_key = self._reply_key(session_id, command_id)
        with _translated(session_id, "sending a command"):
            await self._redis.xadd(self.key(session_id), {"c": body, "r": reply_key})
            # BLPOP's own timeout answers in time; the trio bound guards a Redis that hangs.
            with trio.move_on_after(timeout + 1.0):
                async with _slots(self._redis):
                    reply = await self._redis.blpop([reply_key], timeout=timeout_ms / 1000)
                if reply is not None:
                    return self._decoded(session_id, command_id, reply[1])
        raise TimeoutError(
            f"session {session_id!r}: no reply to command {command_id} within {timeout:g} s "
            "(no node serves the session's commands yet); it stays queued for the next server"
        )

    @staticmethod
    def _decoded(session_id: str, command_id: str, raw: bytes) -> Mapping[str, Any]:
        envelope = json.loads(raw)
        if "error" in envelope:
            raise CommandFailed(
                f"session {session_id!r}: command {command_id} failed: {envelope['error']}"
            )
        result = envelope["ok"]
        assert isinstance(result, dict), result
        return result

    async def serve(
        self,
        session_id: str,
        handler: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handle the session's commands, one at a time in order, until cancelled.

        Starts with the commands already waiting (sent while nobody served), then waits for
        new ones. ``task_status.started()`` is called once the loop is about to read, so a
        command sent after ``nursery.start`` returned is handled. A handler that raises
        (not `trio.Cancelled`) makes the caller's `call` raise `CommandFailed`, and the loop
        goes on; when cancelled mid-handler, the command stays queued for the next server.
        A handler that raises `FencedOut` (this node lost the lease) ends the loop with it,
        and its command stays queued, unanswered, for the lease's new holder.

        Args:
            session_id: The session.
            handler: Gets the command (with its ``"command_id"``) and returns the reply, a
                JSON object. It should return quickly: later commands wait for it.
            task_status: For ``nursery.start``.

        Raises:
            FencedOut: The handler raised it.
            RedisUnavailable: The connection broke.
        """
        _check_session_id(session_id)
        key = self.key(session_id)
        cursor: bytes | str = "0-0"
        task_status.started()
        while True:
            with _translated(session_id, "reading commands"):
                async with _slots(self._redis):
                    reply = await self._redis.xread({key: cursor}, count=64, block=self._poll_ms)
            for entries in (reply or {}).values():
                for entry in entries:
                    await self._handle(session_id, handler, entry.identifier, entry.field_values)  # type: ignore[arg-type]
                    cursor = entry.identifier

    async def _handle(
        self,
        session_id: str,
        handler: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
        entry_id: bytes,
        fields: Mapping[bytes, bytes],
    ) -> None:
        reply_key = fields.get(b"r", b"").decode()
        try:
            command = json.loads(fields[b"c"])
            if not isinstance(command, dict):
                raise TypeError("the command is not a JSON object")
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning("session %r: malformed command %r: %s", session_id, entry_id, exc)
            body = json.dumps({"error": f"malformed command: {exc}"})
        else:
            try:
                result = await handler(command)
                if not isinstance(result, Mapping):
                    raise TypeError(f"the handler returned {type(result).__name__}, not a mapping")
                body = _encode(session_id, "the handler's reply", {"ok": dict(result)})
            except FencedOut:
                raise  # not ours to answer: the command stays for the lease's new holder
            except Exception as exc:
                logger.exception(
                    "session %r: command %s failed", session_id, command.get("command_id")
                )
                body = json.dumps({"error": f"{type(exc).__name__}: {exc}"}, ensure_ascii=False)
        keys = [reply_key or self._reply_key(session_id, "orphan"), self.key(session_id)]
        with _translated(session_id, "replying to a command"):
            await self._finish(keys, [body, self._reply_ttl_ms, entry_id])


class Workers:
    """Which nodes are alive: a key per worker that expires unless the worker beats again.

    Args:
        redis: A client from `open_redis`.
        prefix: The namespace of the keys (``f"{prefix}::worker:{worker_id}"``, which no
            session's key can be, as session ids are not empty).
    """

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, worker_id: str) -> str:
        return f"{self._prefix}::worker:{worker_id}"

    async def beat(self, worker_id: str, ttl: float) -> None:
        """Mark ``worker_id`` alive for ``ttl`` seconds."""
        _check_session_id(worker_id, "worker_id")
        px = _check_seconds("ttl", ttl)
        with _translated(worker_id, "a heartbeat"):
            await self._redis.set(self._key(worker_id), b"1", px=px)

    async def alive(self) -> list[str]:
        """The workers whose last beat has not expired, sorted."""
        pattern = self._key("*")
        found: list[str] = []
        with _translated("*", "listing workers"):
            async for key in self._redis.scan_iter(match=pattern, count=500):
                found.append(key.decode().removeprefix(self._key("")))
        return sorted(found)

    async def is_alive(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s last beat has not expired (one ``EXISTS``)."""
        _check_session_id(worker_id, "worker_id")
        with _translated(worker_id, "checking a heartbeat"):
            return bool(await self._redis.exists([self._key(worker_id)]))

    async def gone(self, worker_id: str) -> None:
        """Remove ``worker_id`` at once (a clean shutdown)."""
        _check_session_id(worker_id, "worker_id")
        with _translated(worker_id, "removing a heartbeat"):
            await self._redis.delete([self._key(worker_id)])
