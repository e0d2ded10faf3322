"""Argument checks shared by layer constructors, with errors that name the layer."""

from __future__ import annotations

import enum
import operator
from typing import Any, TypeVar

__all__ = ["as_shape", "check_positive_int", "coerce_enum"]

E = TypeVar("E", bound=enum.Enum)


def as_shape(owner: str, arg: str, shape: object, *, allow_zero: bool = False) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple; ``None`` is the scalar shape ``()``.

    Sizes must be positive (or non-negative with ``allow_zero``); anything else is a
    TypeError/ValueError naming ``owner`` and ``arg``.
    """
    if shape is None:
        return ()
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        if isinstance(shape, (str, bytes, bool)):
            raise TypeError
        out = tuple(operator.index(d) for d in shape)  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"{owner} expects {arg} to be an int or a tuple of ints; got {shape!r}.") from None
    if allow_zero and any(d < 0 for d in out):
        raise ValueError(f"{owner} expects non-negative sizes in {arg}; got {out}.")
    if not allow_zero and any(d <= 0 for d in out):
        raise ValueError(f"{owner} expects positive sizes in {arg}; got {out}.")
    return out


def check_positive_int(owner: str, arg: str, value: object, *, allow_zero: bool = False) -> int:
    """``value`` as an int >= 1 (>= 0 with ``allow_zero``); bools and floats are TypeErrors naming ``owner``."""
    if isinstance(value, bool):
        raise TypeError(f"{owner} expects {arg} to be an int; got bool ({value!r}).")
    if not isinstance(value, int):
        try:
            value = operator.index(value)  # type: ignore[arg-type]  # numpy integers
        except TypeError:
            raise TypeError(f"{owner} expects {arg} to be an int; got {type(value).__name__} ({value!r}).") from None
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{owner} expects {arg} >= {low}; got {value}.")
    return int(value)


def coerce_enum(cls: type[E], value: Any, *, owner: str, arg: str, numbered: bool = False) -> E:
    """A member of ``cls`` from a member, its value or its name (case-insensitive).

    With ``numbered``, the reference's 1-based integer values are accepted too
    (``CombinationMode`` 1 = STACK ...). Anything else is a ValueError naming ``owner``.
    """
    if isinstance(value, cls):
        return value
    members = list(cls)
    if numbered and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(members):
        return members[value - 1]
    if isinstance(value, str):
        for member in members:
            if value.lower() in (str(member.value).lower(), member.name.lower()):
                return member
    raise ValueError(f"{owner} expects {arg} to be one of {[m.name.lower() for m in members]}; got {value!r}.")
