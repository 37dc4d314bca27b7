"""Small helpers shared by the private modules."""

from __future__ import annotations

from abc import ABCMeta
from typing import Any, NoReturn, TypeVar

__all__ = ["NoPublicConstructor"]

T = TypeVar("T")


class NoPublicConstructor(ABCMeta):
    """A metaclass for classes that only the library constructs (trio's idiom).

    ``Cls(...)`` raises `TypeError` that names where instances come from
    (the class's ``_made_by``); the library uses ``Cls._create(...)``.
    It derives from `ABCMeta` so that it also fits ``trio.abc`` subclasses.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        made_by = getattr(cls, "_made_by", "the library")
        raise TypeError(f"{cls.__qualname__} has no public constructor; get one from {made_by}")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]
