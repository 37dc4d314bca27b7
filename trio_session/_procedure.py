"""Procedures: async callables with middleware, timeouts, context and metadata.

``Session.send``, ``Session.render`` and ``Session.spawn`` are procedures, and
``@procedure`` turns any function into one. A procedure is immutable: ``use``,
``with_timeout``, ``with_context`` and ``with_metadata`` each return a new one.

Calling a procedure returns a `ProcedureCall`, which behaves like a coroutine
(await it exactly once) but is lazy: nothing runs until it is awaited, and an
unawaited call is simply garbage, with no "never awaited" warning.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from contextvars import ContextVar
from types import CoroutineType, MappingProxyType, TracebackType
from typing import (
    Any,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypeVar,
    cast,
    overload,
)

import attrs
import trio

from ._handle import ExecutionHandle, SessionExecutionHandle, outcome_of
from ._result import SendResult

__all__ = [
    "Invocation",
    "Middleware",
    "Next",
    "Procedure",
    "ProcedureCall",
    "current_context",
    "procedure",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "trio_session.procedure_context", default=_EMPTY
)


def current_context() -> Mapping[str, Any]:
    """The values set by ``with_context`` on the procedures now running.

    The mapping is read-only. Inside nested procedures the values merge, the
    innermost winning. Tasks started from inside a procedure call (in a
    nursery) see the values of that call, because trio copies the spawner's
    context into new tasks. Outside every ``with_context`` call it is empty.

    Example:
        >>> @procedure
        ... async def whoami() -> str:
        ...     return current_context()["user"]
        >>> as_alice = whoami.with_context(user="alice")
        >>> trio.run(as_alice)
        'alice'
        >>> dict(current_context())
        {}
    """
    return _context.get()


@attrs.frozen
class Invocation:
    """One call of a procedure, as a middleware sees it.

    Attributes:
        name: The procedure's name.
        args: The positional arguments (without a bound instance; see `Procedure`).
        kwargs: The keyword arguments, read-only.
        metadata: The procedure's ``with_metadata`` values, read-only.
        context: `current_context()` for this call, read-only.
    """

    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    metadata: Mapping[str, Any] = _EMPTY
    context: Mapping[str, Any] = _EMPTY


class Next:
    """The rest of the middleware chain, handed to each middleware.

    ``await next()`` passes the call on unchanged. ``await next(*args, **kwargs)``
    passes it on with these arguments *instead*: positional and keyword
    arguments are replaced together, so ``next(x=1)`` drops the positional
    ones (write ``next(*invocation.args, x=1)`` to keep them). The inner
    middleware then see an `Invocation` with the new arguments.

    ``next`` may be awaited more than once (a retry middleware does); each
    time runs the inner chain, down to the function, again. Not calling it
    short-circuits the call: the middleware's return value is the result.

    Created by the library; not meant to be built by users.
    """

    __slots__ = ("_index", "_invocation", "_procedure")

    def __init__(self, procedure: Procedure[..., Any], index: int, invocation: Invocation) -> None:
        self._procedure = procedure
        self._index = index
        self._invocation = invocation

    def __repr__(self) -> str:
        return f"<Next of procedure {self._procedure.name!r}>"

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        invocation = self._invocation
        if args or kwargs:
            invocation = attrs.evolve(invocation, args=args, kwargs=MappingProxyType(kwargs))
        return await self._procedure._step(self._index, invocation)


Middleware: TypeAlias = Callable[[Invocation, Next], Awaitable[Any]]
"""``async def middleware(invocation: Invocation, next: Next) -> Any``.

A sync callable is accepted too: a returned awaitable (such as ``next()``
itself) is awaited, any other value is the result.
"""


class Procedure(Generic[P, R]):
    """An async callable with middleware, a timeout, context and metadata.

    Wrap a sync or async function; calling the procedure returns a
    `ProcedureCall` to await. The derived procedures (``use``,
    ``with_timeout``, ``with_context``, ``with_metadata``) leave the original
    unchanged.

    As a class attribute (``@procedure`` on a method) it binds like a method:
    ``obj.method(x)`` calls the function with ``(obj, x)``. The instance is
    passed to the function but is not part of `Invocation.args`, so
    middleware see (and may replace) only the caller's arguments.

    A function that returns an awaitable (a sync function returning a
    coroutine, a ``functools.partial`` of an async function) has it awaited.

    For type checkers the procedure keeps the function's signature: ``P`` is
    its parameters and ``R`` its result (an async function's awaited result),
    so a call with wrong arguments is refused and awaiting a call gives ``R``.

    Args:
        fn: The function to run, sync or async.
        name: The procedure's name; the function's ``__name__`` by default.

    Raises:
        TypeError: ``fn`` is not callable, or ``name`` is not a str.
        ValueError: ``name`` is empty.

    Example:
        >>> async def log(invocation, next):
        ...     print("calling", invocation.name, invocation.args)
        ...     return await next()
        >>> async def add(a: int, b: int) -> int:
        ...     return a + b
        >>> logged_add = Procedure(add).use(log).with_timeout(5)
        >>> trio.run(logged_add, 1, 2)
        calling add (1, 2)
        3
    """

    @overload
    def __init__(
        self: Procedure[P, T], fn: Callable[P, Awaitable[T]], *, name: str | None = None
    ) -> None: ...

    @overload
    def __init__(self: Procedure[P, T], fn: Callable[P, T], *, name: str | None = None) -> None: ...

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"procedure needs a callable, got {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(name, str):
            raise TypeError(f"procedure name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("procedure name must not be empty")
        self._fn: Callable[..., Any] = fn
        self._name = name
        self._middleware: tuple[Middleware, ...] = ()
        self._timeout: float | None = None
        self._context: Mapping[str, Any] = _EMPTY
        self._metadata: Mapping[str, Any] = _EMPTY
        self._bound: tuple[Any, ...] = ()
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    @property
    def name(self) -> str:
        """The procedure's name, as middleware see it in `Invocation.name`."""
        return self._name

    def __repr__(self) -> str:
        return f"<Procedure {self._name!r}>"

    def _derive(self, **changes: Any) -> Procedure[P, R]:
        clone: Procedure[P, R] = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        for key, value in changes.items():
            setattr(clone, key, value)
        return clone

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Procedure[P, R]: ...

    @overload
    def __get__(
        self: Procedure[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> Procedure[P2, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Procedure[Any, R]:
        if instance is None:
            return self
        return self._derive(_bound=(instance, *self._bound))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ProcedureCall[R]:
        """Prepare a call; it runs when the returned `ProcedureCall` is awaited."""
        return ProcedureCall(self, args, kwargs)

    def use(self, *middleware: Middleware) -> Procedure[P, R]:
        """A new procedure with ``middleware`` added inside the existing ones.

        The first middleware registered, across chained ``use()`` calls, is the
        outermost: it sees the call first and the result last.

        Raises:
            TypeError: A middleware is not callable.

        Example:
            >>> async def double_result(invocation, next):
            ...     return 2 * await next()
            >>> async def plus_one(invocation, next):
            ...     (x,) = invocation.args
            ...     return await next(x + 1)
            >>> @procedure
            ... async def ident(x: int) -> int:
            ...     return x
            >>> trio.run(ident.use(double_result, plus_one), 1)
            4
        """
        for i, mw in enumerate(middleware):
            if not callable(mw):
                raise TypeError(
                    f"middleware[{i}] of procedure {self._name!r} must be callable, "
                    f"got {type(mw).__name__}"
                )
        return self._derive(_middleware=(*self._middleware, *middleware))

    def with_timeout(self, seconds: float) -> Procedure[P, R]:
        """A new procedure whose calls are bounded by ``seconds``.

        The deadline starts when a call starts and covers the middleware and
        the function. When it expires the work is cancelled and the call
        raises `TimeoutError`. When the procedure returns an
        `ExecutionHandle` (session procedures do), the rest of the deadline
        bounds that execution instead: it ends ``aborted`` with reason
        ``"timeout"`` and its ``result`` raises `ExecutionTimeout`. Of several
        timeouts the tightest wins.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is not positive and finite.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"timeout seconds must be a number, got {type(seconds).__name__}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"timeout seconds must be positive and finite, got {seconds!r}")
        timeout = float(seconds)
        if self._timeout is not None:
            timeout = min(timeout, self._timeout)
        return self._derive(_timeout=timeout)

    def with_context(self, **values: Any) -> Procedure[P, R]:
        """A new procedure that sets context values for the duration of each call.

        The values are readable through `current_context()` in the middleware,
        the function and every task started from inside the call, and gone
        after it. They merge with the values of enclosing procedure calls
        (this procedure's values win) and with earlier ``with_context``
        values (later ones win).

        Example:
            >>> @procedure
            ... async def read() -> dict:
            ...     return dict(current_context())
            >>> trio.run(read.with_context(a=1, b=1).with_context(b=2))
            {'a': 1, 'b': 2}
        """
        return self._derive(_context=MappingProxyType({**self._context, **values}))

    def with_metadata(self, **values: Any) -> Procedure[P, R]:
        """A new procedure whose invocations carry ``values`` in `Invocation.metadata`.

        Merged with earlier ``with_metadata`` values; later ones win.
        """
        return self._derive(_metadata=MappingProxyType({**self._metadata, **values}))

    async def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        # Checkpoint first, so that a call in a cancelled scope does nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._middleware and self._timeout is None and not self._context:
            # The common case (``session.send``): nothing to set up around the
            # function, so it is called from this frame, without _chain / _call_fn.
            result = self._fn(*self._bound, *args, **kwargs)
            if type(result) is CoroutineType or inspect.isawaitable(result):
                value: R = await result
                return value
            await trio.lowlevel.cancel_shielded_checkpoint()
            plain: R = result
            return plain
        token = None
        context = _context.get()
        if self._context:
            context = MappingProxyType({**context, **self._context})
            token = _context.set(context)
        try:
            if self._timeout is None:
                return cast(R, await self._chain(args, kwargs, context))
            return await self._run_with_timeout(args, kwargs, context, self._timeout)
        finally:
            if token is not None:
                _context.reset(token)

    async def _run_with_timeout(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: Mapping[str, Any],
        seconds: float,
    ) -> R:
        deadline = trio.current_time() + seconds
        with trio.move_on_at(deadline):
            value = await self._chain(args, kwargs, context)
            if isinstance(value, ExecutionHandle):
                outcome_of(value).apply_timeout(max(0.0, deadline - trio.current_time()))
            return cast(R, value)
        # Only reached when our own deadline cancelled the work.
        raise TimeoutError(f"procedure {self._name!r} timed out after {seconds:g} s")

    async def _chain(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], context: Mapping[str, Any]
    ) -> Any:
        if not self._middleware:
            # Nobody would see the Invocation: go straight to the function.
            return await self._call_fn(args, kwargs)
        invocation = Invocation(self._name, args, MappingProxyType(kwargs), self._metadata, context)
        return await self._step(0, invocation)

    async def _step(self, index: int, invocation: Invocation) -> Any:
        if index < len(self._middleware):
            result = self._middleware[index](invocation, Next(self, index + 1, invocation))
            if inspect.isawaitable(result):
                return await result
            return result
        return await self._call_fn(invocation.args, invocation.kwargs)

    async def _call_fn(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        result = self._fn(*self._bound, *args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        # A sync function did not yield: do it now so awaiting a call is a checkpoint.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return result


_NEW, _RUNNING, _DONE = 0, 1, 2


class _ResultAttribute:
    """``ProcedureCall.result``, typed: a call returning an `ExecutionHandle` gives its result."""

    @overload
    def __get__(self, call: None, owner: type[Any]) -> _ResultAttribute: ...

    @overload
    def __get__(
        self, call: ProcedureCall[SessionExecutionHandle], owner: type[Any]
    ) -> Awaitable[SendResult]: ...

    @overload
    def __get__(
        self, call: ProcedureCall[ExecutionHandle[T]], owner: type[Any]
    ) -> Awaitable[T]: ...

    @overload
    def __get__(self, call: ProcedureCall[T], owner: type[Any]) -> Awaitable[T]: ...

    def __get__(self, call: ProcedureCall[Any] | None, owner: type[Any]) -> Any:
        if call is None:
            return self
        return call._result_awaitable()


class ProcedureCall(Coroutine[Any, Any, R]):
    """One call of a procedure: await it exactly once, like a coroutine.

    Nothing runs until it is awaited; a call that is never awaited does
    nothing and warns about nothing. Awaiting it a second time raises
    `RuntimeError`. `result` reaches through an `ExecutionHandle` to its result.

    It is a `collections.abc.Coroutine`, so a procedure can be given to trio
    wherever an async function is expected: ``nursery.start_soon(proc, arg)``.

    Example:
        >>> import trio
        >>> from trio_session import Agent, ScriptedModel, open_session
        >>> async def main():
        ...     async with open_session(Agent(ScriptedModel(["one", "two"]))) as session:
        ...         handle = await session.send("hi")  # the execution handle
        ...         await handle.wait()
        ...         result = await session.send("hi").result  # its SendResult
        ...         print(type(handle).__name__, result.response)
        >>> trio.run(main)
        SessionExecutionHandle two
    """

    __slots__ = (
        "_args",
        "_coro",
        "_done",
        "_error",
        "_error_tb",
        "_kwargs",
        "_procedure",
        "_state",
        "_value",
    )

    def __init__(
        self, procedure: Procedure[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._procedure = procedure
        self._args = args
        self._kwargs = kwargs
        self._state = _NEW
        self._coro: Coroutine[Any, Any, R] | None = None
        self._value: R | None = None
        # Only Exceptions are kept for `result`: a Cancelled (or KeyboardInterrupt)
        # belongs to the task that saw it and must not be re-raised elsewhere.
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None
        self._done: trio.Event | None = None

    def __repr__(self) -> str:
        state = ("not awaited", "running", "done")[self._state]
        return f"<ProcedureCall of {self._procedure.name!r} ({state})>"

    def _start(self) -> Coroutine[Any, Any, R]:
        if self._state != _NEW:
            raise RuntimeError(
                f"this call of procedure {self._procedure.name!r} was already awaited; "
                "call the procedure again for a new call"
            )
        self._state = _RUNNING
        self._coro = self._run()
        return self._coro

    def __await__(self) -> Generator[Any, None, R]:
        return self._start().__await__()

    # The coroutine protocol, for code that drives coroutines by hand.
    def send(self, value: Any) -> Any:
        """Start or resume the call, like `coroutine.send`."""
        coro = self._start() if self._coro is None else self._coro
        return coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        """Raise an exception inside the call, like `coroutine.throw`."""
        if self._coro is None:
            # Like an unstarted coroutine: the exception comes straight back out.
            self._close_unstarted()
            exc = typ if val is None else val
            if isinstance(exc, type):
                exc = exc()
            raise exc.with_traceback(tb) if tb is not None else exc
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        """Close the call, like `coroutine.close`; it can no longer be awaited."""
        if self._coro is None:
            self._close_unstarted()
        else:
            self._coro.close()

    def _close_unstarted(self) -> None:
        if self._state == _NEW:
            self._state = _DONE
            self._error = RuntimeError(
                f"the call of procedure {self._procedure.name!r} was closed before it ran"
            )

    async def _run(self) -> R:
        try:
            value = await self._procedure._run(self._args, self._kwargs)
        except Exception as exc:
            self._error = exc
            self._error_tb = exc.__traceback__
            raise
        except BaseException as exc:
            self._error = RuntimeError(
                f"the call of procedure {self._procedure.name!r} did not complete "
                f"({type(exc).__name__})"
            )
            raise
        else:
            self._value = value
            return value
        finally:
            self._state = _DONE
            self._args = ()
            self._kwargs = {}
            if self._done is not None:
                self._done.set()

    def _result_awaitable(self) -> Awaitable[Any]:
        """The final result: the value, or the result of the execution it started.

        Awaiting it awaits the call if nobody did yet (or waits for the task
        that is awaiting it, or reuses its outcome); then, if the value is an
        `ExecutionHandle`, awaits and returns ``handle.result``, else returns
        the value. It may be awaited any number of times, by any number of tasks.

        Raises:
            RuntimeError: The call did not complete: it was cancelled (or
                closed) in the task that awaited it.
        """
        return _CallResult(self)

    result = _ResultAttribute()

    async def _result(self) -> Any:
        if self._state == _NEW:
            value: Any = await self
        else:
            if self._state == _RUNNING:
                if self._done is None:
                    self._done = trio.Event()
                await self._done.wait()
            else:
                await trio.lowlevel.checkpoint()
            if self._error is not None:
                raise self._error.with_traceback(self._error_tb)
            value = self._value
        if isinstance(value, ExecutionHandle):
            return await value.result
        return value


class _CallResult:
    """The awaitable behind ``ProcedureCall.result``; lazy, like the call."""

    __slots__ = ("_call",)

    def __init__(self, call: ProcedureCall[Any]) -> None:
        self._call = call

    def __await__(self) -> Generator[Any, None, Any]:
        return self._call._result().__await__()


class _ProcedureDecorator(Protocol):
    """What ``procedure(name=...)`` returns: a decorator making a `Procedure`."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Procedure[P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, T], /) -> Procedure[P, T]: ...


@overload
def procedure(
    fn: Callable[P, Awaitable[T]], *, name: str | None = None
) -> Procedure[P, T]: ...


@overload
def procedure(fn: Callable[P, T], *, name: str | None = None) -> Procedure[P, T]: ...


@overload
def procedure(fn: None = None, *, name: str | None = None) -> _ProcedureDecorator: ...


def procedure(
    fn: Callable[..., Any] | None = None, *, name: str | None = None
) -> Procedure[..., Any] | _ProcedureDecorator:
    """Make a `Procedure` of a function: ``@procedure`` or ``@procedure(name="x")``.

    Works on sync and async functions, and on methods (the instance is bound
    as the first argument).

    Example:
        >>> @procedure(name="greet")
        ... async def hello(who: str) -> str:
        ...     return f"hello {who}"
        >>> hello.name
        'greet'
        >>> trio.run(hello, "world")
        'hello world'
    """
    if fn is None:

        def decorate(fn: Callable[..., Any]) -> Procedure[..., Any]:
            return Procedure(fn, name=name)

        return cast(_ProcedureDecorator, decorate)
    return Procedure(fn, name=name)
