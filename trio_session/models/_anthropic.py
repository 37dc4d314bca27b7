"""AnthropicModel: the Messages API, streamed through the official ``anthropic`` SDK.

The SDK is an optional extra (``pip install 'trio-session[anthropic]'``) and is imported only
when a model is built. As with every `SDKModel`, the SDK builds, authenticates, sends and
retries the request and turns HTTP error statuses into exceptions, while the adapter reads the
server-sent events itself, so that closing the stream closes the HTTP response at once and
leaves no async generator for the garbage collector.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._errors import ModelError
from .._messages import ContentBlock, ImageBlock, Message, ToolResultBlock, ToolUseBlock
from . import _sdk
from ._base import (
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

    Settings: keyword arguments given here, then ``ModelRequest.settings`` (which win), are
    passed to ``messages.create``: ``max_tokens``, ``thinking``, ``tool_choice``,
    ``stop_sequences``, ``timeout``, ``extra_headers``... A setting that ``create`` does not
    know (``temperature``, ``top_k``, ...) is sent in the request body (``extra_body``).
    ``max_retries`` applies the SDK's retry setting to this model's requests.

    Retries: the SDK retries connection errors, timeouts, 408, 409, 429 and 5xx (including
    529, overloaded) before the stream starts (``max_retries``, 2 by default, with exponential
    backoff that honours ``retry-after``). An ``error`` event inside the stream, or a broken
    connection, is not retried: it is raised as a `ModelError` whose ``retryable`` says
    whether trying again may help.

    Messages: the system prompt (``request.system`` and the text of any ``system`` message)
    is the top-level ``system``; consecutive messages of one role are merged, as the API
    requires alternating roles; a tool message becomes ``tool_result`` blocks (with
    ``is_error``) at the start of a user turn; images are ``base64`` (``data:`` URIs) or
    ``url`` sources; JSON blocks are sent as JSON text; ``event`` messages are user text
    prefixed with ``"[event] "``. Reasoning blocks are dropped: the API accepts thinking
    blocks back only with the signature it issued, which `ReasoningBlock` does not keep —
    so extended thinking combined with tool calls across ticks is not supported yet.

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
        **settings: Default request settings.

    Raises:
        ModuleNotFoundError: The ``anthropic`` SDK is not installed.
        ValueError: No credentials could be found, or a reserved setting was given.
        TypeError: ``client`` is not an ``anthropic.AsyncAnthropic``.

    Example:
        >>> model = AnthropicModel("claude-sonnet-4-5", api_key="sk-ant-placeholder")
        >>> model.model
        'claude-sonnet-4-5'

        Then ``open_session(Agent(model))`` talks to Claude; the model closes
        its client when the program leaves ``async with model:``.
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
        **settings: Any,
    ) -> None:
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
        client: AsyncAnthropic = sdk.AsyncAnthropic(**connection)
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
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
                for t in request.tools
            ]
        return kwargs

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
                    "input": dict(block.input),
                }
            )
        else:
            # Images cannot be sent in an assistant turn; reasoning needs a signature.
            text = _sdk.block_text(block)
            if text:
                out.append({"type": "text", "text": text})
    return out


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
    """Turns Messages stream events into model chunks."""

    __slots__ = ("_input", "_tool_uses", "done", "events", "output_tokens", "stop_reason")

    def __init__(self) -> None:
        self._tool_uses: dict[int, _ToolUse] = {}
        self._input = dict.fromkeys(_INPUT_KEYS, 0)
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.done = False
        self.events = 0

    def feed(self, data: str) -> list[ModelChunk]:
        event = _sdk.load_event(data)
        self.events += 1
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                return [TextChunk(text)] if text else []
            if delta_type == "thinking_delta":
                thinking = delta.get("thinking")
                return [ReasoningChunk(thinking)] if thinking else []
            if delta_type == "input_json_delta":
                tool_use = self._tool_uses.get(event.get("index", -1))
                part = delta.get("partial_json")
                if tool_use is None or not part:
                    return []
                tool_use.parts.append(part)
                return [ToolCallDeltaChunk(tool_use.id, part)]
            # signature_delta, citations_delta, ...: nothing a session keeps.
            return []
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            block_type = block.get("type")
            if block_type == "tool_use":
                tool_use = _ToolUse(
                    str(block.get("id", "")), str(block.get("name", "")), block.get("input")
                )
                self._tool_uses[event.get("index", -1)] = tool_use
                return [ToolCallStartChunk(tool_use.id, tool_use.name)]
            if block_type == "text" and block.get("text"):
                return [TextChunk(block["text"])]
            if block_type == "thinking" and block.get("thinking"):
                return [ReasoningChunk(block["thinking"])]
            return []
        if kind == "content_block_stop":
            tool_use = self._tool_uses.pop(event.get("index", -1), None)
            if tool_use is None:
                return []
            return [ToolCallChunk(tool_use.id, tool_use.name, tool_use.input())]
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

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # Running totals, each sent again only when known; input counts cache reads and writes.
        for key in _INPUT_KEYS:
            value = usage.get(key)
            if isinstance(value, int):
                self._input[key] = value
        if isinstance(usage.get("output_tokens"), int):
            self.output_tokens = usage["output_tokens"]

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
            ToolCallChunk(t.id, t.name, t.input()) for t in self._tool_uses.values()
        ]
        self._tool_uses.clear()
        out.append(UsageChunk(sum(self._input.values()), self.output_tokens))
        # The API's stop reasons are the session's vocabulary already.
        out.append(StopChunk(self.stop_reason or "end_turn"))
        return out
