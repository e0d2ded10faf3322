"""Argument handling shared by the convolution and pooling layers (private to sl-conv).

The time arithmetic itself (padding amounts, masks, latencies, buffers) is sl-core's
:mod:`sl.padding`; this module only normalises constructor arguments and handles the
non-streaming spatial axes of the 2-D/3-D layers, whose padding may also be an explicit
``(before, after)`` pair as in the reference.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence as TypingSequence
from typing import Any

import torch
import torch.nn.functional as F

from sl.toolkit import PaddingMode, check_positive_int, check_real
from sl.toolkit import padding as P

__all__ = [
    "SpatialPadding",
    "TimeMask",
    "as_ntuple",
    "channels_first_pads",
    "check_eps",
    "check_float_input",
    "explicit_spatial_padding",
    "max_value",
    "min_value",
    "normalize_spatial_paddings",
    "spatial_output_size",
    "time_padding_mode",
]

SpatialPadding = PaddingMode | tuple[int, int]


def as_ntuple(owner: str, arg: str, value: Any, n: int) -> tuple[int, ...]:
    """``value`` (an int, or ``n`` ints with time first) as an ``n``-tuple of positive ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{owner} expects {arg} to be an int or {n} ints (time axis first); got {tuple(value)!r}.")
        return tuple(check_positive_int(owner, f"{arg}[{i}]", v) for i, v in enumerate(value))
    return (check_positive_int(owner, arg, value),) * n


def check_eps(owner: str, value: Any, arg: str = "eps") -> float:
    """``value`` as a finite float >= 0 (the toolkit's number check), else an error naming ``owner``."""
    number = check_real(owner, arg, value)
    if number < 0:
        raise ValueError(f"{owner} expects a finite {arg} >= 0; got {value!r}.")
    return number


def check_float_input(owner: str, dtype: torch.dtype) -> None:
    """Normalizations compute statistics: integer and bool inputs would be rounded back silently."""
    if not (dtype.is_floating_point or dtype.is_complex):
        raise TypeError(
            f"{owner} expects floating-point input values (its output keeps the input dtype, so integer or bool "
            f"values would be rounded); got {dtype}. Cast them first (sl.Cast)."
        )


def time_padding_mode(
    owner: str, arg: str, value: Any, allowed: TypingSequence[PaddingMode] | None = None
) -> PaddingMode:
    """A time padding mode (a PaddingMode or its string value), with an error naming ``owner``."""
    if isinstance(value, (tuple, list)):
        raise ValueError(
            f"{owner}: {arg} must be a padding mode (one of {[m.value for m in (allowed or list(PaddingMode))]}); "
            f"explicit (before, after) padding is only supported on the spatial axes; got {value!r}."
        )
    return P.validate_padding(value, owner=f"{owner} ({arg})", allowed=allowed)


def _one_spatial(owner: str, arg: str, value: Any, allowed: TypingSequence[PaddingMode] | None) -> SpatialPadding:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{owner} expects {arg} to be a padding mode or a (before, after) pair; got {value!r}.")
        try:
            if isinstance(value[0], bool) or isinstance(value[1], bool):
                raise TypeError
            pair = (operator.index(value[0]), operator.index(value[1]))
        except TypeError:
            raise TypeError(f"{owner} expects {arg} as a (before, after) pair of ints; got {value!r}.") from None
        if allowed is not None:
            raise ValueError(
                f"{owner} does not support explicit {arg} {pair}; expected one of {[m.value for m in allowed]}."
            )
        if pair[0] < 0 or pair[1] < 0:
            raise ValueError(f"{owner} expects non-negative explicit {arg}; got {pair}.")
        return pair
    return P.validate_padding(value, owner=f"{owner} ({arg})", allowed=allowed)


def normalize_spatial_paddings(
    owner: str, value: Any, n: int, allowed: TypingSequence[PaddingMode] | None = None
) -> tuple[SpatialPadding, ...]:
    """``n`` spatial paddings: for ``n == 1`` one mode or pair; otherwise a sequence of ``n`` of them."""
    if n == 1:
        return (_one_spatial(owner, "spatial_padding", value, allowed),)
    if isinstance(value, (str, PaddingMode)):
        return (_one_spatial(owner, "spatial_padding", value, allowed),) * n
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(
            f"{owner} expects spatial_padding to be a padding mode or {n} entries (one per spatial axis, each a "
            f"mode or a (before, after) pair); got {value!r}."
        )
    return tuple(_one_spatial(owner, f"spatial_padding[{i}]", v, allowed) for i, v in enumerate(value))


def encode_spatial(paddings: tuple[SpatialPadding, ...]) -> Any:
    """Spatial paddings for a config: mode strings and (before, after) pairs."""
    out = [p.value if isinstance(p, PaddingMode) else tuple(p) for p in paddings]
    return out[0] if len(out) == 1 else tuple(out)


def explicit_spatial_padding(padding: SpatialPadding, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """``(before, after)`` for one spatial axis (a mode, through sl.padding, or an explicit pair)."""
    if isinstance(padding, PaddingMode):
        return P.explicit_padding(padding, kernel_size, stride, dilation)
    return padding


def spatial_output_size(
    owner: str, axis: int, size: int, pads: tuple[int, int], kernel_size: int, stride: int, dilation: int
) -> int:
    """Output size of one spatial axis; a kernel longer than the padded axis is an error naming ``owner``."""
    k = P.effective_kernel_size(kernel_size, dilation)
    padded = size + pads[0] + pads[1]
    if padded < k:
        raise ValueError(
            f"{owner}: input axis {axis} ([batch, time, *spatial, channels]) has size {size}, {padded} after padding "
            f"{pads}, which is shorter than the effective kernel size {k} (kernel {kernel_size}, dilation "
            f"{dilation}); expected at least {k - pads[0] - pads[1]}."
        )
    return (padded - k) // stride + 1


def channels_first_pads(pads: TypingSequence[tuple[int, int]]) -> list[int]:
    """``F.pad`` amounts for a channels-first tensor padded on its trailing ``len(pads)`` axes (first axis first)."""
    out: list[int] = []
    for before, after in reversed(list(pads)):
        out += [before, after]
    return out


def max_value(dtype: torch.dtype) -> float | int | bool:
    """The largest value of ``dtype`` (``inf`` for floats): the identity of a min reduction."""
    if dtype == torch.bool:
        return True
    if dtype.is_floating_point:
        return math.inf
    if dtype.is_complex:
        raise ValueError(f"min/max pooling is not defined for complex inputs ({dtype}).")
    return int(torch.iinfo(dtype).max)


def min_value(dtype: torch.dtype) -> float | int | bool:
    """The smallest value of ``dtype`` (``-inf`` for floats): the identity of a max reduction."""
    if dtype == torch.bool:
        return False
    if dtype.is_floating_point:
        return -math.inf
    if dtype.is_complex:
        raise ValueError(f"min/max pooling is not defined for complex inputs ({dtype}).")
    return int(torch.iinfo(dtype).min)


def pad_constant(x: torch.Tensor, pads: list[int], value: float | int | bool) -> torch.Tensor:
    """``F.pad`` with a constant (``pads`` in F.pad's order, non-negative), exact for every dtype.

    ``F.pad`` passes its value as a double, which cannot hold int64's extremes (the identities
    of min/max pooling), and has no bool kernel: other dtypes fill a new tensor instead.
    """
    if not any(pads):
        return x
    if x.dtype.is_floating_point or x.dtype.is_complex:
        return F.pad(x, pads, value=value)
    n = len(pads) // 2
    shape = list(x.shape)
    index: list[slice] = [slice(None)] * x.dim()
    for i in range(n):
        axis = x.dim() - 1 - i
        before, after = pads[2 * i], pads[2 * i + 1]
        shape[axis] += before + after
        index[axis] = slice(before, before + x.shape[axis])
    out = torch.full(shape, value, dtype=x.dtype, device=x.device)
    out[tuple(index)] = x
    return out


_KEEP_MASK = (PaddingMode.SAME, PaddingMode.CAUSAL, PaddingMode.REVERSE_CAUSAL, PaddingMode.SEMICAUSAL)
_AND_MASK = (PaddingMode.VALID, PaddingMode.CAUSAL_VALID, PaddingMode.REVERSE_CAUSAL_VALID)


class TimeMask:
    """The output mask of a convolution-like layer's time axis, via :func:`sl.padding.conv_output_mask`,
    called so that it traces under ``torch.compile``.

    ``sl.padding.validate_padding`` calls ``str.lower`` on a ``PaddingMode`` member, which dynamo
    cannot trace, and the functions call it again internally with the member. So the mode is
    passed as its plain string and only the paths that validate once are used: layer-wise
    keep-mask modes directly; layer-wise AND modes as the step-wise window AND over the mask
    padded here (the same reduction); step-wise keep-mask modes as the slice of the aligned
    input steps (what ``conv_output_mask`` returns there). ``semicausal_full`` goes through
    ``conv_output_mask`` as is (it does not trace; it does not step either).
    """

    def __init__(self, mode: PaddingMode, kernel_size: int, stride: int, dilation: int) -> None:
        self.mode = mode
        self.name = mode.value  # a plain str: traceable validation
        self.k, self.s, self.d = kernel_size, stride, dilation
        self.pads = P.explicit_padding(mode, kernel_size, stride, dilation)

    def layer(self, mask: torch.Tensor) -> torch.Tensor:
        if self.mode in _AND_MASK:
            before, after = self.pads
            if before or after:
                mask = F.pad(mask, (before, after), value=self.mode is PaddingMode.CAUSAL_VALID)
            return P.conv_output_mask(mask, "valid", self.k, self.s, self.d, is_step=True)
        return P.conv_output_mask(mask, self.name, self.k, self.s, self.d, is_step=False)

    def step(self, mask: torch.Tensor, outputs: int) -> torch.Tensor:
        """``mask``: the step buffer followed by the block; ``outputs``: the block's output steps."""
        if self.mode in _KEEP_MASK:
            before = self.pads[0]
            return mask[:, before : before + (outputs - 1) * self.s + 1 : self.s]
        return P.conv_output_mask(mask, self.name, self.k, self.s, self.d, is_step=True)
