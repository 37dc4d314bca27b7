"""Token and tick accounting."""

from __future__ import annotations

import attrs

__all__ = ["Usage"]


def _non_negative_int(_inst: object, attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Usage.{attr.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"Usage.{attr.name} must not be negative, got {value}")


@attrs.frozen
class Usage:
    """Tokens used and ticks run; add two with ``+``.

    Example:
        >>> Usage(input_tokens=10, output_tokens=5, total_tokens=15, ticks=1) + Usage(ticks=1)
        Usage(input_tokens=10, output_tokens=5, total_tokens=15, ticks=2)
    """

    input_tokens: int = attrs.field(default=0, validator=_non_negative_int)
    output_tokens: int = attrs.field(default=0, validator=_non_negative_int)
    total_tokens: int = attrs.field(default=0, validator=_non_negative_int)
    ticks: int = attrs.field(default=0, validator=_non_negative_int)

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.ticks + other.ticks,
        )
