"""Linear to mel spectrograms: :class:`LinearToMelSpectrogram` (the reference's ``dsp.py``)."""

from __future__ import annotations

from typing import Any

import torch

from sl.layer import PreservesType, Stateless
from sl.toolkit import layer_device, track_device
from sl.types import ChannelSpec, Constants, MaskedSequence, Sequence, State
from sl_dsp import signal as S
from sl_dsp._common import ConstantCache, floating_dtype

__all__ = ["LinearToMelSpectrogram"]


class LinearToMelSpectrogram(PreservesType, ConstantCache, Stateless):
    """Maps a linear-frequency spectrogram to ``num_mel_bins`` mel bands: ``[B, T, ..., bins] ->
    [B, T, ..., num_mel_bins]``.

    Multiplies the last axis by tf.signal's HTK filterbank
    (:func:`sl_dsp.signal.linear_to_mel_weight_matrix` with ``num_spectrogram_bins`` = the
    input's last axis, e.g. ``fft_length // 2 + 1``): triangles evenly spaced in mel
    (``1127 ln(1 + f / 700)``) between ``lower_edge_hertz`` and ``upper_edge_hertz``, the DC bin
    excluded. Feed it uncompressed magnitudes or powers (the bands sum bins; take the log
    after); floating point or, as the reference, complex (an integer input is refused: the
    matrix would round to zero). The matrix is computed in float64 once per bin count, dtype
    and device, and has no parameters (nothing in ``state_dict``). Stateless; a masked input
    stays masked.

    Errors (at construction, naming the layer): non-positive ``num_mel_bins`` or
    ``sample_rate``, negative ``lower_edge_hertz``, ``lower_edge_hertz >= upper_edge_hertz``,
    and an ``upper_edge_hertz`` above the Nyquist frequency ``sample_rate / 2``.
    """

    def __init__(self, num_mel_bins: int, sample_rate: float, lower_edge_hertz: float, upper_edge_hertz: float) -> None:
        super().__init__()
        S.check_mel_arguments(num_mel_bins, sample_rate, lower_edge_hertz, upper_edge_hertz, owner=type(self).__name__)
        self.num_mel_bins = num_mel_bins
        self.sample_rate = sample_rate
        self.lower_edge_hertz = lower_edge_hertz
        self.upper_edge_hertz = upper_edge_hertz
        self._init_constants()
        track_device(self)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if not input_shape:
            raise ValueError(
                f"{type(self).__name__} expects a spectrogram with a frequency axis last (channel shape (..., bins)); "
                "got channel shape ()."
            )
        return (*input_shape[:-1], self.num_mel_bins)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return floating_dtype(input_dtype, owner=type(self).__name__, what="a spectrogram")

    def weight_matrix(self, num_spectrogram_bins: int, dtype: torch.dtype, device: Any = None) -> torch.Tensor:
        """The ``[num_spectrogram_bins, num_mel_bins]`` filterbank in ``dtype`` (cached)."""
        key = ("mel", num_spectrogram_bins, dtype, device)

        def build() -> torch.Tensor:
            matrix = S.linear_to_mel_weight_matrix(
                self.num_mel_bins,
                num_spectrogram_bins,
                self.sample_rate,
                self.lower_edge_hertz,
                self.upper_edge_hertz,
                dtype=torch.float64,
                device=device,
            )
            return matrix.to(dtype)

        return self._constant(key, build)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        """``()`` (stateless); computes the matrix for this input outside any trace (export, ONNX)."""
        shape = tuple(input_spec.shape)
        self.get_output_shape(shape)
        self.get_output_dtype(input_spec.dtype)
        self.weight_matrix(shape[-1], input_spec.dtype, layer_device(self))
        return ()

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        self.get_output_dtype(x.dtype)
        matrix = self.weight_matrix(x.values.shape[-1], x.dtype, x.device)
        values = torch.matmul(x.values, matrix)
        if isinstance(x, MaskedSequence):
            return MaskedSequence._trusted(values, x.mask)
        return Sequence._trusted(values, x.mask)
