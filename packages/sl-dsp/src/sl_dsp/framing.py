"""Framing and overlap-add: :class:`Frame` and :class:`OverlapAdd` (the reference's ``dsp.py``).

Both follow the reference's time semantics exactly (padding modes, block sizes, output
ratios, latencies, masks, receptive fields), through :mod:`sl.padding`; layer mode is one
strided view (``Tensor.unfold``) or one overlap-add without a loop over frames, step mode a
fixed-size buffer.

End of stream (beyond the reference, which drops the tail): both layers implement
``flush(state)``, which :class:`sl.Streamer` calls after feeding the buffered remainder and
``input_latency`` invalid steps, and which ``Serial``/``Residual``/wrappers pass through the
layers after them. Streaming ``Frame(semicausal) -> ... -> OverlapAdd(causal)`` (or
``STFT -> InverseSTFT``) with :class:`sl.Streamer` and flushing returns every sample of the
input, including the last ones, which layer mode only recovers with ``semicausal_full``
padding (see each ``flush`` for exactly what it returns).
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import torch

from sl.layer import PreservesType, SequenceLayer
from sl.toolkit import PaddingMode, check_positive_int, layer_device, track_device
from sl.toolkit import padding as P
from sl.types import ChannelSpec, Constants, MaskedSequence, ReceptiveField, Sequence, State
from sl_dsp import signal as S

__all__ = ["Frame", "OverlapAdd"]

_KEEP_MASK_STEP = (PaddingMode.CAUSAL, PaddingMode.REVERSE_CAUSAL, PaddingMode.SEMICAUSAL)
_NO_PAST = (PaddingMode.REVERSE_CAUSAL, PaddingMode.REVERSE_CAUSAL_VALID)


def _empty_frames(values: torch.Tensor, frame_length: int) -> torch.Tensor:
    return values.new_zeros((values.shape[0], 0, frame_length, *values.shape[2:]))


class Frame(PreservesType, SequenceLayer):
    """Overlapping frames of the input: ``[B, T, *C] -> [B, T', frame_length, *C]``.

    Frame ``j`` holds input samples ``[j * frame_step - before, j * frame_step - before +
    frame_length)`` of the input padded as a convolution with kernel ``frame_length``,
    stride ``frame_step`` and ``padding`` would pad it (``before``/``after`` from
    :func:`sl.padding.explicit_padding`, or an explicit ``(before, after)`` pair that sums
    to ``frame_length - 1``). Masks follow the reference's convolution rule: ``*_valid``
    modes AND the window's input masks, ``semicausal_full`` ORs them, the others keep the
    mask of the input step the frame lines up with.

    Streaming: ``block_size = frame_step``, ``output_ratio = 1 / frame_step``; steppable with
    ``causal_valid``, ``reverse_causal_valid``, ``causal``, ``reverse_causal``, ``semicausal``
    and explicit padding. ``input_latency``: 0 for causal/causal_valid/semicausal,
    ``frame_length - 1`` for reverse_causal(_valid), ``frame_length - 1 - before`` for
    explicit padding (and the reference's ``frame_step - 1`` for ``semicausal_full``, which
    does not step); ``output_latency = input_latency // frame_step`` (0 for
    ``semicausal_full``).

    State: the last ``W`` input samples as a ``MaskedSequence`` (values ``[B, W, *C]`` in the
    input dtype, mask ``[B, W]``), ``()`` when ``W == 0``. ``W`` is ``frame_length - 1`` for
    causal(_valid), ``max(frame_length - frame_step, 0)`` for semicausal, ``(frame_length -
    1) // frame_step * frame_step`` for reverse_causal(_valid) and ``frame_length - 1 - (after
    % frame_step)`` for explicit padding. Initially zeros, valid for the ``*_valid`` modes
    (and explicit padding unless ``explicit_padding_is_same_like``), invalid otherwise.

    ``flush(state)``: the frames that continuing the stream with silence would still make
    while the buffer holds samples: ``ceil(W / frame_step)`` frames over the buffer followed
    by zeros, each valid iff its window holds a valid buffered sample (``semicausal_full``'s OR
    rule), in the stream's own frame positions. For ``semicausal`` padding these are exactly
    the ``ceil((frame_length - frame_step) / frame_step)`` frames that layer mode with
    ``semicausal_full`` produces beyond ``semicausal``'s (same values); for ``causal`` padding
    the frames that overlap the last ``frame_length - 1`` samples. ``None`` when ``W == 0``
    and for the reverse-causal modes and explicit ``(0, frame_length - 1)`` padding (layer mode
    already ends with every frame that overlaps the last sample; the latency steps the
    streamer feeds produce them).

    Deviations: explicit padding that does not sum to ``frame_length - 1`` is a ValueError
    (the reference raises NotImplementedError).
    """

    def __init__(
        self,
        frame_length: int,
        frame_step: int,
        padding: PaddingMode | str | tuple[int, int] = "reverse_causal_valid",
        explicit_padding_is_same_like: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.frame_length = check_positive_int(name, "frame_length", frame_length)
        self.frame_step = check_positive_int(name, "frame_step", frame_step)
        self.explicit_padding_is_same_like = bool(explicit_padding_is_same_like)
        self._mode: PaddingMode | None
        if isinstance(padding, (tuple, list)):
            if len(padding) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding):
                raise ValueError(
                    f"{name}: explicit padding must be two non-negative ints (before, after); got {padding!r}."
                )
            if sum(padding) != self.frame_length - 1:
                raise ValueError(
                    f"{name}: explicit padding {tuple(padding)} must sum to frame_length - 1 = {self.frame_length - 1}; "
                    f"got {sum(padding)}."
                )
            self._mode = None
            self._pads = (int(padding[0]), int(padding[1]))
        else:
            self._mode = P.validate_padding(padding, owner=name)
            self._pads = P.explicit_padding(self._mode, self.frame_length, self.frame_step, 1)
        # Static per configuration (and sl.padding is called with plain strings in step: a
        # PaddingMode member does not trace under torch.compile).
        self._width = self._buffer_width() if self.supports_step else 0
        self._keep_layer = self._mode is None or self._mode in (PaddingMode.SAME, *_KEEP_MASK_STEP)
        self._keep_step = self._mode is None or self._mode in _KEEP_MASK_STEP
        self._mode_name = "" if self._mode is None else self._mode.value
        self._ratio = fractions.Fraction(1, self.frame_step)  # read on every checked call: built once
        track_device(self)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        return {**arguments, "padding": self.padding}

    @property
    def padding(self) -> str | tuple[int, int]:
        """The padding mode's name, or the explicit ``(before, after)`` pair."""
        return self._pads if self._mode is None else self._mode.value

    # -- metadata -----------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self._mode is None or self._mode in P.STEPPABLE_PADDINGS

    @property
    def block_size(self) -> int:
        return self.frame_step

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self._ratio

    @property
    def input_latency(self) -> int:
        k = self.frame_length
        if self._mode is None:
            return max(0, k - 1 - self._pads[0])
        if self._mode in _NO_PAST:
            return k - 1
        if self._mode is PaddingMode.SEMICAUSAL_FULL:
            return self.frame_step - 1
        return 0

    @property
    def output_latency(self) -> int:
        if self._mode is PaddingMode.SEMICAUSAL_FULL:
            return 0
        return self.input_latency // self.frame_step

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        start = -self._pads[0]
        return {0: (start, start + self.frame_length - 1)}

    @property
    def buffer_width(self) -> int:
        """Input samples the step state keeps (``W`` in the class docstring; 0 if it cannot step)."""
        return self._width

    def _buffer_width(self) -> int:
        k, s = self.frame_length, self.frame_step
        if self._mode is None:
            return k - 1 - (self._pads[1] % s)
        return P.conv_buffer_width(self._mode, k, s, 1, owner=type(self).__name__)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (self.frame_length, *tuple(input_shape))

    # -- layer ----------------------------------------------------------------------------------
    def _keep_mask(self, mask: torch.Tensor, frames: int, offset: int) -> torch.Tensor:
        s = self.frame_step
        return mask[:, offset : offset + (frames - 1) * s + 1 : s] if frames else mask[:, :0]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        k, s = self.frame_length, self.frame_step
        if k > 1:
            x = x.mask_invalid()
        values = S.frame(x.values, k, s, axis=1, pad_mode=self._pads)
        frames = values.shape[1]
        if self._keep_layer:
            mask = x.mask[:, ::s] if s > 1 else x.mask
        elif frames == 0:
            mask = x.mask[:, :0]
        else:
            mask = P.conv_output_mask(x.mask, self._mode_name, k, s, 1, is_step=False)
        if k == 1:
            return type(x)._trusted(values, mask)
        return Sequence._trusted(values, mask)

    # -- step -----------------------------------------------------------------------------------
    def _initial_buffer_valid(self) -> bool:
        if self._mode is None:
            return not self.explicit_padding_is_same_like
        return self._mode in (PaddingMode.CAUSAL_VALID, PaddingMode.REVERSE_CAUSAL_VALID)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.supports_step:
            raise ValueError(
                f"{type(self).__name__} with padding={self.padding!r} cannot step; use one of "
                f"{[m.value for m in P.STEPPABLE_PADDINGS]} or explicit padding."
            )
        width = self.buffer_width
        if not width:
            return ()
        device = layer_device(self)
        values = torch.zeros((batch_size, width, *input_spec.shape), dtype=input_spec.dtype, device=device)
        mask = torch.full((batch_size, width), self._initial_buffer_valid(), dtype=torch.bool, device=device)
        return MaskedSequence._trusted(values, mask)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        k, s = self.frame_length, self.frame_step
        if k > 1:
            x = x.mask_invalid()
        width = self.buffer_width
        if width:
            buffer = Sequence._trusted(torch.cat([state.values, x.values], 1), torch.cat([state.mask, x.mask], 1))
        else:
            buffer = x
        values = S.frame_valid(buffer.values, k, s, 1)
        frames = values.shape[1]
        if self._keep_step:
            mask = self._keep_mask(buffer.mask, frames, self._pads[0])
        elif frames == 0:
            mask = buffer.mask[:, :0]
        else:
            mask = P.conv_output_mask(buffer.mask, self._mode_name, k, s, 1, is_step=True)
        if width:
            total = buffer.values.shape[1]
            new_state: State = MaskedSequence._trusted(
                buffer.values[:, total - width :], buffer.mask[:, total - width :]
            )
        else:
            new_state = ()
        if k == 1:
            return type(x)._trusted(values, mask), new_state
        return Sequence._trusted(values, mask), new_state

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        """The frames still owed at the end of a stream (see the class docstring): ``ceil(W /
        frame_step)`` frames over the buffered samples followed by zeros, each valid iff it
        holds a valid buffered sample; ``None`` when nothing can be owed."""
        width = self._width
        if not width or self._pads[0] == 0 or not isinstance(state, Sequence):
            return None
        k, s = self.frame_length, self.frame_step
        count = -(-width // s)
        pad = (count - 1) * s + k - width
        values, mask = state.values, state.mask
        b = values.shape[0]
        zeros = values.new_zeros((b, pad, *values.shape[2:]))
        values = torch.cat([values, zeros], 1)
        mask = torch.cat([mask, mask.new_zeros((b, pad))], 1)
        frames = S.frame_valid(values, k, s, 1)
        valid = mask.unfold(1, k, s).any(-1)
        return Sequence._trusted(frames, valid)


class OverlapAdd(PreservesType, SequenceLayer):
    """Overlap-adds frames: ``[B, T, frame_length, *C] -> [B, T * frame_step (+ ...), *C]``
    (the inverse of :class:`Frame` up to windowing).

    The full overlap-add of ``T`` frames has ``(T - 1) * frame_step + frame_length`` samples;
    ``padding`` (the reference's three modes) says which of them come out:

    * ``"valid"`` (default): all of them; mask: every frame overlapping the sample is valid
      (:func:`sl.padding.transpose_output_mask`). Not steppable.
    * ``"causal"``: the first ``T * frame_step``; mask: the frame's mask repeated
      ``frame_step`` times. The only mode that steps (``block_size`` 1, ``output_ratio =
      frame_step``, latencies 0): each step emits ``frame_step`` samples per frame and keeps
      the ``frame_length - frame_step`` samples later frames still add to.
    * ``"semicausal_full"``: drops the first ``frame_length - frame_step`` samples (what
      ``Frame(padding="semicausal_full")`` padded in front), giving sample-aligned
      reconstruction in layer mode; mask and length as the reference computes them (an OR
      over overlapping frames, ``T * frame_step - frame_step + 1`` samples when
      ``frame_length > frame_step``). Not steppable.

    ``frame_length`` must be at least ``frame_step`` (as in the reference).

    State (causal): ``(tail [B, W, *C], tail_mask [B, W])`` with ``W = frame_length -
    frame_step``: the partial sums of the next ``W`` output samples (input dtype), and
    whether a valid frame has reached each of them; ``()`` when ``W == 0``. Initially zeros
    and False. (The reference keeps only the values.)

    ``flush(state)``: the tail (``W`` samples, valid iff a valid frame reached them), padded
    with invalid zeros to whole ``frame_step``-sample blocks; ``None`` when ``W == 0``. A
    causal stream followed by its flush has, on its values, the ``"valid"`` layer output
    (the full overlap-add), and a ``Frame(semicausal) -> OverlapAdd(causal)`` stream with both
    flushes has the ``semicausal_full`` reconstruction, delayed by ``frame_length -
    frame_step`` samples.
    """

    _PADDINGS = (PaddingMode.CAUSAL, PaddingMode.VALID, PaddingMode.SEMICAUSAL_FULL)

    def __init__(self, frame_length: int, frame_step: int, padding: PaddingMode | str = "valid") -> None:
        super().__init__()
        name = type(self).__name__
        self.frame_length = check_positive_int(name, "frame_length", frame_length)
        self.frame_step = check_positive_int(name, "frame_step", frame_step)
        if self.frame_step > self.frame_length:
            raise ValueError(
                f"{name}: frame_step ({self.frame_step}) is larger than frame_length ({self.frame_length}); "
                "overlap-add needs frame_length >= frame_step (frames with gaps between them cannot be overlap-added)."
            )
        self._mode = P.validate_padding(padding, owner=name, allowed=self._PADDINGS)
        self._mode_name = self._mode.value
        self._ratio = fractions.Fraction(self.frame_step)  # read on every checked call: built once
        track_device(self)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        return {**arguments, "padding": self._mode.value}

    @property
    def padding(self) -> str:
        return self._mode.value

    # -- metadata -----------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self._mode is PaddingMode.CAUSAL

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self._ratio

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        k, s = self.frame_length, self.frame_step
        if self._mode is PaddingMode.SEMICAUSAL_FULL:
            return {0: (0, math.ceil(k / s) - 1)}
        return P.transpose_receptive_field_per_step(self._mode, k, s, 1)

    @property
    def tail_width(self) -> int:
        """Output samples the step state keeps (``W``): ``frame_length - frame_step``."""
        return self.frame_length - self.frame_step

    def _check_shape(self, input_shape: tuple[int, ...]) -> None:
        if not input_shape or input_shape[0] != self.frame_length:
            raise ValueError(
                f"{type(self).__name__} expects input channel shape (frame_length={self.frame_length}, ...) "
                f"(frames from Frame/IRFFT); got {tuple(input_shape)}."
            )

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._check_shape(input_shape)
        return input_shape[1:]

    # -- layer ----------------------------------------------------------------------------------
    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self._check_shape(x.channel_shape)
        k, s = self.frame_length, self.frame_step
        if k > 1:
            x = x.mask_invalid()
        frames = x.values.shape[1]
        values = S.overlap_and_add(x.values, s, axis=1)
        trim = k - s
        if frames == 0:
            mask = x.mask.new_zeros((x.mask.shape[0], values.shape[1]))
        else:
            mask = P.transpose_output_mask(x.mask, self._mode_name, k, s, 1)
        if self._mode is PaddingMode.CAUSAL:
            if trim:
                values = values[:, : frames * s]
                mask = mask[:, : frames * s]
        elif self._mode is PaddingMode.SEMICAUSAL_FULL and trim:
            values, mask = values[:, trim:], mask[:, trim:]
            size = min(values.shape[1], mask.shape[1])
            values, mask = values[:, :size], mask[:, :size]
        return Sequence._trusted(values, mask)

    # -- step -----------------------------------------------------------------------------------
    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        shape = self.get_output_shape(tuple(input_spec.shape))
        width = self.tail_width
        if not width:
            return ()
        device = layer_device(self)
        values = torch.zeros((batch_size, width, *shape), dtype=input_spec.dtype, device=device)
        return (values, torch.zeros((batch_size, width), dtype=torch.bool, device=device))

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        k, s = self.frame_length, self.frame_step
        if k > 1:
            x = x.mask_invalid()
        frames = x.values.shape[1]
        full = S.overlap_and_add(x.values, s, axis=1)  # [B, frames * s + W, ...]
        mask = x.mask.repeat_interleave(s, dim=1) if s > 1 else x.mask
        width = self.tail_width
        if not width:
            return Sequence._trusted(full, mask), state
        tail, tail_mask = state
        n = frames * s
        full = torch.cat([full[:, :width] + tail, full[:, width:]], 1)
        # Which of the new tail samples a valid frame has reached (frames reach k samples each).
        reach = x.mask[:, :, None].expand(x.mask.shape[0], frames, k).to(torch.float32)
        reached = S.overlap_and_add(reach, s, axis=1) > 0
        reached = reached | torch.cat([tail_mask, tail_mask.new_zeros((tail_mask.shape[0], n))], 1)
        new_state = (full[:, n:], reached[:, n:])
        return Sequence._trusted(full[:, :n], mask), new_state

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        """The tail a causal stream still owes: ``frame_length - frame_step`` samples (valid iff a
        valid frame reached them), padded with invalid zeros to whole ``frame_step`` blocks."""
        width = self.tail_width
        if not width or not self.supports_step or not isinstance(state, tuple) or len(state) != 2:
            return None
        tail, tail_mask = state
        extra = -width % self.frame_step
        if extra:
            b = tail.shape[0]
            tail = torch.cat([tail, tail.new_zeros((b, extra, *tail.shape[2:]))], 1)
            tail_mask = torch.cat([tail_mask, tail_mask.new_zeros((b, extra))], 1)
        return Sequence._trusted(tail, tail_mask)
