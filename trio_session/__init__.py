"""trio-session: AI-agent sessions under trio, with structured concurrency.

A session is a long-lived conversation with an agent. Each ``send()`` starts an
*execution* — a loop of model calls and tool calls — inside a nursery the
session owns. Its events fan out to any number of subscribers, each of which
sees the whole stream from the first event; ``abort()`` is a cancel scope.

Example:
    >>> import trio
    >>> from trio_session import Agent, ScriptedModel, open_session
    >>> async def main():
    ...     async with open_session(Agent(ScriptedModel(["Hello!"]))) as session:
    ...         result = await session.send("Hi").result
    ...         return result.response
    >>> trio.run(main)
    'Hello!'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from ._agent import (
    Agent as Agent,
    TickContext as TickContext,
    TickResult as TickResult,
)
from ._buffer import (
    EventBuffer as EventBuffer,
    EventSubscription as EventSubscription,
)
from ._errors import (
    EventsLagged as EventsLagged,
    ExecutionAborted as ExecutionAborted,
    ExecutionCancelled as ExecutionCancelled,
    ExecutionTimeout as ExecutionTimeout,
    InvalidOutput as InvalidOutput,
    InvalidToolArguments as InvalidToolArguments,
    MaxSpawnDepth as MaxSpawnDepth,
    ModelError as ModelError,
    SerializationError as SerializationError,
    SessionClosed as SessionClosed,
    SnapshotError as SnapshotError,
    StoreError as StoreError,
    TrioSessionError as TrioSessionError,
    UnknownTool as UnknownTool,
    UnknownToolUse as UnknownToolUse,
)
from ._events import (
    EVENT_CLASSES as EVENT_CLASSES,
    ContentDelta as ContentDelta,
    ContentEnd as ContentEnd,
    ContentStart as ContentStart,
    CustomEvent as CustomEvent,
    EntryCommitted as EntryCommitted,
    ErrorEvent as ErrorEvent,
    Event as Event,
    ExecutionEnd as ExecutionEnd,
    ExecutionStart as ExecutionStart,
    MessageDelivered as MessageDelivered,
    MessageEnd as MessageEnd,
    MessageEvent as MessageEvent,
    MessageQueued as MessageQueued,
    MessageStart as MessageStart,
    ModelRequestEvent as ModelRequestEvent,
    ReasoningDelta as ReasoningDelta,
    ResultEvent as ResultEvent,
    SpawnEnd as SpawnEnd,
    SpawnStart as SpawnStart,
    StreamEvent as StreamEvent,
    TickEnd as TickEnd,
    TickRetry as TickRetry,
    TickStart as TickStart,
    ToolCall as ToolCall,
    ToolCallDelta as ToolCallDelta,
    ToolCallStart as ToolCallStart,
    ToolConfirmationRequired as ToolConfirmationRequired,
    ToolConfirmationResult as ToolConfirmationResult,
    ToolResultEvent as ToolResultEvent,
    ToolResultStart as ToolResultStart,
)
from ._handle import (
    ExecutionHandle as ExecutionHandle,
    SessionExecutionHandle as SessionExecutionHandle,
)
from ._messages import (
    ContentBlock as ContentBlock,
    ImageBlock as ImageBlock,
    JsonBlock as JsonBlock,
    Message as Message,
    ReasoningBlock as ReasoningBlock,
    Role as Role,
    TextBlock as TextBlock,
    ToolResultBlock as ToolResultBlock,
    ToolUseBlock as ToolUseBlock,
    assistant as assistant,
    system as system,
    user as user,
)
from ._procedure import (
    Invocation as Invocation,
    Middleware as Middleware,
    Next as Next,
    Procedure as Procedure,
    ProcedureCall as ProcedureCall,
    current_context as current_context,
    procedure as procedure,
)
from ._result import (
    SendResult as SendResult,
)
from ._retry import RetryPolicy as RetryPolicy
from ._serde import (
    converter as converter,
    from_json as from_json,
    to_json as to_json,
)
from ._session import (
    Session as Session,
    open_session as open_session,
)
from ._tools import (
    Decision as Decision,
    Tool as Tool,
    ToolContext as ToolContext,
    tool as tool,
)
from ._usage import (
    Usage as Usage,
)
from .models._base import (
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
from .models._scripted import Reply as Reply, ScriptedModel as ScriptedModel
from .stores import (
    MemoryStore as MemoryStore,
    PendingConfirmation as PendingConfirmation,
    SessionSnapshot as SessionSnapshot,
    SessionStore as SessionStore,
    SQLiteStore as SQLiteStore,
)


def __getattr__(name: str) -> Any:
    # The provider adapters import their SDK (an optional extra) on first use,
    # so `import trio_session` works without them.
    if name == "OpenAIModel":
        from .models._openai import OpenAIModel

        return OpenAIModel
    if name == "AnthropicModel":
        from .models._anthropic import AnthropicModel

        return AnthropicModel
    raise AttributeError(f"module 'trio_session' has no attribute {name!r}")


__all__ = [
    "Agent",
    "AnthropicModel",
    "ContentBlock",
    "ContentDelta",
    "ContentEnd",
    "ContentStart",
    "CustomEvent",
    "Decision",
    "EVENT_CLASSES",
    "EntryCommitted",
    "ErrorChunk",
    "ErrorEvent",
    "Event",
    "EventBuffer",
    "EventSubscription",
    "EventsLagged",
    "ExecutionAborted",
    "ExecutionCancelled",
    "ExecutionEnd",
    "ExecutionHandle",
    "ExecutionStart",
    "ExecutionTimeout",
    "ImageBlock",
    "InvalidOutput",
    "InvalidToolArguments",
    "Invocation",
    "JsonBlock",
    "MaxSpawnDepth",
    "MemoryStore",
    "Message",
    "MessageDelivered",
    "MessageEnd",
    "MessageEvent",
    "MessageQueued",
    "MessageStart",
    "Middleware",
    "Model",
    "ModelChunk",
    "ModelError",
    "ModelRequest",
    "ModelRequestEvent",
    "Next",
    "OpenAIModel",
    "PendingConfirmation",
    "Procedure",
    "ProcedureCall",
    "ReasoningBlock",
    "ReasoningChunk",
    "ReasoningDelta",
    "Reply",
    "ResultEvent",
    "RetryPolicy",
    "Role",
    "SQLiteStore",
    "ScriptedModel",
    "SendResult",
    "SerializationError",
    "Session",
    "SessionClosed",
    "SessionExecutionHandle",
    "SessionSnapshot",
    "SessionStore",
    "SnapshotError",
    "StoreError",
    "SpawnEnd",
    "SpawnStart",
    "StopChunk",
    "StreamEvent",
    "TextBlock",
    "TextChunk",
    "TickContext",
    "TickEnd",
    "TickResult",
    "TickRetry",
    "TickStart",
    "Tool",
    "ToolCall",
    "ToolCallChunk",
    "ToolCallDelta",
    "ToolCallDeltaChunk",
    "ToolCallStart",
    "ToolCallStartChunk",
    "ToolConfirmationRequired",
    "ToolConfirmationResult",
    "ToolContext",
    "ToolResultBlock",
    "ToolResultEvent",
    "ToolResultStart",
    "ToolSpec",
    "ToolUseBlock",
    "TrioSessionError",
    "UnknownTool",
    "UnknownToolUse",
    "Usage",
    "UsageChunk",
    "assistant",
    "converter",
    "current_context",
    "from_json",
    "open_session",
    "procedure",
    "system",
    "to_json",
    "tool",
    "user",
]

if TYPE_CHECKING:
    from .models._anthropic import AnthropicModel as AnthropicModel
    from .models._openai import OpenAIModel as OpenAIModel
