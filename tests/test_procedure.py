"""Procedures: middleware onion, binding, context, metadata, timeouts, calls."""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from trio_session import (
    EventBuffer,
    ExecutionHandle,
    ExecutionTimeout,
    Invocation,
    Next,
    Procedure,
    ProcedureCall,
    current_context,
    procedure,
)
from trio_session._handle import new_handle, outcome_of


def make_handle() -> ExecutionHandle[Any]:
    """A real, pending execution handle over a real event buffer."""
    return new_handle(EventBuffer())[0]


# -- middleware -----------------------------------------------------------------


async def test_onion_order_across_chained_use() -> None:
    log: list[str] = []

    def layer(tag: str) -> Any:
        async def mw(inv: Invocation, nxt: Next) -> Any:
            log.append(f"{tag}>")
            value = await nxt()
            log.append(f"<{tag}")
            return value

        return mw

    @procedure
    async def work() -> str:
        log.append("fn")
        return "done"

    proc = work.use(layer("a"), layer("b")).use(layer("c"))
    assert await proc() == "done"
    assert log == ["a>", "b>", "c>", "fn", "<c", "<b", "<a"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=8))
def test_every_layer_sees_the_arguments_of_the_layer_outside(increments: list[int]) -> None:
    seen: list[int] = []

    def adder(k: int) -> Any:
        async def mw(inv: Invocation, nxt: Next) -> Any:
            seen.append(inv.args[0])
            return await nxt(inv.args[0] + k)

        return mw

    @procedure
    def ident(x: int) -> int:
        return x

    proc = ident
    for k in increments:
        proc = proc.use(adder(k))
    result = trio.run(proc, 0)
    assert result == sum(increments)
    assert seen == [sum(increments[:i]) for i in range(len(increments))]


async def test_middleware_transforms_positional_and_keyword_arguments() -> None:
    seen_inner: list[Invocation] = []

    async def shout(inv: Invocation, nxt: Next) -> Any:
        return await nxt(inv.args[0].upper(), punct=inv.kwargs.get("punct", "") * 2)

    async def spy(inv: Invocation, nxt: Next) -> Any:
        seen_inner.append(inv)
        return await nxt()

    @procedure
    async def greet(who: str, *, punct: str = ".") -> str:
        return f"hello {who}{punct}"

    assert await greet.use(shout, spy)("bob", punct="!") == "hello BOB!!"
    assert seen_inner[0].args == ("BOB",)
    assert dict(seen_inner[0].kwargs) == {"punct": "!!"}


async def test_next_with_only_keywords_replaces_all_arguments() -> None:
    async def kw_only(inv: Invocation, nxt: Next) -> Any:
        return await nxt(b=5)

    @procedure
    async def f(a: int = 1, b: int = 2) -> tuple[int, int]:
        return (a, b)

    assert await f.use(kw_only)(10, b=20) == (1, 5)


async def test_middleware_transforms_the_return_value() -> None:
    async def wrap(inv: Invocation, nxt: Next) -> Any:
        return {"value": await nxt()}

    @procedure
    async def answer() -> int:
        return 42

    # The middleware changes what the call gives; its type says int.
    assert await answer.use(wrap)() == {"value": 42}  # type: ignore[comparison-overlap]


async def test_short_circuit_skips_inner_layers_and_the_function() -> None:
    calls: list[str] = []

    async def cache(inv: Invocation, nxt: Next) -> Any:
        return "cached"

    async def inner(inv: Invocation, nxt: Next) -> Any:
        calls.append("inner")
        return await nxt()

    @procedure
    async def expensive() -> str:
        calls.append("fn")
        return "computed"

    assert await expensive.use(cache, inner)() == "cached"
    assert calls == []


async def test_calling_next_twice_runs_the_inner_chain_again() -> None:
    attempts: list[int] = []

    async def retry_once(inv: Invocation, nxt: Next) -> Any:
        try:
            return await nxt()
        except ConnectionError:
            return await nxt()

    @procedure
    async def flaky() -> str:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise ConnectionError("first try fails")
        return "ok"

    assert await flaky.use(retry_once)() == "ok"
    assert attempts == [0, 1]


async def test_sync_middleware_returning_next_is_awaited() -> None:
    def passthrough(inv: Invocation, nxt: Next) -> Any:
        return nxt(inv.args[0] * 3)

    @procedure
    async def ident(x: int) -> int:
        return x

    assert await ident.use(passthrough)(2) == 6


async def test_invocation_describes_the_call() -> None:
    seen: list[Invocation] = []

    async def spy(inv: Invocation, nxt: Next) -> Any:
        seen.append(inv)
        return await nxt()

    @procedure(name="adder")
    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await add.use(spy)(1, b=2) == 3
    (inv,) = seen
    assert inv.name == "adder"
    assert inv.args == (1,)
    assert dict(inv.kwargs) == {"b": 2}
    assert dict(inv.metadata) == {}
    assert dict(inv.context) == {}
    with pytest.raises(TypeError):
        inv.kwargs["b"] = 3  # type: ignore[index]


def test_use_leaves_the_original_unchanged_and_validates() -> None:
    async def mw(inv: Invocation, nxt: Next) -> Any:
        return await nxt()

    @procedure
    async def f() -> int:
        return 1

    g = f.use(mw)
    assert g is not f
    assert f._middleware == ()
    assert g._middleware == (mw,)
    assert g.name == f.name == "f"
    with pytest.raises(TypeError, match=r"middleware\[1\].*'f'.*int"):
        f.use(mw, 3)  # type: ignore[arg-type]


async def test_use_does_not_change_the_behaviour_of_the_original() -> None:
    async def negate(inv: Invocation, nxt: Next) -> Any:
        return -(await nxt())

    @procedure
    async def one() -> int:
        return 1

    negated = one.use(negate)
    assert await negated() == -1
    assert await one() == 1


async def test_errors_of_the_function_and_middleware_propagate_unchanged() -> None:
    boom = ValueError("boom")

    @procedure
    async def fails() -> None:
        raise boom

    with pytest.raises(ValueError, match="boom") as info:
        await fails.with_timeout(5).with_context(a=1)()
    assert info.value is boom

    async def bad_mw(inv: Invocation, nxt: Next) -> Any:
        raise KeyError("mw")

    with pytest.raises(KeyError, match="mw"):
        await fails.use(bad_mw)()


# -- functions, methods, construction -------------------------------------------------


async def test_sync_and_async_functions() -> None:
    def sync_add(a: int, b: int) -> int:
        return a + b

    async def async_add(a: int, b: int) -> int:
        await trio.lowlevel.checkpoint()
        return a + b

    assert await Procedure(sync_add)(1, 2) == 3
    assert await Procedure(async_add)(1, 2) == 3
    assert await procedure(sync_add).use()(3, 4) == 7


async def test_a_sync_function_is_not_run_in_a_cancelled_scope() -> None:
    ran: list[int] = []

    @procedure
    def record() -> None:
        ran.append(1)

    with trio.CancelScope() as scope:
        scope.cancel()
        await record()
    assert scope.cancelled_caught
    assert ran == []


async def test_procedure_decorator_forms_and_names() -> None:
    @procedure
    async def plain() -> str:
        """Doc of plain."""
        return "p"

    @procedure(name="custom")
    async def named() -> str:
        return "n"

    assert isinstance(plain, Procedure)
    assert plain.name == "plain"
    assert plain.__doc__ == "Doc of plain."
    assert named.name == "custom"
    assert await plain() == "p"
    assert await named() == "n"
    assert "custom" in repr(named)


def test_construction_errors() -> None:
    with pytest.raises(TypeError, match="callable"):
        Procedure(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name must be a str"):
        procedure(lambda: None, name=3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="empty"):
        procedure(lambda: None, name="")


async def test_procedure_on_a_method_binds_the_instance() -> None:
    seen_args: list[tuple[Any, ...]] = []

    async def spy(inv: Invocation, nxt: Next) -> Any:
        seen_args.append(inv.args)
        return await nxt(inv.args[0] * 10)

    class Counter:
        def __init__(self, start: int) -> None:
            self.value = start

        @procedure
        async def add(self, n: int) -> int:
            self.value += n
            return self.value

        @procedure
        def peek(self) -> int:
            return self.value

        add_x10 = add.use(spy)

    c = Counter(1)
    assert await c.add(2) == 3
    assert await c.peek() == 3
    assert Counter.add.name == "add"
    assert isinstance(Counter.__dict__["add"], Procedure)
    assert Counter.add is Counter.__dict__["add"]
    # Middleware see the caller's arguments, not the bound instance.
    assert await c.add_x10(1) == 13
    assert seen_args == [(1,)]
    # A procedure derived from a bound one stays bound.
    assert await c.add.with_timeout(5).use(spy)(1) == 23
    other = Counter(100)
    assert await other.add(1) == 101
    assert c.value == 23


async def test_start_soon_and_trio_run_accept_procedures() -> None:
    results: list[int] = []

    @procedure
    async def put(x: int) -> None:
        results.append(x)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put, 1)
        nursery.start_soon(put.use(), 2)
    assert sorted(results) == [1, 2]


# -- context --------------------------------------------------------------------


async def test_with_context_is_visible_in_fn_middleware_and_spawned_tasks() -> None:
    seen: dict[str, Any] = {}

    async def mw(inv: Invocation, nxt: Next) -> Any:
        seen["middleware"] = dict(current_context())
        seen["invocation"] = dict(inv.context)
        return await nxt()

    async def child() -> None:
        seen["task"] = dict(current_context())

    @procedure
    async def work() -> None:
        seen["fn"] = dict(current_context())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    assert dict(current_context()) == {}
    await work.use(mw).with_context(user="alice", trace=7)()
    expected = {"user": "alice", "trace": 7}
    assert seen == dict.fromkeys(["middleware", "invocation", "task", "fn"], expected)
    assert dict(current_context()) == {}


async def test_nested_context_merges_and_inner_wins_then_restores() -> None:
    seen: list[dict[str, Any]] = []

    @procedure
    async def inner() -> None:
        seen.append(dict(current_context()))

    inner_ctx = inner.with_context(b=2, c=3)

    @procedure
    async def outer() -> None:
        seen.append(dict(current_context()))
        await inner_ctx()
        seen.append(dict(current_context()))

    await outer.with_context(a=1, b=1)()
    assert seen == [{"a": 1, "b": 1}, {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 1}]


async def test_chained_with_context_later_wins_and_original_unchanged() -> None:
    @procedure
    async def read() -> dict[str, Any]:
        return dict(current_context())

    first = read.with_context(a=1, b=1)
    second = first.with_context(b=2)
    assert await second() == {"a": 1, "b": 2}
    assert await first() == {"a": 1, "b": 1}
    assert await read() == {}


async def test_context_is_reset_after_an_error() -> None:
    @procedure
    async def fails() -> None:
        assert current_context()["x"] == 1
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError, match="nope"):
        await fails.with_context(x=1)()
    assert dict(current_context()) == {}


async def test_concurrent_calls_see_their_own_context() -> None:
    seen: dict[str, str] = {}

    @procedure
    async def who(label: str) -> None:
        await trio.testing.wait_all_tasks_blocked()
        seen[label] = current_context()["user"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(who.with_context(user="alice"), "a")
        nursery.start_soon(who.with_context(user="bob"), "b")
    assert seen == {"a": "alice", "b": "bob"}


async def test_current_context_is_read_only() -> None:
    @procedure
    async def mutate() -> None:
        ctx = current_context()
        with pytest.raises(TypeError):
            ctx["x"] = 2  # type: ignore[index]

    await mutate.with_context(x=1)()
    assert isinstance(current_context(), Mapping)


# -- metadata ---------------------------------------------------------------------


async def test_with_metadata_appears_in_the_invocation_merged() -> None:
    seen: list[Mapping[str, Any]] = []

    async def spy(inv: Invocation, nxt: Next) -> Any:
        seen.append(inv.metadata)
        return await nxt()

    @procedure
    async def f() -> None:
        pass

    tagged = f.use(spy).with_metadata(team="x", level=1).with_metadata(level=2)
    await tagged()
    await f.use(spy)()
    assert dict(seen[0]) == {"team": "x", "level": 2}
    assert dict(seen[1]) == {}


# -- timeouts ----------------------------------------------------------------------


async def test_with_timeout_cancels_the_work_and_raises_timeout_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    progress: list[str] = []

    @procedure
    async def slow() -> str:
        try:
            progress.append("started")
            await trio.sleep(60)
            progress.append("completed")
            return "never"
        finally:
            progress.append("finally")

    with pytest.raises(TimeoutError, match=r"'slow'.*\b5 s") as info:
        await slow.with_timeout(5)()
    assert not isinstance(info.value, ExecutionTimeout)
    assert progress == ["started", "finally"]


async def test_with_timeout_covers_the_middleware(autojump_clock: trio.testing.MockClock) -> None:
    reached: list[str] = []

    async def slow_mw(inv: Invocation, nxt: Next) -> Any:
        await trio.sleep(3)
        return await nxt()

    @procedure
    async def work() -> None:
        reached.append("fn")
        await trio.sleep(3)
        reached.append("fn done")

    with pytest.raises(TimeoutError):
        await work.use(slow_mw).with_timeout(4)()
    assert reached == ["fn"]


async def test_with_timeout_tightest_wins(autojump_clock: trio.testing.MockClock) -> None:
    @procedure
    async def takes_50() -> str:
        await trio.sleep(50)
        return "done"

    with pytest.raises(TimeoutError, match=r"\b10 s"):
        await takes_50.with_timeout(10).with_timeout(100)()
    with pytest.raises(TimeoutError, match=r"\b10 s"):
        await takes_50.with_timeout(100).with_timeout(10)()
    assert await takes_50.with_timeout(100)() == "done"


async def test_with_timeout_returns_normally_in_time_and_keeps_own_timeout_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    own = TimeoutError("from the function")

    @procedure
    async def quick(fail: bool) -> str:
        await trio.sleep(1)
        if fail:
            raise own
        return "ok"

    bounded = quick.with_timeout(10)
    assert await bounded(False) == "ok"
    with pytest.raises(TimeoutError) as info:
        await bounded(True)
    assert info.value is own


async def test_outer_cancellation_is_not_a_timeout(autojump_clock: trio.testing.MockClock) -> None:
    @procedure
    async def forever() -> None:
        await trio.sleep_forever()

    with trio.move_on_after(1) as scope:
        await forever.with_timeout(100)()
    assert scope.cancelled_caught


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf])
def test_with_timeout_refuses_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        procedure(lambda: None).with_timeout(bad)


@pytest.mark.parametrize("bad", ["5", True, None])
def test_with_timeout_refuses_non_numbers(bad: Any) -> None:
    with pytest.raises(TypeError, match="must be a number"):
        procedure(lambda: None).with_timeout(bad)


async def test_with_timeout_bounds_a_returned_execution_handle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle = make_handle()

    @procedure
    async def start_execution() -> ExecutionHandle[Any]:
        await trio.sleep(2)
        return handle

    start = trio.current_time()
    returned = await start_execution.with_timeout(5)()
    assert returned is handle
    # The rest of the deadline (5 - 2 s) now bounds the execution.
    assert outcome_of(handle).timeout_deadline == pytest.approx(start + 5)
    assert outcome_of(handle).scope.deadline == pytest.approx(start + 5)

    # What the engine does with it: the execution ends aborted, reason "timeout".
    outcome_of(handle).set_running()
    with outcome_of(handle).scope:
        await trio.sleep_forever()
    assert outcome_of(handle).timed_out()
    outcome_of(handle).settle("aborted", reason="timeout")
    outcome_of(handle).finish()
    assert handle.status == "aborted"
    with pytest.raises(ExecutionTimeout):
        await handle.result


async def test_several_timeouts_tightest_bounds_the_handle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle = make_handle()

    @procedure
    async def start_execution() -> ExecutionHandle[Any]:
        return handle

    start = trio.current_time()
    await start_execution.with_timeout(30).with_timeout(7).with_timeout(60)()
    assert outcome_of(handle).timeout_deadline == pytest.approx(start + 7)


# -- ProcedureCall --------------------------------------------------------------------


async def test_a_call_is_awaitable_exactly_once() -> None:
    calls: list[int] = []

    @procedure
    async def f() -> int:
        calls.append(1)
        return 5

    call = f()
    assert isinstance(call, ProcedureCall)
    assert await call == 5
    with pytest.raises(RuntimeError, match="already awaited"):
        await call
    assert calls == [1]


def test_a_call_never_awaited_runs_nothing_and_does_not_warn() -> None:
    ran: list[int] = []

    @procedure
    async def f() -> None:
        ran.append(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call = f()
        _ = call.result  # the result awaitable is lazy too
        del call, _
        gc.collect()
    assert caught == []
    assert ran == []


async def test_result_of_a_plain_procedure_is_its_value() -> None:
    calls: list[int] = []

    @procedure
    async def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert await f(4).result == 8
    call = f(5)
    assert await call == 10
    assert await call.result == 10  # reuses the outcome: the function ran once
    assert await call.result == 10
    assert calls == [4, 5]


async def test_result_reuses_an_error_outcome() -> None:
    @procedure
    async def fails() -> None:
        raise LookupError("missing")

    call = fails()
    with pytest.raises(LookupError):
        await call
    with pytest.raises(LookupError, match="missing"):
        await call.result
    with pytest.raises(LookupError, match="missing"):
        await fails().result


async def test_result_of_a_procedure_returning_a_handle_is_the_handle_result() -> None:
    handle = make_handle()

    @procedure
    async def start() -> ExecutionHandle[str]:
        return handle

    async def settle() -> None:
        await trio.testing.wait_all_tasks_blocked()
        outcome_of(handle).settle("completed", "the value")
        outcome_of(handle).finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(settle)
        assert await start().result == "the value"
    call = start()
    assert await call is handle
    assert await call.result == "the value"


async def test_result_waits_for_a_call_running_in_another_task() -> None:
    release = trio.Event()

    @procedure
    async def gated() -> str:
        await release.wait()
        return "released"

    call = gated()
    got: list[str] = []

    async def await_call() -> None:
        got.append(await call)

    async def await_result() -> None:
        got.append(await call.result)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(await_call)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(await_result)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        release.set()
    assert got == ["released", "released"]


async def test_result_of_a_cancelled_call_raises_runtime_error() -> None:
    @procedure
    async def forever() -> None:
        await trio.sleep_forever()

    call = forever()
    with trio.CancelScope() as scope:
        scope.cancel()
        await call
    assert scope.cancelled_caught
    with pytest.raises(RuntimeError, match="did not complete"):
        await call.result


def test_closing_an_unstarted_call() -> None:
    @procedure
    async def f() -> None:
        pass

    call = f()
    call.close()
    with pytest.raises(RuntimeError, match="already awaited"):
        call.send(None)

    async def main() -> None:
        await call.result

    with pytest.raises(RuntimeError, match="closed before it ran"):
        trio.run(main)


# -- cancellation -------------------------------------------------------------------


async def test_cancelled_propagates_unchanged_through_middleware() -> None:
    seen: list[type[BaseException]] = []

    async def observe(inv: Invocation, nxt: Next) -> Any:
        try:
            return await nxt()
        except BaseException as exc:
            seen.append(type(exc))
            raise

    @procedure
    async def forever() -> None:
        await trio.sleep_forever()

    with trio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_soon)
            await forever.use(observe).with_context(a=1).with_timeout(100)()
    assert scope.cancelled_caught
    assert seen == [trio.Cancelled]
    assert dict(current_context()) == {}
