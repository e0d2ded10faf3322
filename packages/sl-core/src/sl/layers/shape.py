"""Shape layers: reshape, slice, permute, squeeze/expand and reduce the channel axes
(the shape half of the reference's ``simple.py``), plus the two global layers that
reshape across time and channels.

Axis conventions follow the reference layer by layer. Axis arguments of
``Squeeze``, ``Transpose``, ``SwapAxes``, ``MoveAxis`` and the reductions
(``Max``, ``Mean``, ``Min``, ``Sum``) index the full ``[B, T, *C]`` array, so the
first channel axis is 2 and negative axes count from the end; an axis that lands
on batch (0) or time (1) is an error. ``ExpandDims`` (like the reference) takes
positions in the *channel* shape, and ``Argmax`` always reduces the last axis.

Channel-only layers act on each timestep independently: they are steppable with
receptive field ``(0, 0)``, and those that only move values around keep a
``MaskedSequence`` masked. ``GlobalReshape`` and ``GlobalEinopsRearrange`` move
values across timesteps, so they are not steppable and their receptive field is
``(-inf, inf)``.

``EinopsRearrange`` uses the ``einops`` package (a dependency of sl-core) rather than
a hand-written pattern parser: einops is small, well kept, works on torch tensors
(including under ``torch.compile``) and is exactly what the reference calls, so
patterns mean the same thing in both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import einops
import torch

from sl.layer import PreservesType, Stateless
from sl.types import Constants, ReceptiveField, Sequence

__all__ = [
    "Argmax",
    "EinopsRearrange",
    "ExpandDims",
    "Flatten",
    "GlobalEinopsRearrange",
    "GlobalReshape",
    "Max",
    "Mean",
    "Min",
    "MoveAxis",
    "Reshape",
    "Slice",
    "Squeeze",
    "Sum",
    "SwapAxes",
    "Transpose",
]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(owner: str, name: str, value: Any) -> tuple[int, ...]:
    """``value`` (an int or an iterable of ints) as a tuple of ints."""
    if _is_int(value):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner} expected {name} as an int or a sequence of ints; got {value!r}.")
    out = tuple(value)
    if not all(_is_int(a) for a in out):
        raise TypeError(f"{owner} expected {name} as an int or a sequence of ints; got {value!r}.")
    return out


def _reject_batch_time(owner: str, name: str, axes: tuple[int, ...]) -> None:
    """Construction-time check (as the reference's ``make``): 0 and 1 are batch and time."""
    if 0 in axes or 1 in axes:
        raise ValueError(
            f"{owner} {name}={axes} refers to the batch (0) or time (1) axis; only channel axes (>= 2, or "
            "negative) can be used."
        )


def _channel_axis(owner: str, axis: int, input_shape: tuple[int, ...]) -> int:
    """Normalises a full-array axis against ``[B, T, *input_shape]``; must be a channel axis."""
    rank = len(input_shape) + 2
    a = axis + rank if axis < 0 else axis
    if a in (0, 1):
        raise ValueError(
            f"{owner} axis {axis} refers to the {'batch' if a == 0 else 'time'} axis of an input of shape "
            f"[batch, time, *{tuple(input_shape)}]; only channel axes can be used."
        )
    if not 2 <= a < rank:
        raise ValueError(
            f"{owner} axis {axis} is out of range for an input of shape [batch, time, *{tuple(input_shape)}] "
            f"(rank {rank}); channel axes are 2..{rank - 1} or -{rank - 2}..-1."
        )
    return a


def _prod(shape: Iterable[int]) -> int:
    # A plain loop (no int(), no generator): sizes may be symbolic ints under torch.compile.
    n = 1
    for d in shape:
        n = n * d
    return n


def _shape_tuple(owner: str, name: str, shape: Any) -> tuple[int, ...]:
    out = _int_tuple(owner, name, shape)
    if any(d < 0 for d in out):
        raise ValueError(f"{owner} {name} must be non-negative sizes (no -1); got {out}.")
    return out


# -- reshapes -------------------------------------------------------------------------------


class Reshape(PreservesType, Stateless):
    """Reshapes the channel axes to ``output_shape`` (same number of elements; no -1)."""

    def __init__(self, output_shape: Iterable[int]) -> None:
        super().__init__()
        self.output_shape = _shape_tuple(type(self).__name__, "output_shape", output_shape)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if _prod(input_shape) != _prod(self.output_shape):
            raise ValueError(
                f"Reshape output_shape={self.output_shape} ({_prod(self.output_shape)} elements) must have as many "
                f"elements as the input channel shape {tuple(input_shape)} ({_prod(input_shape)} elements)."
            )
        return self.output_shape

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        shape = self.get_output_shape(x.channel_shape)
        return x.apply_values_masked(lambda v: v.reshape(*v.shape[:2], *shape))


class Flatten(PreservesType, Stateless):
    """Flattens the channel axes: ``[B, T, *C] -> [B, T, prod(C)]``."""

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (_prod(input_shape),)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        n = _prod(x.channel_shape)
        return x.apply_values_masked(lambda v: v.reshape(v.shape[0], v.shape[1], n))


class ExpandDims(PreservesType, Stateless):
    """Inserts unit axes into the channel shape.

    As in the reference code, ``axis`` values are positions in the channel shape
    (0 = before the first channel axis); a negative axis ``a`` means position
    ``a + rank + 1`` of the channel rank, and positions are inserted in sorted
    order. So ``axis=-1`` appends a unit axis and ``(0, -2)`` on ``[c, d]`` gives
    ``[1, 1, c, d]``.
    """

    def __init__(self, axis: int | Iterable[int]) -> None:
        super().__init__()
        self.axis = _int_tuple(type(self).__name__, "axis", axis)

    def _positions(self, input_shape: tuple[int, ...]) -> list[int]:
        rank = len(input_shape)
        dims = sorted({a + rank + 1 if a < 0 else a for a in self.axis})
        for d in dims:
            if not 0 <= d <= rank:
                raise ValueError(
                    f"ExpandDims axis={self.axis} must refer to positions in the channel shape "
                    f"{tuple(input_shape)} (0..{rank} or -{rank + 1}..-1)."
                )
        return dims

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        out = list(input_shape)
        for d in self._positions(tuple(input_shape)):
            out.insert(d, 1)
        return tuple(out)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        shape = self.get_output_shape(x.channel_shape)
        return x.apply_values_masked(lambda v: v.reshape(*v.shape[:2], *shape))


class Squeeze(PreservesType, Stateless):
    """Removes unit channel axes: all of them (``axis=None``) or the named ones.

    ``axis`` indexes the full ``[B, T, *C]`` array (2 = first channel axis, negative
    from the end); naming an axis whose size is not 1 is an error.
    """

    def __init__(self, axis: int | Iterable[int] | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.axis = None if axis is None else _int_tuple(owner, "axis", axis)
        if self.axis is not None:
            _reject_batch_time(owner, "axis", self.axis)

    def _dims(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.axis is None:
            return tuple(i + 2 for i, d in enumerate(input_shape) if d == 1)
        dims = []
        for a in self.axis:
            d = _channel_axis("Squeeze", a, input_shape)
            if input_shape[d - 2] != 1:
                raise ValueError(
                    f"Squeeze axis {a} has size {input_shape[d - 2]} in the input of shape "
                    f"[batch, time, *{tuple(input_shape)}]; only axes of size 1 can be squeezed."
                )
            dims.append(d)
        return tuple(sorted(set(dims)))

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        dims = self._dims(tuple(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i + 2 not in dims)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        shape = self.get_output_shape(x.channel_shape)
        return x.apply_values_masked(lambda v: v.reshape(*v.shape[:2], *shape))


# -- slicing -------------------------------------------------------------------------------

SliceEntry = tuple[int | None, int | None, int | None] | int | str | None
"""One entry of ``Slice.slices``: ``(start, stop, step)``, an index, ``None`` (new axis) or ``"..."``."""

_ELLIPSIS = "..."


def _slice_entry(owner: str, entry: Any) -> SliceEntry:
    if entry is None or _is_int(entry):
        return entry  # type: ignore[no-any-return]
    if entry is Ellipsis or entry == _ELLIPSIS:
        return _ELLIPSIS
    if isinstance(entry, slice):
        entry = (entry.start, entry.stop, entry.step)
    if isinstance(entry, (tuple, list)) and len(entry) <= 3 and all(e is None or _is_int(e) for e in entry):
        start, stop, step = (*entry, None, None, None)[:3]
        if step == 0:
            raise ValueError(f"{owner} slice {tuple(entry)} has step 0.")
        return (start, stop, step)
    raise TypeError(
        f"{owner} slices entries must be (start, stop, step) tuples, ints, None (new axis) or '...'; got {entry!r}."
    )


class Slice(PreservesType, Stateless):
    """numpy-style basic indexing of the channel axes (batch and time are kept whole).

    ``slices`` has one entry per channel axis, JSON-friendly: a ``(start, stop, step)``
    tuple (a Python ``slice`` is accepted and stored as such a tuple; items may be
    None, a shorter tuple is padded with None), an int index (drops the axis; must be
    in range), ``None`` (inserts a unit axis) or ``"..."`` (Python's ``Ellipsis`` is
    accepted too: as many full slices as needed). Without ``"..."`` the number of
    non-None entries must equal the channel rank. Negative steps work as in numpy.
    """

    def __init__(self, slices: Iterable[Any]) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(slices, (str, bytes)) or not isinstance(slices, Iterable):
            raise TypeError(f"{owner} expected a sequence of slice entries; got {slices!r}.")
        entries = tuple(_slice_entry(owner, s) for s in slices)
        if sum(e == _ELLIPSIS for e in entries) > 1:
            raise ValueError(f"{owner} slices may contain at most one '...'; got {entries}.")
        self.slices = entries

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        # The parsed, JSON-able form: slice objects and Ellipsis become tuples and '...'.
        return {**super().normalize_config(arguments), "slices": self.slices}

    def _expanded(self, input_shape: tuple[int, ...]) -> tuple[SliceEntry, ...]:
        rank = len(input_shape)
        indexing = sum(1 for s in self.slices if s is not None and s != _ELLIPSIS)
        if _ELLIPSIS in self.slices:
            if indexing > rank:
                raise ValueError(
                    f"Slice slices={self.slices} index {indexing} channel axes, but the input channel shape "
                    f"{tuple(input_shape)} has only {rank}."
                )
            i = self.slices.index(_ELLIPSIS)
            fill: tuple[SliceEntry, ...] = ((None, None, None),) * (rank - indexing)
            return self.slices[:i] + fill + self.slices[i + 1 :]
        if indexing != rank:
            raise ValueError(
                f"Slice slices={self.slices} index {indexing} channel axes (None entries excluded), but the input "
                f"channel shape {tuple(input_shape)} has {rank}. Use '...' to keep the remaining axes."
            )
        return self.slices

    def _plan(self, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[int], tuple[Any, ...]]:
        """(output shape, input channel axes to flip, torch index for the channel axes)."""
        out: list[int] = []
        flips: list[int] = []
        index: list[Any] = []
        dim = 0
        for entry in self._expanded(tuple(input_shape)):
            if entry is None:
                out.append(1)
                index.append(None)
                continue
            n = input_shape[dim]
            if _is_int(entry):
                i = int(entry)  # type: ignore[arg-type]
                if not -n <= i < n:
                    raise ValueError(
                        f"Slice index {i} is out of range for channel axis {dim} of size {n} (input channel shape "
                        f"{tuple(input_shape)})."
                    )
                index.append(i % n)
            else:
                start, stop, step = slice(*entry).indices(n)  # type: ignore[misc]
                length = len(range(start, stop, step))
                out.append(length)
                if step > 0 or length == 0:
                    index.append(
                        slice(start, start + (length - 1) * step + 1 if length else start, step if length else 1)
                    )
                else:
                    # torch has no negative-step slicing: flip the axis and slice forwards.
                    flips.append(dim)
                    first = n - 1 - start
                    index.append(slice(first, first + (length - 1) * -step + 1, -step))
            dim += 1
        return tuple(out), flips, tuple(index)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return self._plan(tuple(input_shape))[0]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        _, flips, index = self._plan(x.channel_shape)

        def apply(v: torch.Tensor) -> torch.Tensor:
            if flips:
                v = v.flip([d + 2 for d in flips])
            return v[(slice(None), slice(None), *index)]

        return x.apply_values_masked(apply)


# -- permutations ------------------------------------------------------------------------------


class _Permute(PreservesType, Stateless):
    """Base of Transpose / SwapAxes / MoveAxis: ``_axes`` gives the full-array permutation of the channel axes."""

    def _axes(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(input_shape[a - 2] for a in self._axes(tuple(input_shape)))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        axes = self._axes(x.channel_shape)
        return x.apply_values_masked(lambda v: v.permute(0, 1, *axes))


class Transpose(_Permute):
    """Permutes the channel axes: ``axes`` is a permutation of the full-array channel
    axes ``2..ndim-1`` (negative axes allowed); ``None`` reverses them."""

    def __init__(self, axes: Iterable[int] | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.axes = None if axes is None else _int_tuple(owner, "axes", axes)
        if self.axes is not None:
            _reject_batch_time(owner, "axes", self.axes)

    def _axes(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        ndim = len(input_shape) + 2
        channel_axes = tuple(range(2, ndim))
        if self.axes is None:
            return channel_axes[::-1]
        axes = tuple(a + ndim if a < 0 else a for a in self.axes)
        if tuple(sorted(axes)) != channel_axes:
            raise ValueError(
                f"Transpose axes={self.axes} must be a permutation of the channel axes {channel_axes} of an input "
                f"of shape [batch, time, *{tuple(input_shape)}]."
            )
        return axes


class SwapAxes(_Permute):
    """Swaps two channel axes (full-array indices, negative allowed)."""

    def __init__(self, axis1: int, axis2: int) -> None:
        super().__init__()
        owner = type(self).__name__
        self.axis1, self.axis2 = _int_tuple(owner, "axes", (axis1, axis2))
        _reject_batch_time(owner, "axes", (self.axis1, self.axis2))

    def _axes(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        a1 = _channel_axis("SwapAxes", self.axis1, input_shape)
        a2 = _channel_axis("SwapAxes", self.axis2, input_shape)
        perm = list(range(len(input_shape) + 2))
        perm[a1], perm[a2] = perm[a2], perm[a1]
        return tuple(perm[2:])


class MoveAxis(_Permute):
    """Moves channel axes ``source`` to positions ``destination`` (as ``numpy.moveaxis``,
    full-array indices, negative allowed)."""

    def __init__(self, source: int | Iterable[int], destination: int | Iterable[int]) -> None:
        super().__init__()
        owner = type(self).__name__
        self.source = _int_tuple(owner, "source", source)
        self.destination = _int_tuple(owner, "destination", destination)
        _reject_batch_time(owner, "source", self.source)
        _reject_batch_time(owner, "destination", self.destination)
        if len(self.source) != len(self.destination):
            raise ValueError(
                f"MoveAxis source {self.source} and destination {self.destination} must have the same number of axes."
            )

    def _axes(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        source = [_channel_axis("MoveAxis", a, input_shape) for a in self.source]
        destination = [_channel_axis("MoveAxis", a, input_shape) for a in self.destination]
        if len(set(source)) != len(source) or len(set(destination)) != len(destination):
            raise ValueError(f"MoveAxis source {self.source} and destination {self.destination} must not repeat axes.")
        perm = [i for i in range(len(input_shape) + 2) if i not in source]
        for dest, src in sorted(zip(destination, source)):
            perm.insert(dest, src)
        return tuple(perm[2:])


# -- einops ----------------------------------------------------------------------------------


def _pattern_labels(pattern: str) -> set[str]:
    return set(pattern.replace("(", " ").replace(")", " ").replace("->", " ").split())


def _check_pattern(owner: str, pattern: Any, reserved: tuple[str, ...]) -> str:
    if not isinstance(pattern, str) or "->" not in pattern:
        raise ValueError(f"{owner} expected an einops pattern 'input -> output'; got {pattern!r}.")
    used = sorted(_pattern_labels(pattern) & set(reserved))
    if used:
        raise ValueError(f"{owner} pattern {pattern!r} uses the reserved axis label(s) {used}.")
    return pattern


def _check_axes_lengths(owner: str, axes_lengths: Any) -> dict[str, int] | None:
    if axes_lengths is None:
        return None
    if not isinstance(axes_lengths, Mapping) or not all(
        isinstance(k, str) and _is_int(v) for k, v in axes_lengths.items()
    ):
        raise TypeError(f"{owner} expected axes_lengths as a dict of axis name to int; got {axes_lengths!r}.")
    return dict(axes_lengths)


def _rearrange(owner: str, pattern: str, axes_lengths: dict[str, int] | None, v: torch.Tensor) -> torch.Tensor:
    try:
        return einops.rearrange(v, pattern, **(axes_lengths or {}))
    except einops.EinopsError as e:
        raise ValueError(f"{owner} could not apply {pattern!r} to an array of shape {tuple(v.shape)}: {e}") from None


class EinopsRearrange(PreservesType, Stateless):
    """``einops.rearrange`` of the channel axes: ``pattern`` omits batch and time
    (``"(c d) -> c d"``); ``axes_lengths`` gives sizes einops cannot infer."""

    def __init__(self, pattern: str, axes_lengths: Mapping[str, int] | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.pattern = _check_pattern(owner, pattern, ("batch", "time"))
        self.axes_lengths = _check_axes_lengths(owner, axes_lengths)
        before, after = pattern.split("->", 1)
        self._full_pattern = f"batch time {before.strip()} -> batch time {after.strip()}"

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        probe = torch.empty((1, 1, *input_shape), device="meta")
        return tuple(_rearrange(type(self).__name__, self._full_pattern, self.axes_lengths, probe).shape[2:])

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        # The reference returns a plain Sequence here (apply_values), so we do too.
        return x.apply_values(lambda v: _rearrange(type(self).__name__, self._full_pattern, self.axes_lengths, v))


class GlobalEinopsRearrange(PreservesType, Stateless):
    """``einops.rearrange`` over time and channels (``pattern`` omits only batch).

    An output timestep is valid when all (``ceil_mode=False``) or any
    (``ceil_mode=True``) of the input elements moved into it were valid. Invalid
    inputs are zeroed first. Not steppable; receptive field ``(-inf, inf)``.
    """

    def __init__(self, pattern: str, axes_lengths: Mapping[str, int] | None = None, ceil_mode: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        self.pattern = _check_pattern(owner, pattern, ("batch",))
        self.axes_lengths = _check_axes_lengths(owner, axes_lengths)
        self.ceil_mode = bool(ceil_mode)
        before, after = pattern.split("->", 1)
        self._full_pattern = f"batch {before.strip()} -> batch {after.strip()}"

    @property
    def supports_step(self) -> bool:
        return False

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, math.inf)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        # The input time length is unknown here; like the reference, probe with the product of the
        # given axis lengths so patterns that split time see a divisible length.
        time = _prod(self.axes_lengths.values()) if self.axes_lengths else 1
        probe = torch.empty((1, time, *input_shape), device="meta")
        return tuple(_rearrange(type(self).__name__, self._full_pattern, self.axes_lengths, probe).shape[2:])

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        owner = type(self).__name__
        values = _rearrange(owner, self._full_pattern, self.axes_lengths, x.mask_invalid().values)
        mask = _rearrange(owner, self._full_pattern, self.axes_lengths, x.expanded_mask().expand(x.values.shape))
        reduce_dims = tuple(range(2, mask.dim()))
        if reduce_dims:
            mask = mask.any(dim=reduce_dims) if self.ceil_mode else mask.all(dim=reduce_dims)
        return Sequence._trusted(values, mask)


class GlobalReshape(PreservesType, Stateless):
    """Reshapes time and channels together: ``[B, T, *C] -> [B, *output_shape]``.

    ``output_shape[0]`` is the new time length; ``prod(output_shape)`` must equal
    ``T * prod(C)``. An output timestep is valid only if every element reshaped
    into it came from a valid input timestep. Not steppable; receptive field
    ``(-inf, inf)``.
    """

    def __init__(self, output_shape: Iterable[int]) -> None:
        super().__init__()
        owner = type(self).__name__
        self.output_shape = _shape_tuple(owner, "output_shape", output_shape)
        if not self.output_shape:
            raise ValueError(f"{owner} output_shape must include the time axis (at least one entry).")

    @property
    def supports_step(self) -> bool:
        return False

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, math.inf)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return self.output_shape[1:]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        have = _prod(x.shape[1:])
        if have != _prod(self.output_shape):
            raise ValueError(
                f"GlobalReshape output_shape={self.output_shape} ({_prod(self.output_shape)} elements) must have as "
                f"many elements as the input's [time, *channels] shape {x.shape[1:]} ({have} elements)."
            )
        out_shape = (x.shape[0], *self.output_shape)
        values = x.values.reshape(out_shape)
        mask = x.expanded_mask().expand(x.values.shape).reshape(out_shape)
        reduce_dims = tuple(range(2, mask.dim()))
        if reduce_dims:
            mask = mask.all(dim=reduce_dims)
        return Sequence._trusted(values, mask)


# -- reductions -------------------------------------------------------------------------------


class _ReduceChannels(PreservesType, Stateless):
    """Reduces channel axes (full-array indices; ``None`` = all channel axes).

    Reducing zeros gives zero, so a MaskedSequence stays masked.
    """

    def __init__(self, axis: int | Iterable[int] | None = -1, keepdims: bool = False) -> None:
        super().__init__()
        self.axis = None if axis is None else _int_tuple(type(self).__name__, "axis", axis)
        self.keepdims = bool(keepdims)

    def _reduce(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def _dims(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.axis is None:
            return tuple(range(2, len(input_shape) + 2))
        dims = [_channel_axis(type(self).__name__, a, input_shape) for a in self.axis]
        if len(set(dims)) != len(dims):
            raise ValueError(f"{type(self).__name__} axis={self.axis} names the same axis twice.")
        return tuple(sorted(dims))

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        dims = self._dims(tuple(input_shape))
        if self.keepdims:
            return tuple(1 if i + 2 in dims else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i + 2 not in dims)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        dims = self._dims(x.channel_shape)
        if not dims:  # torch reduces over everything for dim=(); the reference returns the input.
            return x
        return x.apply_values_masked(self._reduce, dims)


class Mean(_ReduceChannels):
    """Mean over channel axes (floating or complex inputs)."""

    def _reduce(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not (v.is_floating_point() or v.is_complex()):
            raise TypeError(f"Mean expects a floating or complex input; got {v.dtype}. Cast it first (sl.Cast).")
        return v.mean(dim=dims, keepdim=self.keepdims)


class Sum(_ReduceChannels):
    """Sum over channel axes (the dtype is kept: integer sums are not promoted)."""

    def _reduce(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return v.sum(dim=dims, keepdim=self.keepdims, dtype=v.dtype)


class Max(_ReduceChannels):
    """Maximum over channel axes."""

    def _reduce(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return v.amax(dim=dims, keepdim=self.keepdims)


class Min(_ReduceChannels):
    """Minimum over channel axes."""

    def _reduce(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return v.amin(dim=dims, keepdim=self.keepdims)


class Argmax(Stateless):
    """Index of the maximum over the last channel axis, as int32 (as the reference)."""

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if not input_shape:
            raise ValueError("Argmax needs at least one channel axis to reduce; got channel shape ().")
        return tuple(input_shape[:-1])

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return torch.int32

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        return x.apply_values(lambda v: v.argmax(dim=-1).to(torch.int32))
