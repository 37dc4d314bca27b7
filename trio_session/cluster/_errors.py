"""The cluster's own errors."""

from __future__ import annotations

from .._errors import StoreError

__all__ = ["FencedOut"]


class FencedOut(StoreError):
    """This node no longer holds the session's lease: a newer holder has fenced it out.

    Raised by a fenced save to `PostgresStore` and by a fenced write to the session's Redis
    stream when a later lease holder's fencing token is already recorded. The node that gets it
    must stop running its copy of the session; nothing it tried to write was written.

    Attributes:
        session_id: The session whose lease was lost.
    """
