"""Sessions on many machines (extra ``trio-session[cluster]``, SPEC §14).

PostgreSQL holds the snapshots (`PostgresStore`), Redis Streams carry each session's events,
commands and lease (coredis, which runs under trio natively). Leases are Redis keys with an
expiry plus a fencing counter that Postgres checks on every save.
"""

from __future__ import annotations

from ._errors import FencedOut as FencedOut
from ._node import open_cluster_gateway as open_cluster_gateway
from ._postgres import PostgresStore as PostgresStore

__all__ = ["FencedOut", "PostgresStore", "open_cluster_gateway"]
