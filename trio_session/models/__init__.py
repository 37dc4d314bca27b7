"""Models: the protocol, the offline ScriptedModel, and provider adapters."""

from __future__ import annotations

from typing import Any

from ._base import (
    ErrorChunk as ErrorChunk,
)
from ._base import (
    Model as Model,
)
from ._base import (
    ModelChunk as ModelChunk,
)
from ._base import (
    ModelRequest as ModelRequest,
)
from ._base import (
    ReasoningChunk as ReasoningChunk,
)
from ._base import (
    StopChunk as StopChunk,
)
from ._base import (
    TextChunk as TextChunk,
)
from ._base import (
    ToolCallChunk as ToolCallChunk,
)
from ._base import (
    ToolCallDeltaChunk as ToolCallDeltaChunk,
)
from ._base import (
    ToolCallStartChunk as ToolCallStartChunk,
)
from ._base import (
    ToolSpec as ToolSpec,
)
from ._base import (
    UsageChunk as UsageChunk,
)


def __getattr__(name: str) -> Any:
    # Adapters import their SDK lazily, so `import trio_session` works without them.
    if name == "ScriptedModel" or name == "Reply":
        from . import _scripted

        return getattr(_scripted, name)
    if name == "OpenAIModel":
        from ._openai import OpenAIModel

        return OpenAIModel
    if name == "AnthropicModel":
        from ._anthropic import AnthropicModel

        return AnthropicModel
    raise AttributeError(f"module 'trio_session.models' has no attribute {name!r}")
