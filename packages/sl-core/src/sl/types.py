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


@dataclasses.dataclass(frozen=True, eq=False)
class Sequence:
    """Values ``[B, T, *C]`` with a bool validity mask ``[B, T]``.

    Deliberately not a tensor: there is no array protocol, so the values cannot be
    used by accident while the mask is ignored. Use ``.values`` and ``.mask``.
    """

    values: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.values, torch.Tensor) or not isinstance(self.mask, torch.Tensor):
            raise TypeError(
                f"{name} expects torch.Tensor values and mask; got values of type "
                f"{type(self.values).__name__} and mask of type {type(self.mask).__name__}."
            )
        if self.mask.dtype != torch.bool:
            raise TypeError(
                f"{name} mask must have dtype torch.bool; got {self.mask.dtype}. "
                "Use mask.bool() or Sequence.from_lengths."
            )
        if self.values.dim() < 2 or self.mask.dim() < 2:
            raise ValueError(
                f"{name} values and mask must have rank >= 2 ([batch, time, ...]); got values "
                f"shape {tuple(self.values.shape)} and mask shape {tuple(self.mask.shape)}."
            )
        if tuple(self.values.shape[: self.mask.dim()]) != tuple(self.mask.shape):
            raise ValueError(
                f"{name} values shape {tuple(self.values.shape)} does not start with the mask "
                f"shape {tuple(self.mask.shape)}."
            )

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
        if values.dim() < 2:
            raise ValueError(f"Sequence.from_values expects rank >= 2 values; got shape {tuple(values.shape)}.")
        return MaskedSequence(values, torch.ones(values.shape[:2], dtype=torch.bool, device=values.device))

    @classmethod
    def from_lengths(cls, values: torch.Tensor, lengths: Any, is_masked: bool = False) -> Sequence:
        """A Sequence whose first ``lengths[b]`` steps are valid. Values are not masked."""
        lengths = torch.as_tensor(lengths, device=values.device)
        mask = sequence_mask(lengths, values.shape[1])
        return MaskedSequence(values, mask) if is_masked else Sequence(values, mask)

    @classmethod
    def concatenate_sequences(cls, sequences: Iterable[Sequence]) -> Sequence:
        """Concatenates on the time axis; the result is masked only if all inputs are."""
        seqs = list(sequences)
        if not seqs:
            raise ValueError("Sequence.concatenate_sequences needs at least one sequence.")
        out_type = MaskedSequence if all(isinstance(s, MaskedSequence) for s in seqs) else Sequence
        return out_type(torch.cat([s.values for s in seqs], 1), torch.cat([s.mask for s in seqs], 1))

    # -- transformations ----------------------------------------------------------
    def expanded_mask(self) -> torch.Tensor:
        """The mask reshaped to broadcast against values."""
        return self.mask.reshape(self.mask.shape + (1,) * (self.values.dim() - self.mask.dim()))

    def concatenate(self, other: Sequence) -> Sequence:
        out_type = type(self) if type(self) is type(other) else Sequence
        return out_type(torch.cat([self.values, other.values], 1), torch.cat([self.mask, other.mask], 1))

    def apply_values(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Sequence:
        """Transforms values; the result is assumed unmasked."""
        return Sequence(fn(self.values, *args, **kwargs), self.mask)

    def apply_values_masked(
        self: SequenceSelf, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> SequenceSelf:
        """Transforms values with an fn that maps 0 to 0, keeping the masked state."""
        return type(self)(fn(self.values, *args, **kwargs), self.mask)

    def apply(self, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], *args: Any, **kwargs: Any) -> Sequence:
        values, mask = fn(self.values, self.mask, *args, **kwargs)
        return Sequence(values, mask)

    def apply_masked(
        self: SequenceSelf, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], *args: Any, **kwargs: Any
    ) -> SequenceSelf:
        values, mask = fn(self.values, self.mask, *args, **kwargs)
        return type(self)(values, mask)

    def astype(self: SequenceSelf, dtype: torch.dtype | None) -> SequenceSelf:
        if dtype is None or dtype == self.values.dtype:
            return self
        return type(self)(self.values.to(dtype), self.mask)

    def to(self: SequenceSelf, *args: Any, **kwargs: Any) -> SequenceSelf:
        """Like ``Tensor.to``: moves values (device and/or dtype); the mask moves device only."""
        values = self.values.to(*args, **kwargs)
        return type(self)(values, self.mask.to(values.device))

    def lengths(self) -> torch.Tensor:
        """Number of valid timesteps per batch item (int64 ``[B]``)."""
        return self.mask.sum(dim=1)

    def __getitem__(self: SequenceSelf, index: Any) -> SequenceSelf:
        if isinstance(index, slice):
            index = (index,)
        if not isinstance(index, tuple) or not all(isinstance(i, slice) for i in index[:2]):
            raise ValueError(f"Sequence[...] may only slice (not index) the batch and time axes; got {index!r}.")
        return type(self)(self.values[index], self.mask[index[:2]])

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
        return out_type(torch.cat(parts_v, 1), torch.cat(parts_m, 1))  # type: ignore[return-value]

    def pad_to_multiple(self: SequenceSelf, block_size: int) -> SequenceSelf:
        t = self.values.shape[1]
        return self.pad_time(0, -t % block_size, valid=False)

    def reverse_time(self: SequenceSelf) -> SequenceSelf:
        return type(self)(torch.flip(self.values, [1]), torch.flip(self.mask, [1]))

    def mask_invalid(self, mask_value: complex | None = None) -> Sequence:
        """Replaces invalid timesteps with zero (returning a MaskedSequence) or ``mask_value``."""
        mask = self.expanded_mask()
        if mask_value is None:
            return MaskedSequence(
                torch.where(mask, self.values, torch.zeros((), dtype=self.values.dtype, device=self.values.device)),
                self.mask,
            )
        fill = torch.full((), mask_value, dtype=self.values.dtype, device=self.values.device)
        return Sequence(torch.where(mask, self.values, fill), self.mask)

    def unmask(self) -> Sequence:
        return self


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class MaskedSequence(Sequence):
    """A Sequence whose invalid timesteps are exactly zero."""

    def mask_invalid(self, mask_value: complex | None = None) -> Sequence:
        if mask_value is None:
            return self
        return Sequence(self.values, self.mask).mask_invalid(mask_value)

    def unmask(self) -> Sequence:
        return Sequence(self.values, self.mask)


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


def is_sequence(x: Any) -> bool:
    return isinstance(x, Sequence)
