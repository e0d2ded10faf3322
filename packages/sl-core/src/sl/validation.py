"""Argument checks shared by layer constructors, with errors that name the layer."""

from __future__ import annotations

import operator

__all__ = ["as_shape"]


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
