"""trio-session: AI-agent sessions under trio, with structured concurrency.

(Development stage: names resolve lazily from their private modules; the final
release imports them explicitly.)
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES: dict[str, str] = {
    # _errors
    **dict.fromkeys(
        [
            "TrioSessionError",
            "SessionClosed",
            "ExecutionAborted",
            "ExecutionTimeout",
            "ExecutionCancelled",
            "ModelError",
            "UnknownTool",
            "UnknownToolUse",
            "InvalidToolArguments",
            "EventsLagged",
            "SnapshotError",
            "MaxSpawnDepth",
            "SerializationError",
        ],
        "._errors",
    ),
    **dict.fromkeys(
        [
            "Role",
            "ContentBlock",
            "TextBlock",
            "ImageBlock",
            "JsonBlock",
            "ReasoningBlock",
            "ToolUseBlock",
            "ToolResultBlock",
            "Message",
            "user",
            "assistant",
            "system",
        ],
        "._messages",
    ),
    "Usage": "._usage",
    "SendResult": "._result",
    **dict.fromkeys(
        [
            "StreamEvent",
            "ExecutionStart",
            "TickStart",
            "ModelRequestEvent",
            "MessageStart",
            "ContentStart",
            "ContentDelta",
            "ContentEnd",
            "ReasoningDelta",
            "ToolCallStart",
            "ToolCallDelta",
            "ToolCall",
            "MessageEnd",
            "MessageEvent",
            "ErrorEvent",
            "ToolResultStart",
            "ToolConfirmationRequired",
            "ToolConfirmationResult",
            "ToolResultEvent",
            "MessageQueued",
            "MessageDelivered",
            "EntryCommitted",
            "TickEnd",
            "SpawnStart",
            "SpawnEnd",
            "CustomEvent",
            "ResultEvent",
            "ExecutionEnd",
            "EVENT_CLASSES",
        ],
        "._events",
    ),
    **dict.fromkeys(["converter", "to_json", "from_json"], "._serde"),
    **dict.fromkeys(["EventBuffer", "EventSubscription"], "._buffer"),
    **dict.fromkeys(["ExecutionHandle", "SessionExecutionHandle"], "._handle"),
    **dict.fromkeys(
        [
            "Procedure",
            "ProcedureCall",
            "procedure",
            "Invocation",
            "Next",
            "Middleware",
            "current_context",
        ],
        "._procedure",
    ),
    **dict.fromkeys(["tool", "Tool", "ToolContext", "Decision"], "._tools"),
    **dict.fromkeys(["Agent", "TickContext", "TickResult"], "._agent"),
    **dict.fromkeys(["Session", "open_session"], "._session"),
    **dict.fromkeys(
        [
            "Model",
            "ModelRequest",
            "ToolSpec",
            "ModelChunk",
            "TextChunk",
            "ReasoningChunk",
            "ToolCallStartChunk",
            "ToolCallDeltaChunk",
            "ToolCallChunk",
            "UsageChunk",
            "StopChunk",
            "ErrorChunk",
            "ScriptedModel",
            "Reply",
            "OpenAIModel",
            "AnthropicModel",
        ],
        ".models",
    ),
    **dict.fromkeys(["SessionSnapshot", "SessionStore", "MemoryStore", "SQLiteStore"], ".stores"),
}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_session' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_NAMES)
