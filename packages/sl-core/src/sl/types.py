"""Core data types: :class:`Sequence`, :class:`MaskedSequence`, :class:`ChannelSpec`.

A ``Sequence`` pairs ``values`` shaped ``[batch, time, *channels]`` with a boolean
``mask`` shaped ``[batch, time]`` (True = valid). The mask always travels with the
data so no layer can forget it. ``MaskedSequence`` additionally promises that every
invalid timestep is exactly zero, which lets layers skip re-masking.

Both are frozen dataclasses registered as pytree nodes, so ``torch.compile``,
``torch.export`` and ``torch.utils._pytree`` see straight through them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import torch
import torch.utils._pytree as pytree

__all__ = [
    "ChannelSpec",
    "Constants",
    "Emits",
    "MaskedSequence",
    "PaddingMode",
    "ReceptiveField",
    "Sequence",
    "State",
    "sequence_mask",
]

State = Any
"""A pytree (tuples, dicts, Sequences) of fixed-shape tensors."""
Emits = Any
"""A pytree of tensors / Sequences produced as auxiliary outputs."""
Constants = dict[str, Any]
"""Side inputs (tensors or Sequences) broadcast to every layer."""
ReceptiveField = tuple[float, float] | None
"""``(start, end)`` input offsets that influence an output step; None = no influence."""

SequenceSelf = TypeVar("SequenceSelf", bound="Sequence")


class ChannelSpec(NamedTuple):
    """The per-timestep shape and dtype of a sequence (no batch or time axis)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class PaddingMode(str, enum.Enum):
    """Time padding modes shared by convolution-like layers (reference semantics)."""

    VALID = "valid"
    SAME = "same"
    CAUSAL_VALID = "causal_valid"
    REVERSE_CAUSAL_VALID = "reverse_causal_valid"
    CAUSAL = "causal"
    REVERSE_CAUSAL = "reverse_causal"
    SEMICAUSAL = "semicausal"
    SEMICAUSAL_FULL = "semicausal_full"


def sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """A ``[B, max_length]`` bool mask with the first ``lengths[b]`` steps True."""
    lengths = torch.as_tensor(lengths)
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def _validate(name: str, values: Any, mask: Any) -> None:
    if not isinstance(values, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"{name} expects torch.Tensor values and mask; got values of type "
            f"{type(values).__name__} and mask of type {type(mask).__name__}."
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} mask must have dtype torch.bool; got {mask.dtype}. Use mask.bool() or Sequence.from_lengths."
        )
    if mask.dim() != 2 or values.dim() < 2:
        raise ValueError(
            f"{name} needs values of rank >= 2 ([batch, time, ...]) and a rank-2 mask ([batch, time]); got values "
            f"shape {tuple(values.shape)} and mask shape {tuple(mask.shape)}."
        )
    if values.shape[0] != mask.shape[0] or values.shape[1] != mask.shape[1]:
        raise ValueError(
            f"{name} values shape {tuple(values.shape)} does not start with the mask shape {tuple(mask.shape)}."
        )
    if values.device != mask.device:
        raise ValueError(
            f"{name} values are on {values.device} but the mask is on {mask.device}; move both to one device "
            "(Sequence.to moves both)."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Sequence:
    """Values ``[B, T, *C]`` with a bool validity mask ``[B, T]``.

    Deliberately not a tensor: there is no array protocol, so the values cannot be
    used by accident while the mask is ignored. Use ``.values`` and ``.mask``.

    The constructor validates its arguments (tensors, a bool rank-2 mask on the
    values' device whose shape starts the values' shape). Methods that derive a
    sequence from a valid one (``apply_values``, slicing, ``pad_time``, ...) skip
    that validation: it is Python overhead on every step of a stream.
    """

    values: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        _validate(type(self).__name__, self.values, self.mask)

    @classmethod
    def _trusted(cls: type[SequenceSelf], values: torch.Tensor, mask: torch.Tensor) -> SequenceSelf:
        """Builds without validation (and, for MaskedSequence, without masking): internal use
        where the arguments are known to be valid, e.g. derived from a validated sequence."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "values", values)
        object.__setattr__(obj, "mask", mask)
        return obj

    # -- array-like metadata ------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def ndim(self) -> int:
        return self.values.dim()

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def channel_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[2:])

    @property
    def channel_spec(self) -> ChannelSpec:
        return ChannelSpec(self.channel_shape, self.values.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # -- constructors -------------------------------------------------------------
    @classmethod
    def from_values(cls, values: torch.Tensor) -> MaskedSequence:
        """A MaskedSequence whose every timestep is valid."""
        if not isinstance(values, torch.Tensor) or values.dim() < 2:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"Sequence.from_values expects a tensor of rank >= 2 ([batch, time, ...]); got {shape}.")
        return MaskedSequence._trusted(values, torch.ones(values.shape[:2], dtype=torch.bool, device=values.device))

    @classmethod
    def from_lengths(cls, values: torch.Tensor, lengths: Any, is_masked: bool = False) -> Sequence:
        """A Sequence whose first ``lengths[b]`` steps are valid.

        Values are not changed unless ``is_masked``: then the steps past each length are
        zeroed and a MaskedSequence is returned. Lengths must lie in ``[0, T]`` (checked,
        so this reads the lengths on the host: build masks for a live stream yourself).
        """
        if not isinstance(values, torch.Tensor) or values.dim() < 2:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"Sequence.from_lengths expects values of rank >= 2 ([batch, time, ...]); got {shape}.")
        lengths = torch.as_tensor(lengths, device=values.device)
        batch, time = values.shape[0], values.shape[1]
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(
                f"Sequence.from_lengths expects one length per batch row ({batch}); got lengths of shape "
                f"{tuple(lengths.shape)}."
            )
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"Sequence.from_lengths expects integer lengths; got {lengths.dtype}.")
        if batch and (bool((lengths < 0).any()) or bool((lengths > time).any())):
            raise ValueError(
                f"Sequence.from_lengths: lengths must lie in [0, {time}] (the time axis); got {lengths.tolist()}."
            )
        mask = sequence_mask(lengths, time)
        if is_masked:
            return Sequence._trusted(values, mask).mask_invalid()
        return Sequence._trusted(values, mask)

    @classmethod
    def concatenate_sequences(cls, sequences: Iterable[Sequence]) -> Sequence:
        """Concatenates on the time axis; the result is masked only if all inputs are."""
        seqs = list(sequences)
        if not seqs:
            raise ValueError("Sequence.concatenate_sequences needs at least one sequence.")
        if len(seqs) == 1:
            return seqs[0]
        out_type = MaskedSequence if all(isinstance(s, MaskedSequence) for s in seqs) else Sequence
        return out_type._trusted(torch.cat([s.values for s in seqs], 1), torch.cat([s.mask for s in seqs], 1))

    # -- transformations ----------------------------------------------------------
    def expanded_mask(self) -> torch.Tensor:
        """The mask reshaped to broadcast against values."""
        return self.mask.reshape(self.mask.shape + (1,) * (self.values.dim() - 2))

    def concatenate(self, other: Sequence) -> Sequence:
        out_type = type(self) if type(self) is type(other) else Sequence
        return out_type._trusted(torch.cat([self.values, other.values], 1), torch.cat([self.mask, other.mask], 1))

    def apply_values(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Sequence:
        """Transforms values; the result is assumed unmasked."""
        return Sequence._trusted(fn(self.values, *args, **kwargs), self.mask)

    def apply_values_masked(
        self: SequenceSelf, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> SequenceSelf:
        """Transforms values with an fn that maps 0 to 0, keeping the masked state."""
        return type(self)._trusted(fn(self.values, *args, **kwargs), self.mask)

    def apply(self, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], *args: Any, **kwargs: Any) -> Sequence:
        values, mask = fn(self.values, self.mask, *args, **kwargs)
        return Sequence._trusted(values, mask)

    def apply_masked(
        self: SequenceSelf, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], *args: Any, **kwargs: Any
    ) -> SequenceSelf:
        values, mask = fn(self.values, self.mask, *args, **kwargs)
        return type(self)._trusted(values, mask)

    def astype(self: SequenceSelf, dtype: torch.dtype | None) -> SequenceSelf:
        if dtype is None or dtype == self.values.dtype:
            return self
        return type(self)._trusted(self.values.to(dtype), self.mask)

    def to(self: SequenceSelf, *args: Any, **kwargs: Any) -> SequenceSelf:
        """Like ``Tensor.to``: moves values (device and/or dtype); the mask moves device only."""
        values = self.values.to(*args, **kwargs)
        return type(self)._trusted(values, self.mask.to(values.device))

    def lengths(self) -> torch.Tensor:
        """Number of valid timesteps per batch item (int64 ``[B]``)."""
        return self.mask.sum(dim=1)

    def __getitem__(self: SequenceSelf, index: Any) -> SequenceSelf:
        if type(index) is tuple and len(index) == 2 and type(index[0]) is slice and type(index[1]) is slice:
            return type(self)._trusted(self.values[index], self.mask[index])  # x[:, a:b], a stream's usual cut
        if isinstance(index, slice):
            index = (index,)
        if not isinstance(index, tuple) or not all(isinstance(i, slice) for i in index[:2]):
            raise ValueError(f"Sequence[...] may only slice (not index) the batch and time axes; got {index!r}.")
        return type(self)._trusted(self.values[index], self.mask[index[:2]])

    def pad_time(
        self: SequenceSelf, pad_left: int, pad_right: int, valid: bool, pad_value: float | None = None
    ) -> SequenceSelf:
        """Pads with timesteps on both sides, marked ``valid`` or not."""
        if not pad_left and not pad_right:
            return self
        if pad_left < 0 or pad_right < 0:
            raise ValueError(f"Sequence.pad_time expects non-negative padding; got ({pad_left}, {pad_right}).")
        value = 0.0 if pad_value is None else pad_value
        v = self.values
        b = v.shape[0]
        parts_v, parts_m = [], []
        if pad_left:
            parts_v.append(torch.full((b, pad_left, *v.shape[2:]), value, dtype=v.dtype, device=v.device))
            parts_m.append(torch.full((b, pad_left), valid, dtype=torch.bool, device=v.device))
        parts_v.append(v)
        parts_m.append(self.mask)
        if pad_right:
            parts_v.append(torch.full((b, pad_right, *v.shape[2:]), value, dtype=v.dtype, device=v.device))
            parts_m.append(torch.full((b, pad_right), valid, dtype=torch.bool, device=v.device))
        out_type: type[Sequence] = type(self)
        if isinstance(self, MaskedSequence) and not valid and value != 0:
            out_type = Sequence
        return out_type._trusted(torch.cat(parts_v, 1), torch.cat(parts_m, 1))  # type: ignore[return-value]

    def pad_to_multiple(self: SequenceSelf, block_size: int) -> SequenceSelf:
        t = self.values.shape[1]
        return self.pad_time(0, -t % block_size, valid=False)

    def reverse_time(self: SequenceSelf) -> SequenceSelf:
        return type(self)._trusted(torch.flip(self.values, [1]), torch.flip(self.mask, [1]))

    def mask_invalid(self, mask_value: complex | None = None) -> Sequence:
        """Replaces invalid timesteps with zero (returning a MaskedSequence) or ``mask_value``."""
        mask = self.expanded_mask()
        if mask_value is None:
            # A Python scalar keeps the values' dtype (bool needs False: 0 would promote it to int64)
            # and saves allocating a zero tensor on every call.
            zero = False if self.values.dtype == torch.bool else 0
            return MaskedSequence._trusted(torch.where(mask, self.values, zero), self.mask)
        fill = torch.full((), mask_value, dtype=self.values.dtype, device=self.values.device)
        return Sequence._trusted(torch.where(mask, self.values, fill), self.mask)

    def unmask(self) -> Sequence:
        return self


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class MaskedSequence(Sequence):
    """A Sequence whose invalid timesteps are exactly zero.

    The constructor zeroes them (``MaskedSequence(values, mask)`` is always masked);
    sequences derived from a MaskedSequence by mask-preserving methods stay masked
    without recomputing anything.
    """

    def __post_init__(self) -> None:
        _validate(type(self).__name__, self.values, self.mask)
        zero = torch.zeros((), dtype=self.values.dtype, device=self.values.device)
        mask = self.mask.reshape(self.mask.shape + (1,) * (self.values.dim() - 2))
        object.__setattr__(self, "values", torch.where(mask, self.values, zero))

    def mask_invalid(self, mask_value: complex | None = None) -> Sequence:
        if mask_value is None:
            return self
        return Sequence._trusted(self.values, self.mask).mask_invalid(mask_value)

    def unmask(self) -> Sequence:
        return Sequence._trusted(self.values, self.mask)


def _register_pytree(cls: type[Sequence]) -> None:
    def flatten(s: Sequence) -> tuple[list[torch.Tensor], None]:
        return [s.values, s.mask], None

    def unflatten(children: Iterable[Any], _ctx: None) -> Sequence:
        values, mask = children
        obj = object.__new__(cls)
        object.__setattr__(obj, "values", values)
        object.__setattr__(obj, "mask", mask)
        return obj

    def flatten_with_keys(s: Sequence) -> tuple[list[tuple[Any, torch.Tensor]], None]:
        return [(pytree.GetAttrKey("values"), s.values), (pytree.GetAttrKey("mask"), s.mask)], None

    pytree.register_pytree_node(
        cls,
        flatten,
        unflatten,
        serialized_type_name=f"sl.types.{cls.__name__}",
        flatten_with_keys_fn=flatten_with_keys,
    )


_register_pytree(Sequence)
_register_pytree(MaskedSequence)
# torch.export.save stores example inputs; without this, torch.export.load of a program taking a
# Sequence logs an unpickling error and falls back to weights_only=False.
torch.serialization.add_safe_globals([Sequence, MaskedSequence])
