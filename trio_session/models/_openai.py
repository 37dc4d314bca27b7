"""OpenAIModel: Chat Completions streaming through the official ``openai`` SDK.

Works with OpenAI and with every server that speaks the Chat Completions wire format
(vLLM, Ollama, llama.cpp, LiteLLM, ...). The SDK is an optional extra
(``pip install 'trio-session[openai]'``) and is imported only when a model is built.

As with every `SDKModel`, the SDK builds, authenticates and sends the request and turns
HTTP error statuses into exceptions, while the adapter reads the server-sent events of
the response itself, so that closing the stream closes the HTTP response at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ModelError
from .._messages import ContentBlock, ImageBlock, Message, ToolResultBlock, ToolUseBlock
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
    ToolSpec,
    UsageChunk,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["OpenAIModel"]

_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


class OpenAIModel(_sdk.SDKModel["AsyncOpenAI"]):
    """A model served through the OpenAI Chat Completions API, streamed.

    Each request is sent with ``stream=True`` and ``stream_options={"include_usage": True}``;
    text, reasoning (the ``reasoning_content``, ``reasoning`` and ``reasoning_details`` deltas
    of OpenAI-compatible servers: DeepSeek, llama.cpp, OpenRouter, Snowflake, ...), and tool
    calls stream as chunks, with each tool call's arguments assembled from their fragments.

    Settings: keyword arguments given here, then ``ModelRequest.settings`` (which win), are
    passed to ``chat.completions.create``: ``temperature``, ``max_completion_tokens``,
    ``tool_choice``, ``timeout``, ``extra_headers``... A setting that ``create`` does not know
    (``top_k``, Ollama's ``options``) is sent in the request body (``extra_body``).
    ``max_retries`` applies the SDK's retry setting to this model's requests.

    Retries: a client this model builds has the SDK's own retries off (``max_retries=0``), so
    the agent's `RetryPolicy` is the one retry layer and every retry shows as ``tick_retry``;
    a failure, before or during the stream, is raised as a `ModelError` whose ``retryable``
    says whether trying again may help and whose ``retry_after`` carries the server's
    ``retry-after`` header. A ``client`` given by the caller keeps its own retry settings, and
    the ``max_retries`` setting turns the SDK's retries back on for this model's requests.

    Usage: ``prompt_tokens`` (cached tokens included) is ``input_tokens``;
    ``prompt_tokens_details.cached_tokens`` (DeepSeek: ``prompt_cache_hit_tokens``) is
    ``cache_read_tokens``. A server that sends no usage streams no `UsageChunk`, and the tick's
    `Usage` counts it in ``unreported_ticks`` instead of reporting zero tokens. OpenAI caches
    prompts on its own; route requests that share a prefix to the same cache with the
    ``prompt_cache_key`` setting (``OpenAIModel(..., prompt_cache_key="my-app")``).

    Messages: the system prompt (``request.system`` and the text of any ``system`` message)
    becomes one leading message of role ``system_role``; images are ``image_url`` parts; JSON
    blocks are sent as JSON text; reasoning blocks are dropped (Chat Completions has no input
    for them); an assistant message with tool calls and no text has ``content: ""`` (the one
    form that OpenAI, vLLM, Ollama, llama.cpp and llama-cpp-python all accept: some refuse
    ``null``, some crash on a missing key), and a tool call whose arguments were not valid JSON
    (cut off by the token limit) goes back as ``{}``, its raw text being quoted in its error
    result (vLLM parses the arguments of every assistant tool call);
    each tool result is a ``role: "tool"`` message with its ``tool_call_id`` (an error result
    starts with ``"Error: "``, images returned by tools follow in a user message); ``event``
    messages are sent as user text prefixed with ``"[event] "``.

    Errors: HTTP and connection failures become `ModelError` with a stable ``code``:
    ``rate_limit`` (429), ``overloaded`` (503, 529), ``server_error`` (5xx), ``timeout``,
    ``connection_error`` (retryable), ``insufficient_quota`` (a 429 for an exhausted quota),
    ``authentication`` (401), ``permission_denied`` (403), ``not_found`` (404),
    ``bad_request`` (other 4xx) (not retryable).

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
        system_role: The role the system prompt is sent as: ``"developer"`` for reasoning
            models that refuse ``system`` (o1 and its kin answer it with HTTP 400).
        native_output: Ask for an agent's ``output_type`` with ``response_format``
            (``json_schema``); False asks by instruction, for servers without it.
        **settings: Default request settings.

    Raises:
        ModuleNotFoundError: The ``openai`` SDK is not installed.
        ValueError: No API key could be found, a reserved setting was given, or
            ``system_role`` is neither ``"system"`` nor ``"developer"``.
        TypeError: ``client`` is not an ``openai.AsyncOpenAI``.

    Example:
        >>> model = OpenAIModel(
        ...     "llama3.1", base_url="http://localhost:11434/v1", api_key="ollama",
        ...     temperature=0.2,
        ... )  # doctest: +SKIP
        >>> async with open_session(Agent(model, tools=[get_weather])) as session:  # doctest: +SKIP
        ...     print(await session.send("Weather in Paris?").result)
    """

    _sdk_name = "openai"
    _client_class = "AsyncOpenAI"
    _sdk_error = "OpenAIError"
    _reserved_settings = frozenset({"messages", "stream", "tools"})

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: AsyncOpenAI | None = None,
        system_role: Literal["system", "developer"] = "system",
        native_output: bool = True,
        **settings: Any,
    ) -> None:
        self.native_output = native_output
        if system_role not in ("system", "developer"):
            raise ValueError(
                f"OpenAIModel.system_role must be 'system' or 'developer', got {system_role!r}"
            )
        self.system_role = system_role
        super().__init__(
            model,
            client=client,
            connection={"base_url": base_url, "api_key": api_key},
            settings=settings,
        )

    def _build_client(self, sdk: ModuleType, connection: Mapping[str, str | None]) -> AsyncOpenAI:
        try:
            # RetryPolicy is the one retry layer: the SDK's own retries are invisible.
            client: AsyncOpenAI = sdk.AsyncOpenAI(**connection, max_retries=0)
        except sdk.OpenAIError as exc:
            raise ValueError(
                "OpenAIModel needs an API key: pass api_key=... or set OPENAI_API_KEY "
                f"(servers that ignore keys accept any placeholder): {exc}"
            ) from exc
        return client

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(request.system, request.messages, self.system_role),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = [_function(spec) for spec in request.tools]
        return kwargs

    def output_settings(self, name: str, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        """The request settings that ask for JSON matching ``schema`` natively, or None.

        Used by the engine for an ``output_type``: ``response_format`` with a ``json_schema``
        (not strict: optional fields stay optional). Servers without it: build the model with
        ``native_output=False``, and the engine asks by instruction instead.
        """
        if not self.native_output:
            return None
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": dict(schema), "strict": False},
            }
        }

    def _resource(self, client: AsyncOpenAI) -> Any:
        return client.chat.completions

    def _new_state(self) -> _StreamState:
        return _StreamState()


# -- the request ----------------------------------------------------------------------------


def to_openai_messages(
    system: str | None, messages: tuple[Message, ...], system_role: str = "system"
) -> list[dict[str, Any]]:
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
            text = _sdk.plain_text(message.content)
            if text:
                system_parts.append(text)
        elif role in ("user", "event"):
            content = _user_content(message.content, "[event] " if role == "event" else "")
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
        out.insert(0, {"role": system_role, "content": "\n\n".join(system_parts)})
    return out


def _function(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": dict(spec.input_schema),
        },
    }


def _image_part(block: ImageBlock) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": block.source}}


def _user_content(blocks: tuple[ContentBlock, ...], prefix: str = "") -> str | list[dict[str, Any]]:
    parts = _sdk.content_parts(blocks, _image_part, prefix)
    # Plain strings where possible: some compatible servers accept nothing else.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _assistant_message(blocks: tuple[ContentBlock, ...]) -> dict[str, Any] | None:
    text = _sdk.plain_text(blocks)
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
    entry: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        entry["tool_calls"] = calls
    return entry


def _arguments_text(block: ToolUseBlock) -> str:
    if INVALID_JSON_KEY in block.input:
        # Servers parse these (vLLM refuses text that is not JSON); the raw text is quoted
        # in the call's error result.
        return "{}"
    return json.dumps(block.input, ensure_ascii=False)


def _tool_result_content(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for item in block.content:
        if isinstance(item, ImageBlock):
            images.append(_image_part(item))
        else:
            text = _sdk.block_text(item)
            if text:
                texts.append(text)
    text = "\n".join(texts) or _sdk.NO_OUTPUT
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
    """Turns the events of a stream (``chat.completion.chunk`` objects, ``[DONE]``) into chunks."""

    __slots__ = ("_by_index", "_calls", "done", "events", "finish_reason", "refused", "usage")

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self.done = False
        self.events = 0
        self.finish_reason: str | None = None
        self.refused = False
        self.usage: Mapping[str, Any] | None = None

    def feed(self, data: str) -> list[ModelChunk]:
        if self.done:
            # Nothing after [DONE] counts.
            return []
        if data.startswith("[DONE]"):
            self.done = True
            return []
        event = _sdk.load_event(data)
        self.events += 1
        if event.get("error"):
            raise _sdk.stream_error(event["error"])
        out: list[ModelChunk] = []
        usage = event.get("usage")
        if usage:
            self.usage = usage
        for choice in event.get("choices") or ():
            # n > 1 is not supported: the session keeps one reply per tick.
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = _reasoning(delta)
            if reasoning:
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
            arguments = _sdk.parse_arguments("".join(call.arguments))
            out.append(ToolCallChunk(call.id, call.name, arguments))
        if self.usage:
            out.append(_usage(self.usage))
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


def _reasoning(delta: Mapping[str, Any]) -> str:
    """The reasoning text of a delta, in whichever field the server puts it.

    ``reasoning_content`` (DeepSeek, llama.cpp, vLLM, Z.ai), ``reasoning`` (OpenRouter,
    Ollama), or only the ``reasoning_details`` list (Snowflake; OpenRouter repeats its
    ``reasoning`` there, so the list is read only when the plain fields are empty).

    Example:
        >>> _reasoning({"reasoning_details": [{"type": "reasoning.text", "text": "15"}]})
        '15'
    """
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    parts: list[str] = []
    for detail in delta.get("reasoning_details") or ():
        if not isinstance(detail, dict):
            continue
        # reasoning.encrypted carries no text; Chat Completions has no way to send it back.
        for key in ("text", "summary"):
            value = detail.get(key)
            if isinstance(value, str):
                parts.append(value)
    return "".join(parts)


def _usage(usage: Mapping[str, Any]) -> UsageChunk:
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return UsageChunk(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        cache_read_tokens=cached or _int(usage.get("prompt_cache_hit_tokens")),
    )
