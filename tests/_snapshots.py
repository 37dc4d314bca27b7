"""Shared helpers for the store tests: small snapshots and conversations."""

from __future__ import annotations

from typing import Any

from trio_session import Message, SessionSnapshot, ToolResultBlock, ToolUseBlock


def snap(session_id: str = "s1", timeline: tuple[Message, ...] = (), **kw: Any) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        timeline=timeline,
        created_at=kw.pop("created_at", 1.0),
        updated_at=kw.pop("updated_at", 2.0),
        **kw,
    )


def conversation(n: int, tag: str = "m") -> tuple[Message, ...]:
    return tuple(
        Message("user" if i % 2 == 0 else "assistant", f"message {i}", id=f"{tag}{i}")
        for i in range(n)
    )


def tick(tag: str) -> tuple[Message, ...]:
    """One tick's messages: a question, a tool call, its result."""
    return (
        Message("user", f"question {tag}", id=f"{tag}-u"),
        Message("assistant", [ToolUseBlock(f"{tag}-c", "calc", {"x": 1})], id=f"{tag}-a"),
        Message("tool", [ToolResultBlock(f"{tag}-c", "calc", "2")], id=f"{tag}-t"),
    )
