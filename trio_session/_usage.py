"""Token and tick accounting."""

from __future__ import annotations

import attrs

__all__ = ["Usage"]


def _non_negative_int(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Usage.{attr.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"Usage.{attr.name} must not be negative, got {value}")


def _count() -> int:
    return attrs.field(default=0, validator=_non_negative_int)


_new = object.__new__
_set = object.__setattr__

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
        total = _new(Usage)
        _set(total, "input_tokens", self.input_tokens + other.input_tokens)
        _set(total, "output_tokens", self.output_tokens + other.output_tokens)
        _set(total, "total_tokens", self.total_tokens + other.total_tokens)
        _set(total, "ticks", self.ticks + other.ticks)
        _set(total, "cache_read_tokens", self.cache_read_tokens + other.cache_read_tokens)
        _set(total, "cache_write_tokens", self.cache_write_tokens + other.cache_write_tokens)
        _set(total, "unreported_ticks", self.unreported_ticks + other.unreported_ticks)
        return total

    def __repr__(self) -> str:
        fields = [
            f"{a.name}={getattr(self, a.name)!r}"
            for a in attrs.fields(Usage)
            if a.name not in _OPTIONAL or getattr(self, a.name)
        ]
        return f"Usage({', '.join(fields)})"
