"""Leaving a nursery: which error the caller sees, and bounded cleanup.

Callers catch our errors, never exception groups. As trio-websocket's
``open_websocket`` does, the error chosen for the caller carries the others
(nothing is dropped), and a dedicated `InternalError` is raised when there is
nothing to choose. Cleanup that must await runs under a shield written at the
call site, bounded by `bounded`, which logs when the bound cut it off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, NoReturn

import trio

from .._errors import TrioSessionError

__all__ = ["CLEANUP_TIMEOUT", "InternalError", "bounded", "reraise", "unwrap"]

logger: Final = logging.getLogger("trio_session")

CLEANUP_TIMEOUT: Final = 5.0
"""Seconds that shielded cleanup (closing a model stream, the final save) may take."""


class InternalError(TrioSessionError):
    """A nursery ended with an exception group the library could not unwrap.

    A library bug: please report it. The group is its ``__cause__``.
    """


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` keeping its own ``__context__`` (not the group it came out of)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves


def _rank(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return 0
    if isinstance(exc, Exception):
        return 1
    return 3 if isinstance(exc, trio.Cancelled) else 2


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Pick the exception a caller should see from a nursery's group.

    KeyboardInterrupt / SystemExit first, then the first real error, and a
    `trio.Cancelled` only when nothing else happened. The other errors (not
    the sibling `trio.Cancelled` s) are attached to the chosen one: as a note
    each, and as its ``__context__`` when it has none. A group without a
    single exception gives an `InternalError`.
    """
    leaves = _leaves(group)
    if not leaves:
        error = InternalError(f"a nursery raised an exception group without exceptions: {group!r}")
        error.__cause__ = group
        return error
    chosen = min(leaves, key=_rank)
    others = [e for e in leaves if e is not chosen and not isinstance(e, trio.Cancelled)]
    if others:
        for other in others:
            chosen.add_note(f"also raised in the same nursery: {type(other).__name__}: {other}")
        if chosen.__context__ is None:
            chosen.__context__ = BaseExceptionGroup("the other errors of the nursery", others)
    return chosen


@contextmanager
def bounded(what: str, seconds: float = CLEANUP_TIMEOUT) -> Iterator[trio.CancelScope]:
    """Bound shielded cleanup; log (logger ``trio_session``) when the bound cuts it off.

    Use it right inside the shield, so both show at the call site::

        with trio.CancelScope(shield=True), bounded("saving the session"):
            await store.save(snapshot)
    """
    with trio.move_on_after(seconds) as scope:
        yield scope
    if scope.cancelled_caught:
        logger.warning("%s did not finish within %g s; it was cut off", what, seconds)
