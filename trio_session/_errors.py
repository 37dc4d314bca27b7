"""The exception hierarchy of trio-session.

Every error the library raises on purpose derives from `TrioSessionError`.
None of them is an exception group: errors that other libraries report as
groups (cattrs' validation errors, trio's nursery errors) are unwrapped or
wrapped before they reach the caller.
"""

from __future__ import annotations

__all__ = [
    "EventsLagged",
    "ExecutionAborted",
    "ExecutionCancelled",
    "ExecutionTimeout",
    "InvalidOutput",
    "InvalidToolArguments",
    "MaxSpawnDepth",
    "ModelError",
    "SessionClosed",
    "SnapshotError",
    "StoreError",
    "TrioSessionError",
    "UnknownTool",
    "UnknownToolUse",
]


class TrioSessionError(Exception):
    """Base class of every error that trio-session raises on purpose.

    Example:
        >>> try:
        ...     raise SessionClosed("session 'x' is closed")
        ... except TrioSessionError as exc:
        ...     print(type(exc).__name__)
        SessionClosed
    """


class SessionClosed(TrioSessionError):
    """Raised by every method of a session after it was closed.

    A session closes when its ``open_session`` block is left or when
    ``await session.aclose()`` was called; it never reopens.
    """


class ExecutionAborted(TrioSessionError):
    """Raised by ``await handle.result`` when the execution was aborted.

    An execution is aborted by ``handle.abort()``, ``session.interrupt()`` or a
    timeout (then the subclass `ExecutionTimeout` is raised).

    Attributes:
        reason: The reason given to ``abort()``, ``"timeout"``, or None.
    """

    def __init__(self, reason: str | None = None, message: str | None = None) -> None:
        self.reason = reason
        if message is None:
            message = "execution aborted" + (f": {reason}" if reason else "")
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason, str(self)))


class ExecutionTimeout(ExecutionAborted, TimeoutError):
    """Raised by ``await handle.result`` when ``with_timeout`` ended the execution.

    It is both an `ExecutionAborted` (with ``reason == "timeout"``) and a
    built-in `TimeoutError`.
    """

    def __init__(self, reason: str | None = "timeout", message: str | None = None) -> None:
        super().__init__(reason, message or "execution timed out")


class ExecutionCancelled(TrioSessionError):
    """Raised by ``await handle.result`` when the execution was cancelled from outside.

    Outside means: the session closed, an enclosing cancel scope was cancelled,
    or the parent execution of a spawned child ended.

    Attributes:
        reason: What cancelled it, when known.
    """

    def __init__(self, reason: str | None = None, message: str | None = None) -> None:
        self.reason = reason
        if message is None:
            message = "execution cancelled" + (f": {reason}" if reason else "")
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.reason, str(self)))


class ModelError(TrioSessionError):
    """The model provider reported an error.

    Raised by ``await handle.result`` when the execution ended with status
    ``"error"``: a rate limit, an overload, a bad request, a dropped
    connection, or an ``ErrorChunk`` in the model's stream.

    Args:
        message: What the provider said.
        code: A stable machine-readable code, such as ``"rate_limit"``.
        retryable: Whether the same request may succeed later.
        retry_after: How many seconds the provider asked to wait before trying again (its
            ``retry-after`` header), when it said.

    Example:
        >>> err = ModelError("slow down", code="rate_limit", retryable=True, retry_after=2.0)
        >>> (err.code, err.retryable, err.retry_after)
        ('rate_limit', True, 2.0)
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "model_error",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_model_error,
            (type(self), self.message, self.code, self.retryable, self.retry_after),
        )


def _rebuild_model_error(
    cls: type[ModelError],
    message: str,
    code: str,
    retryable: bool,
    retry_after: float | None = None,
) -> ModelError:
    return cls(message, code=code, retryable=retryable, retry_after=retry_after)


class InvalidOutput(TrioSessionError):
    """The model's final answer did not match the execution's ``output_type``.

    Raised by ``await handle.result`` (status ``"failed"``) after the model was asked once
    more, with the problems listed, and its second answer did not match either.

    Attributes:
        errors: The problems with the last answer, each naming its path.
    """

    def __init__(self, errors: list[str] | tuple[str, ...], message: str | None = None) -> None:
        self.errors = tuple(errors)
        if message is None:
            message = "the model's answer is not a valid output: " + "; ".join(self.errors)
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errors, str(self)))


class UnknownTool(TrioSessionError, LookupError):
    """``session.dispatch()`` was given a tool name the agent does not have."""


class UnknownToolUse(TrioSessionError, LookupError):
    """``submit_tool_result()`` was given an id with no pending confirmation.

    Either the id was never asked for, or it was answered already.
    """


class InvalidToolArguments(TrioSessionError, ValueError):
    """Arguments do not match a tool's input schema.

    Raised by ``session.dispatch()`` and by ``submit_tool_result()`` when the
    modified arguments are invalid (the confirmation then stays pending).
    The message names every offending field.
    """


class EventsLagged(TrioSessionError):
    """A subscriber's next event was dropped by the retention bound.

    Raised once from ``receive()``; the subscription then continues at the
    oldest event still held.

    Attributes:
        missed: How many events this subscriber missed.
    """

    def __init__(self, missed: int) -> None:
        self.missed = missed
        super().__init__(f"subscriber lagged behind and missed {missed} event(s)")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.missed,))


class _SessionError(TrioSessionError):
    """An error about one session's stored data; the message starts with its id."""

    session_id: str

    def __init__(self, session_id: str, message: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id!r}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        prefix = f"session {self.session_id!r}: "
        return (type(self), (self.session_id, str(self).removeprefix(prefix)))


class SnapshotError(_SessionError):
    """A stored session snapshot cannot be read.

    Raised when the snapshot comes from a newer format version or is corrupt.
    The stored data is left untouched.

    Attributes:
        session_id: The session whose snapshot failed to load.
    """


class StoreError(_SessionError):
    """Saving the session to its store failed, after bounded retries.

    The execution that was saving ends ``failed`` with this error; its
    ``__cause__`` is the store's own exception (a `TimeoutError` when the
    store took longer than the bound). The session's in-memory state is kept,
    and its next save writes all of it.

    Attributes:
        session_id: The session that could not be saved.
    """


class MaxSpawnDepth(TrioSessionError):
    """``spawn()`` would nest child sessions deeper than the limit of 10."""


class SerializationError(TrioSessionError, ValueError):
    """``from_json`` was given text that is not a valid document of the class.

    The message names the path of the offending field (``$.content[0].type``).
    """
