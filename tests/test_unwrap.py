"""Leaving a nursery: the chosen error carries the others; bounded cleanup logs when cut off."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_session import ModelError, TrioSessionError
from trio_session._engine import InternalError, bounded, unwrap


def test_the_first_real_error_is_chosen_and_carries_the_others() -> None:
    first = ModelError("rate limited", code="rate_limit")
    second = LookupError("tool bug")
    group = BaseExceptionGroup("nursery", [first, ExceptionGroup("inner", [second])])
    chosen = unwrap(group)
    assert chosen is first
    assert chosen.__notes__ == ["also raised in the same nursery: LookupError: tool bug"]
    assert isinstance(chosen.__context__, BaseExceptionGroup)
    assert chosen.__context__.exceptions == (second,)


def test_keyboard_interrupt_wins_and_keeps_its_own_context() -> None:
    context = RuntimeError("earlier")
    interrupt = KeyboardInterrupt()
    interrupt.__context__ = context
    error = ValueError("x")
    chosen = unwrap(BaseExceptionGroup("nursery", [error, interrupt]))
    assert chosen is interrupt
    assert chosen.__context__ is context  # not replaced
    assert chosen.__notes__ == ["also raised in the same nursery: ValueError: x"]


async def test_sibling_cancellations_are_not_attached() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            cancelled = exc
    error = ValueError("x")
    chosen = unwrap(BaseExceptionGroup("nursery", [cancelled, error]))
    assert chosen is error
    assert not hasattr(chosen, "__notes__")


def test_an_empty_group_gives_an_internal_error() -> None:
    hollow = _hollow()
    error = unwrap(hollow)
    assert isinstance(error, InternalError) and isinstance(error, TrioSessionError)
    assert error.__cause__ is hollow


def _hollow() -> BaseExceptionGroup[BaseException]:
    """A group whose ``exceptions`` is empty (only a buggy library makes one)."""

    class Hollow(BaseExceptionGroup[BaseException]):
        @property
        def exceptions(self) -> tuple[BaseException, ...]:
            return ()

    return Hollow("hollow", [ValueError()])


async def test_bounded_cleanup_logs_when_cut_off(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_session"):
        with trio.CancelScope(shield=True), bounded("saving the session", 2.0) as bound:
            await trio.sleep(10)
        assert bound.cancelled_caught
        assert "saving the session did not finish within 2 s" in caplog.text
        caplog.clear()
        with trio.CancelScope(shield=True), bounded("closing the stream", 2.0):
            await trio.sleep(1)
        assert caplog.text == ""
