"""AnthropicModel: the Messages API, streamed through the official ``anthropic`` SDK.

The SDK is an optional extra (``pip install 'trio-session[anthropic]'``) and is imported only
when a model is built. As with `OpenAIModel`, the SDK builds, authenticates, sends and retries
the request and turns HTTP error statuses into exceptions, while the adapter reads the
server-sent events itself, so that closing the stream closes the HTTP response at once and
leaves no async generator for the garbage collector.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import sys
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._errors import ModelError
from .._messages import (
    ContentBlock,
    ImageBlock,
    JsonBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
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

# Provider-neutral helpers (SSE decoding, closing a body, error mapping); `_openai` does not
# import its SDK at import time, so this costs nothing without it.
from ._openai import (
    SSEDecoder,
    close_body,
    error_detail,
    load_event,
    parse_arguments,
    status_error,
    stream_error,
    transport_error,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["AnthropicModel"]

DEFAULT_MAX_TOKENS = 4096

# The adapter builds these from the request; a setting may not replace them.
_RESERVED_SETTINGS = frozenset({"messages", "stream", "system", "tools"})

_NO_OUTPUT = "(no output)"


def _import_anthropic() -> ModuleType:
    try:
        import anthropic
    except ImportError as exc:
        raise ModuleNotFoundError(
            "AnthropicModel needs the anthropic SDK, which is not installed: "
            "pip install 'trio-session[anthropic]'",
            name="anthropic",
        ) from exc
    return anthropic


@functools.cache
def _create_parameters() -> frozenset[str]:
    from anthropic.resources.messages import AsyncMessages

    return frozenset(inspect.signature(AsyncMessages.create).parameters) - {"self"}


class AnthropicModel:
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

    Cancellation: closing the stream (the session does so when a tick is aborted or
    cancelled) closes the HTTP response at once, so the server sees the connection close and
    stops generating; ``trio.Cancelled`` propagates unchanged.

    Lifetime: a model that built its own client owns it and its pooled connections; close it
    with ``await model.aclose()`` or ``async with model:``.

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
        >>> model = AnthropicModel("claude-sonnet-4-5", max_tokens=2048)  # doctest: +SKIP
        >>> async with open_session(Agent(model, tools=[get_weather])) as session:  # doctest: +SKIP
        ...     print(await session.send("Weather in Paris?").result)
    """

    name: str

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
        if not isinstance(model, str) or not model:
            raise TypeError(f"AnthropicModel.model must be a non-empty str, got {model!r}")
        anthropic = _import_anthropic()
        settings["max_tokens"] = max_tokens
        _check_settings(settings, "AnthropicModel settings")
        if client is not None:
            if api_key is not None or base_url is not None:
                raise ValueError(
                    "AnthropicModel: pass either client or api_key/base_url, not both"
                )
            if not isinstance(client, anthropic.AsyncAnthropic):
                raise TypeError(
                    "AnthropicModel.client must be an anthropic.AsyncAnthropic "
                    f"(the async client), got {type(client).__name__}"
                )
            self._owns_client = False
        else:
            client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url)
            if (
                client.api_key is None
                and getattr(client, "auth_token", None) is None
                and getattr(client, "_token_cache", None) is None
            ):
                # The SDK would only notice at the first request, with a TypeError.
                raise ValueError(
                    "AnthropicModel needs credentials: pass api_key=... or set "
                    "ANTHROPIC_API_KEY"
                )
            self._owns_client = True
        self.name = model
        self.model = model
        self.client: AsyncAnthropic = client
        self.settings: dict[str, Any] = dict(settings)
        self._retry_clients: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model!r}, base_url={str(self.client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the HTTP client, if this model built it (a given ``client`` stays open)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _with_retries(self, max_retries: int) -> Any:
        # A copy of the client that shares its connection pool; made once per value.
        client = self._retry_clients.get(max_retries)
        if client is None:
            client = self._retry_clients[max_retries] = self.client.with_options(
                max_retries=max_retries
            )
        return client

    def _prepare(self, request: ModelRequest) -> tuple[dict[str, Any], int | None]:
        settings = {**self.settings, **request.settings}
        _check_settings(settings, "ModelRequest.settings")
        max_retries = settings.pop("max_retries", None)
        system, messages = to_anthropic_messages(request.system, request.messages)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "input_schema": dict(spec.input_schema),
                }
                for spec in request.tools
            ]
        known = _create_parameters()
        extra_body = dict(settings.pop("extra_body", None) or {})
        for key, value in settings.items():
            if key in known:
                kwargs[key] = value
            else:
                extra_body[key] = value
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs, max_retries

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelChunk, None]:
        """Stream the reply to ``request`` as chunks.

        Raises:
            ModelError: The request failed, the connection broke, or the stream carried an
                ``error`` event.
        """
        kwargs, max_retries = self._prepare(request)
        client = self.client if max_retries is None else self._with_retries(max_retries)
        state = _StreamState()
        try:
            async with client.messages.with_streaming_response.create(**kwargs) as response:
                http_response = response.http_response
                body = http_response.aiter_bytes()
                decoder = SSEDecoder()
                try:
                    async for raw in body:
                        for data in decoder.feed(raw):
                            for chunk in state.feed(load_event(data)):
                                yield chunk
                        if state.stopped:
                            break
                    else:
                        for data in decoder.flush():
                            for chunk in state.feed(load_event(data)):
                                yield chunk
                finally:
                    await close_body(body, http_response, graceful=state.stopped)
        except ModelError:
            raise
        except Exception as exc:
            error = _to_model_error(exc)
            if error is None:
                raise
            raise error from exc
        for chunk in state.finish():
            yield chunk


def _check_settings(settings: Mapping[str, Any], where: str) -> None:
    for key in settings:
        if key in _RESERVED_SETTINGS:
            raise ValueError(
                f"{where} must not set {key!r}: AnthropicModel builds it from the request"
            )
    max_tokens = settings.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise ValueError(f"{where}: max_tokens must be an int >= 0, got {max_tokens!r}")
    max_retries = settings.get("max_retries")
    if max_retries is not None and (
        not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
    ):
        raise ValueError(f"{where}: max_retries must be an int >= 0, got {max_retries!r}")


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
            text = "".join(t for t in map(_block_text, message.content) if t)
            if text:
                system_parts.append(text)
            continue
        if role == "assistant":
            blocks = _assistant_blocks(message.content)
        elif role == "tool":
            blocks = [_tool_result(b) for b in message.content if isinstance(b, ToolResultBlock)]
        else:
            blocks = _user_blocks(message.content, "[event] " if role == "event" else "")
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


def _block_text(block: ContentBlock) -> str | None:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, JsonBlock):
        return json.dumps(block.data, ensure_ascii=False, default=str)
    return None


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


def _user_blocks(blocks: tuple[ContentBlock, ...], prefix: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ImageBlock):
            out.append(_image(block))
        else:
            text = _block_text(block)
            if text:  # the API refuses empty text blocks
                out.append({"type": "text", "text": text})
    if prefix:
        if out and out[0]["type"] == "text":
            out[0] = {"type": "text", "text": prefix + out[0]["text"]}
        else:
            out.insert(0, {"type": "text", "text": prefix.rstrip()})
    return out


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
            text = _block_text(block)
            if text:
                out.append({"type": "text", "text": text})
    return out


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    content = _user_blocks(block.content) or [{"type": "text", "text": _NO_OUTPUT}]
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": content,
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
        return parse_arguments(raw)


_INPUT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class _StreamState:
    """Turns Messages stream events into model chunks."""

    __slots__ = ("_input", "_tool_uses", "events", "output_tokens", "stop_reason", "stopped")

    def __init__(self) -> None:
        self._tool_uses: dict[int, _ToolUse] = {}
        self._input = dict.fromkeys(_INPUT_KEYS, 0)
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.stopped = False
        self.events = 0

    def feed(self, event: Any) -> list[ModelChunk]:
        if not isinstance(event, dict):
            raise ModelError(f"the server sent an unexpected event: {event!r:.200}")
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
            self.stopped = True
        elif kind == "error":
            raise stream_error(event.get("error"))
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
        if not self.stopped:
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


def _to_model_error(exc: Exception) -> ModelError | None:
    """The `ModelError` for an SDK or transport exception, or None for anything else."""
    anthropic = sys.modules.get("anthropic")
    if anthropic is not None:
        if isinstance(exc, anthropic.APIStatusError):
            return status_error(exc.status_code, error_detail(exc.body, exc.message))
        if isinstance(exc, anthropic.APITimeoutError):
            return ModelError("request timed out", code="timeout", retryable=True)
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__ or exc
            return ModelError(f"connection error: {cause}", code="connection_error", retryable=True)
        if isinstance(exc, anthropic.AnthropicError):
            return ModelError(str(exc), code="model_error", retryable=False)
    return transport_error(exc)
