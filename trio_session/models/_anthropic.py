"""AnthropicModel: the Messages API, streamed through the official ``anthropic`` SDK.

The SDK is an optional extra (``pip install 'trio-session[anthropic]'``) and is imported only
when a model is built. As with every `SDKModel`, the SDK builds, authenticates and sends the
request and turns HTTP error statuses into exceptions, while the adapter reads the
server-sent events itself, so that closing the stream closes the HTTP response at once and
leaves no async generator for the garbage collector.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ModelError
from .._messages import (
    ContentBlock,
    ImageBlock,
    Message,
    ReasoningBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from . import _sdk
from ._base import (
    INVALID_JSON_KEY,
    ModelChunk,
    ModelRequest,
    ReasoningChunk,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    UsageChunk,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["AnthropicModel"]

DEFAULT_MAX_TOKENS = 4096


class AnthropicModel(_sdk.SDKModel["AsyncAnthropic"]):
    """A Claude model served through the Anthropic Messages API, streamed.

    Text and thinking deltas stream as `TextChunk` / `ReasoningChunk`; a ``tool_use`` block
    streams as `ToolCallStartChunk`, one `ToolCallDeltaChunk` per ``input_json_delta``, and a
    `ToolCallChunk` with the parsed input when the block stops.

    Extended thinking (the ``thinking`` setting) works across tool ticks: a thinking block
    becomes a `ReasoningBlock` with its ``signature``, a ``redacted_thinking`` block a
    `ReasoningBlock` with ``redacted=True`` and its data in ``signature``, and both are sent
    back unchanged on later requests, as the API requires. Reasoning blocks without a
    signature (from another model) are not sent.

    A turn the API pauses (``stop_reason: "pause_turn"``, during long server-tool work) is
    continued transparently: the paused content is sent back and the stream goes on, as one
    reply (up to 8 continuations; then the reply stops with ``"pause_turn"``).

    Prompt caching: with ``cache="auto"`` (the default) each request marks three cache
    breakpoints (``cache_control: {"type": "ephemeral"}``): the system prompt, the last tool,
    and the last block of the last message, so each tick reads the conversation so far from
    the cache and writes only what is new. ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` are reported as ``Usage.cache_read_tokens`` and
    ``cache_write_tokens``, and counted in ``input_tokens`` (which the API reports without
    them).

    Settings: keyword arguments given here, then ``ModelRequest.settings`` (which win), are
    passed to ``messages.create``: ``max_tokens``, ``thinking``, ``tool_choice``,
    ``stop_sequences``, ``timeout``, ``extra_headers``... A setting that ``create`` does not
    know (``temperature``, ``top_k``, ...) is sent in the request body (``extra_body``).
    ``max_retries`` applies the SDK's retry setting to this model's requests.

    Retries: as for `OpenAIModel`, a client this model builds has the SDK's retries off
    (``max_retries=0``): the agent's `RetryPolicy` retries the tick (an ``overloaded_error``
    event mid-stream included), honouring ``retry-after``; a given ``client`` keeps its own
    settings.

    Messages: the system prompt (``request.system`` and the text of any ``system`` message)
    is the top-level ``system``; consecutive messages of one role are merged, as the API
    requires alternating roles; a tool message becomes ``tool_result`` blocks (with
    ``is_error``) at the start of a user turn; images are ``base64`` (``data:`` URIs) or
    ``url`` sources; JSON blocks are sent as JSON text; ``event`` messages are user text
    prefixed with ``"[event] "``. A tool call whose input was not valid JSON (cut off by
    ``max_tokens``) goes back with input ``{}``; its error result quotes the raw text.

    Errors: as for `OpenAIModel`: ``rate_limit`` (429), ``overloaded`` (529, 503, an
    ``overloaded_error`` event), ``server_error`` (5xx, ``api_error``), ``timeout``,
    ``connection_error`` (retryable); ``authentication``, ``permission_denied``,
    ``not_found``, ``bad_request`` (not retryable).

    Cancellation and lifetime, as for `OpenAIModel`: closing the stream (an aborted or
    cancelled tick) closes the HTTP response at once, and the server stops generating;
    ``trio.Cancelled`` propagates unchanged. A model that built its own client owns its pooled
    connections until ``await model.aclose()`` or the end of ``async with model:``.

    Args:
        model: The model id, such as ``"claude-sonnet-4-5"``.
        api_key: The API key; ``ANTHROPIC_API_KEY`` when None.
        base_url: The API's base URL; the SDK default (``ANTHROPIC_BASE_URL`` or Anthropic's
            API) when None.
        client: An ``anthropic.AsyncAnthropic`` to use instead of building one (then
            ``api_key`` and ``base_url`` must be None). The caller keeps ownership: `aclose`
            leaves it open.
        max_tokens: The default output limit (the API requires one).
        cache: ``"auto"`` to place prompt-cache breakpoints, ``"off"`` for none.
        native_output: Ask for an agent's ``output_type`` with the API's structured outputs
            (``output_config.format``); False asks by instruction, for models without them.
        **settings: Default request settings.

    Raises:
        ModuleNotFoundError: The ``anthropic`` SDK is not installed.
        ValueError: No credentials could be found, a reserved setting was given, or ``cache``
            is neither ``"auto"`` nor ``"off"``.
        TypeError: ``client`` is not an ``anthropic.AsyncAnthropic``.

    Example:
        >>> async with AnthropicModel("claude-sonnet-4-5") as model:  # doctest: +SKIP
        ...     async with open_session(Agent(model, tools=[get_weather])) as session:
        ...         print(await session.send("Weather in Paris?").result)
    """

    _sdk_name = "anthropic"
    _client_class = "AsyncAnthropic"
    _sdk_error = "AnthropicError"
    _reserved_settings = frozenset({"messages", "stream", "system", "tools"})

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: AsyncAnthropic | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        cache: Literal["auto", "off"] = "auto",
        native_output: bool = True,
        **settings: Any,
    ) -> None:
        self.native_output = native_output
        if cache not in ("auto", "off"):
            raise ValueError(f"AnthropicModel.cache must be 'auto' or 'off', got {cache!r}")
        self.cache = cache
        settings["max_tokens"] = max_tokens
        super().__init__(
            model,
            client=client,
            connection={"api_key": api_key, "base_url": base_url},
            settings=settings,
        )

    def _build_client(
        self, sdk: ModuleType, connection: Mapping[str, str | None]
    ) -> AsyncAnthropic:
        # RetryPolicy is the one retry layer: the SDK's own retries are invisible.
        client: AsyncAnthropic = sdk.AsyncAnthropic(**connection, max_retries=0)
        if (
            client.api_key is None
            and getattr(client, "auth_token", None) is None
            and getattr(client, "_token_cache", None) is None
        ):
            # The SDK would only notice at the first request, with a TypeError.
            raise ValueError(
                "AnthropicModel needs credentials: pass api_key=... or set ANTHROPIC_API_KEY"
            )
        return client

    def _check_settings(self, settings: Mapping[str, Any], where: str) -> None:
        super()._check_settings(settings, where)
        max_tokens = settings.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise ValueError(f"{where}: max_tokens must be an int >= 0, got {max_tokens!r}")

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        system, messages = to_anthropic_messages(request.system, request.messages)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        tools = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
            for t in request.tools
        ]
        if self.cache == "auto":
            _mark_cache_breakpoints(messages, tools)
            if system:
                kwargs["system"] = [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]
        elif system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = tools
        return kwargs

    def _follow_up(self, kwargs: dict[str, Any], state: _sdk.StreamState) -> dict[str, Any] | None:
        if not isinstance(state, _StreamState) or state.stop_reason != "pause_turn":
            return None
        content = state.paused_content()
        messages = list(kwargs["messages"])
        if messages and messages[-1]["role"] == "assistant":
            # A turn paused twice: its content so far is one assistant message.
            last = messages[-1]
            messages[-1] = {**last, "content": [*last["content"], *content]}
        else:
            messages.append({"role": "assistant", "content": content})
        return {**kwargs, "messages": messages}

    def output_settings(self, name: str, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        """The request settings that ask for JSON matching ``schema`` natively, or None.

        Used by the engine for an ``output_type``: ``output_config.format`` with a
        ``json_schema``. Models without structured outputs refuse it: build those with
        ``native_output=False``, and the engine asks by instruction instead.
        """
        if not self.native_output:
            return None
        return {"output_config": {"format": {"type": "json_schema", "schema": dict(schema)}}}

    def _resource(self, client: AsyncAnthropic) -> Any:
        return client.messages

    def _new_state(self) -> _StreamState:
        return _StreamState()


# -- the request ----------------------------------------------------------------------------


def to_anthropic_messages(
    system: str | None, messages: tuple[Message, ...]
) -> tuple[str, list[dict[str, Any]]]:
    """Convert a conversation to the Messages API's ``system`` and ``messages``.

    Example:
        >>> from trio_session import user
        >>> to_anthropic_messages("Be brief.", (user("Hi"),))
        ('Be brief.', [{'role': 'user', 'content': [{'type': 'text', 'text': 'Hi'}]}])
    """
    system_parts = [system] if system else []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.role
        if role == "system":
            text = _sdk.plain_text(message.content)
            if text:
                system_parts.append(text)
            continue
        if role == "assistant":
            blocks = _assistant_blocks(message.content)
        elif role == "tool":
            blocks = [_tool_result(b) for b in message.content if isinstance(b, ToolResultBlock)]
        else:
            prefix = "[event] " if role == "event" else ""
            blocks = _sdk.content_parts(message.content, _image, prefix)
        if not blocks:
            continue
        api_role = "assistant" if role == "assistant" else "user"
        if out and out[-1]["role"] == api_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": api_role, "content": blocks})
    for entry in out:
        if entry["role"] == "user":
            # The API wants a turn's tool results before anything else in it.
            entry["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(system_parts), out


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if not source.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": source}}
    header, _, payload = source[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64":
        # The API takes base64 only; a percent-encoded data: URI is re-encoded.
        payload = base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode("ascii")
    media_type = media_type or block.media_type or ""
    if not media_type:
        raise ValueError(
            "ImageBlock.source is a data: URI without a media type, and "
            "ImageBlock.media_type is None: the Anthropic API needs one"
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": payload},
    }


def _assistant_blocks(blocks: tuple[ContentBlock, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolUseBlock):
            out.append(
                {
                    "type": "tool_use",
                    "id": block.tool_use_id,
                    "name": block.name,
                    "input": _wire_input(block.input),
                }
            )
        elif isinstance(block, ReasoningBlock):
            # Sent back exactly as issued; unsigned reasoning (another model's) is refused.
            if block.redacted and block.signature:
                out.append({"type": "redacted_thinking", "data": block.signature})
            elif block.signature:
                out.append(
                    {"type": "thinking", "thinking": block.text, "signature": block.signature}
                )
        else:
            # Images cannot be sent in an assistant turn.
            text = _sdk.block_text(block)
            if text:
                out.append({"type": "text", "text": text})
    return out


def _wire_input(arguments: Mapping[str, Any]) -> dict[str, Any]:
    # Arguments that were not valid JSON (cut off by max_tokens) are the engine's to report,
    # in the call's error result; the API needs an object.
    return {} if INVALID_JSON_KEY in arguments else dict(arguments)


_EPHEMERAL = {"type": "ephemeral"}
# Blocks the API refuses a cache_control on.
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})


def _mark_cache_breakpoints(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """Put a cache breakpoint on the last tool and on the last block of the last message.

    Example:
        >>> messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        >>> _mark_cache_breakpoints(messages, [])
        >>> messages[0]["content"][0]["cache_control"]
        {'type': 'ephemeral'}
    """
    if tools:
        tools[-1]["cache_control"] = _EPHEMERAL
    if messages:
        for block in reversed(messages[-1]["content"]):
            if block.get("type") not in _UNCACHEABLE:
                block["cache_control"] = _EPHEMERAL
                break


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    content = _sdk.content_parts(block.content, _image)
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": content or [{"type": "text", "text": _sdk.NO_OUTPUT}],
    }
    if block.is_error:
        result["is_error"] = True
    return result


# -- the response ---------------------------------------------------------------------------


class _ToolUse:
    __slots__ = ("id", "initial", "name", "parts")

    def __init__(self, id: str, name: str, initial: Any) -> None:
        self.id = id
        self.name = name
        self.initial = initial
        self.parts: list[str] = []

    def input(self) -> dict[str, Any]:
        raw = "".join(self.parts)
        if not raw.strip() and isinstance(self.initial, dict):
            return self.initial
        return _sdk.parse_arguments(raw)


_INPUT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class _StreamState:
    """Turns Messages stream events into model chunks.

    It also keeps the response's content blocks as the API wants them back (``content``),
    for the request that continues a paused turn.
    """

    __slots__ = (
        "_input",
        "_signatures",
        "_tool_uses",
        "content",
        "done",
        "events",
        "output_tokens",
        "stop_reason",
    )

    def __init__(self) -> None:
        self._tool_uses: dict[int, _ToolUse] = {}
        self._signatures: dict[int, str] = {}
        self._input = dict.fromkeys(_INPUT_KEYS, 0)
        self.content: dict[int, dict[str, Any]] = {}
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.done = False
        self.events = 0

    def feed(self, data: str) -> list[ModelChunk]:
        event = _sdk.load_event(data)
        self.events += 1
        kind = event.get("type")
        index = event.get("index", -1)
        if kind == "content_block_delta":
            return self._delta(index, event.get("delta") or {})
        if kind == "content_block_start":
            return self._start(index, event.get("content_block") or {})
        if kind == "content_block_stop":
            return self._stop(index)
        if kind == "message_start":
            self._usage((event.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage(event.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise _sdk.stream_error(event.get("error"))
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[ModelChunk]:
        # Server tool calls and their results arrive here too; they are kept for a paused
        # turn's continuation, but are not the session's to run.
        self.content[index] = dict(block)
        block_type = block.get("type")
        if block_type in ("tool_use", "server_tool_use"):
            tool_use = _ToolUse(
                str(block.get("id", "")), str(block.get("name", "")), block.get("input")
            )
            self._tool_uses[index] = tool_use
            if block_type == "tool_use":
                return [ToolCallStartChunk(tool_use.id, tool_use.name)]
        elif block_type == "text" and block.get("text"):
            return [TextChunk(block["text"])]
        elif block_type == "thinking":
            if block.get("signature"):
                self._signatures[index] = block["signature"]
            if block.get("thinking"):
                return [ReasoningChunk(block["thinking"])]
        elif block_type == "redacted_thinking" and isinstance(block.get("data"), str):
            return [ReasoningChunk("", signature=block["data"], redacted=True)]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[ModelChunk]:
        delta_type = delta.get("type")
        block = self.content.get(index, {})
        if delta_type == "text_delta":
            text = delta.get("text")
            if not text:
                return []
            block["text"] = block.get("text", "") + text
            return [TextChunk(text)]
        if delta_type == "thinking_delta":
            thinking = delta.get("thinking")
            if not thinking:
                return []
            block["thinking"] = block.get("thinking", "") + thinking
            return [ReasoningChunk(thinking)]
        if delta_type == "signature_delta":
            signature = self._signatures.get(index, "") + str(delta.get("signature") or "")
            self._signatures[index] = block["signature"] = signature
            return []
        if delta_type == "input_json_delta":
            tool_use = self._tool_uses.get(index)
            part = delta.get("partial_json")
            if tool_use is None or not part:
                return []
            tool_use.parts.append(part)
            if block.get("type") != "tool_use":
                return []
            return [ToolCallDeltaChunk(tool_use.id, part)]
        # citations_delta, ...: nothing a session keeps.
        return []

    def _stop(self, index: int) -> list[ModelChunk]:
        signature = self._signatures.pop(index, None)
        if signature:
            # The signature closes its thinking block; the API checks it when the block
            # comes back on a later request.
            return [ReasoningChunk("", signature=signature)]
        tool_use = self._tool_uses.pop(index, None)
        if tool_use is None:
            return []
        block = self.content.get(index, {})
        block["input"] = _wire_input(tool_use.input())
        if block.get("type") != "tool_use":
            return []
        return [ToolCallChunk(tool_use.id, tool_use.name, tool_use.input())]

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # Running totals, each sent again only when known.
        for key in _INPUT_KEYS:
            value = usage.get(key)
            if isinstance(value, int):
                self._input[key] = value
        if isinstance(usage.get("output_tokens"), int):
            self.output_tokens = usage["output_tokens"]

    def paused_content(self) -> list[dict[str, Any]]:
        """The response's blocks in order, as a continuing request sends them back."""
        return [
            block
            for _, block in sorted(self.content.items())
            if not (block.get("type") == "text" and not block.get("text"))
        ]

    def finish(self) -> list[ModelChunk]:
        if not self.events:
            raise ModelError(
                "the response carried no server-sent events: is base_url the Messages API?",
                code="model_error",
            )
        if not self.done:
            raise ModelError(
                "the stream ended before the message was complete (no message_stop)",
                code="connection_error",
                retryable=True,
            )
        out: list[ModelChunk] = [
            ToolCallChunk(t.id, t.name, t.input())
            for index, t in self._tool_uses.items()
            if self.content.get(index, {}).get("type") == "tool_use"
        ]
        self._tool_uses.clear()
        # The API counts cache reads and writes apart from input_tokens; a session's
        # input_tokens counts every input token.
        out.append(
            UsageChunk(
                sum(self._input.values()),
                self.output_tokens,
                cache_read_tokens=self._input["cache_read_input_tokens"],
                cache_write_tokens=self._input["cache_creation_input_tokens"],
            )
        )
        # The API's stop reasons are the session's vocabulary already.
        out.append(StopChunk(self.stop_reason or "end_turn"))
        return out
