"""Recurrent layers with torch.nn's gates: :class:`LSTM`, :class:`GRU`, :class:`VanillaRNN`.

All three are causal, steppable with block size 1, and carry their state unchanged through
invalid timesteps (the reference LSTM's rule, for every mask: prefix, random, interior
holes), so an input's valid steps see exactly the recurrence over the valid steps before
them. Output ``[B, T, hidden_size]``; values at invalid steps are unspecified (finite);
receptive field ``(-inf, 0)``.

Parameters (``torch.nn.LSTM``/``GRU``/``RNN`` with ``num_layers=1``, so their ``state_dict``
loads as is, and ``torch.nn.LSTM(...).load_state_dict(layer.state_dict())`` works the other
way)::

    weight_ih_l0  [G * hidden_size, input_size]
    weight_hh_l0  [G * hidden_size, hidden_size]
    bias_ih_l0    [G * hidden_size]          (bias=True)
    bias_hh_l0    [G * hidden_size]          (bias=True)

with G gate blocks stacked in torch's order: LSTM ``(i, f, g, o)`` (G = 4), GRU ``(r, z, n)``
(G = 3), VanillaRNN one block.

LSTM against the reference (``sequence_layers.jax.LSTM``): the reference's gates are the same
``(i, f, c, o)`` blocks, its ``kernel [input, 4 * units]`` and ``recurrent_kernel [units, 4 * units]``
are the transposes of ``weight_ih_l0`` and ``weight_hh_l0``, and its single ``bias`` is
``bias_ih_l0 + bias_hh_l0``. We chose torch's names and two biases over the reference's one
(``LSTM.Config`` has no naming of its own to keep), because then torch checkpoints load
unchanged and the fused kernels take the parameters without copies; the Flax converter puts
the reference ``bias`` in ``bias_ih_l0`` and zeros in ``bias_hh_l0``, which computes the same
function. Initialisers follow the reference: ``lecun_normal`` for ``weight_ih_l0`` (fan-in
``input_size``), orthogonal ``weight_hh_l0`` (flax's ``orthogonal`` on the ``[units, 4 * units]``
kernel is torch's ``orthogonal_`` on its transpose), unit forget bias (``bias_ih_l0``'s f block
is 1, everything else 0). ``activation``/``recurrent_activation`` are the reference's options
(by name, from :mod:`sl.activations`); with the defaults (tanh, sigmoid) layer mode runs torch's
fused LSTM kernel, otherwise a loop over time.

GRU and VanillaRNN (the reference's TF version wraps Keras cells; the JAX one has neither) use
torch.nn's equations, parameter layout and default initialisation (uniform in
``±1/sqrt(hidden_size)``): GRU ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
``h' = (1 - z) * n + z * h``; VanillaRNN ``h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh)``.

Layer mode runs torch's fused kernel (see :mod:`sl_recurrent._kernels`: one call, also on
masks with holes). ``step`` loops over the block's timesteps with fixed-shape state and no
host syncs, so it compiles with ``torch.compile(fullgraph=True)`` and exports.

Compute dtype: ``compute_dtype`` if given, else the promotion of the input and parameter
dtypes (the reference's rule). Integer inputs are an error (embed or cast them first).

State (a dict of tensors on the parameters' device, in the compute dtype)::

    "h"  [B, hidden_size]   the hidden state (LSTM: the output h; zeros at the start)
    "c"  [B, hidden_size]   LSTM only: the cell state

``input_size`` may be omitted (``sl.LSTM(hidden_size=64)``): it is inferred at the first call
(see :mod:`sl.lazy`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from sl import activations
from sl.initializers import lecun_normal_
from sl.layer import SequenceLayer
from sl.lazy import LazyInputSize
from sl.toolkit import check_float_dtype, check_positive_int, promoted_dtype, state_full
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_recurrent import _kernels

__all__ = ["GRU", "LSTM", "VanillaRNN"]

_INF_PAST: dict[int, ReceptiveField] = {0: (-math.inf, 0)}


def check_float_input(owner: str, dtype: torch.dtype) -> None:
    if not (dtype.is_floating_point or dtype.is_complex):
        raise TypeError(
            f"{owner} expects floating-point input values; got {dtype}. Embed integer ids first "
            "(sl.Embedding) or cast them (sl.Cast)."
        )
    if dtype.is_complex:
        raise TypeError(f"{owner} expects real floating-point input values; got {dtype}.")


class _FusedRecurrent(LazyInputSize, SequenceLayer):
    """Shared machinery of LSTM, GRU and VanillaRNN (see the module docstring)."""

    _mode: ClassVar[str]
    lazy_input_arg = "input_size"
    lazy_state_key = "weight_ih_l0"
    lazy_state_axis = -1

    input_size: int | None
    hidden_size: int
    compute_dtype: torch.dtype | None
    weight_ih_l0: Any
    weight_hh_l0: torch.nn.Parameter
    bias_ih_l0: torch.nn.Parameter | None
    bias_hh_l0: torch.nn.Parameter | None

    def _setup(
        self,
        input_size: int | None,
        hidden_size: int | None,
        bias: bool,
        compute_dtype: torch.dtype | None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        name = type(self).__name__
        if hidden_size is None:
            raise TypeError(
                f"{name} needs hidden_size, the state and output size: sl.{name}(hidden_size=64) "
                f"or sl.{name}(input_size, hidden_size)."
            )
        self.hidden_size = check_positive_int(name, "hidden_size", hidden_size)
        self.input_size = None if input_size is None else check_positive_int(name, "input_size", input_size)
        if not isinstance(bias, bool):
            raise TypeError(f"{name} expects bias to be a bool; got {bias!r}.")
        self.bias = bias
        self.compute_dtype = check_float_dtype(name, "compute_dtype", compute_dtype)
        gates = _kernels.GATES[self._mode] * self.hidden_size
        self.weight_ih_l0 = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        self.weight_hh_l0 = torch.nn.Parameter(torch.empty(gates, self.hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih_l0 = torch.nn.Parameter(torch.empty(gates, device=device, dtype=dtype))
            self.bias_hh_l0 = torch.nn.Parameter(torch.empty(gates, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih_l0", None)
            self.register_parameter("bias_hh_l0", None)
        if self.input_size is None:
            self._register_lazy_loading()
        else:
            self._make_parameters(self.input_size)

    # -- parameters ---------------------------------------------------------------------
    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        if len(input_shape) != 1:
            raise ValueError(
                f"{type(self).__name__} expected input channel shape (input_size,); got {tuple(input_shape)}."
            )
        return int(input_shape[0])

    def _make_parameters(self, size: int) -> None:
        self.weight_ih_l0.materialize((_kernels.GATES[self._mode] * self.hidden_size, size))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _weights(self, dtype: torch.dtype) -> list[torch.Tensor]:
        tensors = [self.weight_ih_l0, self.weight_hh_l0]
        if self.bias_ih_l0 is not None and self.bias_hh_l0 is not None:
            tensors += [self.bias_ih_l0, self.bias_hh_l0]
        return [t if t.dtype == dtype else t.to(dtype) for t in tensors]

    # -- metadata -----------------------------------------------------------------------
    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return dict(_INF_PAST)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._ensure_built(input_shape)
        if input_shape != (self.input_size,):
            raise ValueError(
                f"{type(self).__name__} expected input channel shape (input_size,) = ({self.input_size},); "
                f"got {input_shape}."
            )
        return (self.hidden_size,)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        check_float_input(type(self).__name__, input_dtype)
        return promoted_dtype(input_dtype, self.weight_hh_l0.dtype, self.compute_dtype, owner=type(self).__name__)

    def _compute_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """``get_output_dtype``, cached per input dtype (this runs on every step of a stream)."""
        cache = self.__dict__.get("_sl_dtypes")
        if cache is None:
            cache = self.__dict__["_sl_dtypes"] = {}
        dtype = cache.get(input_dtype)
        if dtype is None:
            dtype = cache[input_dtype] = self.get_output_dtype(input_dtype)
        return dtype  # type: ignore[no-any-return]

    def _check_input(self, x: Sequence) -> None:
        if x.values.dim() != 3 or x.values.shape[-1] != self.input_size:
            self.get_output_shape(x.channel_shape)

    # -- state --------------------------------------------------------------------------
    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        shape = tuple(input_spec.shape)
        self.get_output_shape(shape)
        dtype = self._compute_dtype(input_spec.dtype)
        state = {"h": state_full(self, (batch_size, self.hidden_size), 0.0, dtype)}
        if self._mode == "lstm":
            state["c"] = state_full(self, (batch_size, self.hidden_size), 0.0, dtype)
        return state

    # -- processing ---------------------------------------------------------------------
    def _uses_fused_kernel(self) -> bool:
        return True

    def _activations(self) -> tuple[_kernels.Activation, _kernels.Activation]:
        return torch.tanh, torch.sigmoid

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self._check_input(x)
        dtype = self._compute_dtype(x.values.dtype)
        values = _kernels.mask_values(x.values.to(dtype), x.mask)
        batch, time = values.shape[:2]
        if batch == 0 or time == 0:
            return Sequence._trusted(values.new_zeros((batch, time, self.hidden_size)), x.mask)
        weights = self._weights(dtype)
        if self._uses_fused_kernel():
            y = _kernels.fused_layer(self._mode, values, x.mask, weights, self.bias, training)
        else:
            state = self.get_initial_state(batch, x.channel_spec, training=training)
            y, _ = _kernels.cell_steps(self._mode, values, x.mask, state, weights, *self._activations())
        return Sequence._trusted(y, x.mask)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_input(x)
        dtype = self._compute_dtype(x.values.dtype)
        values = _kernels.mask_values(x.values.to(dtype), x.mask)
        y, new_state = _kernels.cell_steps(
            self._mode, values, x.mask, state, self._weights(dtype), *self._activations()
        )
        return Sequence._trusted(y, x.mask), new_state


class LSTM(_FusedRecurrent):
    """Long short-term memory (the reference's ``LSTM``, torch.nn.LSTM's parameters).

    ``y_t = h_t`` with ``i, f, g, o`` gates: ``c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)``,
    ``h_t = sigmoid(o) * tanh(c_t)`` (sigmoid = ``recurrent_activation``, tanh = ``activation``). State
    ``{"h": [B, hidden_size], "c": [B, hidden_size]}``, held through invalid steps. See the
    module docstring for the parameter layout, the reference's layout and initialisers.
    """

    _mode = "lstm"

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._activation = _resolve_activation("LSTM", "activation", activation)
        self._recurrent_activation = _resolve_activation("LSTM", "recurrent_activation", recurrent_activation)
        self._setup(input_size, hidden_size, bias, compute_dtype, device, dtype)

    def reset_parameters(self) -> None:
        """Reference initialisers: lecun_normal input kernel, orthogonal recurrent kernel, unit forget bias."""
        if self.input_size is None:
            return  # created at the first call
        h = self.hidden_size
        with torch.no_grad():
            lecun_normal_(self.weight_ih_l0, self.input_size)
            ortho = torch.empty(self.weight_hh_l0.shape, dtype=torch.float32, device=self.weight_hh_l0.device)
            torch.nn.init.orthogonal_(ortho)  # QR needs float32
            self.weight_hh_l0.copy_(ortho)
            if self.bias_ih_l0 is not None and self.bias_hh_l0 is not None:
                self.bias_ih_l0.zero_()
                self.bias_ih_l0[h : 2 * h] = 1.0
                self.bias_hh_l0.zero_()

    def _uses_fused_kernel(self) -> bool:
        return self._activation is torch.tanh and self._recurrent_activation is torch.sigmoid

    def _activations(self) -> tuple[_kernels.Activation, _kernels.Activation]:
        return self._activation, self._recurrent_activation


class GRU(_FusedRecurrent):
    """Gated recurrent unit with torch.nn.GRU's equations and parameters.

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``; ``y_t = h_t``.
    State ``{"h": [B, hidden_size]}``, held through invalid steps. torch.nn.GRU's default
    initialisation (uniform in ``±1/sqrt(hidden_size)``).
    """

    _mode = "gru"

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup(input_size, hidden_size, bias, compute_dtype, device, dtype)

    def reset_parameters(self) -> None:
        """torch.nn.GRU's initialisation: every parameter uniform in ``±1/sqrt(hidden_size)``."""
        _torch_uniform_init(self)


class VanillaRNN(_FusedRecurrent):
    """Elman RNN with torch.nn.RNN's equations and parameters (``nonlinearity`` tanh or relu).

    ``h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh)``; ``y_t = h_t``. State
    ``{"h": [B, hidden_size]}``, held through invalid steps. torch.nn.RNN's default
    initialisation (uniform in ``±1/sqrt(hidden_size)``).
    """

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        nonlinearity: str = "tanh",
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"VanillaRNN expects nonlinearity 'tanh' or 'relu' (as torch.nn.RNN); got {nonlinearity!r}."
            )
        self.nonlinearity = nonlinearity
        self._mode = f"rnn_{nonlinearity}"  # type: ignore[misc]
        self._setup(input_size, hidden_size, bias, compute_dtype, device, dtype)

    def reset_parameters(self) -> None:
        """torch.nn.RNN's initialisation: every parameter uniform in ``±1/sqrt(hidden_size)``."""
        _torch_uniform_init(self)


def _torch_uniform_init(layer: _FusedRecurrent) -> None:
    if layer.input_size is None:
        return  # created at the first call
    bound = 1.0 / math.sqrt(layer.hidden_size)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-bound, bound)


def _resolve_activation(owner: str, arg: str, activation: Any) -> _kernels.Activation:
    if not isinstance(activation, str) and activations.name_of(activation) is None:
        raise TypeError(
            f"{owner} expects {arg} to be an activation name from sl.activations ({', '.join(activations.names())}) "
            f"or one of those functions; got {activation!r}."
        )
    fn = activations.resolve(activation, owner=owner, arg=arg)
    assert fn is not None
    if fn is torch.nn.functional.tanh:
        fn = torch.tanh
    if fn is torch.nn.functional.sigmoid:
        fn = torch.sigmoid
    return fn
