"""Persistence: session snapshots and the stores that keep them.

`SessionStore` is the protocol; `MemoryStore` keeps sessions in memory and
`SQLiteStore` in one SQLite file. Check a store of your own with
`trio_session.testing.check_store`.
"""

from __future__ import annotations

from ._base import (
    SNAPSHOT_VERSION as SNAPSHOT_VERSION,
    PendingConfirmation as PendingConfirmation,
    SessionSnapshot as SessionSnapshot,
    SessionStore as SessionStore,
)
from ._memory import MemoryStore as MemoryStore
from ._sqlite import SQLiteStore as SQLiteStore

__all__ = ["SNAPSHOT_VERSION", "MemoryStore",
    "PendingConfirmation",
    "SQLiteStore", "SessionSnapshot", "SessionStore"]
