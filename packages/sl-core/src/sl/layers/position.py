"""Position signals: sinusoidal timing signals and rotary position encodings (RoPE).

Both layers derive a position for every timestep, either from the physical time
index or by counting only valid timesteps (the default, so a position does not
depend on how much padding precedes a step). In step mode the position counter is
carried as a ``[batch, 1]`` int32 state tensor on the layer's device. Physical
positions behind a layer with step-wise latency start at ``-latency`` (see
``SequenceLayer.shift_initial_state``), so step and layer agree.
"""

from __future__ import annotations

import math

import torch

from sl.layer import PreservesShape, PreservesType, SequenceLayer, get_constant
from sl.toolkit import state_full, track_device
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State

__all__ = ["AddTimingSignal", "ApplyRotaryPositionalEncoding", "timing_signal_1d"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def timing_signal_1d(
    position: torch.Tensor,
    channels: int,
    min_timescale: float = 1.0,
    max_timescale: float = 1.0e4,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sinusoids ``[sin(p * inv_ts), cos(p * inv_ts)]`` of ``position`` ``[B, T]`` -> ``[B, T, channels]``.

    ``channels // 2`` geometric timescales from ``min_timescale`` to ``max_timescale``
    (tensor2tensor's layout: all sines, then all cosines, then a zero channel when
    ``channels`` is odd). Computed in float32 and cast to ``dtype``.
    """
    if position.dim() != 2:
        raise ValueError(f"timing_signal_1d expects [batch, time] positions; got shape {tuple(position.shape)}.")
    position = position.to(torch.float32)
    num_timescales = channels // 2
    log_increment = math.log(float(max_timescale) / float(min_timescale)) / max(num_timescales - 1, 1)
    inv_timescales = min_timescale * torch.exp(
        torch.arange(num_timescales, dtype=torch.float32, device=position.device) * -log_increment
    )
    scaled = position[:, :, None] * inv_timescales
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=2)
    if channels % 2:
        signal = torch.nn.functional.pad(signal, (0, 1))
    return signal.to(dtype)


def _check_float_input(layer: SequenceLayer, dtype: torch.dtype) -> None:
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{type(layer).__name__} requires a floating point input; got {dtype}.")


def _valid_positions_layer(mask: torch.Tensor) -> torch.Tensor:
    """Position of each step counting valid steps only (invalid leading steps get 0)."""
    return torch.clamp(torch.cumsum(mask.to(torch.int32), dim=1, dtype=torch.int32) - 1, min=0)


def _step_positions(mask: torch.Tensor, state: torch.Tensor, only_valid: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``[B, T]`` for a block and the advanced ``[B, 1]`` counter."""
    time = mask.shape[1]
    if only_valid:
        # The counter holds the position of the last valid step seen (-1 initially).
        positions = state + torch.cumsum(mask.to(torch.int32), dim=1, dtype=torch.int32)
        return positions, positions[:, time - 1 :]
    positions = state + torch.arange(time, dtype=torch.int32, device=mask.device)
    return positions, state + time


def _initial_counter(layer: SequenceLayer, batch_size: int, only_valid: bool) -> torch.Tensor:
    return state_full(layer, (batch_size, 1), -1 if only_valid else 0, torch.int32)


class AddTimingSignal(PreservesType, PreservesShape, SequenceLayer):
    """Adds sinusoids of geometrically spaced frequencies to the channels (Transformer timing signal).

    ``axes`` chooses the channel axes the signal varies over (None: all channel axes;
    it is broadcast over the others). With ``only_advance_position_for_valid_timesteps``
    a step's position is the number of valid steps before it, so the output depends on
    the whole past mask (receptive field ``(-inf, 0)``); otherwise the position is the
    physical time index.
    """

    def __init__(
        self,
        min_timescale: float = 1.0,
        max_timescale: float = 1.0e4,
        trainable_scale: bool = False,
        axes: int | tuple[int, ...] | list[int] | None = None,
        only_advance_position_for_valid_timesteps: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.min_timescale = float(min_timescale)
        self.max_timescale = float(max_timescale)
        self.axes = (axes,) if isinstance(axes, int) else (None if axes is None else tuple(axes))
        self.only_advance_position_for_valid_timesteps = only_advance_position_for_valid_timesteps
        self._signal_dtype = dtype or torch.float32
        self.scale: torch.nn.Parameter | None
        if trainable_scale:
            self.scale = torch.nn.Parameter(torch.ones((), device=device, dtype=self._signal_dtype))
        else:
            self.register_parameter("scale", None)
        track_device(self)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, 0)} if self.only_advance_position_for_valid_timesteps else {0: (0, 0)}

    def _target_shape(self, channel_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.axes is None:
            return tuple(channel_shape)
        rank = len(channel_shape)
        target = [1] * rank
        for axis in self.axes:
            if not -rank <= axis < rank:
                raise ValueError(
                    f"AddTimingSignal axes={self.axes} must refer to channel axes of the input channel shape "
                    f"{tuple(channel_shape)}; axis {axis} does not exist."
                )
            target[axis] = channel_shape[axis]
        return tuple(target)

    def _add_signal(self, x: Sequence, positions: torch.Tensor) -> Sequence:
        target = self._target_shape(x.channel_shape)
        dtype = self.scale.dtype if self.scale is not None else self._signal_dtype
        signal = timing_signal_1d(positions, math.prod(target), self.min_timescale, self.max_timescale, dtype)
        signal = signal.reshape(*positions.shape[:2], *target)
        if self.scale is not None:
            signal = signal * self.scale
        return x.apply_values(lambda v: v + signal.to(v.dtype))

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool,
        constants: Constants | None = None,
    ) -> State:
        _check_float_input(self, input_spec.dtype)
        return _initial_counter(self, batch_size, self.only_advance_position_for_valid_timesteps)

    def shift_initial_state(self, state: State, latency: int) -> State:
        # Valid-step counting needs no shift: a latency's filler steps are invalid.
        return state if self.only_advance_position_for_valid_timesteps else state - latency

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        _check_float_input(self, x.dtype)
        if self.only_advance_position_for_valid_timesteps:
            positions = _valid_positions_layer(x.mask)
        else:
            positions = torch.arange(x.values.shape[1], dtype=torch.int32, device=x.device)[None, :]
        return self._add_signal(x, positions)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        _check_float_input(self, x.dtype)
        if x.values.shape[1] == 0:
            return x, state
        positions, state = _step_positions(x.mask, state, self.only_advance_position_for_valid_timesteps)
        return self._add_signal(x, positions), state


class ApplyRotaryPositionalEncoding(PreservesType, PreservesShape, SequenceLayer):
    """Rotates channel pairs by position-dependent angles (RoPE, arXiv:2104.09864).

    The channel axis ``axis`` (even size ``d``) is split into halves ``x1, x2``; with
    ``theta_k = p / max_wavelength ** (2k / d)`` the output is
    ``[x1 cos - x2 sin, x2 cos + x1 sin]``. Positions count valid steps only by
    default, or are the physical index, or are read from ``constants[positions_name]``
    (``[batch, time]`` ints, a tensor or Sequence; stream it with the input in step mode).
    """

    def __init__(
        self,
        max_wavelength: float,
        axis: int = -1,
        only_advance_position_for_valid_timesteps: bool = True,
        positions_in_at_least_fp32: bool = True,
        positions_name: str | None = None,
    ) -> None:
        super().__init__()
        if only_advance_position_for_valid_timesteps and positions_name:
            raise ValueError(
                "ApplyRotaryPositionalEncoding: only_advance_position_for_valid_timesteps=True is incompatible "
                f"with positions_name={positions_name!r} (positions come from the constant); pass "
                "only_advance_position_for_valid_timesteps=False."
            )
        self.max_wavelength = float(max_wavelength)
        self.axis = axis
        self.only_advance_position_for_valid_timesteps = only_advance_position_for_valid_timesteps
        self.positions_in_at_least_fp32 = positions_in_at_least_fp32
        self.positions_name = positions_name
        track_device(self)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, 0)} if self.only_advance_position_for_valid_timesteps else {0: (0, 0)}

    def _check_inputs(self, spec: ChannelSpec) -> int:
        """Validates the input spec; returns the rotated axis as an index into ``[B, T, *C]``."""
        _check_float_input(self, spec.dtype)
        rank = len(spec.shape) + 2
        axis = self.axis + rank if self.axis < 0 else self.axis
        if not 2 <= axis < rank:
            raise ValueError(
                f"ApplyRotaryPositionalEncoding axis={self.axis} must refer to a channel axis of the input "
                f"channel shape {tuple(spec.shape)}."
            )
        size = spec.shape[axis - 2]
        if size % 2:
            raise ValueError(
                f"ApplyRotaryPositionalEncoding requires an even size on axis {self.axis}; got channel shape "
                f"{tuple(spec.shape)} (size {size})."
            )
        return axis

    def _constant_positions(self, x: Sequence, constants: Constants | None) -> torch.Tensor:
        assert self.positions_name is not None
        positions = get_constant(self, constants, self.positions_name)
        if isinstance(positions, Sequence):
            positions = positions.values
        if not isinstance(positions, torch.Tensor):
            raise ValueError(
                f"ApplyRotaryPositionalEncoding expected constant {self.positions_name!r} to be a tensor or "
                f"Sequence of positions; got {type(positions).__name__}."
            )
        expected = tuple(x.values.shape[:2])
        try:
            ok = positions.dim() <= 2 and torch.broadcast_shapes(tuple(positions.shape), expected) == expected
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"ApplyRotaryPositionalEncoding expected constant {self.positions_name!r} with shape broadcastable "
                f"to [batch, time] = {list(expected)}; got shape {list(positions.shape)}."
            )
        return positions

    def _rope(self, values: torch.Tensor, positions: torch.Tensor, axis: int) -> torch.Tensor:
        d = values.shape[axis]
        half = d // 2
        freq_exponents = 2.0 * torch.arange(half, dtype=torch.float32, device=values.device) / d
        timescale = self.max_wavelength**freq_exponents
        bshape = [1] * values.dim()
        bshape[axis] = half
        timescale = timescale.reshape(bshape)
        positions = positions.reshape(*positions.shape, *([1] * (values.dim() - 2)))
        pos_float = positions.is_floating_point()
        if self.positions_in_at_least_fp32:
            # Positions (and hence the rotation) in at least float32; the product too.
            pdtype = torch.promote_types(positions.dtype, torch.float32) if pos_float else torch.float32
            radians = positions.to(pdtype) / timescale.to(pdtype)
            compute = torch.promote_types(values.dtype, pdtype)
        else:
            # Reference (JAX) weak typing: integer positions give float32 angles that do not
            # promote the input; floating positions keep their own dtype.
            pdtype = positions.dtype if pos_float else torch.float32
            radians = positions.to(pdtype) / timescale.to(pdtype)
            compute = torch.promote_types(values.dtype, positions.dtype) if pos_float else values.dtype
        sin = torch.sin(radians).to(compute)
        cos = torch.cos(radians).to(compute)
        v = values.to(compute)
        x1, x2 = torch.split(v, half, dim=axis)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=axis).to(values.dtype)

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool,
        constants: Constants | None = None,
    ) -> State:
        self._check_inputs(input_spec)
        if self.positions_name:
            return ()
        return _initial_counter(self, batch_size, self.only_advance_position_for_valid_timesteps)

    def shift_initial_state(self, state: State, latency: int) -> State:
        if self.positions_name or self.only_advance_position_for_valid_timesteps:
            return state
        return state - latency

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        axis = self._check_inputs(x.channel_spec)
        if self.positions_name:
            positions = self._constant_positions(x, constants)
        elif self.only_advance_position_for_valid_timesteps:
            positions = _valid_positions_layer(x.mask)
        else:
            positions = torch.arange(x.values.shape[1], dtype=torch.int32, device=x.device)[None, :]
        return x.apply_values(self._rope, positions, axis)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        axis = self._check_inputs(x.channel_spec)
        if self.positions_name:
            positions = self._constant_positions(x, constants)
        elif x.values.shape[1] == 0:
            return x, state
        else:
            positions, state = _step_positions(x.mask, state, self.only_advance_position_for_valid_timesteps)
        return x.apply_values(self._rope, positions, axis), state
