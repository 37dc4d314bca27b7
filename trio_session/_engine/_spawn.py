"""Spawn forwarding: a child execution runs in its parent's nursery, its events forwarded."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import attrs

from .._events import ExecutionEnd, SpawnEnd, SpawnStart, StreamEvent
from .._result import SendResult

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["adopt", "reserve_seq", "reserves_seq"]


def adopt(parent: Execution, child: Execution, origin_tool_use_id: str | None) -> None:
    """Run ``child`` in ``parent``'s nursery, forwarding its events into ``parent``'s stream.

    Forwarded copies lie between ``spawn_start`` and ``spawn_end``, numbered in
    the parent's ``seq``, with the spawn id prepended to their ``spawn_path``.

    Raises:
        RuntimeError: The parent execution is not running.
    """
    if not parent.running:
        raise RuntimeError("the parent execution is not running")
    nursery = parent.nursery
    spawn_id = uuid.uuid4().hex
    publisher = parent.publisher
    seq = parent.host.seq
    publisher.emit(
        SpawnStart,
        spawn_id=spawn_id,
        child_session_id=child.host.id,
        child_execution_id=child.id,
        origin_tool_use_id=origin_tool_use_id,
    )

    def forward(event: StreamEvent) -> None:
        if publisher.closed:
            return
        publisher.forward(
            attrs.evolve(event, seq=seq.next(), spawn_path=(spawn_id, *event.spawn_path))
        )
        # Numbered in the parent's seq between its checkpoints: keep its reservation ahead.
        parent.host.reserve_seq_soon()
        if isinstance(event, ExecutionEnd) and not event.spawn_path:
            result = child.outcome.value
            publisher.emit(
                SpawnEnd,
                spawn_id=spawn_id,
                child_session_id=child.host.id,
                status=event.status,
                response=result.response if isinstance(result, SendResult) else None,
                usage=event.usage,
            )

    child.buffer.on(forward)
    child.start()
    parent.children.add(child)
    nursery.start_soon(_run_child, parent, child)


async def _run_child(parent: Execution, child: Execution) -> None:
    try:
        await child.run()
    finally:
        parent.children.discard(child)


def reserves_seq(execution: Execution) -> bool:
    """Whether `reserve_seq` has anything to do for ``execution`` (a session in its chain
    has a store); fixed for the execution's life."""
    current: Execution | None = execution
    while current is not None:
        if current.host.persistent:
            return True
        current = current.parent
    return False


async def reserve_seq(execution: Execution) -> None:
    """Reserve ``seq`` for ``execution``'s session and for every parent it forwards to.

    A child's checkpoint waits for its parents' reservations too: the numbers its
    events take in their streams stay below what their stores hold.
    """
    current: Execution | None = execution
    while current is not None:
        if current.host.persistent:
            await current.host.reserve_seq()
        current = current.parent
