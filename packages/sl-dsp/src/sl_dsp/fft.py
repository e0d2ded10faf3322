"""FFT layers over a channel axis: :class:`FFT`, :class:`IFFT`, :class:`RFFT`, :class:`IRFFT`
(the reference's ``dsp.py``).

All four are stateless (step = layer, block size 1, ratio 1, receptive field ``(0, 0)``) and
act on one channel ``axis`` of ``[B, T, *C]`` inputs (counted on the full shape; default
``-1``; the batch and time axes are refused). Lengths are padded with zeros or truncated
along the axis, on the right (``padding="right"``, the default, tf.signal's behaviour) or
equally on both sides (``"center"``):

* ``FFT``: pad/truncate the input to ``fft_length`` (default: its size), then the complex FFT.
* ``IFFT``: the inverse FFT over the input's size, then pad/truncate to ``frame_length``
  (default: keep the size). As in the reference, ``fft_length`` does not change the result.
* ``RFFT``: pad/truncate the real input to ``fft_length`` (default: its size), then the real
  FFT: ``fft_length // 2 + 1`` bins.
* ``IRFFT``: the inverse real FFT of length ``fft_length`` (default ``2 * (bins - 1)``), then
  pad/truncate to ``frame_length`` (default ``fft_length``).

Dtypes: FFT outputs are complex: ``complex64`` for float32/bfloat16/float16 inputs
(half precision computes in float32, as the reference's RFFT does) and ``complex128`` for
float64; ``IRFFT`` gives the real counterpart of its complex input.

Deviations from the reference: ``FFT``/``IFFT`` of a real input declare a complex output
(the reference declares the real input dtype and produces complex values). ``RFFT`` of a
complex input and ``IRFFT`` of a real one are errors, as is an ``IRFFT`` input whose bin
count is not ``fft_length // 2 + 1`` (the reference silently crops or zero-pads the spectrum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sl.layer import Stateless
from sl.toolkit import check_positive_int
from sl.types import Constants, MaskedSequence, Sequence
from sl_dsp._common import complex_dtype

__all__ = ["FFT", "IFFT", "IRFFT", "RFFT"]

_PADDINGS = ("center", "right")


def check_fft_padding(owner: str, padding: str, arg: str = "padding") -> str:
    if padding not in _PADDINGS:
        raise ValueError(f"{owner}: {arg} must be 'center' or 'right'; got {padding!r}.")
    return padding


def normalize_axis(owner: str, axis: int, rank: int, channel_shape: tuple[int, ...]) -> int:
    """``axis`` of a ``[B, T, *C]`` input (rank ``rank``) as a non-negative index; never batch or time."""
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ValueError(
            f"{owner}: axis={axis} is out of range for inputs [batch, time, *channels] with channel shape "
            f"{channel_shape} (rank {rank})."
        )
    if a in (0, 1):
        raise ValueError(
            f"{owner}: computing FFTs over the batch or time axis is not allowed (axis={axis}); use a channel axis "
            f"(2..{rank - 1} or negative) of the channel shape {channel_shape}."
        )
    return a


def pad_or_truncate(values: torch.Tensor, axis: int, length: int, padding: str) -> torch.Tensor:
    """``values`` zero-padded or truncated to ``length`` along ``axis`` ('right' or 'center')."""
    size = values.shape[axis]
    if size == length:
        return values
    if size < length:
        amount = length - size
        left = amount // 2 if padding == "center" else 0
        pad = [0, 0] * (values.dim() - 1 - axis) + [left, amount - left]
        return F.pad(values, pad)
    start = (size - length) // 2 if padding == "center" else 0
    return values.narrow(axis, start, length)


class _FFTBase(Stateless):
    """Shared argument handling and axis checks."""

    def __init__(self, fft_length: int | None, axis: int, padding: str) -> None:
        super().__init__()
        name = type(self).__name__
        self.fft_length = None if fft_length is None else check_positive_int(name, "fft_length", fft_length)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{name}: axis must be an int; got {axis!r}.")
        self.axis = axis
        self.padding = check_fft_padding(name, padding)

    def _axis_of(self, channel_shape: tuple[int, ...]) -> int:
        """The axis (of the full ``[B, T, *C]`` shape) the transform runs along."""
        name = type(self).__name__
        if not channel_shape:
            raise ValueError(f"{name} requires inputs of rank at least 3 ([batch, time, channels, ...]); got rank 2.")
        return normalize_axis(name, self.axis, len(channel_shape) + 2, channel_shape)

    def _output_size(self, size: int) -> int:
        raise NotImplementedError

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        shape = list(input_shape)
        axis = self._axis_of(tuple(shape)) - 2
        shape[axis] = self._output_size(shape[axis])
        return tuple(shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return complex_dtype(input_dtype, owner=type(self).__name__)

    def _transform(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        raise NotImplementedError

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        axis = self._axis_of(x.channel_shape)
        dtype = self.get_output_dtype(x.dtype)
        if x.values.numel() == 0:  # MKL refuses empty transforms (a 0-length step, an empty batch)
            shape = (*x.values.shape[:2], *self.get_output_shape(x.channel_shape))
            values = x.values.new_zeros(shape, dtype=dtype)
        else:
            values = self._transform(x.values, axis)
        # Linear maps send zeros to zeros: a masked input stays masked.
        return type(x)._trusted(values, x.mask) if isinstance(x, MaskedSequence) else Sequence._trusted(values, x.mask)


def _upcast(values: torch.Tensor) -> torch.Tensor:
    if values.dtype in (torch.bfloat16, torch.float16):
        return values.float()
    if values.dtype == torch.complex32:
        return values.to(torch.complex64)
    return values


class FFT(_FFTBase):
    """Complex FFT along a channel ``axis``, after padding/truncating it to ``fft_length``."""

    def __init__(self, fft_length: int | None = None, axis: int = -1, padding: str = "right") -> None:
        super().__init__(fft_length, axis, padding)

    def _output_size(self, size: int) -> int:
        return self.fft_length or size

    def _transform(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        values = pad_or_truncate(_upcast(values), axis, self.fft_length or values.shape[axis], self.padding)
        return torch.fft.fft(values, dim=axis)


class IFFT(_FFTBase):
    """Inverse complex FFT along a channel ``axis``, then padding/truncating to ``frame_length``.

    The transform spans the whole axis, as the reference's; ``fft_length`` (kept for configs
    that name it) must be None or the axis size: another value is a ValueError, not ignored."""

    def __init__(
        self, fft_length: int | None = None, frame_length: int | None = None, axis: int = -1, padding: str = "right"
    ) -> None:
        super().__init__(fft_length, axis, padding)
        name = type(self).__name__
        self.frame_length = None if frame_length is None else check_positive_int(name, "frame_length", frame_length)

    def _output_size(self, size: int) -> int:
        if self.fft_length is not None and self.fft_length != size:
            # The reference transforms the whole axis and ignores fft_length; a different value is refused
            # rather than ignored.
            raise ValueError(
                f"{type(self).__name__}: fft_length={self.fft_length} but the input axis has {size} bins; the "
                "inverse FFT runs over the whole axis (pass fft_length=None or the axis size, and frame_length to "
                "pad or truncate the output)."
            )
        return self.frame_length or size

    def _transform(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        self._output_size(values.shape[axis])
        values = torch.fft.ifft(_upcast(values), dim=axis).resolve_conj()  # (real input: a lazy conjugate view)
        return pad_or_truncate(values, axis, self.frame_length or values.shape[axis], self.padding)


class RFFT(_FFTBase):
    """Real FFT along a channel ``axis`` (``fft_length // 2 + 1`` bins), after padding/truncating
    it to ``fft_length``."""

    def __init__(self, fft_length: int | None = None, axis: int = -1, padding: str = "right") -> None:
        super().__init__(fft_length, axis, padding)

    def _output_size(self, size: int) -> int:
        return (self.fft_length or size) // 2 + 1

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if input_dtype.is_complex or not input_dtype.is_floating_point:
            raise ValueError(
                f"{type(self).__name__} expects a real floating point input; got {input_dtype} "
                "(use FFT for complex inputs)."
            )
        return complex_dtype(input_dtype, owner=type(self).__name__)

    def _transform(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        n = self.fft_length or values.shape[axis]
        values = pad_or_truncate(_upcast(values), axis, n, self.padding)
        return torch.fft.rfft(values, n=n, dim=axis)


class IRFFT(_FFTBase):
    """Inverse real FFT of length ``fft_length`` along a channel ``axis`` (whose size must be
    ``fft_length // 2 + 1`` bins), then padding/truncating to ``frame_length``."""

    def __init__(
        self, fft_length: int | None = None, frame_length: int | None = None, axis: int = -1, padding: str = "right"
    ) -> None:
        super().__init__(fft_length, axis, padding)
        name = type(self).__name__
        self.frame_length = None if frame_length is None else check_positive_int(name, "frame_length", frame_length)

    def _fft_size(self, bins: int) -> int:
        name = type(self).__name__
        if self.fft_length is None:
            if bins < 2:
                raise ValueError(
                    f"{name} infers fft_length = 2 * (bins - 1) from its input, which needs at least 2 bins; got {bins}. "
                    "Pass fft_length."
                )
            return 2 * (bins - 1)
        if bins != self.fft_length // 2 + 1:
            raise ValueError(
                f"{name} with fft_length={self.fft_length} expects {self.fft_length // 2 + 1} frequency bins "
                f"(fft_length // 2 + 1) on axis {self.axis}; got {bins}."
            )
        return self.fft_length

    def _output_size(self, size: int) -> int:
        return self.frame_length or self._fft_size(size)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if input_dtype == torch.complex64:
            return torch.float32
        if input_dtype == torch.complex128:
            return torch.float64
        raise ValueError(
            f"{type(self).__name__} expects a complex input (a spectrum, complex64 or complex128); got {input_dtype}."
        )

    def _transform(self, values: torch.Tensor, axis: int) -> torch.Tensor:
        n = self._fft_size(values.shape[axis])
        out = torch.fft.irfft(values, n=n, dim=axis)
        return pad_or_truncate(out, axis, self.frame_length or n, self.padding)
