"""Time-varying layers: separate parameters for every timestep index up to ``num_steps``.

``SequenceEmbedding``, ``SequenceDense`` and ``MaskedDense`` use the parameters of
step ``t`` for the output at step ``t``. As in the reference, ``layer`` is one
``step`` over the whole sequence starting from time 0, and the step state holds the
next time index (an unbatched int32 scalar on the layer's device; plus, for
``MaskedDense``, a buffer of the past inputs). Behind a layer with step-wise latency
the index starts at ``-latency`` (``shift_initial_state``), so step and layer agree.

Time indices outside ``[0, num_steps)`` have no parameters: those outputs are marked
invalid (mask False, values zero), in ``layer`` and ``step`` alike and without a host
sync. (The reference returns NaN or clamped parameters there.) Keep ``num_steps`` at
least as long as the longest sequence you need outputs for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sl import activations
from sl.dtypes import promoted_dtype
from sl.initializers import lecun_normal_
from sl.layer import SequenceLayer
from sl.toolkit import check_float_dtype, check_in_stream, check_positive_int
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State

__all__ = ["MaskedDense", "SequenceDense", "SequenceEmbedding"]


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


class _TimeIndexed(SequenceLayer):
    """The shared time index: state, shift, and which steps have parameters."""

    num_steps: int
    weight: torch.nn.Parameter

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def _start(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.int32, device=self.weight.device)

    def shift_initial_state(self, state: State, latency: int) -> State:
        if isinstance(state, tuple):
            return (state[0] - latency, *state[1:])
        return state - latency

    def _steps(self, start: torch.Tensor | None, time: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Time indices ``[T]`` of a block and whether each has parameters."""
        steps = torch.arange(time, dtype=torch.int64, device=device)
        if start is not None:
            steps = steps + start.to(torch.int64)
        return steps, (steps >= 0) & (steps < self.num_steps)


class SequenceEmbedding(_TimeIndexed):
    """A separate embedding table for every step: ``y[t] = E_t[x[t]]``.

    Codes at step ``t`` must lie in ``[0, num_embeddings_per_step[t])`` (or
    ``[0, num_embeddings_per_step)`` for an int); the tables are stacked in one
    ``[num_embeddings, dimension]`` weight. An out-of-range code on a valid step is an
    error (``sl.toolkit.check_in_stream``: eager on CPU, a device assertion otherwise);
    steps past ``num_steps`` are invalid. Output is ``[..., dimension]``.
    """

    _offsets: torch.Tensor
    _limits: torch.Tensor

    def __init__(
        self,
        dimension: int,
        num_embeddings_per_step: int | tuple[int, ...] | list[int],
        num_steps: int,
        compute_dtype: torch.dtype | None = None,
        round_num_embeddings_to_multiple_of: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_steps = check_positive_int("SequenceEmbedding", "num_steps", num_steps)
        if isinstance(num_embeddings_per_step, int):
            per_step = [num_embeddings_per_step] * num_steps
        else:
            per_step = [int(n) for n in num_embeddings_per_step]
            if len(per_step) != num_steps:
                raise ValueError(
                    "SequenceEmbedding num_embeddings_per_step must have length num_steps; got "
                    f"{len(per_step)} entries for num_steps={num_steps}."
                )
        num_embeddings = sum(per_step)
        if num_embeddings <= 0 or any(n < 0 for n in per_step):
            raise ValueError(
                f"SequenceEmbedding num_embeddings_per_step must be positive; got {num_embeddings_per_step}."
            )
        if round_num_embeddings_to_multiple_of:
            num_embeddings = _round_up(num_embeddings, round_num_embeddings_to_multiple_of)
        self.dimension = dimension
        self.num_steps = num_steps
        self.num_embeddings = num_embeddings
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        offsets = [0]
        for n in per_step[:-1]:
            offsets.append(offsets[-1] + n)
        self.register_buffer("_offsets", torch.tensor(offsets, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("_limits", torch.tensor(per_step, dtype=torch.int64, device=device), persistent=False)
        # Reference default_embed_init: N(0, 1 / dimension), so embeddings have norm ~1.
        self.weight = torch.nn.Parameter(torch.empty((num_embeddings, dimension), device=device, dtype=dtype))
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(1.0 / dimension))

    def _check_dtype(self, dtype: torch.dtype) -> None:
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"SequenceEmbedding requires integer input codes; got {dtype}.")

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (*input_shape, self.dimension)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        self._check_dtype(input_dtype)
        return self.compute_dtype or self.weight.dtype

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool,
        constants: Constants | None = None,
    ) -> State:
        self._check_dtype(input_spec.dtype)
        return self._start()

    def _embed(self, x: Sequence, start: torch.Tensor | None) -> Sequence:
        self._check_dtype(x.dtype)
        time = x.values.shape[1]
        steps, has_params = self._steps(start, time, x.device)
        safe_steps = steps.clamp(0, self.num_steps - 1)
        bshape = (1, time) + (1,) * (x.values.dim() - 2)
        offsets = self._offsets[safe_steps].reshape(bshape)
        limits = self._limits[safe_steps].reshape(bshape)
        codes = x.values.to(torch.int64)
        mask = x.mask & has_params[None, :]
        in_range = (codes >= 0) & (codes < limits)
        expanded = mask.reshape(mask.shape + (1,) * (codes.dim() - 2))
        check_in_stream(
            self,
            in_range | ~expanded,
            lambda: (
                f"codes on valid steps must lie in [0, num_embeddings_per_step[t]); got {codes[expanded & ~in_range].tolist()[:8]}."
            ),
        )
        indices = torch.where(
            in_range & expanded, codes + offsets, torch.zeros((), dtype=torch.int64, device=codes.device)
        )
        weight = self.weight if self.compute_dtype is None else self.weight.to(self.compute_dtype)
        embedded = torch.nn.functional.embedding(indices, weight)
        return Sequence._trusted(embedded, mask).mask_invalid()

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._embed(x, None)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self._embed(x, state), state + x.values.shape[1]


class _TimeVaryingDense(_TimeIndexed):
    """Constructor and dtype rules shared by SequenceDense and MaskedDense."""

    def __init__(
        self,
        in_features: int,
        features: int,
        num_steps: int,
        bias: bool = True,
        activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_features = check_positive_int(owner, "in_features", in_features)
        self.features = check_positive_int(owner, "features", features)
        self.num_steps = check_positive_int(owner, "num_steps", num_steps)
        self.activation = activations.resolve(activation, owner=owner)
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        shape, fan_in = self._kernel()
        self.weight = torch.nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        lecun_normal_(self.weight, fan_in)
        self.bias: torch.nn.Parameter | None
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros((num_steps, self.features), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._make_buffers()

    def _kernel(self) -> tuple[tuple[int, ...], int]:
        """The weight's shape and the reference kernel's fan-in (for lecun_normal)."""
        raise NotImplementedError

    def _make_buffers(self) -> None:
        """Hook for buffers a subclass derives from its sizes."""

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if len(input_shape) != 1 or input_shape[0] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expected input channel shape ({self.in_features},) (rank 3 input); "
                f"got {tuple(input_shape)}."
            )
        return (self.features,)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.weight.dtype, self.compute_dtype, owner=type(self).__name__)

    def _finish(self, y: torch.Tensor, bias: torch.Tensor | None, x: Sequence, has_params: torch.Tensor) -> Sequence:
        if bias is not None:
            y = y + bias.to(y.dtype)
        if self.activation is not None:
            y = self.activation(y)
        mask = x.mask & has_params[None, :]
        return Sequence._trusted(y, mask).mask_invalid()


class SequenceDense(_TimeVaryingDense):
    """A separate dense layer for every step: ``y[t] = activation(W_t x[t] + b_t)``.

    Input ``[B, T, in_features]``; ``weight`` is ``[num_steps, features, in_features]``
    (a torch ``Linear`` weight per step), ``bias`` ``[num_steps, features]``. Steps at
    time indices past ``num_steps`` are invalid in the output.
    """

    def _kernel(self) -> tuple[tuple[int, ...], int]:
        # Reference kernel [num_steps, in, out] with lecun_normal: fan_in = num_steps * in.
        return (self.num_steps, self.features, self.in_features), self.num_steps * self.in_features

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(input_spec.shape)
        return self._start()

    def _dense(self, x: Sequence, start: torch.Tensor | None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        time = x.values.shape[1]
        dtype = self.get_output_dtype(x.dtype)
        steps, has_params = self._steps(start, time, x.device)
        if start is None and time <= self.num_steps:
            # Layer-wise from step 0: a static slice, no gather.
            weight = self.weight[:time]
            bias = self.bias[:time] if self.bias is not None else None
        else:
            safe = steps.clamp(0, self.num_steps - 1)
            weight = self.weight.index_select(0, safe)
            bias = self.bias.index_select(0, safe) if self.bias is not None else None
        y = torch.einsum("bti,toi->bto", x.values.to(dtype), weight.to(dtype))
        return self._finish(y, bias, x, has_params)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._dense(x, None)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self._dense(x, state), state + x.values.shape[1]


class MaskedDense(_TimeVaryingDense):
    """Causally masked time-varying dense: ``y[t] = activation(sum_{s<=t} W[t, :, s, :] x[s] + b[t])``.

    The output at step ``t`` is a dense function of all inputs ``x[0..t]`` (receptive
    field ``(-(num_steps - 1), 0)``). ``weight`` is ``[num_steps, features, num_steps,
    in_features]`` (output step, out, input step, in), i.e. a torch ``Linear`` from the
    flattened past to the flattened outputs; entries with input step > output step are
    unused (zero gradient). ``step`` keeps the inputs seen so far in a ``[B, num_steps,
    in_features]`` buffer indexed by time. Steps past ``num_steps`` are invalid.
    """

    _causal: torch.Tensor

    def _make_buffers(self) -> None:
        # causal[t_out, t_in] = t_in <= t_out (the reference's ones_matrix_band_part(T, T, 0, -1), transposed).
        causal = torch.tril(torch.ones((self.num_steps, self.num_steps), dtype=torch.bool, device=self.weight.device))
        self.register_buffer("_causal", causal[:, None, :, None], persistent=False)

    def _kernel(self) -> tuple[tuple[int, ...], int]:
        # Reference kernel [T_in, T_out, in, out] with lecun_normal: fan_in = T * T * in.
        steps = self.num_steps
        return (steps, self.features, steps, self.in_features), steps * steps * self.in_features

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-self.num_steps + 1, 0)}

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(input_spec.shape)
        buffer = torch.zeros(
            (batch_size, self.num_steps, self.in_features), dtype=input_spec.dtype, device=self.weight.device
        )
        return self._start(), buffer

    def _masked_weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        return torch.where(self._causal, w, torch.zeros((), dtype=dtype, device=w.device))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        dtype = self.get_output_dtype(x.dtype)
        time = x.values.shape[1]
        head = min(time, self.num_steps)
        values = x.mask_invalid().values.to(dtype)[:, :head]
        weight = self._masked_weight(dtype)[:head, :, :head]
        y = torch.einsum("bsi,tosi->bto", values, weight)
        if time > head:  # no parameters past num_steps: zeros, marked invalid by _finish
            y = torch.cat([y, y.new_zeros((y.shape[0], time - head, self.features))], 1)
        bias: torch.Tensor | None = self.bias
        if bias is not None and time > head:
            bias = torch.cat([bias, bias.new_zeros((time - head, self.features))], 0)
        _, has_params = self._steps(None, time, x.device)
        return self._finish(y, bias[:time] if bias is not None else None, x, has_params)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self.get_output_shape(x.channel_shape)
        dtype = self.get_output_dtype(x.dtype)
        start, buffer = state
        time = x.values.shape[1]
        steps, has_params = self._steps(start, time, x.device)
        # Write the (masked) block into the buffer at its time positions; steps outside
        # [0, num_steps) have nowhere to go and are dropped.
        values = x.mask_invalid().values.to(buffer.dtype)
        slots = torch.arange(self.num_steps, dtype=torch.int64, device=buffer.device)
        offset = slots - start.to(torch.int64)
        written = (offset >= 0) & (offset < time)
        gathered = values.index_select(1, offset.clamp(0, max(time - 1, 0))) if time else buffer
        buffer = torch.where(written[None, :, None], gathered, buffer)
        safe = steps.clamp(0, self.num_steps - 1)
        weight = self._masked_weight(dtype).index_select(0, safe)
        y = torch.einsum("bsi,tosi->bto", buffer.to(dtype), weight)
        bias = self.bias.index_select(0, safe) if self.bias is not None else None
        return self._finish(y, bias, x, has_params), (start + time, buffer)
