"""Pooling over time (the reference's ``pooling.py``), streaming like the reference.

Layers: :class:`MaxPooling1D`/``2D``/``3D``, :class:`MinPooling1D`/``2D``/``3D``,
:class:`AveragePooling1D`/``2D``/``3D``. The 1-D layers pool the time axis, the 2-D
layers time and the first channel axis, the 3-D layers time and the first two channel
axes; any further channel axes are carried along (pooled independently). No parameters.

Windows follow the convolutions' time arithmetic (:mod:`sl.padding`): ``kernel_size``
(the reference's ``pool_size``; an int or one per pooled axis, time first), ``stride``
(default 1 as in the reference, not torch's ``kernel_size``), ``dilation``, a time
padding mode and, for 2-D/3-D, ``spatial_padding`` (a mode or an explicit
``(before, after)`` pair per spatial axis). ``block_size = stride[0]``, ``output_ratio =
1 / stride[0]``; the output mask is the convolution's for the same window.

Padding and invalid timesteps hold the reduction's identity, so they never win a max
or a min: ``-inf``/``+inf`` for floats (the dtype's min/max for integers, False/True for
bool) and 0 for averages. ``AveragePooling*`` divides the window sum by the window size
(padding counts as zeros), or with ``masked_average=True`` by the number of valid
timesteps in the window times the spatial window size (0 where none is valid, with a
zero gradient); integer inputs use floor division. Layer mode is one
``F.max_pool*d``/``F.avg_pool*d`` call on the explicitly padded input (an unfold-based
reduction for integer/bool dtypes and dilated averages).

``valid`` (layer mode) needs at least the effective window of timesteps, as the
convolutions: a shorter non-empty input is a ValueError naming the layer (an empty input
gives an empty output). This deviates from the reference, which returns an empty output
there.

Steppable paddings: ``reverse_causal_valid``, ``causal``, ``reverse_causal``,
``semicausal`` (``causal_valid`` does not step here, unlike the convolutions, as in the
reference). ``input_latency`` is the convolution's, except 0 for ``semicausal_full``
(as the reference). State: the last ``buffer_width`` input steps filled with the
identity where invalid, as a plain ``Sequence`` ``(values [B, W, *C], mask [B, W])``
(initially the identity, valid for ``reverse_causal_valid`` and invalid otherwise), or
``()`` when ``W == 0``.
"""

from __future__ import annotations

import fractions
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sl.layer import PreservesType, SequenceLayer
from sl.toolkit import PaddingMode, layer_device, track_device
from sl.toolkit import padding as P
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_conv._common import (
    SpatialPadding,
    TimeMask,
    as_ntuple,
    channels_first_pads,
    encode_spatial,
    explicit_spatial_padding,
    max_value,
    min_value,
    normalize_spatial_paddings,
    pad_constant,
    spatial_output_size,
    time_padding_mode,
)

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "MinPooling1D",
    "MinPooling2D",
    "MinPooling3D",
]

POOLING_STEPPABLE_PADDINGS = (
    PaddingMode.REVERSE_CAUSAL_VALID,
    PaddingMode.CAUSAL,
    PaddingMode.REVERSE_CAUSAL,
    PaddingMode.SEMICAUSAL,
)

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window_sum(v: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Window sums of a channels-first float tensor (no dilation) with one avg-pool call."""
    n = len(kernel)
    if n == 1:
        y = F.avg_pool2d(v[..., None], (kernel[0], 1), (stride[0], 1), 0, divisor_override=1)
        return y[..., 0]
    if n == 2:
        return F.avg_pool2d(v, kernel, stride, 0, divisor_override=1)
    if v.device.type == "cpu" and v.dtype in (torch.bfloat16, torch.float16):
        # avg_pool3d has no low-precision CPU kernel: sum in float32 (at least as accurate).
        return F.avg_pool3d(v.float(), kernel, stride, 0, divisor_override=1).to(v.dtype)
    return F.avg_pool3d(v, kernel, stride, 0, divisor_override=1)


def _unfold_reduce(
    v: torch.Tensor, kind: str, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """The general window reduction (any dtype, any dilation): unfold every pooled axis, then reduce."""
    n = len(kernel)
    for i in range(n):
        span = (kernel[i] - 1) * dilation[i] + 1
        v = v.unfold(2 + i, span, stride[i])
        if dilation[i] > 1:
            v = v[..., :: dilation[i]]
    dims = tuple(range(-n, 0))
    if kind == "max":
        return v.amax(dims)
    if kind == "min":
        return v.amin(dims)
    return v.sum(dims, dtype=v.dtype)


class _Pooling(PreservesType, SequenceLayer):
    """Windows, padding, masks and streaming shared by every pooling layer."""

    _rank: ClassVar[int]  # pooled axes: time plus spatial ones
    _kind: ClassVar[str]  # "max", "min" or "sum"
    masked_average: bool = False

    def _configure(self, kernel_size: Any, stride: Any, dilation: Any, time_padding: Any, spatial_padding: Any) -> None:
        owner = type(self).__name__
        n = self._rank
        self.kernel_size = as_ntuple(owner, "kernel_size", kernel_size, n)
        self.stride = as_ntuple(owner, "stride", stride, n)
        self.dilation = as_ntuple(owner, "dilation", dilation, n)
        self._time_padding = time_padding_mode(owner, "padding" if n == 1 else "time_padding", time_padding)
        self._spatial_padding: tuple[SpatialPadding, ...] = (
            normalize_spatial_paddings(owner, spatial_padding, n - 1) if n > 1 else ()
        )
        mode = self._time_padding
        self._k, self._s, self._d = self.kernel_size[0], self.stride[0], self.dilation[0]
        k, s, d = self._k, self._s, self._d
        self._ek = P.effective_kernel_size(k, d)
        self._time_pad = P.explicit_padding(mode, k, s, d)
        self._spatial_pads = tuple(
            explicit_spatial_padding(p, self.kernel_size[i + 1], self.stride[i + 1], self.dilation[i + 1])
            for i, p in enumerate(self._spatial_padding)
        )
        self._supports_step = mode in POOLING_STEPPABLE_PADDINGS
        self._buffer_width = P.conv_buffer_width(mode, k, s, d) if self._supports_step else 0
        self._input_latency = 0 if mode is PaddingMode.SEMICAUSAL_FULL else P.conv_input_latency(mode, k, d)
        self._ratio = fractions.Fraction(1, s)
        self._spatial_window = math.prod(self.kernel_size[1:])
        self._mask = TimeMask(mode, k, s, d)
        track_device(self)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        for key in ("padding", "time_padding"):
            if key in arguments:
                arguments = {**arguments, key: self._time_padding.value}
        return arguments

    # -- metadata ---------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self._supports_step

    @property
    def block_size(self) -> int:
        return self._s

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self._ratio

    @property
    def input_latency(self) -> int:
        return self._input_latency

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return P.conv_receptive_field_per_step(self._time_padding, self._k, self._s, self._d)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        n = self._rank
        if len(input_shape) < n - 1:
            raise ValueError(
                f"{type(self).__name__} pools time and {n - 1} channel axes, so it expects an input of rank at least "
                f"{n + 1} ([batch, time, {', '.join(['spatial'] * (n - 1))}, ...]); got channel shape {input_shape}."
            )
        spatial = tuple(
            spatial_output_size(
                type(self).__name__,
                i + 2,
                input_shape[i],
                self._spatial_pads[i],
                self.kernel_size[i + 1],
                self.stride[i + 1],
                self.dilation[i + 1],
            )
            for i in range(n - 1)
        )
        return (*spatial, *input_shape[n - 1 :])

    def _pad_value(self, dtype: torch.dtype) -> float | int | bool:
        if self._kind == "max":
            return min_value(dtype)
        if self._kind == "min":
            return max_value(dtype)
        if dtype.is_complex:
            raise ValueError(f"{type(self).__name__} does not support complex inputs ({dtype}).")
        return False if dtype == torch.bool else 0

    # -- compute ------------------------------------------------------------------------------
    def _reduce(self, v: torch.Tensor) -> torch.Tensor:
        kernel, stride, dilation = self.kernel_size, self.stride, self.dilation
        floating = v.dtype.is_floating_point
        if floating and self._kind == "max":
            return _MAX_POOL[self._rank](v, kernel, stride, 0, dilation)
        if floating and self._kind == "min":
            return -_MAX_POOL[self._rank](-v, kernel, stride, 0, dilation)
        if floating and self._kind == "sum" and all(d == 1 for d in dilation):
            return _window_sum(v, kernel, stride)
        return _unfold_reduce(v, self._kind, kernel, stride, dilation)

    def _pool(self, values: torch.Tensor, mask: torch.Tensor, time_pad: tuple[int, int], pad: Any) -> torch.Tensor:
        n = self._rank
        lead = values.shape[: 1 + n]
        rest = values.shape[1 + n :]
        v = values.reshape(*lead, math.prod(rest)).movedim(-1, 1)  # [B, C, T, *S]
        v = pad_constant(v, channels_first_pads((time_pad, *self._spatial_pads)), pad)
        y = self._reduce(v).movedim(1, -1)
        y = y.reshape(*y.shape[:-1], *rest)
        if self._kind == "sum":
            y = self._average(y, mask, time_pad)
        return y

    def _average(self, total: torch.Tensor, mask: torch.Tensor, time_pad: tuple[int, int]) -> torch.Tensor:
        integer = not (total.dtype.is_floating_point or total.dtype.is_complex)
        if not self.masked_average:
            size = math.prod(self.kernel_size)
            return torch.div(total, size, rounding_mode="floor") if integer else total / size
        m = F.pad(mask.to(torch.float32)[:, None, :], time_pad)
        ones = torch.ones((1, 1, self._k), dtype=torch.float32, device=mask.device)
        count = F.conv1d(m, ones, None, self._s, 0, self._d)[:, 0] * self._spatial_window
        count = count.reshape(count.shape + (1,) * (total.dim() - 2)).to(total.dtype)
        none = count == 0
        safe = torch.where(none, torch.ones((), dtype=count.dtype, device=count.device), count)
        if integer:
            return torch.where(none, torch.zeros_like(total), torch.div(total, safe, rounding_mode="floor"))
        return torch.where(none, torch.zeros_like(total), total) / safe

    def _empty(self, x: Sequence) -> Sequence:
        shape = self.get_output_shape(x.channel_shape)
        b = x.values.shape[0]
        return Sequence._trusted(
            torch.zeros((b, 0, *shape), dtype=x.values.dtype, device=x.values.device),
            torch.zeros((b, 0), dtype=torch.bool, device=x.values.device),
        )

    def _fill_invalid(self, x: Sequence, pad: Any) -> Sequence:
        return x.mask_invalid() if pad == 0 and x.values.dtype != torch.bool else x.mask_invalid(pad)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        t = x.values.shape[1]
        before, after = self._time_pad
        if t + before + after < self._ek:
            if t == 0:
                return self._empty(x)
            raise ValueError(
                f"{type(self).__name__}: padding={self._time_padding.value!r} needs at least {self._ek} timesteps "
                f"(the effective window: kernel_size {self._k}, dilation {self._d}); got an input of {t} timesteps."
            )
        pad = self._pad_value(x.values.dtype)
        x = self._fill_invalid(x, pad)
        values = self._pool(x.values, x.mask, self._time_pad, pad)
        return Sequence._trusted(values, self._mask.layer(x.mask))

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self._supports_step:
            raise ValueError(
                f"{type(self).__name__} with {'padding' if self._rank == 1 else 'time_padding'}="
                f"{self._time_padding.value!r} cannot step; steppable paddings are "
                f"{[m.value for m in POOLING_STEPPABLE_PADDINGS]}."
            )
        self.get_output_shape(tuple(input_spec.shape))
        if not self._buffer_width:
            return ()
        buffer = P.conv_initial_buffer(
            batch_size,
            input_spec,
            self._buffer_width,
            self._time_padding,
            device=layer_device(self),
            pad_value=self._pad_value(input_spec.dtype),  # type: ignore[arg-type]
        )
        return buffer.unmask()

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self.get_output_shape(x.channel_shape)
        if x.values.shape[1] == 0:
            return self._empty(x), state
        pad = self._pad_value(x.values.dtype)
        x = self._fill_invalid(x, pad)
        width = self._buffer_width
        if width:
            values = torch.cat([state.values, x.values], 1)
            mask = torch.cat([state.mask, x.mask], 1)
            state = Sequence._trusted(values[:, -width:], mask[:, -width:])
        else:
            values, mask = x.values, x.mask
        y = self._pool(values, mask, (0, 0), pad)
        return Sequence._trusted(y, self._mask.step(mask, y.shape[1])), state


class _Pooling1D(_Pooling):
    _rank = 1

    def __init__(
        self,
        kernel_size: int,
        stride: int = 1,
        padding: PaddingMode | str = PaddingMode.VALID,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self._configure(kernel_size, stride, dilation, padding, None)

    @property
    def padding(self) -> PaddingMode:
        return self._time_padding


class _SpatialPoolingArgs:
    _time_padding: PaddingMode
    _spatial_padding: tuple[SpatialPadding, ...]

    @property
    def time_padding(self) -> PaddingMode:
        return self._time_padding

    @property
    def spatial_padding(self) -> Any:
        return encode_spatial(self._spatial_padding)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)  # type: ignore[misc]
        return {**arguments, "spatial_padding": self.spatial_padding}


class _Pooling2D(_SpatialPoolingArgs, _Pooling):
    _rank = 2

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: PaddingMode | str | tuple[int, int] = PaddingMode.SAME,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__()
        self._configure(kernel_size, stride, dilation, time_padding, spatial_padding)


class _Pooling3D(_SpatialPoolingArgs, _Pooling):
    _rank = 3

    def __init__(
        self,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: Any = (PaddingMode.SAME, PaddingMode.SAME),
        dilation: int | tuple[int, int, int] = 1,
    ) -> None:
        super().__init__()
        self._configure(kernel_size, stride, dilation, time_padding, spatial_padding)


class MaxPooling1D(_Pooling1D):
    """Max over time windows: ``MaxPooling1D(kernel_size, stride=1, padding="valid", dilation=1)``."""

    _kind = "max"


class MinPooling1D(_Pooling1D):
    """Min over time windows: ``MinPooling1D(kernel_size, stride=1, padding="valid", dilation=1)``."""

    _kind = "min"


class AveragePooling1D(_Pooling1D):
    """Mean over time windows; ``masked_average=True`` divides by the valid steps in each window."""

    _kind = "sum"

    def __init__(
        self,
        kernel_size: int,
        stride: int = 1,
        padding: PaddingMode | str = PaddingMode.VALID,
        dilation: int = 1,
        masked_average: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation)
        self.masked_average = bool(masked_average)


class MaxPooling2D(_Pooling2D):
    """Max over windows of time and the first channel axis (``spatial_padding`` default ``"same"``)."""

    _kind = "max"


class MinPooling2D(_Pooling2D):
    """Min over windows of time and the first channel axis (``spatial_padding`` default ``"same"``)."""

    _kind = "min"


class AveragePooling2D(_Pooling2D):
    """Mean over windows of time and the first channel axis; ``masked_average`` as AveragePooling1D."""

    _kind = "sum"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: PaddingMode | str | tuple[int, int] = PaddingMode.SAME,
        dilation: int | tuple[int, int] = 1,
        masked_average: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, time_padding, spatial_padding, dilation)
        self.masked_average = bool(masked_average)


class MaxPooling3D(_Pooling3D):
    """Max over windows of time and the first two channel axes."""

    _kind = "max"


class MinPooling3D(_Pooling3D):
    """Min over windows of time and the first two channel axes."""

    _kind = "min"


class AveragePooling3D(_Pooling3D):
    """Mean over windows of time and the first two channel axes; ``masked_average`` as AveragePooling1D."""

    _kind = "sum"

    def __init__(
        self,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: Any = (PaddingMode.SAME, PaddingMode.SAME),
        dilation: int | tuple[int, int, int] = 1,
        masked_average: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, time_padding, spatial_padding, dilation)
        self.masked_average = bool(masked_average)
