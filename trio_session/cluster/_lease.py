"""Leases: which node runs a session, and the fencing token that outlives a lost lease.

A lease is the key ``f"{prefix}:{session_id}:lease"`` holding the worker id, with an expiry
(``SET NX PX``). Each acquisition increments the session's fence, ``...:fence``, in the same
Lua script, and returns it: the fencing token. The fence never expires and never goes back,
so a holder that lost its lease (paused past its expiry, partitioned) holds a token below the
fence; `EventLog.append` and `PostgresStore`'s fenced saves refuse it.

Lease times are Redis's clock (real time), not trio's.
"""

from __future__ import annotations

from typing import Final

import trio

from ._errors import FencedOut
from ._redis import (
    DEFAULT_PREFIX,
    Redis,
    RedisUnavailable,
    _check_int,
    _check_seconds,
    _check_session_id,
    _translated,
    logger,
)

__all__ = ["Lease"]

# KEYS lease, fence; ARGV worker id, ttl ms, fence floor. Returns the new token or nil.
_ACQUIRE: Final = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local floor = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < floor then
  redis.call('SET', KEYS[2], ARGV[3])
end
return redis.call('INCR', KEYS[2])
"""

# KEYS lease, fence; ARGV worker id, token, ttl ms. 1 when still ours (and extended).
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS lease, fence; ARGV worker id, token. 1 when it was ours (and is now free).
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class Lease:
    """Session leases with fencing tokens.

    Args:
        redis: A client from `open_redis`.
        prefix: The namespace of the keys.

    Example::

        lease = Lease(redis)
        token = await lease.acquire("s1", "node-a", ttl=10.0)
        if token is not None:
            ...  # run the session; renew every ttl / 3 with
            assert await lease.renew("s1", "node-a", token, ttl=10.0)
            await lease.release("s1", "node-a", token)
    """

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, session_id: str) -> list[str]:
        return [f"{self._prefix}:{session_id}:lease", f"{self._prefix}:{session_id}:fence"]

    async def acquire(
        self, session_id: str, worker_id: str, ttl: float, *, fence_floor: int = 0
    ) -> int | None:
        """Take the session's lease for ``ttl`` seconds unless someone holds it.

        Args:
            session_id: The session.
            worker_id: Who takes it.
            ttl: Seconds until the lease expires unless renewed.
            fence_floor: The token returned is above this too: pass the fence Postgres
                recorded (`PostgresStore.fence_of`), so that a Redis that lost its data
                (restarted without persistence) cannot hand out tokens Postgres refuses.

        Returns:
            The fencing token (above every earlier one of the session), or None when the
            lease is held, also when ``worker_id`` itself holds it.
        """
        _check_session_id(session_id)
        _check_session_id(worker_id, "worker_id")
        px = _check_seconds("ttl", ttl)
        _check_int("fence_floor", fence_floor, minimum=0)
        with _translated(session_id, "acquiring the lease"):
            token: object = await self._acquire(
                self._keys(session_id), [worker_id, px, fence_floor]
            )
        if token is None:
            return None
        assert isinstance(token, int), token
        return token

    async def renew(self, session_id: str, worker_id: str, token: int, ttl: float) -> bool:
        """Extend the lease to ``ttl`` seconds from now if it is still ours.

        Returns:
            False when the lease expired or another node took it (since ``token``): the
            caller must stop running the session.
        """
        _check_session_id(session_id)
        px = _check_seconds("ttl", ttl)
        with _translated(session_id, "renewing the lease"):
            renewed: object = await self._renew(self._keys(session_id), [worker_id, token, px])
        return renewed == 1

    async def release(self, session_id: str, worker_id: str, token: int) -> None:
        """Give the lease up now, if it is still ours (``worker_id`` with ``token``).

        A release by anyone else does nothing: the holder's lease stays.
        """
        _check_session_id(session_id)
        with _translated(session_id, "releasing the lease"):
            await self._release(self._keys(session_id), [worker_id, token])

    async def holder(self, session_id: str) -> str | None:
        """The worker id holding the lease, or None."""
        _check_session_id(session_id)
        with _translated(session_id, "reading the lease"):
            value = await self._redis.get(self._keys(session_id)[0])
        return None if value is None else value.decode()

    async def fence(self, session_id: str) -> int:
        """The session's fence: the last token handed out, 0 when none was."""
        _check_session_id(session_id)
        with _translated(session_id, "reading the fence"):
            value = await self._redis.get(self._keys(session_id)[1])
        return 0 if value is None else int(value)

    async def keep(
        self,
        session_id: str,
        worker_id: str,
        token: int,
        ttl: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Renew the lease every ``ttl / 3`` until cancelled; raise when it is lost.

        Run it in the session's nursery on the holder: its `FencedOut` cancels the node's copy
        of the session. A renewal that fails for want of Redis is tried again at the next
        interval; once the lease may have expired (``ttl`` after the last renewal that
        Redis confirmed, counted from before it was sent), the lease counts as lost. Call it
        right after `acquire` (the lease's ``ttl`` is counted from the call).

        Raises:
            FencedOut: Another node took the lease, or it could not be renewed in time.
        """
        _check_session_id(session_id)
        interval = _check_seconds("ttl", ttl) / 3000
        valid_until = trio.current_time() + ttl
        task_status.started()
        while True:
            await trio.sleep(interval)
            sent = trio.current_time()
            renewed: bool | None = None
            with trio.move_on_after(interval):
                try:
                    renewed = await self.renew(session_id, worker_id, token, ttl)
                except RedisUnavailable as exc:
                    logger.warning("session %r: renewing the lease failed: %s", session_id, exc)
            if renewed:
                valid_until = sent + ttl
            elif renewed is False:
                raise FencedOut(
                    session_id,
                    f"the lease of {worker_id!r} (token {token}) was lost: it expired or "
                    "another node took it",
                )
            elif trio.current_time() + interval >= valid_until:
                raise FencedOut(
                    session_id,
                    f"the lease of {worker_id!r} (token {token}) could not be renewed before "
                    "it expires (Redis unreachable); giving it up",
                )
