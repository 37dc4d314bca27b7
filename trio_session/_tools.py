"""Tools: ``@tool``, argument validation, results as blocks, and confirmations.

A `Tool` wraps a plain function (sync or async). Its input schema comes from
the signature (see `_jsonschema`); the model's arguments are validated against it
and structured with the shared cattrs converter before the function runs.

Confirmation is a rendezvous between the engine, which waits, and whoever
answers (``submit_tool_result``, a listener, the agent's policy hook). The
pending confirmation is registered *before* anyone is told about it, so an
answer given synchronously from a listener is never lost.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args, overload

import attrs
import trio

from ._arguments import PlainArguments, plain_arguments, plain_kwargs, structure_arguments
from ._docstrings import parse_docstring
from ._errors import InvalidToolArguments, UnknownToolUse
from ._jsonschema import annotated_as, compile_signature, inline_refs, resolve_hints
from ._messages import (
    BLOCK_TYPES,
    ContentBlock,
    JsonBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    built_json,
)
from ._serde import jsonable
from ._validator import check_schema, validate as validate_schema
from .models._base import ToolSpec

if TYPE_CHECKING:
    from ._agent import Agent
    from ._handle import SessionExecutionHandle
    from ._session import Session

__all__ = [
    "Audience",
    "Confirmations",
    "Decision",
    "ConfirmationWait",
    "Tool",
    "ToolContext",
    "to_blocks",
    "tool",
]

logger = logging.getLogger("trio_session")

Audience: TypeAlias = Literal["model", "user", "all"]
_AUDIENCES = frozenset(get_args(Audience))
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

ConfirmationPredicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
ConfirmationMessage: TypeAlias = Callable[[Mapping[str, Any]], str]


# ---------------------------------------------------------------------------
# Decision
# ---------------------------------------------------------------------------


def _check_bool(name: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")

    return check


def _check_optional_mapping(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(
            f"Decision.modified_arguments must be a mapping or None, got {type(value).__name__}"
        )


def _check_optional_str(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"Decision.reason must be a str or None, got {type(value).__name__}")


@attrs.frozen
class Decision:
    """The answer to a tool confirmation.

    Args:
        approved: Run the tool (True) or deny it (False).
        modified_arguments: Replacement arguments to run the tool with; they are
            validated against the tool's schema first.
        reason: Why; a denial's reason is shown to the model.
        always: Remember this answer for this tool for the rest of the session.

    Example:
        >>> Decision(True).approved
        True
        >>> Decision(False, reason="not on a Friday").reason
        'not on a Friday'
        >>> Decision(True, modified_arguments={"path": "/tmp/x"}).modified_arguments
        {'path': '/tmp/x'}
    """

    approved: bool = attrs.field(validator=_check_bool("Decision.approved"))
    modified_arguments: Mapping[str, Any] | None = attrs.field(
        default=None, kw_only=True, validator=_check_optional_mapping
    )
    reason: str | None = attrs.field(default=None, kw_only=True, validator=_check_optional_str)
    always: bool = attrs.field(
        default=False, kw_only=True, validator=_check_bool("Decision.always")
    )


# ---------------------------------------------------------------------------
# ToolContext
# ---------------------------------------------------------------------------


@attrs.frozen
class ToolContext:
    """What a tool handler receives when its first parameter is annotated `ToolContext`.

    Attributes:
        session: The `Session` the tool runs in.
        execution: The `SessionExecutionHandle` of the execution that called
            the tool; None when the tool runs through ``session.dispatch()``.
        tool_use_id: The id of the tool call.
        tick: The tick during which the tool runs.
        props: The props of the execution.
        state: The session's state, shared and persisted; mutate it freely.

    Example:
        >>> @tool
        ... async def count(ctx: ToolContext) -> int:
        ...     '''Count the calls so far.'''
        ...     ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        ...     ctx.emit("counted", ctx.state["calls"])
        ...     return ctx.state["calls"]
    """

    session: Session
    execution: SessionExecutionHandle | None
    tool_use_id: str
    tick: int
    props: Mapping[str, Any]
    state: dict[str, Any]
    _emit: Callable[[str, Any], None] = attrs.field(alias="emit_fn", repr=False)
    _spawn: Callable[..., Awaitable[SessionExecutionHandle]] = attrs.field(
        alias="spawn_fn", repr=False
    )

    def emit(self, name: str, data: Any = None) -> None:
        """Publish a ``custom`` event with ``name`` and ``data`` on the execution's stream.

        Raises:
            TypeError: ``name`` is not a str.
        """
        if not isinstance(name, str):
            raise TypeError(f"ToolContext.emit() name must be a str, got {type(name).__name__}")
        self._emit(name, data)

    async def spawn(
        self,
        agent: Agent,
        message: Message | str | Sequence[Message | str] | None = None,
        *,
        max_ticks: int | None = None,
    ) -> SessionExecutionHandle:
        """Run a child session of ``agent`` inside this execution; return the child's handle.

        The same as ``ctx.session.spawn(agent, message, max_ticks=...)``. The
        child's events are forwarded into this execution's stream, its
        confirmations are answerable through this execution's handle, and
        aborting this execution cancels it. ``await handle.result`` gives the
        child's `SendResult`.
        """
        return await self._spawn(agent, message, max_ticks=max_ticks)


# ---------------------------------------------------------------------------
# Results as blocks
# ---------------------------------------------------------------------------

_NOT_A_RESULT = (ToolUseBlock, ToolResultBlock)


def to_blocks(value: Any) -> tuple[ContentBlock, ...]:
    """Turn a tool handler's return value into content blocks.

    - a str: one `TextBlock`;
    - a block: itself; a list or tuple holding at least one block, and
      otherwise only blocks and strs: those blocks (strs become `TextBlock`);
    - None: no blocks;
    - any other JSON-able value (dict, list, number, bool, attrs instance, Enum
      member): one `JsonBlock` of its JSON form. A list of only strs is data,
      so it is a `JsonBlock` too.

    Raises:
        TypeError: The value is not JSON-able (the message names its type), or
            it is a tool-use or tool-result block.
        ValueError: It holds a NaN or infinite float.

    Example:
        >>> to_blocks("sunny")
        (TextBlock(text='sunny'),)
        >>> to_blocks({"temp": 21})
        (JsonBlock(data={'temp': 21}),)
        >>> to_blocks(None)
        ()
    """
    kind = type(value)
    if kind is int or kind is bool:
        # The commonest results after text: JSON as they are.
        return (built_json(value),)
    if isinstance(value, str):
        return (TextBlock(value),)
    if value is None:
        return ()
    if isinstance(value, BLOCK_TYPES):
        _check_result_block(value, "tool result")
        return (cast(ContentBlock, value),)
    if isinstance(value, list | tuple) and any(isinstance(v, BLOCK_TYPES) for v in value):
        blocks: list[ContentBlock] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                blocks.append(TextBlock(item))
            elif isinstance(item, BLOCK_TYPES):
                _check_result_block(item, f"tool result[{i}]")
                blocks.append(cast(ContentBlock, item))
            else:
                raise TypeError(
                    f"tool result[{i}] is of type {type(item).__name__} in a sequence of "
                    "content blocks; return only blocks and strs, or only JSON data"
                )
        return tuple(blocks)
    return (JsonBlock(jsonable(value, "tool result")),)


def _check_result_block(block: object, where: str) -> None:
    if isinstance(block, _NOT_A_RESULT):
        raise TypeError(f"{where} is a {block.type} block, which a tool cannot return")


# ---------------------------------------------------------------------------
# Tool
# ---------------------------------------------------------------------------


@attrs.frozen(eq=False, repr=False)
class Tool:
    """A function the model (or the user, through ``dispatch``) can call.

    Made by `tool`; calling the tool calls the function directly.

    Attributes:
        name: The name the model calls it by.
        description: What it does, for the model.
        input_schema: The self-contained JSON Schema of its arguments; do not
            mutate it.
        requires_confirmation: Whether a call waits for approval: a bool, or a
            predicate of the arguments.
        confirmation_message: The text asking for approval: a template
            formatted with the arguments, a callable of them, or None for a
            default.
        confirmation_timeout: Seconds after which an unanswered confirmation is
            denied; None waits indefinitely.
        audience: ``"model"`` (default), ``"user"`` (hidden from the model,
            reachable by ``dispatch``) or ``"all"``.
        fn: The wrapped function.
        takes_context: Whether its first parameter receives the `ToolContext`.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]
    requires_confirmation: bool | ConfirmationPredicate
    confirmation_message: str | ConfirmationMessage | None
    confirmation_timeout: float | None
    audience: Audience
    fn: Callable[..., Any]
    takes_context: bool
    # None for a schema-first tool: its handler takes the validated mapping.
    _hints: Mapping[str, Any] | None = attrs.field(alias="hints")
    _spec: ToolSpec = attrs.field(alias="tool_spec")
    # Whether ``fn`` is async: asked once here, not on every call (evolve() asks again).
    _awaits: bool = attrs.field(
        init=False, default=attrs.Factory(lambda self: _is_async(self.fn), takes_self=True)
    )
    # The check that takes most calls without validating and structuring them in full.
    _plain: PlainArguments | None = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: plain_arguments(self.input_schema, self._hints), takes_self=True
        ),
    )

    def __repr__(self) -> str:
        return f"<Tool {self.name!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (an async one returns its coroutine)."""
        return self.fn(*args, **kwargs)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        # Lets inspect.signature(tool) show the function's signature.
        return self.fn

    @property
    def visible_to_model(self) -> bool:
        """Whether the model is told about this tool (``audience`` is ``"model"`` or ``"all"``)."""
        return self.audience != "user"

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        input_schema: Mapping[str, Any],
        handler: Callable[..., Any],
        *,
        requires_confirmation: bool | ConfirmationPredicate = False,
        confirmation_message: str | ConfirmationMessage | None = None,
        confirmation_timeout: float | None = None,
        audience: Audience = "model",
    ) -> Tool:
        """Make a tool from a raw JSON Schema (an MCP server's, for example).

        The model's arguments are validated against ``input_schema`` before
        ``handler(args)`` runs; a call that does not fit becomes an ``is_error``
        result naming the path and the problem. Local ``$ref`` are inlined
        (several providers reject references) unless they are recursive. No
        structuring: the handler gets the JSON mapping.

        Args:
            name: The tool's name (``^[a-zA-Z0-9_-]{1,64}$``).
            description: What the tool does, for the model.
            input_schema: A JSON Schema of a JSON object (see `_validator` for
                the keywords it applies).
            handler: ``handler(args: Mapping)``, sync or async; a first parameter
                annotated `ToolContext` receives the context:
                ``handler(ctx, args)``.
            requires_confirmation: As for `tool`.
            confirmation_message: As for `tool`.
            confirmation_timeout: As for `tool`.
            audience: As for `tool`.

        Raises:
            TypeError: A field of the wrong type (``input_schema`` not a
                mapping, a handler that is not callable or cannot take the
                arguments mapping...); the message names it.
            ValueError: A bad name, an invalid ``input_schema`` (the message
                names the path of the bad keyword) or a bad option value.

        Example:
            >>> def add(args):
            ...     return args["a"] + args.get("b", 0)
            >>> adder = Tool.from_schema("add", "Add two integers.", {
            ...     "type": "object",
            ...     "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            ...     "required": ["a"],
            ... }, add)
            >>> adder.validate({"a": 1})
            {'a': 1}
            >>> adder.validate({"a": "1"})
            Traceback (most recent call last):
            ...
            trio_session._errors.InvalidToolArguments: ... a: expected integer, got string
        """
        where = "Tool.from_schema()"
        for field, value in (("name", name), ("description", description)):
            if value is None:
                raise TypeError(f"{where} {field} must be a str, got NoneType")
        _check_name_and_description(where, name, description)
        timeout = _check_options(
            where, requires_confirmation, confirmation_message, confirmation_timeout, audience
        )
        schema = _tool_input_schema(input_schema, f"{where} input_schema")
        takes_context = _schema_handler_takes_context(handler, f"{where} handler")
        return cls(
            name=name,
            description=description,
            input_schema=schema,
            requires_confirmation=requires_confirmation,
            confirmation_message=confirmation_message,
            confirmation_timeout=timeout,
            audience=audience,
            fn=handler,
            takes_context=takes_context,
            hints=None,
            tool_spec=ToolSpec(name, description, schema),
        )

    def spec(self) -> ToolSpec:
        """What the model is told: name, description and input schema."""
        return self._spec

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments against the schema and structure them into Python values.

        Enum values become members, objects become attrs instances, arrays
        become tuples where the annotation says so. Arguments not given are
        left out, so the function's defaults apply. A tool made by
        `Tool.from_schema` only validates: its handler gets the mapping as given.

        Returns:
            The keyword arguments to call the function with (for a schema-first
            tool, a copy of ``arguments``).

        Raises:
            InvalidToolArguments: The message names the tool and every bad field.

        Example:
            >>> @tool
            ... def add(a: int, b: int = 0) -> int:
            ...     return a + b
            >>> add.validate({"a": 2})
            {'a': 2}
            >>> add.validate({"a": 2.5})
            Traceback (most recent call last):
            ...
            trio_session._errors.InvalidToolArguments: ... a: expected integer, got number
        """
        plain = self._plain
        if plain is not None:
            kwargs = plain_kwargs(plain, arguments)
            if kwargs is not None:
                return kwargs
        problems = validate_schema(self.input_schema, arguments)
        if not problems:
            if self._hints is None:
                return dict(arguments)
            kwargs, problems = structure_arguments(self._hints, arguments)
            if not problems:
                return kwargs
        raise InvalidToolArguments(
            f"invalid arguments for tool {self.name!r}: " + "; ".join(problems)
        )

    def needs_confirmation(self, arguments: Mapping[str, Any]) -> bool:
        """Whether a call with these arguments must be approved first.

        A predicate that raises counts as True (logged): a tool that may
        need approval never runs without it.
        """
        rule = self.requires_confirmation
        if isinstance(rule, bool):
            return rule
        try:
            return bool(rule(arguments))
        except Exception:
            logger.exception(
                "requires_confirmation predicate of tool %r raised; asking for confirmation",
                self.name,
            )
            return True

    def confirmation_text(self, arguments: Mapping[str, Any]) -> str:
        """The text asking to approve a call with these arguments.

        A template is formatted with the arguments (``"Delete {path}?"``); a
        callable gets them as a mapping. A template that does not fit the
        arguments, or a callable that fails, falls back to the default
        ``"Allow <name> with <arguments as JSON>?"``; this never raises.
        """
        message = self.confirmation_message
        if isinstance(message, str):
            try:
                return _format_confirmation(message, arguments)
            except (KeyError, ValueError, TypeError):
                pass
        elif message is not None:
            try:
                text = message(arguments)
            except Exception:
                logger.exception("confirmation_message of tool %r raised", self.name)
            else:
                if isinstance(text, str):
                    return text
        return self._default_confirmation_text(arguments)

    def _default_confirmation_text(self, arguments: Mapping[str, Any]) -> str:
        try:
            shown = json.dumps(dict(arguments), ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            shown = repr(arguments)
        return f"Allow {self.name} with {shown}?"

    async def run(
        self, ctx: ToolContext | None, arguments: Mapping[str, Any]
    ) -> tuple[ContentBlock, ...]:
        """Validate the arguments, call the function, and return its result as blocks.

        A sync function is called directly, after a checkpoint (so a
        cancelled call never runs); an async one is awaited. The context is
        passed first when the function takes it.

        Raises:
            InvalidToolArguments: The arguments do not fit the schema.
            TypeError: The function takes a context and ``ctx`` is None, or
                its return value is not JSON-able (see `to_blocks`).
            Exception: Whatever the function raised, unchanged.
        """
        kwargs = self.validate(arguments)
        args: tuple[Any, ...] = ()
        if self.takes_context:
            if ctx is None:
                raise TypeError(f"tool {self.name!r} takes a ToolContext, but ctx is None")
            args = (ctx,)
        if self._hints is None:
            args, kwargs = (*args, kwargs), {}
        if self._awaits:
            result = await self.fn(*args, **kwargs)
        else:
            await trio.lowlevel.checkpoint()
            result = self.fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        return to_blocks(result)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_confirmation: bool | ConfirmationPredicate = False,
    confirmation_message: str | ConfirmationMessage | None = None,
    confirmation_timeout: float | None = None,
    audience: Audience = "model",
) -> Tool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_confirmation: bool | ConfirmationPredicate = False,
    confirmation_message: str | ConfirmationMessage | None = None,
    confirmation_timeout: float | None = None,
    audience: Audience = "model",
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_confirmation: bool | ConfirmationPredicate = False,
    confirmation_message: str | ConfirmationMessage | None = None,
    confirmation_timeout: float | None = None,
    audience: Audience = "model",
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` of a function; use as ``@tool``, ``@tool(...)`` or ``tool(fn, ...)``.

    The input schema comes from the signature, the descriptions from the
    docstring (the summary and free text for the tool, the ``Args:`` section
    for the parameters). A first parameter annotated `ToolContext` receives
    the context and is not part of the schema.

    Args:
        fn: The function, sync or async.
        name: The tool's name (``^[a-zA-Z0-9_-]{1,64}$``); the function's name
            by default.
        description: What the tool does; the docstring's text by default.
        requires_confirmation: True, or a predicate of the arguments, to make
            every (matching) call wait for approval.
        confirmation_message: A template formatted with the arguments
            (``"Delete {path}?"``) or a callable of them.
        confirmation_timeout: Seconds after which an unanswered confirmation
            is denied; None (default) waits indefinitely.
        audience: ``"model"``, ``"user"`` (hidden from the model, reachable by
            ``session.dispatch``) or ``"all"``.

    Raises:
        TypeError: A bad option, or a signature that has no schema (``*args``,
            ``**kwargs``, a positional-only parameter, an unsupported or
            recursive type); the message names the parameter.
        ValueError: A bad name, audience or timeout value.

    Example:
        >>> from typing import Literal
        >>> @tool
        ... async def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        ...     '''Get the weather for a city.
        ...
        ...     Args:
        ...         city: The city name.
        ...         unit: Temperature unit.
        ...     '''
        ...     return f"21 degrees {unit} in {city}"
        >>> get_weather.description
        'Get the weather for a city.'
        >>> get_weather.input_schema["required"] == ["city"]
        True
    """
    if isinstance(fn, str):
        raise TypeError(f"tool() takes the function, not a name; use @tool(name={fn!r})")
    if name is not None or description is not None:
        _check_name_and_description("tool()", name, description)
    timeout = _check_options(
        "tool()", requires_confirmation, confirmation_message, confirmation_timeout, audience
    )

    def decorate(fn: Callable[..., Any]) -> Tool:
        return _make_tool(
            fn,
            name=name,
            description=description,
            requires_confirmation=requires_confirmation,
            confirmation_message=confirmation_message,
            confirmation_timeout=timeout,
            audience=audience,
        )

    if fn is None:
        return decorate
    return decorate(fn)


def _check_name_and_description(where: str, name: object, description: object) -> None:
    """Refuse a tool name or description of the wrong type or form (None: not given)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{where} name must be a str, got {type(name).__name__}")
    if name is not None and not _NAME_RE.match(name):
        raise ValueError(
            f"{where} name {name!r} is not a valid tool name: use 1 to 64 letters, digits, "
            "'_' or '-'"
        )
    if description is not None and not isinstance(description, str):
        raise TypeError(f"{where} description must be a str, got {type(description).__name__}")


def _template_fields(where: str, template: str) -> None:
    """Refuse a confirmation template that could do more than name an argument.

    ``str.format`` evaluates ``{a.b}`` and ``{a[0]}`` on the model's
    arguments; only plain ``{name}`` fields (with a conversion and a format
    spec) are allowed.
    """
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{where} confirmation_message is not a valid template: {exc}") from None
    for _literal, field, spec, conversion in pieces:
        if field is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(
                f"{where} confirmation_message field {{{field}}} has an unknown conversion "
                f"!{conversion}"
            )
        if not field.isidentifier():
            raise ValueError(
                f"{where} confirmation_message field {{{field}}} must be an argument's name: "
                "attribute and index lookups and positional fields are refused"
            )
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(
                f"{where} confirmation_message field {{{field}}} has a nested field in its "
                "format spec, which is refused"
            )


def _format_confirmation(template: str, arguments: Mapping[str, Any]) -> str:
    """Fill a template checked by `_template_fields`: argument values only, never looked into."""
    parts: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        if field is None:
            continue
        value = arguments[field]
        if conversion == "r":
            value = repr(value)
        elif conversion == "a":
            value = ascii(value)
        elif conversion == "s":
            value = str(value)
        parts.append(format(value, spec or ""))
    return "".join(parts)


def _check_options(
    where: str,
    requires_confirmation: object,
    confirmation_message: object,
    confirmation_timeout: object,
    audience: object,
) -> float | None:
    """Refuse a bad confirmation option or audience; the timeout as a float."""
    if not isinstance(requires_confirmation, bool) and not callable(requires_confirmation):
        raise TypeError(
            f"{where} requires_confirmation must be a bool or a callable of the arguments, "
            f"got {type(requires_confirmation).__name__}"
        )
    if (
        confirmation_message is not None
        and not isinstance(confirmation_message, str)
        and not callable(confirmation_message)
    ):
        raise TypeError(
            f"{where} confirmation_message must be a str template, a callable or None, "
            f"got {type(confirmation_message).__name__}"
        )
    if isinstance(confirmation_message, str):
        _template_fields(where, confirmation_message)
    if confirmation_timeout is not None:
        if isinstance(confirmation_timeout, bool) or not isinstance(
            confirmation_timeout, int | float
        ):
            raise TypeError(
                f"{where} confirmation_timeout must be a number of seconds or None, "
                f"got {type(confirmation_timeout).__name__}"
            )
        if math.isnan(confirmation_timeout) or confirmation_timeout <= 0:
            raise ValueError(
                f"{where} confirmation_timeout must be > 0 seconds, got {confirmation_timeout!r}"
            )
    if audience not in _AUDIENCES:
        raise ValueError(
            f"{where} audience must be one of 'model', 'user', 'all', got {audience!r}"
        )
    return None if confirmation_timeout is None else float(confirmation_timeout)


def _tool_input_schema(input_schema: object, where: str) -> dict[str, Any]:
    """A checked, self-contained copy of a tool's raw input schema."""
    if not isinstance(input_schema, Mapping):
        raise TypeError(
            f"{where} must be a JSON Schema object (a mapping), got {type(input_schema).__name__}"
        )
    check_schema(input_schema, where)
    kind = input_schema.get("type", "object")
    if kind != "object":
        raise ValueError(
            f"{where}.type must be 'object' (tool arguments are a JSON object), got {kind!r}"
        )
    schema: dict[str, Any] = jsonable(input_schema, where)  # a copy the caller cannot mutate
    try:
        return inline_refs(schema)
    except TypeError:  # recursive: keep the references, which the validator follows
        return schema


def _schema_handler_takes_context(handler: object, where: str) -> bool:
    """Whether a schema-first handler takes the context first; refuse one that cannot be called."""
    if not callable(handler):
        raise TypeError(f"{where} must be callable, got {type(handler).__name__}")
    if inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler):
        raise TypeError(f"{where} must return its result, not be a generator function")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return False  # a builtin without a signature: called with the mapping alone
    params = list(signature.parameters.values())
    takes_context = False
    if params:
        hint = resolve_hints(handler, {"ToolContext": ToolContext}).get(params[0].name)
        takes_context = annotated_as(hint, ToolContext)
    try:
        signature.bind(*([None] * (2 if takes_context else 1)))
    except TypeError as exc:
        shape = "(ctx: ToolContext, args)" if takes_context else "(args)"
        raise TypeError(f"{where} must be callable as handler{shape}: {exc}") from None
    return takes_context


def _make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    requires_confirmation: bool | ConfirmationPredicate,
    confirmation_message: str | ConfirmationMessage | None,
    confirmation_timeout: float | None,
    audience: Audience,
) -> Tool:
    if isinstance(fn, Tool):
        fn = fn.fn
    if not callable(fn):
        raise TypeError(f"tool() needs a function, got {type(fn).__name__}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"tool() cannot wrap the generator function {getattr(fn, '__qualname__', fn)!r}; "
            "a tool returns its result"
        )
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                f"tool(): {name!r} is not a valid tool name (1 to 64 letters, digits, '_' or "
                "'-'); pass name=..."
            )
    plan = compile_signature(
        fn, context=ToolContext, localns={"ToolContext": ToolContext}, where=f"tool {name!r}"
    )
    if description is None:
        description = parse_docstring(getattr(fn, "__doc__", None))[1]
    spec = ToolSpec(name, description, plan.schema)
    return Tool(
        name=name,
        description=description,
        input_schema=plan.schema,
        requires_confirmation=requires_confirmation,
        confirmation_message=confirmation_message,
        confirmation_timeout=confirmation_timeout,
        audience=audience,
        fn=fn,
        takes_context=plan.takes_context,
        hints=plan.hints,
        tool_spec=spec,
    )


# ---------------------------------------------------------------------------
# Confirmations
# ---------------------------------------------------------------------------


class ConfirmationWait:
    """One tool call waiting for approval; made by `Confirmations.register`.

    Attributes:
        tool_use_id: The id of the tool call.
        tool: The tool.
        arguments: The arguments the model gave.
    """

    __slots__ = (
        "_closed",
        "_decision",
        "_event",
        "_registry",
        "arguments",
        "timed_out",
        "tool",
        "tool_use_id",
    )

    def __init__(
        self,
        tool_use_id: str,
        tool: Tool,
        arguments: Mapping[str, Any],
        registry: Confirmations,
    ) -> None:
        self.tool_use_id = tool_use_id
        self.tool = tool
        self.arguments = arguments
        self._registry = registry
        self._event = trio.Event()
        self._decision: Decision | None = None
        self._closed = False
        # Whether nobody answered before the tool's confirmation_timeout.
        self.timed_out = False

    def __repr__(self) -> str:
        state = "decided" if self._decision else "closed" if self._closed else "pending"
        return f"<ConfirmationWait {self.tool_use_id!r} tool={self.tool.name!r} {state}>"

    @property
    def decision(self) -> Decision | None:
        """The decision, once there is one."""
        return self._decision

    def decide(self, decision: Decision) -> None:
        """Record the answer and wake the waiter.

        Raises:
            UnknownToolUse: It was answered already, timed out, or was cancelled.
            InvalidToolArguments: ``decision.modified_arguments`` do not fit the
                tool's schema; nothing is recorded and it stays pending.
        """
        if not isinstance(decision, Decision):
            raise TypeError(f"decide() takes a Decision, got {type(decision).__name__}")
        if self._decision is not None or self._closed:
            raise UnknownToolUse(
                f"the confirmation of tool use {self.tool_use_id!r} was already answered"
            )
        if decision.modified_arguments is not None:
            self.tool.validate(decision.modified_arguments)
        self._decision = decision
        self._registry._forget(self)
        self._event.set()

    # The timeout is part of the answer (a timed-out confirmation is a denial,
    # not an error), so it is a parameter rather than the caller's cancel scope.
    async def wait(self, timeout: float | None) -> Decision:  # noqa: ASYNC109
        """Wait for the decision, at most ``timeout`` seconds (None: no limit).

        A decision made before ``wait()`` was called is returned at once, after
        a checkpoint. On timeout the call is denied:
        ``Decision(False, reason="confirmation timed out after 30s")``. On every
        exit, cancellation included, the confirmation stops being pending, so
        a late answer raises `UnknownToolUse`.
        """
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
        try:
            if timeout is None:
                await self._event.wait()
            else:
                with trio.move_on_after(timeout):
                    await self._event.wait()
            if self._decision is None:
                self.timed_out = True
                self._decision = Decision(
                    False, reason=f"confirmation timed out after {timeout:g}s"
                )
            return self._decision
        finally:
            self._closed = True
            self._registry._forget(self)


class Confirmations:
    """The pending confirmations of one execution tree.

    A root execution shares it with the children it spawns, so a child's
    confirmation is answerable through the parent's handle.

    Example:
        >>> confirmations = Confirmations()
        >>> @tool(requires_confirmation=True)
        ... def rm(path: str) -> None: ...
        >>> pending = confirmations.register("call_1", rm, {"path": "/tmp/x"})
        >>> confirmations.pending()
        ['call_1']
        >>> confirmations.submit("call_1", approved=False, modified_arguments=None,
        ...                      reason="no", always=False)
        >>> pending.decision
        Decision(approved=False, modified_arguments=None, reason='no', always=False)
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, ConfirmationWait] = {}

    def __repr__(self) -> str:
        return f"<Confirmations pending={list(self._pending)!r}>"

    def register(
        self, tool_use_id: str, tool: Tool, arguments: Mapping[str, Any]
    ) -> ConfirmationWait:
        """Make a call pending; do it before announcing it, so no answer is lost.

        Raises:
            ValueError: A confirmation with this id is already pending.
        """
        if not isinstance(tool_use_id, str):
            raise TypeError(f"tool_use_id must be a str, got {type(tool_use_id).__name__}")
        if not isinstance(tool, Tool):
            raise TypeError(f"tool must be a Tool, got {type(tool).__name__}")
        if tool_use_id in self._pending:
            raise ValueError(f"a confirmation for tool use {tool_use_id!r} is already pending")
        pending = ConfirmationWait(tool_use_id, tool, arguments, self)
        self._pending[tool_use_id] = pending
        return pending

    def submit(
        self,
        tool_use_id: str,
        *,
        approved: bool,
        modified_arguments: Mapping[str, Any] | None,
        reason: str | None,
        always: bool,
    ) -> None:
        """Answer the pending confirmation ``tool_use_id``.

        Raises:
            UnknownToolUse: No confirmation with that id is pending (never
                asked, or already answered).
            InvalidToolArguments: ``modified_arguments`` do not fit the tool's
                schema; the confirmation stays pending.
            TypeError: A badly typed answer.
        """
        pending = self._pending.get(tool_use_id)
        if pending is None:
            raise UnknownToolUse(
                f"no confirmation is pending for tool use {tool_use_id!r} "
                "(unknown id, or already answered)"
            )
        pending.decide(
            Decision(approved, modified_arguments=modified_arguments, reason=reason, always=always)
        )

    def get(self, tool_use_id: str) -> ConfirmationWait | None:
        """The pending confirmation with that id, if any."""
        return self._pending.get(tool_use_id)

    def pending(self) -> list[str]:
        """The ids awaiting an answer, oldest first."""
        return list(self._pending)

    def __contains__(self, tool_use_id: object) -> bool:
        return tool_use_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def _forget(self, pending: ConfirmationWait) -> None:
        if self._pending.get(pending.tool_use_id) is pending:
            del self._pending[pending.tool_use_id]
