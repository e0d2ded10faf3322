"""Argument checks shared by layer constructors, with errors that name the layer."""

from __future__ import annotations

import enum
import math
import numbers
import operator
from typing import Any, Literal, TypeVar, overload

import torch

__all__ = ["as_shape", "check_float_dtype", "check_positive_int", "check_real", "coerce_enum"]

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


@overload
def check_real(owner: str, arg: str, value: object, *, optional: Literal[False] = ..., finite: bool = ...) -> float: ...
@overload
def check_real(owner: str, arg: str, value: object, *, optional: bool, finite: bool = ...) -> float | None: ...
def check_real(owner: str, arg: str, value: object, *, optional: bool = False, finite: bool = True) -> float | None:
    """``value`` as a float: a real number (int, float, numpy scalar, 0-d real tensor), never a bool
    or a string, which ``float()`` would quietly accept; ``None`` passes with ``optional``. NaN is
    refused, and inf unless ``finite=False``. Errors name ``owner`` and ``arg``."""
    if value is None and optional:
        return None
    number: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool and not value.is_complex():
        number = float(value.item())
    if number is None:
        wanted = "None or a number" if optional else "a number"
        raise TypeError(f"{owner} expects {arg} to be {wanted}; got {type(value).__name__} ({value!r:.60}).")
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(f"{owner} expects {arg} to be a {'finite ' if finite else ''}number; got {value!r}.")
    return number


def check_float_dtype(owner: str, arg: str, value: object, *, complex_ok: bool = False) -> torch.dtype | None:
    """``None`` or a floating ``torch.dtype`` (complex too with ``complex_ok``): a string such as
    ``"float32"`` or an integer dtype is an error naming ``owner`` (a compute dtype that would
    round every result)."""
    if value is None:
        return None
    if not isinstance(value, torch.dtype):
        raise TypeError(
            f"{owner} expects {arg} to be None or a torch.dtype (e.g. torch.float32); got "
            f"{type(value).__name__} ({value!r})."
        )
    if not (value.is_floating_point or (complex_ok and value.is_complex)):
        kinds = "a floating or complex" if complex_ok else "a floating"
        raise ValueError(f"{owner} expects {arg} to be {kinds} dtype; got {value}.")
    return value


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
