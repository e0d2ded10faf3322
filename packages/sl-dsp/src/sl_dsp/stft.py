"""Short-time Fourier transforms: :class:`STFT` and :class:`InverseSTFT` (the reference's ``dsp.py``).

``STFT`` = :class:`~sl_dsp.Frame` -> window -> :class:`~sl_dsp.RFFT` (-> magnitude);
``InverseSTFT`` = :class:`~sl_dsp.IRFFT` (padded/truncated to ``frame_length``) -> window ->
:class:`~sl_dsp.OverlapAdd`. With ``fft_padding="right"`` they equal tf.signal's ``stft`` /
``inverse_stft`` on the padded signal, and ``torch.stft(center=False)`` /
``torch.istft``'s overlap-add with the same window.

Layer mode is one strided view, one window multiply and one batched ``torch.fft`` call (no
loop over frames); the window is computed once per dtype and device (in float64, then cast).

End of stream: both layers have ``flush`` (their framer's / overlap-add's, through the
window and FFT). Streaming a signal through ``Serial(STFT(time_padding="semicausal"),
InverseSTFT(time_padding="causal", window_fn=inverse_stft_window(frame_step)))`` with
:class:`sl.Streamer` and calling ``flush()`` returns the input delayed by ``frame_length -
frame_step`` samples, every sample including the last (append
``sl.Lookahead(frame_length - frame_step)`` to line it up with the input); those are the
values layer mode gives with ``time_padding="semicausal_full"`` on both layers (which does
not step), followed by the last ``frame_step - 1`` samples of the full overlap-add that the
reference's ``semicausal_full`` length leaves out. Past the input's end the output is its
zero continuation, marked valid as in layer mode (the frames straddling the end are valid).
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.toolkit import PaddingMode, check_positive_int, is_replay_capturing, layer_device
from sl.toolkit import padding as P
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_dsp import signal as S
from sl_dsp._common import ConstantCache, real_dtype
from sl_dsp.fft import IRFFT, RFFT, check_fft_padding, pad_or_truncate
from sl_dsp.framing import Frame, OverlapAdd

__all__ = ["InverseSTFT", "STFT"]


def _window_broadcast(window: torch.Tensor, ndim: int) -> torch.Tensor:
    """``[k]`` -> ``[1, 1, k, 1, ...]`` for ``[B, T, k, *C]`` values of rank ``ndim`` (``[k]`` itself
    broadcasts against ``[B, T, k]``)."""
    return window if ndim == 3 else window.reshape((1, 1, -1) + (1,) * (ndim - 3))


class _Windowed(ConstantCache):
    frame_length: int
    window_fn: Any

    def _window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        if self.window_fn is None:
            return None
        dtype = real_dtype(dtype)
        key = ("window", self.frame_length, dtype, device)
        name = type(self).__name__
        build = lambda: S.make_window(self.window_fn, self.frame_length, dtype, device, owner=name)  # noqa: E731
        return self._constant(key, build)  # type: ignore[arg-type]

    def _apply_window(self, x: Sequence) -> Sequence:
        window = self._window(x.dtype, x.device)
        if window is None:
            return x
        w = _window_broadcast(window, x.values.dim())
        return x.apply_values_masked(lambda v: v * w)

    def _window_mask(self, length: int) -> list[bool]:
        """Which of the ``frame_length`` window taps are non-zero (all, without a window), for the
        receptive field. A tap below float32 resolution (``1e-7`` of the largest; Blackman's ends
        are -1.4e-17) counts as zero, as in the reference (``window > 0``), whose receptive field
        ignores negative taps as well: here a genuinely negative tap still reads its sample, so
        it stays in."""
        if self.window_fn is None:
            return [True] * length
        window = S.make_window(self.window_fn, length, torch.float64, owner=type(self).__name__)
        assert window is not None
        floor = 1e-7 * float(window.abs().max())
        return [abs(v) > floor for v in window.tolist()]


def _magnitude(z: torch.Tensor) -> torch.Tensor:
    """``|z|``. With autograd (``abs``'s gradient at 0 is 0, ``hypot``'s NaN), under torch.export
    (ONNX has no ``hypot``) and on small eager tensors (a streamed block: one kernel instead of
    four; a step :func:`sl.replay_step` captures runs eagerly too), complex ``abs``; otherwise
    ``hypot`` of the real and imaginary parts, the same values (to an ulp) about twice as fast
    on CPU for a layer-wise spectrogram, and what inductor fuses."""
    if z.requires_grad or torch.compiler.is_exporting():
        return z.abs()
    if z.numel() < _SMALL_MAGNITUDE and (not torch.compiler.is_compiling() or is_replay_capturing()):
        return z.abs()
    parts = torch.view_as_real(z)
    return torch.hypot(parts[..., 0], parts[..., 1])


# Below this many bins complex abs (one dispatch) beats view_as_real + two selects + hypot in
# eager mode (measured on CPU: 1028 bins 6.9 vs 10.9 us, 2056 bins 14.3 vs 12.6 us).
_SMALL_MAGNITUDE = 1536


def _fft_trim(frame_length: int, fft_length: int, fft_padding: str) -> tuple[int, int]:
    """``(left, right)`` samples of a frame the FFT drops (or pads) to reach ``fft_length``."""
    amount = frame_length - fft_length
    if amount <= 0:
        return 0, 0
    left = amount // 2 if fft_padding == "center" else 0
    return left, amount - left


class STFT(_Windowed, SequenceLayer):
    """Short-time Fourier transform: ``[B, T, *C] -> [B, T', fft_length // 2 + 1, *C]``.

    Frames of ``frame_length`` every ``frame_step`` samples (``time_padding``: the
    :class:`~sl_dsp.Frame` padding modes; default ``reverse_causal_valid``), multiplied by
    ``window_fn`` (default ``"hann"``, periodic; see :mod:`sl_dsp.signal` for the accepted
    forms; None for none), padded or truncated to ``fft_length`` (``fft_padding``: "right"
    or "center") and transformed with ``torch.fft.rfft``; ``output_magnitude=True`` returns
    ``|STFT|`` (a spectrogram). Each channel of ``*C`` is transformed independently.

    Output dtype: ``complex64`` (``complex128`` for float64 inputs), or the real counterpart
    with ``output_magnitude``. Streaming, latencies, state and ``flush`` are the framer's
    (:class:`~sl_dsp.Frame`): steppable with causal_valid, reverse_causal_valid, causal,
    reverse_causal and semicausal time padding; ``flush`` returns the STFT of the frames
    the framer still owes (for ``semicausal``: the extra frames ``semicausal_full`` has in
    layer mode). The receptive field leaves out frame taps the window or the FFT
    truncation zero (as the reference).
    """

    def __init__(
        self,
        frame_length: int,
        frame_step: int,
        fft_length: int,
        window_fn: Any = "hann",
        time_padding: PaddingMode | str = "reverse_causal_valid",
        fft_padding: str = "right",
        output_magnitude: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(time_padding, (tuple, list)):
            raise ValueError(f"{name}: time_padding must be a padding mode name; got {time_padding!r}.")
        # Checked here so that errors name this layer, not its parts.
        check_positive_int(name, "frame_length", frame_length)
        check_positive_int(name, "frame_step", frame_step)
        check_positive_int(name, "fft_length", fft_length)
        P.validate_padding(time_padding, owner=f"{name} (time_padding)")
        self.framer = Frame(frame_length, frame_step, padding=time_padding)
        self.fft = RFFT(fft_length, axis=2, padding=check_fft_padding(name, fft_padding, "fft_padding"))
        self.frame_length = self.framer.frame_length
        self.frame_step = self.framer.frame_step
        self.fft_length = self.fft.fft_length
        self.time_padding = self.framer.padding
        self.fft_padding = fft_padding
        self.output_magnitude = bool(output_magnitude)
        self.window_fn = S.normalize_window(window_fn, owner=name)
        S.make_window(self.window_fn, self.frame_length, torch.float64, owner=name)  # a bad window fails here
        self._init_constants()

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        return {**arguments, "time_padding": self.time_padding, "window_fn": self.window_fn}

    # -- metadata -----------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self.framer.supports_step

    @property
    def block_size(self) -> int:
        return self.framer.block_size

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self.framer.output_ratio

    @property
    def input_latency(self) -> int:
        return self.framer.input_latency

    @property
    def output_latency(self) -> int:
        return self.input_latency // self.frame_step

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        k = self.frame_length
        rf = self.framer.receptive_field
        assert rf is not None
        start = int(rf[0])
        taps = self._window_mask(k)
        left, right = _fft_trim(k, self.fft_length or k, self.fft_padding)
        kept = [start + i for i in range(k) if taps[i] and left <= i < k - right]
        if not kept:
            return {0: None}
        return {0: (min(kept), max(kept))}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return self.fft.get_output_shape(self.framer.get_output_shape(tuple(input_shape)))

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if input_dtype.is_complex or not input_dtype.is_floating_point:
            raise ValueError(f"{type(self).__name__} expects a real floating point signal; got dtype {input_dtype}.")
        out = self.fft.get_output_dtype(input_dtype)
        return real_dtype(out) if self.output_magnitude else out

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.supports_step:
            raise ValueError(
                f"{type(self).__name__} with time_padding={self.time_padding!r} cannot step; use one of "
                f"{[m.value for m in P.STEPPABLE_PADDINGS]}."
            )
        self._window(input_spec.dtype, layer_device(self))  # computed outside any trace (export, ONNX)
        self.get_output_dtype(input_spec.dtype)
        return self.framer.get_initial_state(batch_size, input_spec, training=training, constants=constants)

    # -- compute --------------------------------------------------------------------------------
    def _spectrum(self, framed: Sequence, training: bool) -> Sequence:
        """Window, RFFT (and magnitude) of frames ``[B, T, frame_length, *C]``, without the per-call
        checks of the child layers (the input was checked once by the outermost call)."""
        values = framed.values
        window = self._window(values.dtype, values.device)
        if window is not None:
            values = values * _window_broadcast(window, values.dim())
        if values.numel() == 0:  # MKL refuses empty transforms (a 0-length step, an empty batch)
            shape = (*values.shape[:2], *self.get_output_shape(framed.channel_shape[1:]))
            out = values.new_zeros(shape, dtype=self.get_output_dtype(values.dtype))
            return Sequence._trusted(out, framed.mask)
        n = self.fft_length or values.shape[2]
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        values = pad_or_truncate(values, 2, n, self.fft_padding)
        dft = torch.fft.rfft(values, n=n, dim=2)
        if self.output_magnitude:
            dft = _magnitude(dft)
        return Sequence._trusted(dft, framed.mask)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_dtype(x.dtype)
        return self._spectrum(self.framer.layer(x, training=training), training)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        framed, state = self.framer.step(x, state, training=training)
        return self._spectrum(framed, training), state

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        """The STFT of the frames the framer still owes (:meth:`Frame.flush`), or None."""
        framed = self.framer.flush(state, training=training)
        if framed is None:
            return None
        return self._spectrum(framed, training)


class InverseSTFT(_Windowed, SequenceLayer):
    """Inverse short-time Fourier transform: ``[B, T, fft_length // 2 + 1, *C] -> [B, T * frame_step
    (+ ...), *C]``.

    Each frame's spectrum goes through ``torch.fft.irfft`` of length ``fft_length``, is padded
    or truncated to ``frame_length`` (``fft_padding``), multiplied by ``window_fn`` (default
    ``"hann"``, as the reference; for reconstruction use the synthesis window
    :func:`~sl_dsp.inverse_stft_window` of the analysis window) and overlap-added every
    ``frame_step`` samples (``time_padding``: "causal" (default, the only mode that steps),
    "valid" or "semicausal_full"; see :class:`~sl_dsp.OverlapAdd`).

    Output dtype: the real counterpart of the complex input. Streaming (causal): block 1,
    ``output_ratio = frame_step``, latencies 0; the state and ``flush`` are the overlap-add's:
    ``flush`` returns the ``frame_length - frame_step`` samples a causal stream still owes
    (which layer mode drops), padded to whole ``frame_step`` blocks.
    """

    def __init__(
        self,
        frame_length: int,
        frame_step: int,
        fft_length: int,
        window_fn: Any = "hann",
        time_padding: PaddingMode | str = "causal",
        fft_padding: str = "right",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        # Checked here so that errors name this layer, not its parts.
        check_positive_int(name, "frame_length", frame_length)
        check_positive_int(name, "frame_step", frame_step)
        check_positive_int(name, "fft_length", fft_length)
        if frame_step > frame_length:
            raise ValueError(
                f"{name}: frame_step ({frame_step}) is larger than frame_length ({frame_length}); the overlap-add "
                "needs frame_length >= frame_step."
            )
        P.validate_padding(time_padding, owner=f"{name} (time_padding)", allowed=OverlapAdd._PADDINGS)
        self.overlap_add = OverlapAdd(frame_length, frame_step, padding=time_padding)
        self.irfft = IRFFT(
            fft_length, frame_length, axis=2, padding=check_fft_padding(name, fft_padding, "fft_padding")
        )
        self.frame_length = self.overlap_add.frame_length
        self.frame_step = self.overlap_add.frame_step
        self.fft_length = self.irfft.fft_length
        self.time_padding = self.overlap_add.padding
        self.fft_padding = fft_padding
        self.window_fn = S.normalize_window(window_fn, owner=name)
        S.make_window(self.window_fn, self.frame_length, torch.float64, owner=name)  # a bad window fails here
        self._init_constants()

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        return {**arguments, "time_padding": self.time_padding, "window_fn": self.window_fn}

    # -- metadata -----------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self.overlap_add.supports_step

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self.overlap_add.output_ratio

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        """The reference's per-phase receptive field: overlap-add's, without the frame taps that
        the window or the FFT padding zero. Deviation: the reference finds the zero taps of the
        window cast to int32, which zeroes every tap below 1 (a Hann window keeps only its centre)
        and declares fewer frames than the output reads; here the window's own zeros count."""
        k, s = self.frame_length, self.frame_step
        fft_length = self.fft_length or k
        before, _ = P.transpose_explicit_padding(self.time_padding, k, s, 1)
        shift = k - before - 1
        left, right = _fft_trim(k, fft_length, self.fft_padding)
        taps = self._window_mask(k)
        usable = [taps[i] and left <= i < k - right for i in range(k)]
        start = -math.ceil((before + 1) / s) + 1
        end = math.ceil(shift / s) - 1
        out: dict[int, ReceptiveField] = {}
        for i in range(s):
            lo = start if (before + 1) % s == 0 or i < (before + 1) % s else start + 1
            hi = end if i < -shift % s else end + 1
            frames = [j for j in range(lo, hi + 1) if usable[(i + shift) - j * s]]
            out[i] = (min(frames), max(frames)) if frames and min(frames) <= max(frames) else None
        return out

    def _frames_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        bins = (self.fft_length or 0) // 2 + 1
        if not input_shape or input_shape[0] != bins:
            raise ValueError(
                f"{type(self).__name__} with fft_length={self.fft_length} expects spectra [batch, time, {bins}, ...] "
                f"(fft_length // 2 + 1 bins); got channel shape {tuple(input_shape)}."
            )
        shape = list(self.irfft.get_output_shape(tuple(input_shape)))
        shape[0] = self.frame_length
        return tuple(shape)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return self.overlap_add.get_output_shape(self._frames_shape(tuple(input_shape)))

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if input_dtype not in (torch.complex64, torch.complex128):
            raise ValueError(
                f"{type(self).__name__} expects complex spectra (complex64 or complex128, e.g. from STFT); got "
                f"dtype {input_dtype}."
            )
        return self.irfft.get_output_dtype(input_dtype)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        frames = ChannelSpec(self._frames_shape(tuple(input_spec.shape)), self.get_output_dtype(input_spec.dtype))
        self._window(frames.dtype, layer_device(self))  # computed outside any trace (export, ONNX)
        return self.overlap_add.get_initial_state(batch_size, frames, training=training)

    # -- compute --------------------------------------------------------------------------------
    def _frames(self, x: Sequence, training: bool) -> Sequence:
        self._frames_shape(x.channel_shape)
        self.get_output_dtype(x.dtype)
        return self._apply_window(self.irfft.layer(x, training=training))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self.overlap_add.layer(self._frames(x, training), training=training)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self.overlap_add.step(self._frames(x, training), state, training=training)

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        """The overlap-add tail a causal stream still owes (:meth:`OverlapAdd.flush`), or None."""
        return self.overlap_add.flush(state, training=training)
