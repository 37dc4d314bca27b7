"""Models: the protocol, the offline ScriptedModel, and provider adapters."""

from __future__ import annotations

from typing import Any

from ._base import (
    ErrorChunk as ErrorChunk,
    Model as Model,
    ModelChunk as ModelChunk,
    ModelRequest as ModelRequest,
    ReasoningChunk as ReasoningChunk,
    StopChunk as StopChunk,
    TextChunk as TextChunk,
    ToolCallChunk as ToolCallChunk,
    ToolCallDeltaChunk as ToolCallDeltaChunk,
    ToolCallStartChunk as ToolCallStartChunk,
    ToolSpec as ToolSpec,
    UsageChunk as UsageChunk,
)
from ._scripted import Reply as Reply, ScriptedModel as ScriptedModel


def __getattr__(name: str) -> Any:
    # Adapters import their SDK lazily, so `import trio_session` works without them.
    if name == "OpenAIModel":
        from ._openai import OpenAIModel

        return OpenAIModel
    if name == "AnthropicModel":
        from ._anthropic import AnthropicModel

        return AnthropicModel
    raise AttributeError(f"module 'trio_session.models' has no attribute {name!r}")
