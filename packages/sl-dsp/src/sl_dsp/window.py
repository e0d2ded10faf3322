"""Windowing a channel axis: :class:`Window` (the reference's ``dsp.py``)."""

from __future__ import annotations

from typing import Any

import torch

from sl.layer import PreservesShape, PreservesType, Stateless
from sl.toolkit import layer_device, track_device
from sl.types import ChannelSpec, Constants, Sequence, State
from sl_dsp import signal as S
from sl_dsp._common import ConstantCache, floating_dtype, real_dtype

__all__ = ["Window"]


class Window(PreservesShape, PreservesType, ConstantCache, Stateless):
    """Multiplies a channel ``axis`` by a window, as STFT/InverseSTFT do to their frames.

    ``axis`` counts the full ``[B, T, *C]`` shape (negative from the end); batch and time are
    refused. ``window_fn``: any window specification of :mod:`sl_dsp.signal` (default
    ``"hann"``, periodic; e.g. ``"hamming"``, ``("kaiser", 8.0)``,
    :func:`~sl_dsp.inverse_stft_window` for the synthesis side); its length is the axis' size.
    Stateless; a masked input stays masked (the window maps zeros to zeros). Floating point
    or complex inputs (an integer one is refused: the window would round to integers).
    """

    def __init__(self, axis: int, window_fn: Any = "hann") -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{type(self).__name__}: axis must be an int; got {axis!r}.")
        self.axis = axis
        self.window_fn = S.normalize_window(window_fn, owner=type(self).__name__)
        self._init_constants()
        track_device(self)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        return {**arguments, "window_fn": self.window_fn}

    def _axis_of(self, channel_shape: tuple[int, ...]) -> int:
        rank = len(channel_shape) + 2
        axis = self.axis + rank if self.axis < 0 else self.axis
        name = type(self).__name__
        if axis in (0, 1):
            raise ValueError(
                f"{name}: the axis cannot be 0 (batch) or 1 (time); got axis={self.axis} for channel shape "
                f"{channel_shape}."
            )
        if not 0 <= axis < rank:
            raise ValueError(
                f"{name}: axis={self.axis} is out of range for inputs [batch, time, *channels] with channel shape "
                f"{channel_shape} (rank {rank})."
            )
        return axis

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        self._axis_of(tuple(input_shape))
        return tuple(input_shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return floating_dtype(input_dtype, owner=type(self).__name__, what="inputs")

    def _window(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        dtype = real_dtype(dtype)
        build = lambda: S.make_window(self.window_fn, length, dtype, device, owner=type(self).__name__)  # noqa: E731
        return self._constant(("window", length, dtype, device), build)  # type: ignore[arg-type]

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        """``()`` (stateless); computes the window for this input outside any trace (export, ONNX)."""
        axis = self._axis_of(tuple(input_spec.shape))
        self.get_output_dtype(input_spec.dtype)
        if self.window_fn is not None:
            self._window(input_spec.shape[axis - 2], input_spec.dtype, layer_device(self))
        return ()

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        axis = self._axis_of(x.channel_shape)
        self.get_output_dtype(x.dtype)
        if self.window_fn is None:
            return x
        length = x.values.shape[axis]
        window = self._window(length, x.dtype, x.device)
        shape = [1] * x.values.dim()
        shape[axis] = length
        w = window.reshape(shape)
        return x.apply_values_masked(lambda v: v * w)
