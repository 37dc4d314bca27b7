"""Small helpers shared by the private modules."""

from __future__ import annotations

from abc import ABCMeta
from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, NoReturn, TypeVar

__all__ = ["NoPublicConstructor", "slot_setter"]

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


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of slot ``name`` of ``cls`` (or of a base class), bypassing ``__setattr__``.

    How the engine fills a frozen attrs instance it built itself: about twice as
    fast as ``object.__setattr__`` (no attribute lookup by name).
    """
    for klass in cls.__mro__:
        descriptor = klass.__dict__.get(name)
        if isinstance(descriptor, MemberDescriptorType):
            return descriptor.__set__
    raise AssertionError(f"{cls.__name__}.{name} is not a slot")
