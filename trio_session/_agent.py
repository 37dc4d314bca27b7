"""What a session runs: the `Agent`, and what its hooks see each tick."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ._messages import Message, ToolResultBlock, ToolUseBlock
from ._output import OutputSpec
from ._retry import RetryPolicy
from ._tools import Decision, Tool
from ._usage import Usage
from .models._base import Model, ModelRequest

if TYPE_CHECKING:
    from ._events import ToolConfirmationRequired
    from ._result import SendResult
    from ._session import Session

__all__ = [
    "Agent",
    "BuildHook",
    "CompleteHook",
    "ConfirmationHook",
    "ContinueHook",
    "ErrorHook",
    "MessageHook",
    "TickContext",
    "TickEndHook",
    "TickResult",
    "TickStartHook",
]


def _check_model(_inst: object, _attr: object, value: Any) -> None:
    if not callable(getattr(value, "stream", None)) or not isinstance(
        getattr(value, "name", None), str
    ):
        raise TypeError(
            "Agent.model must be a Model: an object with a str `name` and a "
            f"`stream(request)` method, got {type(value).__name__}"
        )


def _to_tools(value: object) -> tuple[Tool, ...]:
    if isinstance(value, Tool) or not isinstance(value, Sequence | set | frozenset | tuple):
        raise TypeError(f"Agent.tools must be a sequence of tools, got {type(value).__name__}")
    tools = tuple(value)
    seen: set[str] = set()
    for i, item in enumerate(tools):
        if not isinstance(item, Tool):
            raise TypeError(
                f"Agent.tools[{i}] must be a Tool (decorate the function with @tool), "
                f"got {type(item).__name__}"
            )
        if item.name in seen:
            raise ValueError(f"Agent.tools has two tools named {item.name!r}")
        seen.add(item.name)
    return tools


def _positive_int(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Agent.{attr.name} must be a positive int, got {value!r}")


def _optional_callable(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"Agent.{attr.name} must be callable or None, got {type(value).__name__}")


def _optional_str(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"Agent.{attr.name} must be a str or None, got {type(value).__name__}")


# The hooks' types. Every hook may be sync or async: a hook returns its value
# or an awaitable of it (the engine awaits it).
BuildHook: TypeAlias = Callable[["TickContext"], "ModelRequest | Awaitable[ModelRequest]"]
"""``build(ctx)``: the tick's `ModelRequest`."""
ContinueHook: TypeAlias = Callable[["TickResult"], "bool | Awaitable[bool | None] | None"]
"""``should_continue(result)``: True/False overrides the default decision, None keeps it."""
MessageHook: TypeAlias = Callable[["Message", "Session"], "Awaitable[None] | None"]
"""``on_message(message, session)``, for every message queued to the session."""
TickStartHook: TypeAlias = Callable[["TickContext"], "Awaitable[None] | None"]
"""``on_tick_start(ctx)``."""
TickEndHook: TypeAlias = Callable[["TickResult"], "Awaitable[None] | None"]
"""``on_tick_end(result)``."""
CompleteHook: TypeAlias = Callable[["SendResult"], "Awaitable[None] | None"]
"""``on_complete(result)``, when an execution completes."""
ErrorHook: TypeAlias = Callable[[BaseException], "Awaitable[None] | None"]
"""``on_error(error)``, when an execution fails or errors."""
ConfirmationHook: TypeAlias = Callable[
    ["ToolConfirmationRequired"], "Awaitable[Decision | None] | Decision | None"
]
"""``on_tool_confirmation(event)``: a `Decision`, or None to leave it to a person."""


@attrs.frozen
class Agent:
    """What a session runs: a model, a system prompt, tools, limits and hooks.

    Args:
        model: The `Model` to call each tick.
        system: The system prompt.
        tools: The tools the agent may use (`Tool`, made with ``@tool``).
        max_ticks: Ticks per execution; reaching it ends the execution
            ``completed`` with ``stop_reason="max_ticks"``.
        name: A name for logs and spawned children.
        build: ``build(ctx: TickContext) -> ModelRequest`` (sync or async) compiles
            each tick's model input; the default is ``ctx.default_request()``.
        should_continue: ``(TickResult) -> bool | None``; True/False overrides the
            default decision, None keeps it.
        on_message: ``(message, session)``, for every message queued to the session.
        on_tick_start: ``(ctx: TickContext)``.
        on_tick_end: ``(result: TickResult)``.
        on_complete: ``(result: SendResult)``.
        on_error: ``(error: BaseException)``, when an execution fails or errors.
        on_tool_confirmation: ``async (ToolConfirmationRequired) -> Decision | None``,
            a policy that may answer confirmations; None leaves them to a person.
        max_tool_concurrency: How many of one tick's tool calls run at once.
        settings: Provider settings passed in every `ModelRequest` (temperature, ...).
        retry: How a tick whose model call failed with a retryable `ModelError` is run
            again (SPEC §8); None (or ``RetryPolicy(max_attempts=1)``) never retries.
        output_type: The type of the typed output (`SendResult.output`): the model is
            asked for JSON matching its schema, natively where the model supports it
            (``output_settings``), by instruction otherwise; an answer that does not
            validate is answered once with the problems, then fails with `InvalidOutput`.

    Every hook may be sync or async; an exception in a hook fails the execution.

    Example:
        >>> from trio_session import ScriptedModel
        >>> agent = Agent(ScriptedModel(["Hi!"]), system="Be brief.", max_ticks=3)
        >>> agent.max_ticks
        3
    """

    model: Model = attrs.field(validator=_check_model)
    system: str | None = attrs.field(default=None, kw_only=True, validator=_optional_str)
    tools: tuple[Tool, ...] = attrs.field(default=(), kw_only=True, converter=_to_tools)
    max_ticks: int = attrs.field(default=10, kw_only=True, validator=_positive_int)
    name: str = attrs.field(default="agent", kw_only=True)
    build: BuildHook | None = attrs.field(default=None, kw_only=True, validator=_optional_callable)
    should_continue: ContinueHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_message: MessageHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_tick_start: TickStartHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_tick_end: TickEndHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_complete: CompleteHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_error: ErrorHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    on_tool_confirmation: ConfirmationHook | None = attrs.field(
        default=None, kw_only=True, validator=_optional_callable
    )
    max_tool_concurrency: int = attrs.field(default=8, kw_only=True, validator=_positive_int)
    settings: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, converter=dict)
    retry: RetryPolicy | None = attrs.field(factory=RetryPolicy, kw_only=True)
    output_type: Any = attrs.field(default=None, kw_only=True)
    _by_name: Mapping[str, Tool] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(lambda self: {t.name: t for t in self.tools}, takes_self=True),
    )

    @retry.validator
    def _check_retry(self, _attr: object, value: object) -> None:
        if value is not None and not isinstance(value, RetryPolicy):
            raise TypeError(
                f"Agent.retry must be a RetryPolicy or None, got {type(value).__name__}"
            )

    @output_type.validator
    def _check_output_type(self, _attr: object, value: object) -> None:
        if value is not None:
            OutputSpec.of(value)

    @property
    def output(self) -> OutputSpec | None:
        """The spec of ``output_type``, or None."""
        return None if self.output_type is None else OutputSpec.of(self.output_type)

    @name.validator
    def _check_name(self, _attr: object, value: object) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"Agent.name must be a non-empty str, got {value!r}")

    def tool(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._by_name.get(name)


@attrs.frozen
class TickContext:
    """What ``build`` and ``on_tick_start`` see at the start of a tick.

    Attributes:
        props: The props of ``send``/``render`` (updated by a ``render`` mid-run).
        timeline: The conversation so far, including messages delivered for this tick.
        tick: This tick's number, from 1.
        state: The session's mutable, persisted state.
        tools: The agent's tools.
        session_id: The session.
        execution_id: The execution.
        agent: The agent being run.
    """

    props: Mapping[str, Any]
    timeline: tuple[Message, ...]
    tick: int
    state: dict[str, Any]
    tools: tuple[Tool, ...]
    session_id: str
    execution_id: str
    agent: Agent

    def default_request(self) -> ModelRequest:
        """The request the default ``build`` makes: system, timeline, model-visible tools.

        Example:
            >>> def build(ctx):  # keep only the last 20 messages
            ...     request = ctx.default_request()
            ...     return attrs.evolve(request, messages=request.messages[-20:])
        """
        return ModelRequest(
            system=self.agent.system,
            messages=self.timeline,
            tools=tuple(t.spec() for t in self.tools if t.visible_to_model),
            tick=self.tick,
            settings=self.agent.settings,
        )


@attrs.frozen
class TickResult:
    """What ``should_continue`` and ``on_tick_end`` see at the end of a tick.

    Attributes:
        tick: The tick's number.
        message: The assistant message of the tick.
        tool_calls: The tool calls it made.
        tool_results: Their results, in the same order.
        usage: The tick's usage.
        stop_reason: The model's stop reason.
        should_continue: The default decision: continue while the model called
            tools or messages are pending.
    """

    tick: int
    message: Message
    tool_calls: tuple[ToolUseBlock, ...]
    tool_results: tuple[ToolResultBlock, ...]
    usage: Usage
    stop_reason: str
    should_continue: bool
