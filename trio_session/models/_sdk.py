"""What the provider adapters share: a base class for models behind an official SDK client.

`SDKModel` owns the parts that do not depend on the provider: client ownership and closing,
per-``max_retries`` client copies, settings merging and checking, and the streaming loop. The
loop lets the SDK build, authenticate and send the request (retrying only on a client the user
configured so: the agent's RetryPolicy is the retry layer) and map HTTP error statuses
to exceptions, but reads the server-sent events of the response body itself (`SSEDecoder`):
the SDKs' own stream iterators leave async generators unfinished when a stream ends early,
which trio reports as a ResourceWarning and closes only at garbage collection; reading the
body here lets `close_body` close the HTTP response at once, and skips building a pydantic
object per event.

A subclass names its SDK and says how to build a client, a request and a stream state; the
SDK is imported only when a model is built, so this module (and each adapter) imports
without it.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import importlib
import inspect
import json
import math
import ssl
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import trio

from .._errors import ModelError
from .._messages import ContentBlock, ImageBlock, JsonBlock, TextBlock
from ._base import INVALID_JSON_KEY, ModelChunk, ModelRequest, StopChunk

__all__ = [
    "CLOSE_TIMEOUT",
    "DRAIN_TIMEOUT",
    "MAX_FOLLOW_UPS",
    "NO_OUTPUT",
    "SDKModel",
    "SSEDecoder",
    "StreamState",
    "block_text",
    "close_body",
    "content_parts",
    "create_parameters",
    "error_detail",
    "import_sdk",
    "load_event",
    "parse_arguments",
    "plain_text",
    "retry_after",
    "status_error",
    "stream_error",
    "transport_error",
]

# Closing a response is a few socket operations; the bound only guards against a wedged peer.
CLOSE_TIMEOUT = 5.0
# After the last event the server normally ends the body at once; reading that end lets the
# connection be reused. A server that keeps the body open longer gets its connection closed.
DRAIN_TIMEOUT = 0.5
# How many times one reply may be continued (Anthropic's pause_turn) before it stops as is.
MAX_FOLLOW_UPS = 8
# What a tool result without content is sent as: the APIs refuse empty text.
NO_OUTPUT = "(no output)"


def import_sdk(module: str, owner: str) -> ModuleType:
    """Import an adapter's SDK, or say which extra installs it.

    Raises:
        ModuleNotFoundError: ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{owner} needs the {module} SDK, which is not installed: "
            f"pip install 'trio-session[{module}]'",
            name=module,
        ) from exc


@functools.cache
def create_parameters(create: Callable[..., object]) -> frozenset[str]:
    """The keyword arguments an SDK's ``create`` method accepts (the rest go in ``extra_body``)."""
    return frozenset(inspect.signature(create).parameters) - {"self"}


class SDKClient(Protocol):
    """The little of an SDK's async client (``AsyncOpenAI``, ``AsyncAnthropic``) used here."""

    @property
    def base_url(self) -> object: ...

    async def close(self) -> None: ...

    def with_options(self, *, max_retries: int) -> Self: ...


ClientT = TypeVar("ClientT", bound=SDKClient)


class StreamState(Protocol):
    """Turns the ``data`` of a response's server-sent events into model chunks."""

    @property
    def done(self) -> bool:
        """Whether the stream's last event has arrived (the rest of the body is not read)."""
        ...

    def feed(self, data: str) -> list[ModelChunk]:
        """The chunks for one event's ``data``; raises `ModelError` for an error event."""
        ...

    def finish(self) -> list[ModelChunk]:
        """The closing chunks once the body has ended; raises `ModelError` if it was cut short."""
        ...


class SDKModel(Generic[ClientT]):
    """Base class of the models served through a provider's official SDK client.

    Subclasses set the class attributes naming their SDK and implement `_build_client`,
    `_request_kwargs`, `_resource` and `_new_state`.

    Settings: keyword arguments given to the model, then ``ModelRequest.settings`` (which win),
    are passed to the SDK's ``create``; a setting that ``create`` does not know is sent in the
    request body (``extra_body``); ``max_retries`` applies the SDK's retry setting.

    Lifetime: a model that built its own client owns it and its pooled connections; close it
    with ``await model.aclose()`` or ``async with model:``. A client given by the caller stays
    the caller's: `aclose` leaves it open.
    """

    _sdk_name: ClassVar[str]
    """The SDK's module, which is also the name of the package extra that installs it."""
    _client_class: ClassVar[str]
    """The SDK's async client class, which a given ``client`` must be an instance of."""
    _sdk_error: ClassVar[str]
    """The base class of the SDK's exceptions."""
    _reserved_settings: ClassVar[frozenset[str]]
    """Request arguments the adapter builds from the request; a setting may not replace them."""

    name: str
    model: str
    client: ClientT
    settings: dict[str, Any]

    def __init__(
        self,
        model: str,
        *,
        client: ClientT | None,
        connection: Mapping[str, str | None],
        settings: dict[str, Any],
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, str) or not model:
            raise TypeError(f"{owner}.model must be a non-empty str, got {model!r}")
        sdk = import_sdk(self._sdk_name, owner)
        self._check_settings(settings, f"{owner} settings")
        if client is not None:
            if any(value is not None for value in connection.values()):
                raise ValueError(f"{owner}: pass either client or {'/'.join(connection)}, not both")
            if not isinstance(client, getattr(sdk, self._client_class)):
                raise TypeError(
                    f"{owner}.client must be an {self._sdk_name}.{self._client_class} "
                    f"(the async client), got {type(client).__name__}"
                )
            self._owns_client = False
        else:
            client = self._build_client(sdk, connection)
            self._owns_client = True
        self.name = model
        self.model = model
        self.client = client
        self.settings = dict(settings)
        self._retry_clients: dict[int, ClientT] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={str(self.client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the HTTP client, if this model built it (a given ``client`` stays open)."""
        if self._owns_client:
            # Shielded: `async with model:` left by a cancellation must still close the pool.
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelChunk, None]:
        """Stream the reply to ``request`` as chunks.

        Raises:
            ModelError: The request failed, the connection broke, or the server reported an
                error in the stream.
        """
        kwargs, max_retries = self._prepare(request)
        client = self.client if max_retries is None else self._with_retries(max_retries)
        follow_ups = 0
        while True:
            state = self._new_state()
            # ASYNC119 (a yield inside a context manager): the engine closes every model
            # stream with aclose() as soon as it stops reading (shielded and bounded, in
            # _engine/_ticks.py), so the context managers exit then, not at garbage collection.
            async with contextlib.aclosing(self._exchange(client, kwargs, state)) as chunks:
                async for chunk in chunks:
                    yield chunk  # noqa: ASYNC119
            stop: ModelChunk | None = None
            for chunk in state.finish():
                if type(chunk) is StopChunk:
                    stop = chunk
                else:
                    yield chunk
            follow_up = self._follow_up(kwargs, state) if follow_ups < MAX_FOLLOW_UPS else None
            if follow_up is None:
                if stop is not None:
                    yield stop
                return
            kwargs = follow_up
            follow_ups += 1

    async def _exchange(
        self, client: ClientT, kwargs: dict[str, Any], state: StreamState
    ) -> AsyncGenerator[ModelChunk, None]:
        """One request and its response body, fed to ``state`` (`StreamState.finish` not run)."""
        try:
            create = self._resource(client).with_streaming_response.create
            # ASYNC119: closed by `stream`'s aclosing(), which the engine's aclose() reaches.
            async with create(**kwargs) as response:
                http_response = response.http_response
                body = http_response.aiter_bytes()
                decoder = SSEDecoder()
                try:
                    async for raw in body:
                        for data in decoder.feed(raw):
                            for chunk in state.feed(data):
                                yield chunk  # noqa: ASYNC119
                        if state.done:
                            break
                    else:
                        for data in decoder.flush():
                            for chunk in state.feed(data):
                                yield chunk  # noqa: ASYNC119
                finally:
                    # Shielded: an abort must still close the connection; bounded, against
                    # a wedged peer.
                    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                        await close_body(body, http_response, graceful=state.done)
        except ModelError:
            raise
        except Exception as exc:
            error = self._to_model_error(exc)
            if error is None:
                raise
            raise error from exc

    # -- what a subclass provides -----------------------------------------------------------

    def _build_client(self, sdk: ModuleType, connection: Mapping[str, str | None]) -> ClientT:
        """Build the client this model owns, from the SDK and the connection arguments.

        Raises:
            ValueError: The client has no credentials.
        """
        raise NotImplementedError

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """The arguments of ``create`` that the adapter builds from the request."""
        raise NotImplementedError

    def _resource(self, client: ClientT) -> Any:
        """The SDK resource whose ``create`` sends a request (``client.chat.completions``)."""
        raise NotImplementedError

    def _new_state(self) -> StreamState:
        """A fresh `StreamState` for one response."""
        raise NotImplementedError

    def _follow_up(self, kwargs: dict[str, Any], state: StreamState) -> dict[str, Any] | None:
        """The arguments of a request that continues the finished response, or None.

        Only a response the provider paused mid-turn (Anthropic's ``pause_turn``) has one.
        """
        return None

    # -- shared machinery -------------------------------------------------------------------

    def _check_settings(self, settings: Mapping[str, Any], where: str) -> None:
        for key in settings:
            if key in self._reserved_settings:
                raise ValueError(
                    f"{where} must not set {key!r}: {type(self).__name__} builds it from the "
                    "request"
                )
        max_retries = settings.get("max_retries")
        if max_retries is not None and (
            not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
        ):
            raise ValueError(f"{where}: max_retries must be an int >= 0, got {max_retries!r}")

    def _prepare(self, request: ModelRequest) -> tuple[dict[str, Any], int | None]:
        settings = {**self.settings, **request.settings}
        self._check_settings(settings, "ModelRequest.settings")
        max_retries = settings.pop("max_retries", None)
        kwargs = self._request_kwargs(request)
        known = create_parameters(type(self._resource(self.client)).create)
        extra_body = dict(settings.pop("extra_body", None) or {})
        for key, value in settings.items():
            if key in known:
                kwargs[key] = value
            else:
                extra_body[key] = value
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs, max_retries

    def _with_retries(self, max_retries: int) -> ClientT:
        # A copy of the client that shares its connection pool; made once per value.
        client = self._retry_clients.get(max_retries)
        if client is None:
            client = self._retry_clients[max_retries] = self.client.with_options(
                max_retries=max_retries
            )
        return client

    def _to_model_error(self, exc: Exception) -> ModelError | None:
        """The `ModelError` for an SDK or transport exception, or None for anything else."""
        sdk = sys.modules.get(self._sdk_name)
        if sdk is not None:
            if isinstance(exc, sdk.APIStatusError):
                error = status_error(exc.status_code, error_detail(exc.body, exc.message))
                kind = _error_kind(exc.body)
                if kind is not None and error.retryable and not kind[1]:
                    # A status that is usually transient, with a body that says it is not
                    # (a 429 for an exhausted quota).
                    error.code, error.retryable = kind
                if error.retryable:
                    error.retry_after = retry_after(exc.response.headers)
                return error
            if isinstance(exc, sdk.APITimeoutError):
                # The SDK's own message adds nothing but length.
                return ModelError("request timed out", code="timeout", retryable=True)
            if isinstance(exc, sdk.APIConnectionError):
                cause = exc.__cause__ or exc
                return ModelError(
                    f"connection error: {cause}", code="connection_error", retryable=True
                )
            if isinstance(exc, getattr(sdk, self._sdk_error)):
                return ModelError(str(exc), code="model_error", retryable=False)
        return transport_error(exc)


# -- the request ----------------------------------------------------------------------------


def block_text(block: ContentBlock) -> str | None:
    """The text a text or JSON block is sent as; None for the other blocks."""
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, JsonBlock):
        return json.dumps(block.data, ensure_ascii=False, default=str)
    return None


def plain_text(blocks: tuple[ContentBlock, ...]) -> str:
    """The text of ``blocks``, joined (images and reasoning left out)."""
    return "".join(t for t in map(block_text, blocks) if t)


def content_parts(
    blocks: tuple[ContentBlock, ...],
    image: Callable[[ImageBlock], dict[str, Any]],
    prefix: str = "",
) -> list[dict[str, Any]]:
    """The ``{"type": "text"}`` and image parts of user content, with ``prefix`` put first.

    Empty text is left out (the APIs refuse empty text parts); ``image`` builds the
    provider's image part.

    Example:
        >>> def url(block):
        ...     return {"type": "image", "url": block.source}
        >>> content_parts((TextBlock("timer fired"),), url, prefix="[event] ")
        [{'type': 'text', 'text': '[event] timer fired'}]
        >>> content_parts((ImageBlock("https://a.test/cat.png"),), url, prefix="[event] ")
        [{'type': 'text', 'text': '[event]'}, {'type': 'image', 'url': 'https://a.test/cat.png'}]
    """
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ImageBlock):
            parts.append(image(block))
        else:
            text = block_text(block)
            if text:
                parts.append({"type": "text", "text": text})
    if prefix:
        if parts and parts[0]["type"] == "text":
            parts[0] = {"type": "text", "text": prefix + parts[0]["text"]}
        else:
            parts.insert(0, {"type": "text", "text": prefix.rstrip()})
    return parts


# -- the response body ----------------------------------------------------------------------


class SSEDecoder:
    """Incremental server-sent-events decoder that keeps only the ``data`` of each event.

    Example:
        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"event: ping\\ndata: {}\\n\\ndata: [DO")
        ['{}']
        >>> decoder.feed(b"NE]\\n"), decoder.flush()
        ([], ['[DONE]'])
    """

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


def load_event(data: str) -> dict[str, Any]:
    """Parse an event's ``data`` as a JSON object.

    Raises:
        ModelError: The data is not JSON, or not an object.
    """
    try:
        event = json.loads(data)
    except ValueError:
        raise ModelError(
            f"the server sent an event that is not JSON: {data[:200]!r}", code="model_error"
        ) from None
    if not isinstance(event, dict):
        raise ModelError(f"the server sent an unexpected event: {event!r:.200}")
    return event


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
    """Finish reading ``body`` and close ``response``.

    The body iterator is a stack of async generators (httpx, httpcore). Closing only the
    outermost one would leave the inner ones for the garbage collector (trio warns) and the
    connection open until then; instead the iterator is driven once more inside a cancelled
    scope, so the cancellation surfaces at the socket read and unwinds every layer — the same
    path a cancelled read takes, which closes the connection.

    Call it under a shielded, bounded scope (``trio.move_on_after(CLOSE_TIMEOUT,
    shield=True)``), so that it runs even inside a cancelled scope.
    """
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


# -- errors ---------------------------------------------------------------------------------


def status_error(status: int, detail: str) -> ModelError:
    """The `ModelError` for an HTTP error status.

    Example:
        >>> error = status_error(529, "Overloaded")
        >>> (str(error), error.code, error.retryable)
        ('HTTP 529: Overloaded', 'overloaded', True)
    """
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
    """The message of an error body (``{"error": {"message": ...}}`` and its variants)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return fallback


# Error types and codes of OpenAI, Anthropic and OpenAI-compatible servers.
_ERROR_TYPES = {
    "rate_limit_exceeded": ("rate_limit", True),
    "rate_limit_error": ("rate_limit", True),
    "insufficient_quota": ("insufficient_quota", False),
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


def _error_kind(body: Any) -> tuple[str, bool] | None:
    """The code and retryability that an error body's ``code`` or ``type`` names, if known."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        for key in (error.get("code"), error.get("type")):
            if isinstance(key, str) and key in _ERROR_TYPES:
                return _ERROR_TYPES[key]
    return None


def stream_error(error: Any) -> ModelError:
    """The `ModelError` for an ``{"error": ...}`` object sent inside the stream.

    Example:
        >>> stream_error({"type": "overloaded_error", "message": "Overloaded"}).code
        'overloaded'
    """
    message = error_detail({"error": error}, str(error))
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            return status_error(code, message)
    kind = _error_kind({"error": error})
    if kind is not None:
        return ModelError(message, code=kind[0], retryable=kind[1])
    return ModelError(message, code="model_error", retryable=False)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The seconds a response's ``retry-after-ms`` or ``retry-after`` header asks to wait.

    Example:
        >>> retry_after({"retry-after": "7"}), retry_after({"retry-after-ms": "250"})
        (7.0, 0.25)
        >>> retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
        True
    """
    with contextlib.suppress(KeyError, ValueError):
        value = float(headers["retry-after-ms"]) / 1000
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = when.timestamp() - time.time()
    return max(value, 0.0) if math.isfinite(value) else None


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
