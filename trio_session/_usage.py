"""Token and tick accounting."""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["NO_USAGE", "Usage", "built_usage"]


def _non_negative_int(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Usage.{attr.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"Usage.{attr.name} must not be negative, got {value}")


def _count() -> int:
    return attrs.field(default=0, validator=_non_negative_int)


_new = object.__new__

# Shown by repr only when set, so the common case reads as it always did.
_OPTIONAL = ("cache_read_tokens", "cache_write_tokens", "unreported_ticks")


@attrs.frozen(repr=False)
class Usage:
    """Tokens used and ticks run; add two with ``+``.

    ``input_tokens`` counts every input token, cached or not; ``cache_read_tokens`` and
    ``cache_write_tokens`` say how many of them were read from or written to the provider's
    prompt cache.

    A provider that reports no token counts (some OpenAI-compatible servers, such as
    llama-cpp-python's) is not counted as zero tokens: such a tick adds nothing to the token
    fields and one to ``unreported_ticks``, so ``unreported_ticks > 0`` says the token counts
    are incomplete (a lower bound) rather than measured.

    Attributes:
        input_tokens: Input (prompt) tokens, cached or not.
        output_tokens: Output (completion) tokens.
        total_tokens: Their sum.
        ticks: Ticks run.
        cache_read_tokens: Input tokens read from the prompt cache.
        cache_write_tokens: Input tokens written to the prompt cache.
        unreported_ticks: Ticks whose provider reported no token counts.

    Example:
        >>> Usage(input_tokens=10, output_tokens=5, total_tokens=15, ticks=1) + Usage(ticks=1)
        Usage(input_tokens=10, output_tokens=5, total_tokens=15, ticks=2)
        >>> Usage(input_tokens=90, cache_read_tokens=80)
        Usage(input_tokens=90, output_tokens=0, total_tokens=0, ticks=0, cache_read_tokens=80)
    """

    input_tokens: int = _count()
    output_tokens: int = _count()
    total_tokens: int = _count()
    ticks: int = _count()
    cache_read_tokens: int = _count()
    cache_write_tokens: int = _count()
    unreported_ticks: int = _count()

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        # Sums of two valid counts are valid: built without running the validators
        # again (the engine adds usages on every tick).
        return built_usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.ticks + other.ticks,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.unreported_ticks + other.unreported_ticks,
        )

    def __repr__(self) -> str:
        fields = [
            f"{a.name}={getattr(self, a.name)!r}"
            for a in attrs.fields(Usage)
            if a.name not in _OPTIONAL or getattr(self, a.name)
        ]
        return f"Usage({', '.join(fields)})"


# The slots' own setters: what a frozen class's __init__ would do, minus the validators.
_set_input = Usage.__dict__["input_tokens"].__set__
_set_output = Usage.__dict__["output_tokens"].__set__
_set_total = Usage.__dict__["total_tokens"].__set__
_set_ticks = Usage.__dict__["ticks"].__set__
_set_cache_read = Usage.__dict__["cache_read_tokens"].__set__
_set_cache_write = Usage.__dict__["cache_write_tokens"].__set__
_set_unreported = Usage.__dict__["unreported_ticks"].__set__


def built_usage(
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    ticks: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    unreported_ticks: int,
) -> Usage:
    """A `Usage` of counts the caller knows are valid (non-negative ints), unchecked.

    The engine's way to build one per tick: sums of valid usages and a model
    stream's totals (each `UsageChunk` was checked when built).
    """
    usage = _new(Usage)
    _set_input(usage, input_tokens)
    _set_output(usage, output_tokens)
    _set_total(usage, total_tokens)
    _set_ticks(usage, ticks)
    _set_cache_read(usage, cache_read_tokens)
    _set_cache_write(usage, cache_write_tokens)
    _set_unreported(usage, unreported_ticks)
    return usage


NO_USAGE: Final = built_usage(0, 0, 0, 0, 0, 0, 0)
"""``Usage()``, built once: frozen, so one serves every execution and tick that starts at zero."""
