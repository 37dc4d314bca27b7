"""RetryPolicy: when and how long to wait before running a failed tick again (SPEC §8)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs

from ._errors import ModelError

__all__ = ["RetryPolicy"]


def _positive_int(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"RetryPolicy.{attr.name} must be an int >= 1, got {value!r}")


def _seconds(_inst: object, attr: attrs.Attribute[float], value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"RetryPolicy.{attr.name} must be a number of seconds >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How an agent retries a tick whose model call failed with a retryable `ModelError`.

    A retryable error at any point of the tick's model stream (before the first byte or in
    the middle of it) discards the tick's partial output, emits a ``tick_retry`` event, waits,
    and runs the tick again. The wait is the exponential backoff (``initial_delay`` doubled per
    attempt, at most ``max_delay``; with ``jitter``, a random point in its upper half), or the
    provider's ``retry-after`` when that is longer. After ``max_attempts`` attempts the
    execution ends ``error``. Errors that are not retryable are never retried.

    Args:
        max_attempts: Attempts per tick, the first included; 1 turns retries off.
        initial_delay: Seconds before the second attempt.
        max_delay: The longest backoff, in seconds (a longer ``retry-after`` still wins).
        jitter: Spread the backoff so that many clients do not retry in step.

    Example:
        >>> policy = RetryPolicy(initial_delay=1.0, jitter=False)
        >>> [policy.delay(attempt) for attempt in (1, 2, 3)]
        [1.0, 2.0, 4.0]
        >>> policy.delay(1, retry_after=7.5)
        7.5
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_int)
    initial_delay: float = attrs.field(default=1.0, validator=_seconds)
    max_delay: float = attrs.field(default=30.0, validator=_seconds)
    jitter: bool = attrs.field(default=True)

    @jitter.validator
    def _check_jitter(self, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"RetryPolicy.jitter must be a bool, got {type(value).__name__}")

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether ``error``, raised by attempt number ``attempt`` (1-based), is retried."""
        return isinstance(error, ModelError) and error.retryable and attempt < self.max_attempts

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed."""
        backoff = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        if self.jitter:
            backoff *= 0.5 + 0.5 * rand()
        return max(backoff, retry_after or 0.0)
