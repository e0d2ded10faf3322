"""Time-varying layers: separate parameters for every timestep index up to ``num_steps``.

``SequenceEmbedding``, ``SequenceDense`` and ``MaskedDense`` use the parameters of
step ``t`` for the output at step ``t``. As in the reference, ``layer`` is one
``step`` over the whole sequence starting from time 0, and the step state is an
unbatched int32 scalar holding the next time index (plus, for ``MaskedDense``, a
buffer of the past inputs).

Past ``num_steps`` there are no parameters: outputs at time indices ``>= num_steps``
are NaN, in ``layer`` and ``step`` alike, without any host sync (the reference
performs the same bounds check through ``checkify`` without throwing, and its
gathers produce NaN). Keep ``num_steps`` at least as long as the longest sequence,
including any padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sl import activations
from sl.dtypes import promoted_dtype
from sl.initializers import lecun_normal_
from sl.layer import SequenceLayer
from sl.registry import LayerExample, LayerRegistry
from sl.types import ChannelSpec, Constants, MaskedSequence, ReceptiveField, Sequence, State

__all__ = ["MaskedDense", "SequenceDense", "SequenceEmbedding"]


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _time_indices(start: torch.Tensor, time: int) -> torch.Tensor:
    return start.to(torch.int64) + torch.arange(time, dtype=torch.int64, device=start.device)


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full((), float("nan"), dtype=t.dtype, device=t.device)


def _start(device: torch.device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.int32, device=device)


class SequenceEmbedding(SequenceLayer):
    """A separate embedding table for every step: ``y[t] = E_t[x[t]]``.

    Codes at step ``t`` must lie in ``[0, num_embeddings_per_step[t])`` (or
    ``[0, num_embeddings_per_step)`` for an int); the tables are stacked in one
    ``[num_embeddings, dimension]`` weight. Out-of-range codes and steps past
    ``num_steps`` embed to NaN, as in the reference. Output is ``[..., dimension]``.
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
        if num_steps <= 0:
            raise ValueError(f"SequenceEmbedding requires num_steps > 0; got {num_steps}.")
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
        self.compute_dtype = compute_dtype
        offsets = [0]
        for n in per_step[:-1]:
            offsets.append(offsets[-1] + n)
        self.register_buffer("_offsets", torch.tensor(offsets, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("_limits", torch.tensor(per_step, dtype=torch.int64, device=device), persistent=False)
        # Reference default_embed_init: N(0, 1 / dimension), so embeddings have norm ~1.
        self.weight = torch.nn.Parameter(torch.empty((num_embeddings, dimension), device=device, dtype=dtype))
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(1.0 / dimension))

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

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
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        self._check_dtype(input_spec.dtype)
        return _start(self.weight.device)

    def _embed(self, x: Sequence, start: torch.Tensor) -> Sequence:
        self._check_dtype(x.dtype)
        time = x.values.shape[1]
        steps = _time_indices(start, time)
        steps_valid = (steps >= 0) & (steps < self.num_steps)
        safe_steps = steps.clamp(0, self.num_steps - 1)
        bshape = (1, time) + (1,) * (x.values.dim() - 2)
        offsets = self._offsets[safe_steps].reshape(bshape)
        limits = self._limits[safe_steps].reshape(bshape)
        codes = x.values.to(torch.int64)
        valid = steps_valid.reshape(bshape) & (codes >= 0) & (codes < limits)
        indices = torch.where(valid, codes + offsets, torch.zeros((), dtype=torch.int64, device=codes.device))
        weight = self.weight if self.compute_dtype is None else self.weight.to(self.compute_dtype)
        embedded = torch.nn.functional.embedding(indices, weight)
        embedded = torch.where(valid[..., None], embedded, _nan_like(embedded))
        return Sequence(embedded, x.mask)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return self._embed(x, _start(x.device))

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self._embed(x, state), state + x.values.shape[1]


class SequenceDense(SequenceLayer):
    """A separate dense layer for every step: ``y[t] = activation(W_t x[t] + b_t)``.

    Input ``[B, T, in_features]``; ``weight`` is ``[num_steps, features, in_features]``
    (a torch ``Linear`` weight per step), ``bias`` ``[num_steps, features]``. Outputs at
    valid steps past ``num_steps`` are NaN.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        num_steps: int,
        use_bias: bool = True,
        activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_steps <= 0:
            raise ValueError(f"SequenceDense requires num_steps > 0; got {num_steps}.")
        self.in_features = in_features
        self.features = features
        self.num_steps = num_steps
        self.use_bias = use_bias
        self.activation = activations.resolve(activation)
        self.compute_dtype = compute_dtype
        self.weight = torch.nn.Parameter(torch.empty((num_steps, features, in_features), device=device, dtype=dtype))
        # Reference kernel [num_steps, in, out] with lecun_normal: fan_in = num_steps * in.
        lecun_normal_(self.weight, num_steps * in_features)
        self.bias: torch.nn.Parameter | None
        if use_bias:
            self.bias = torch.nn.Parameter(torch.zeros((num_steps, features), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if len(input_shape) != 1 or input_shape[0] != self.in_features:
            raise ValueError(
                f"SequenceDense expected input channel shape ({self.in_features},) (rank 3 input); "
                f"got {tuple(input_shape)}."
            )
        return (self.features,)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.weight.dtype, self.compute_dtype, owner=type(self).__name__)

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        self.get_output_shape(input_spec.shape)
        return _start(self.weight.device)

    def _dense(self, x: Sequence, start: torch.Tensor | None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        time = x.values.shape[1]
        dtype = self.get_output_dtype(x.dtype)
        if start is None and time <= self.num_steps:
            # Layer-wise from step 0: a static slice, no gather.
            steps = None
            weight = self.weight[:time]
            bias = self.bias[:time] if self.bias is not None else None
        else:
            steps = _time_indices(start if start is not None else _start(x.device), time)
            safe = steps.clamp(0, self.num_steps - 1)
            weight = self.weight.index_select(0, safe)
            bias = self.bias.index_select(0, safe) if self.bias is not None else None
        y = torch.einsum("bti,toi->bto", x.values.to(dtype), weight.to(dtype))
        if bias is not None:
            y = y + bias.to(dtype)
        if self.activation is not None:
            y = self.activation(y)
        keep_masked = self.bias is None and self.activation is None and isinstance(x, MaskedSequence)
        if steps is not None:
            past = (steps >= self.num_steps)[None, :, None]
            if keep_masked:
                past = past & x.mask[:, :, None]
            y = torch.where(past, _nan_like(y), y)
        return MaskedSequence(y, x.mask) if keep_masked else Sequence(y, x.mask)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return self._dense(x, None)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self._dense(x, state), state + x.values.shape[1]


class MaskedDense(SequenceLayer):
    """Causally masked time-varying dense: ``y[t] = activation(sum_{s<=t} W[t, :, s, :] x[s] + b[t])``.

    The output at step ``t`` is a dense function of all inputs ``x[0..t]`` (receptive
    field ``(-(num_steps - 1), 0)``). ``weight`` is ``[num_steps, features, num_steps,
    in_features]`` (output step, out, input step, in), i.e. a torch ``Linear`` from the
    flattened past to the flattened outputs; entries with input step > output step are
    unused (zero gradient). ``step`` keeps the inputs seen so far in a ``[B, num_steps,
    in_features]`` buffer indexed by absolute time. Outputs past ``num_steps`` are NaN.
    """

    _causal: torch.Tensor

    def __init__(
        self,
        in_features: int,
        features: int,
        num_steps: int,
        use_bias: bool = True,
        activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_steps <= 0:
            raise ValueError(f"MaskedDense requires num_steps > 0; got {num_steps}.")
        self.in_features = in_features
        self.features = features
        self.num_steps = num_steps
        self.use_bias = use_bias
        self.activation = activations.resolve(activation)
        self.compute_dtype = compute_dtype
        self.weight = torch.nn.Parameter(
            torch.empty((num_steps, features, num_steps, in_features), device=device, dtype=dtype)
        )
        # Reference kernel [T_in, T_out, in, out] with lecun_normal: fan_in = T * T * in.
        lecun_normal_(self.weight, num_steps * num_steps * in_features)
        self.bias: torch.nn.Parameter | None
        if use_bias:
            self.bias = torch.nn.Parameter(torch.zeros((num_steps, features), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        # causal[t_out, t_in] = t_in <= t_out (the reference's ones_matrix_band_part(T, T, 0, -1), transposed).
        causal = torch.tril(torch.ones((num_steps, num_steps), dtype=torch.bool, device=device))
        self.register_buffer("_causal", causal[:, None, :, None], persistent=False)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-self.num_steps + 1, 0)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if len(input_shape) != 1 or input_shape[0] != self.in_features:
            raise ValueError(
                f"MaskedDense expected input channel shape ({self.in_features},) (rank 3 input); "
                f"got {tuple(input_shape)}."
            )
        return (self.features,)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.weight.dtype, self.compute_dtype, owner=type(self).__name__)

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        self.get_output_shape(input_spec.shape)
        device = self.weight.device
        buffer = torch.zeros((batch_size, self.num_steps, self.in_features), dtype=input_spec.dtype, device=device)
        return _start(device), buffer

    def _masked_weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        return torch.where(self._causal, w, torch.zeros((), dtype=dtype, device=w.device))

    def _finish(self, y: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if bias is not None:
            y = y + bias.to(dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        dtype = self.get_output_dtype(x.dtype)
        time = x.values.shape[1]
        head = min(time, self.num_steps)
        values = x.mask_invalid().values.to(dtype)[:, :head]
        weight = self._masked_weight(dtype)[:head, :, :head]
        y = torch.einsum("bsi,tosi->bto", values, weight)
        y = self._finish(y, self.bias[:head] if self.bias is not None else None, dtype)
        if time > head:
            # No parameters past num_steps.
            tail = torch.full((y.shape[0], time - head, self.features), float("nan"), dtype=dtype, device=y.device)
            y = torch.cat([y, tail], 1)
        return Sequence(y, x.mask)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self.get_output_shape(x.channel_shape)
        dtype = self.get_output_dtype(x.dtype)
        start, buffer = state
        time = x.values.shape[1]
        steps = _time_indices(start, time)
        # Write the (masked) block into the buffer at its absolute time positions; steps past
        # num_steps have nowhere to go and are dropped.
        values = x.mask_invalid().values.to(buffer.dtype)
        slots = torch.arange(self.num_steps, dtype=torch.int64, device=buffer.device)
        offset = slots - steps[:1] if time else slots
        written = (offset >= 0) & (offset < time)
        gathered = values.index_select(1, offset.clamp(0, max(time - 1, 0))) if time else buffer
        buffer = torch.where(written[None, :, None], gathered, buffer)
        safe = steps.clamp(0, self.num_steps - 1)
        weight = self._masked_weight(dtype).index_select(0, safe)
        y = torch.einsum("bsi,tosi->bto", buffer.to(dtype), weight)
        bias = self.bias.index_select(0, safe) if self.bias is not None else None
        y = self._finish(y, bias, dtype)
        y = torch.where((steps >= self.num_steps)[None, :, None], _nan_like(y), y)
        return Sequence(y, x.mask), (start + time, buffer)


def register_layers(registry: LayerRegistry) -> None:
    registry.add(SequenceEmbedding)
    registry.add(SequenceDense)
    registry.add(MaskedDense)


def example_layers() -> list[LayerExample]:
    # num_steps covers the example length plus the harness's padding (4 invalid steps).
    return [
        LayerExample(
            SequenceEmbedding(4, (3, 5, 2, 4, 6, 3, 5, 2, 4, 6, 3, 5, 2, 4, 6, 3), 16),
            input_shape=(2,),
            time=12,
            int_high=2,
        ),
        LayerExample(SequenceDense(3, 4, 16, activation="tanh"), input_shape=(3,), time=12, random_mask=True),
        LayerExample(MaskedDense(3, 4, 16), input_shape=(3,), time=12),
    ]
