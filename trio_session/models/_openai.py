"""OpenAIModel: Chat Completions streaming through the official ``openai`` SDK.

Works with OpenAI and with every server that speaks the Chat Completions wire format
(vLLM, Ollama, llama.cpp, LiteLLM, ...). The SDK is an optional extra
(``pip install 'trio-session[openai]'``) and is imported only when a model is built.

How the SDK is used: it builds, authenticates and sends the request, applies its retry policy
and turns HTTP error statuses into exceptions; the adapter reads the server-sent events of the
response body itself. The SDK's own stream iterator leaves async generators unfinished when a
stream ends at ``[DONE]`` or at an in-stream error, which trio reports as a ResourceWarning and
closes only at garbage collection; reading the body here lets ``aclose()`` close the HTTP
response at once, and skips building a pydantic object per chunk.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import ssl
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import trio

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
    from openai import AsyncOpenAI

__all__ = ["OpenAIModel"]

# Closing a response is a few socket operations; the bound only guards against a wedged peer.
CLOSE_TIMEOUT = 5.0
# After [DONE] the server normally ends the body at once; reading that end lets the connection
# be reused. A server that keeps the body open longer gets its connection closed instead.
DRAIN_TIMEOUT = 0.5

# The adapter builds these from the request; a setting may not replace them.
_RESERVED_SETTINGS = frozenset({"messages", "stream", "tools"})

_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}

_NO_OUTPUT = "(no output)"


def _import_openai() -> ModuleType:
    try:
        import openai
    except ImportError as exc:
        raise ModuleNotFoundError(
            "OpenAIModel needs the openai SDK, which is not installed: "
            "pip install 'trio-session[openai]'",
            name="openai",
        ) from exc
    return openai


@functools.cache
def _create_parameters() -> frozenset[str]:
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}


class OpenAIModel:
    """A model served through the OpenAI Chat Completions API, streamed.

    Each request is sent with ``stream=True`` and ``stream_options={"include_usage": True}``;
    text, reasoning (``reasoning_content`` / ``reasoning`` deltas of OpenAI-compatible servers),
    and tool calls stream as chunks, with each tool call's arguments assembled from their
    fragments.

    Settings: keyword arguments given here, then ``ModelRequest.settings`` (which win), are
    passed to ``chat.completions.create``: ``temperature``, ``max_completion_tokens``,
    ``tool_choice``, ``timeout``, ``extra_headers``... A setting that ``create`` does not know
    (``top_k``, Ollama's ``options``) is sent in the request body (``extra_body``).
    ``max_retries`` applies the SDK's retry setting to this model's requests.

    Retries: the SDK retries connection errors, timeouts, 408, 409, 429 and 5xx responses
    before the stream starts (``max_retries``, 2 by default, with exponential backoff that
    honours ``retry-after``). Once the stream has started, a failure is not retried: it is
    raised as a `ModelError` whose ``retryable`` says whether trying again may help.

    Messages: the system prompt (``request.system`` and the text of any ``system`` message)
    becomes one leading system message; images are ``image_url`` parts; JSON blocks are sent
    as JSON text; reasoning blocks are dropped (Chat Completions has no input for them);
    each tool result is a ``role: "tool"`` message with its ``tool_call_id`` (an error result
    starts with ``"Error: "``, images returned by tools follow in a user message); ``event``
    messages are sent as user text prefixed with ``"[event] "``.

    Errors: HTTP and connection failures become `ModelError` with a stable ``code``:
    ``rate_limit`` (429), ``overloaded`` (503, 529), ``server_error`` (5xx), ``timeout``,
    ``connection_error`` (retryable), ``authentication`` (401), ``permission_denied`` (403),
    ``not_found`` (404), ``bad_request`` (other 4xx) (not retryable).

    Cancellation: closing the stream (the session does so when a tick is aborted or
    cancelled) closes the HTTP response at once, so the server sees the connection close and
    stops generating; ``trio.Cancelled`` propagates unchanged.

    Lifetime: a model that built its own client owns it and its pooled connections; close it
    with ``await model.aclose()`` or ``async with model:``.

    Args:
        model: The model id, such as ``"gpt-4o-mini"`` or ``"llama3.1"``.
        base_url: The API's base URL (``http://localhost:11434/v1`` for Ollama); the SDK
            default (``OPENAI_BASE_URL`` or OpenAI's API) when None.
        api_key: The API key; ``OPENAI_API_KEY`` when None. Servers that ignore keys still
            need a placeholder.
        client: An ``openai.AsyncOpenAI`` to use instead of building one (then ``base_url``
            and ``api_key`` must be None). The caller keeps ownership: `aclose` leaves it open.
        **settings: Default request settings.

    Raises:
        ModuleNotFoundError: The ``openai`` SDK is not installed.
        ValueError: No API key could be found, or a reserved setting was given.
        TypeError: ``client`` is not an ``openai.AsyncOpenAI``.

    Example:
        >>> model = OpenAIModel(
        ...     "llama3.1", base_url="http://localhost:11434/v1", api_key="ollama",
        ...     temperature=0.2,
        ... )  # doctest: +SKIP
        >>> async with open_session(Agent(model, tools=[get_weather])) as session:  # doctest: +SKIP
        ...     print(await session.send("Weather in Paris?").result)
    """

    name: str

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: AsyncOpenAI | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"OpenAIModel.model must be a non-empty str, got {model!r}")
        openai = _import_openai()
        _check_settings(settings, "OpenAIModel settings")
        if client is not None:
            if base_url is not None or api_key is not None:
                raise ValueError("OpenAIModel: pass either client or base_url/api_key, not both")
            if not isinstance(client, openai.AsyncOpenAI):
                raise TypeError(
                    "OpenAIModel.client must be an openai.AsyncOpenAI (the async client), "
                    f"got {type(client).__name__}"
                )
            self._owns_client = False
        else:
            try:
                client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key)
            except openai.OpenAIError as exc:
                raise ValueError(
                    "OpenAIModel needs an API key: pass api_key=... or set OPENAI_API_KEY "
                    f"(servers that ignore keys accept any placeholder): {exc}"
                ) from exc
            self._owns_client = True
        self.name = model
        self.model = model
        self.client: AsyncOpenAI = client
        self.settings: dict[str, Any] = dict(settings)
        self._retry_clients: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"OpenAIModel({self.model!r}, base_url={str(self.client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the HTTP client, if this model built it (a given ``client`` stays open)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> OpenAIModel:
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
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(request.system, request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": spec.name,
                        "description": spec.description,
                        "parameters": dict(spec.input_schema),
                    },
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
            ModelError: The request failed, the connection broke, or the server reported an
                error in the stream.
        """
        kwargs, max_retries = self._prepare(request)
        client = self.client if max_retries is None else self._with_retries(max_retries)
        state = _StreamState()
        try:
            async with client.chat.completions.with_streaming_response.create(**kwargs) as response:
                http_response = response.http_response
                body = http_response.aiter_bytes()
                decoder = SSEDecoder()
                try:
                    async for raw in body:
                        for data in decoder.feed(raw):
                            if data.startswith("[DONE]"):
                                state.done = True
                                break
                            for chunk in state.feed(load_event(data)):
                                yield chunk
                        if state.done:
                            break
                    else:
                        for data in decoder.flush():
                            if data.startswith("[DONE]"):
                                state.done = True
                            else:
                                for chunk in state.feed(load_event(data)):
                                    yield chunk
                finally:
                    await close_body(body, http_response, graceful=state.done)
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
                f"{where} must not set {key!r}: OpenAIModel builds it from the request"
            )
    max_retries = settings.get("max_retries")
    if max_retries is not None and (
        not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
    ):
        raise ValueError(f"{where}: max_retries must be an int >= 0, got {max_retries!r}")


# -- the request ----------------------------------------------------------------------------


def to_openai_messages(system: str | None, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Convert a conversation to Chat Completions ``messages``.

    Example:
        >>> from trio_session import user
        >>> to_openai_messages("Be brief.", (user("Hi"),))
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    system_parts = [system] if system else []
    out: list[dict[str, Any]] = []
    # Images returned by tools go in a user message after the run of tool messages: a tool
    # message carries text only, and nothing may come between the tool messages.
    pending_images: list[dict[str, Any]] = []
    for message in messages:
        role = message.role
        if role != "tool" and pending_images:
            out.append({"role": "user", "content": pending_images})
            pending_images = []
        if role == "system":
            text = _plain_text(message.content)
            if text:
                system_parts.append(text)
        elif role == "user":
            content = _user_content(message.content)
            if content:
                out.append({"role": "user", "content": content})
        elif role == "event":
            content = _user_content(message.content, prefix="[event] ")
            if content:
                out.append({"role": "user", "content": content})
        elif role == "assistant":
            entry = _assistant_message(message.content)
            if entry is not None:
                out.append(entry)
        else:  # tool
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    text, images = _tool_result_content(block)
                    out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
                    if images:
                        pending_images.append(
                            {"type": "text", "text": f"Images returned by {block.name}:"}
                        )
                        pending_images.extend(images)
    if pending_images:
        out.append({"role": "user", "content": pending_images})
    if system_parts:
        out.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    return out


def _block_text(block: ContentBlock) -> str | None:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, JsonBlock):
        return json.dumps(block.data, ensure_ascii=False, default=str)
    return None


def _plain_text(blocks: tuple[ContentBlock, ...]) -> str:
    return "".join(t for t in map(_block_text, blocks) if t)


def _image_part(block: ImageBlock) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": block.source}}


def _user_content(blocks: tuple[ContentBlock, ...], prefix: str = "") -> str | list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        else:
            text = _block_text(block)
            if text:
                parts.append({"type": "text", "text": text})
    if prefix:
        if parts and parts[0]["type"] == "text":
            parts[0] = {"type": "text", "text": prefix + parts[0]["text"]}
        else:
            parts.insert(0, {"type": "text", "text": prefix.rstrip()})
    # Plain strings where possible: some compatible servers accept nothing else.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _assistant_message(blocks: tuple[ContentBlock, ...]) -> dict[str, Any] | None:
    text = _plain_text(blocks)
    calls = [
        {
            "id": block.tool_use_id,
            "type": "function",
            "function": {"name": block.name, "arguments": _arguments_text(block)},
        }
        for block in blocks
        if isinstance(block, ToolUseBlock)
    ]
    if not text and not calls:
        return None
    entry: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        entry["tool_calls"] = calls
    return entry


def _arguments_text(block: ToolUseBlock) -> str:
    raw = block.input.get(INVALID_JSON_KEY)
    if isinstance(raw, str) and len(block.input) == 1:
        # Show the model the arguments it actually wrote, so it can correct them.
        return raw
    return json.dumps(block.input, ensure_ascii=False)


def _tool_result_content(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for item in block.content:
        if isinstance(item, ImageBlock):
            images.append(_image_part(item))
        else:
            text = _block_text(item)
            if text:
                texts.append(text)
    text = "\n".join(texts) or _NO_OUTPUT
    if block.is_error and text[:5].lower() != "error":
        # Chat Completions has no error flag for tool results; say it in the text.
        text = "Error: " + text
    return text, images


# -- the response ---------------------------------------------------------------------------


class _Call:
    __slots__ = ("arguments", "id", "name", "started")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.started = False


class _StreamState:
    """Turns ``chat.completion.chunk`` objects into model chunks."""

    __slots__ = ("_by_index", "_calls", "done", "events", "finish_reason", "refused", "usage")

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self.done = False
        self.events = 0
        self.finish_reason: str | None = None
        self.refused = False
        self.usage: Mapping[str, Any] | None = None

    def feed(self, data: Any) -> list[ModelChunk]:
        if not isinstance(data, dict):
            raise ModelError(f"the server sent an unexpected event: {data!r:.200}")
        self.events += 1
        if data.get("error"):
            raise stream_error(data["error"])
        out: list[ModelChunk] = []
        usage = data.get("usage")
        if usage:
            self.usage = usage
        for choice in data.get("choices") or ():
            # n > 1 is not supported: the session keeps one reply per tick.
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                out.append(ReasoningChunk(reasoning))
            content = delta.get("content")
            if content:
                out.append(TextChunk(content))
            refusal = delta.get("refusal")
            if refusal:
                self.refused = True
                out.append(TextChunk(refusal))
            for fragment in delta.get("tool_calls") or ():
                self._tool_call(fragment, out)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _tool_call(self, fragment: Mapping[str, Any], out: list[ModelChunk]) -> None:
        call_id = fragment.get("id") or ""
        index = fragment.get("index")
        if not isinstance(index, int):
            # Not in the spec, but some servers omit it: a fragment with an id is a new call.
            index = len(self._calls) if call_id or not self._calls else -1
        call = self._by_index.get(index)
        if call is None or (call_id and call.id and call_id != call.id):
            # A different id at a known index: a server that reuses indexes for new calls.
            call = _Call()
            self._calls.append(call)
            self._by_index[index] = call
            self._by_index[-1] = call
        if call_id and not call.id:
            call.id = call_id
        function = fragment.get("function") or {}
        if function.get("name") and not call.name:
            call.name = function["name"]
        arguments = function.get("arguments")
        if arguments:
            call.arguments.append(arguments)
        if not call.started:
            if call.name:
                self._start(call, out)
                if call.arguments:
                    out.append(ToolCallDeltaChunk(call.id, "".join(call.arguments)))
        elif arguments:
            out.append(ToolCallDeltaChunk(call.id, arguments))

    @staticmethod
    def _start(call: _Call, out: list[ModelChunk]) -> None:
        call.started = True
        if not call.id:
            call.id = f"call_{uuid.uuid4().hex[:24]}"
        out.append(ToolCallStartChunk(call.id, call.name))

    def finish(self) -> list[ModelChunk]:
        if not self.events and not self.done:
            raise ModelError(
                "the response carried no server-sent events: is base_url a Chat Completions "
                "endpoint that streams?",
                code="model_error",
            )
        if self.finish_reason is None and not self.done:
            raise ModelError(
                "the stream ended before the model finished (no finish_reason, no [DONE])",
                code="connection_error",
                retryable=True,
            )
        out: list[ModelChunk] = []
        for call in self._calls:
            if not call.started:
                self._start(call, out)
            out.append(ToolCallChunk(call.id, call.name, parse_arguments("".join(call.arguments))))
        if self.usage:
            out.append(
                UsageChunk(
                    _int(self.usage.get("prompt_tokens")),
                    _int(self.usage.get("completion_tokens")),
                )
            )
        reason = self.finish_reason
        if self.refused:
            stop = "refusal"
        elif reason is None:
            stop = "tool_use" if self._calls else "end_turn"
        elif reason == "stop" and self._calls:
            # Some compatible servers finish a tool-calling reply with "stop".
            stop = "tool_use"
        else:
            stop = _FINISH_REASONS.get(reason, reason)
        out.append(StopChunk(stop))
        return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _to_model_error(exc: Exception) -> ModelError | None:
    """The `ModelError` for an SDK or transport exception, or None for anything else."""
    openai = sys.modules.get("openai")
    if openai is not None:
        if isinstance(exc, openai.APIStatusError):
            error = status_error(exc.status_code, error_detail(exc.body, exc.message))
            if exc.code == "insufficient_quota":
                # A 429 that waiting does not cure.
                error.retryable = False
            return error
        if isinstance(exc, openai.APITimeoutError):
            return ModelError(f"request timed out: {exc}", code="timeout", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return ModelError(f"connection error: {cause}", code="connection_error", retryable=True)
        if isinstance(exc, openai.OpenAIError):
            return ModelError(str(exc), code="model_error", retryable=False)
    return transport_error(exc)


# -- provider-neutral helpers, shared with _anthropic ----------------------------------------


class SSEDecoder:
    """Incremental server-sent-events decoder that keeps only the ``data`` of each event."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, raw: bytes) -> list[str]:
        lines = (self._buffer + raw).split(b"\n")
        self._buffer = lines.pop()
        events: list[str] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[str]:
        events: list[str] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        field, _, value = line.partition(b":")
        if field == b"data":
            if value.startswith(b" "):
                value = value[1:]
            self._data.append(value.decode("utf-8", "replace"))


def load_event(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ModelError(
            f"the server sent an event that is not JSON: {data[:200]!r}", code="model_error"
        ) from None


def parse_arguments(raw: str) -> dict[str, Any]:
    """Parse a tool call's JSON arguments; invalid ones go under `INVALID_JSON_KEY`.

    Example:
        >>> parse_arguments('{"city": "Paris"}'), parse_arguments(""), parse_arguments("{oops")
        ({'city': 'Paris'}, {}, {'__invalid_json__': '{oops'})
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {INVALID_JSON_KEY: raw}
    if not isinstance(value, dict):
        return {INVALID_JSON_KEY: raw}
    return value


async def close_body(body: AsyncIterator[bytes], response: Any, *, graceful: bool) -> None:
    """Finish reading ``body`` and close ``response``, even inside a cancelled scope.

    The body iterator is a stack of async generators (httpx, httpcore). Closing only the
    outermost one would leave the inner ones for the garbage collector (trio warns) and the
    connection open until then; instead the iterator is driven once more inside a cancelled
    scope, so the cancellation surfaces at the socket read and unwinds every layer — the same
    path a cancelled read takes, which closes the connection.
    """
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        # The body's own failure is not reported: the stream is being closed anyway.
        with contextlib.suppress(Exception):
            if graceful:
                with trio.move_on_after(DRAIN_TIMEOUT):
                    async for _ in body:
                        pass
            with trio.CancelScope() as drain:
                drain.cancel()
                async for _ in body:
                    pass
        await response.aclose()


def status_error(status: int, detail: str) -> ModelError:
    """The `ModelError` for an HTTP error status."""
    if status == 429:
        code, retryable = "rate_limit", True
    elif status in (503, 529):
        code, retryable = "overloaded", True
    elif status in (408, 504):
        code, retryable = "timeout", True
    elif status >= 500:
        code, retryable = "server_error", True
    elif status == 401:
        code, retryable = "authentication", False
    elif status == 403:
        code, retryable = "permission_denied", False
    elif status == 404:
        code, retryable = "not_found", False
    elif status == 409:
        code, retryable = "model_error", True
    else:
        code, retryable = "bad_request", False
    return ModelError(f"HTTP {status}: {detail}", code=code, retryable=retryable)


def error_detail(body: Any, fallback: str) -> str:
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return fallback


_ERROR_TYPES = {
    "rate_limit_exceeded": ("rate_limit", True),
    "rate_limit_error": ("rate_limit", True),
    "insufficient_quota": ("rate_limit", False),
    "server_error": ("server_error", True),
    "api_error": ("server_error", True),
    "overloaded_error": ("overloaded", True),
    "invalid_request_error": ("bad_request", False),
    "authentication_error": ("authentication", False),
    "permission_error": ("permission_denied", False),
    "not_found_error": ("not_found", False),
    "timeout": ("timeout", True),
    "timeout_error": ("timeout", True),
    "request_too_large": ("bad_request", False),
    "billing_error": ("permission_denied", False),
}


def stream_error(error: Any) -> ModelError:
    """The `ModelError` for an ``{"error": ...}`` object sent inside the stream."""
    message = error_detail({"error": error}, str(error))
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            return status_error(code, message)
        for key in (code, error.get("type")):
            if isinstance(key, str) and key in _ERROR_TYPES:
                mapped, retryable = _ERROR_TYPES[key]
                return ModelError(message, code=mapped, retryable=retryable)
    return ModelError(message, code="model_error", retryable=False)


def transport_error(exc: Exception) -> ModelError | None:
    """The `ModelError` for an HTTP-transport exception raised while reading a body, or None.

    Reading the body directly (not through the SDK's stream) surfaces the transport's own
    exceptions: httpx (or the SDKs' httpx2) errors, and AnyIO / TLS failures.
    """
    for name in ("httpx2", "httpx"):
        http = sys.modules.get(name)
        if http is None:
            continue
        if isinstance(exc, http.TimeoutException):
            return ModelError(
                f"timed out reading the stream: {exc}", code="timeout", retryable=True
            )
        if isinstance(exc, http.RequestError):
            return ModelError(
                f"connection lost while streaming: {exc}", code="connection_error", retryable=True
            )
    anyio = sys.modules.get("anyio")
    if isinstance(exc, ssl.SSLError) or (
        anyio is not None and isinstance(exc, anyio.EndOfStream | anyio.BrokenResourceError)
    ):
        return ModelError(f"connection error: {exc!r}", code="connection_error", retryable=True)
    return None
