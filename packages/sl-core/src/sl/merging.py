"""Merging several sequences into one: :class:`CombinationMode` and ``sequence_broadcast_*``.

Used by ``Parallel``, ``ParallelChannels`` and ``Bidirectional``. Semantics follow the
reference (``sequence_layers/jax/utils.py``):

* channel shapes broadcast NumPy-style from the right (a sequence with fewer channel
  dims gets size-1 dims inserted right after ``[batch, time]``); batch and time also
  broadcast (equal, or 1);
* the combined mask is the logical AND of the input masks;
* the result is a plain :class:`Sequence` (not known to be masked), except when every
  input is a :class:`MaskedSequence` sharing the *same* mask tensor: then every input is
  zero wherever the mask is False, so every combination is too, and the result is a
  :class:`MaskedSequence`. (The reference always returns an unmasked Sequence; checking
  mask identity is free, checking mask equality would need a device sync.)
"""

from __future__ import annotations

import enum
import functools
import operator
from collections.abc import Callable
from typing import Any

import torch

from sl.types import MaskedSequence, Sequence
from sl.validation import coerce_enum

__all__ = [
    "CombinationMode",
    "combine_mask",
    "sequence_broadcast_add",
    "sequence_broadcast_combine",
    "sequence_broadcast_combine_output_channel_shape",
    "sequence_broadcast_combine_output_dtype",
    "sequence_broadcast_concat",
    "sequence_broadcast_mean",
    "sequence_broadcast_product",
    "sequence_broadcast_stack",
]


@enum.unique
class CombinationMode(str, enum.Enum):
    """How ``Parallel``-like combinators merge their branches (reference ``CombinationMode``).

    Examples of output channel shapes for inputs ``x`` and ``y``::

        mode     x=() y=()   x=() y=(2)   x=(3) y=(3)   x=(5) y=(3, 5)
        STACK    (2,)        (2, 2)       (2, 3)        (2, 3, 5)
        CONCAT   (2,)        (3,)         (6,)          (3, 10)
        ADD      ()          (2,)         (3,)          (3, 5)
        MEAN     ()          (2,)         (3,)          (3, 5)
        PRODUCT  ()          (2,)         (3,)          (3, 5)

    Values are lower-case strings so configs stay readable; :meth:`coerce` also accepts
    the member names and the reference's integer values (STACK=1 ... PRODUCT=5).
    """

    STACK = "stack"
    CONCAT = "concat"
    ADD = "add"
    MEAN = "mean"
    PRODUCT = "product"

    @classmethod
    def coerce(cls, value: Any) -> CombinationMode:
        return coerce_enum(cls, value, owner="CombinationMode", arg="the combination", numbered=True)


def combine_mask(*masks: torch.Tensor) -> torch.Tensor:
    """Logical AND of ``[B, T]`` masks (broadcasting), short-cut when they are one tensor."""
    if not masks:
        raise ValueError("combine_mask needs at least one mask.")
    if all(m is masks[0] for m in masks[1:]):
        return masks[0]
    return functools.reduce(torch.logical_and, masks)


def _check_seqs(fn: str, seqs: tuple[Sequence, ...]) -> None:
    if not seqs:
        raise ValueError(f"{fn} needs at least one sequence.")
    for i, s in enumerate(seqs):
        if not isinstance(s, Sequence):
            raise TypeError(f"{fn} expects sl.Sequence inputs; argument {i} is {type(s).__name__}.")


def _broadcast_shapes(fn: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise ValueError(f"{fn}: shapes {list(shapes)} do not broadcast together.") from None


def _batch_time(fn: str, seqs: tuple[Sequence, ...]) -> tuple[int, int]:
    bt = _broadcast_shapes(fn, *(tuple(s.values.shape[:2]) for s in seqs))
    return bt[0], bt[1]


def _reshape_for_broadcast(seqs: tuple[Sequence, ...]) -> list[torch.Tensor]:
    """Values with size-1 channel dims inserted after [B, T] so all ranks match."""
    rank = max(s.values.dim() for s in seqs)
    out = []
    for s in seqs:
        v = s.values
        extra = rank - v.dim()
        if extra:
            v = v.reshape(*v.shape[:2], *((1,) * extra), *v.shape[2:])
        out.append(v)
    return out


def _result(seqs: tuple[Sequence, ...], values: torch.Tensor) -> Sequence:
    masks = [s.mask for s in seqs]
    mask = combine_mask(*masks)
    b, t = values.shape[:2]
    if tuple(mask.shape) != (b, t):
        mask = mask.expand(b, t)
    same = all(m is masks[0] for m in masks[1:])
    if same and all(isinstance(s, MaskedSequence) for s in seqs):
        return MaskedSequence._trusted(values, mask)
    return Sequence._trusted(values, mask)


def _common_dtype(values: list[torch.Tensor]) -> torch.dtype:
    return functools.reduce(torch.promote_types, [v.dtype for v in values])


def _reduce(fn: str, seqs: tuple[Sequence, ...], op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Sequence:
    _check_seqs(fn, seqs)
    first = seqs[0].values.shape
    if all(s.values.shape == first for s in seqs[1:]):  # the common case (a Residual): nothing to broadcast
        return _result(seqs, functools.reduce(op, [s.values for s in seqs]))
    values = _reshape_for_broadcast(seqs)
    b, t = _batch_time(fn, seqs)
    channels = _broadcast_shapes(fn, *(tuple(v.shape[2:]) for v in values))
    out = functools.reduce(op, values)
    out = out.expand(b, t, *channels) if tuple(out.shape) != (b, t, *channels) else out
    return _result(seqs, out)


def sequence_broadcast_add(*seqs: Sequence) -> Sequence:
    """Broadcast sum of ``seqs``; the mask is the AND of their masks."""
    return _reduce("sequence_broadcast_add", seqs, operator.add)


def sequence_broadcast_product(*seqs: Sequence) -> Sequence:
    """Broadcast product of ``seqs``; the mask is the AND of their masks."""
    return _reduce("sequence_broadcast_product", seqs, operator.mul)


def sequence_broadcast_mean(*seqs: Sequence) -> Sequence:
    """Broadcast mean of ``seqs`` (integer inputs give a floating result, as in the reference)."""
    total = _reduce("sequence_broadcast_mean", seqs, operator.add)
    values = total.values
    if not (values.is_floating_point() or values.is_complex()):
        values = values.to(torch.get_default_dtype())
    return type(total)._trusted(values / len(seqs), total.mask)


def sequence_broadcast_stack(*seqs: Sequence) -> Sequence:
    """Broadcasts ``seqs`` together and stacks them on a new first channel axis."""
    fn = "sequence_broadcast_stack"
    _check_seqs(fn, seqs)
    values = _reshape_for_broadcast(seqs)
    b, t = _batch_time(fn, seqs)
    channels = _broadcast_shapes(fn, *(tuple(v.shape[2:]) for v in values))
    dtype = _common_dtype(values)
    out = torch.stack([v.to(dtype).expand(b, t, *channels) for v in values], dim=2)
    return _result(seqs, out)


def sequence_broadcast_concat(*seqs: Sequence) -> Sequence:
    """Broadcasts all but the last channel axis, then concatenates on the last one.

    Sequences without channel axes count as having a last axis of size 1.
    """
    fn = "sequence_broadcast_concat"
    _check_seqs(fn, seqs)
    values = _reshape_for_broadcast(seqs)
    b, t = _batch_time(fn, seqs)
    outer = _broadcast_shapes(fn, *(tuple(v.shape[2:-1]) for v in values))
    dtype = _common_dtype(values)
    parts = []
    for v in values:
        if v.dim() == 2:
            v = v[..., None]
        parts.append(v.to(dtype).expand(b, t, *outer, v.shape[-1]))
    return _result(seqs, torch.cat(parts, dim=-1))


_COMBINE: dict[CombinationMode, Callable[..., Sequence]] = {
    CombinationMode.STACK: sequence_broadcast_stack,
    CombinationMode.CONCAT: sequence_broadcast_concat,
    CombinationMode.ADD: sequence_broadcast_add,
    CombinationMode.MEAN: sequence_broadcast_mean,
    CombinationMode.PRODUCT: sequence_broadcast_product,
}


def sequence_broadcast_combine(mode: CombinationMode | str | int, *seqs: Sequence) -> Sequence:
    """Combines ``seqs`` with the given :class:`CombinationMode`."""
    return _COMBINE[CombinationMode.coerce(mode)](*seqs)


def sequence_broadcast_combine_output_channel_shape(
    mode: CombinationMode | str | int, *channel_shapes: tuple[int, ...]
) -> tuple[int, ...]:
    """The channel shape :func:`sequence_broadcast_combine` produces for these input channel shapes."""
    mode = CombinationMode.coerce(mode)
    fn = f"sequence_broadcast_combine({mode.name})"
    if not channel_shapes:
        raise ValueError(f"{fn} needs at least one channel shape.")
    rank = max(len(s) for s in channel_shapes)
    shapes = [(1,) * (rank - len(s)) + tuple(s) for s in channel_shapes]
    if mode is CombinationMode.STACK:
        return (len(shapes), *_broadcast_shapes(fn, *shapes))
    if mode is CombinationMode.CONCAT:
        outer = _broadcast_shapes(fn, *(s[:-1] for s in shapes))
        lasts = [s[-1] if s else 1 for s in shapes]
        return (*outer, sum(lasts))
    return _broadcast_shapes(fn, *shapes)


def sequence_broadcast_combine_output_dtype(mode: CombinationMode | str | int, *dtypes: torch.dtype) -> torch.dtype:
    """The dtype :func:`sequence_broadcast_combine` produces: type promotion of the inputs
    (MEAN of integer or bool inputs gives the default float dtype)."""
    mode = CombinationMode.coerce(mode)
    if not dtypes:
        raise ValueError(f"sequence_broadcast_combine({mode.name}) needs at least one dtype.")
    dtype = functools.reduce(torch.promote_types, dtypes)
    if mode is CombinationMode.MEAN and not (dtype.is_floating_point or dtype.is_complex):
        return torch.get_default_dtype()
    return dtype
