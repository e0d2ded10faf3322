"""Pointwise layers: activations, elementwise maths and broadcasting constants.

Ported from the reference's ``simple.py``. Every layer here is stateless and acts on
each timestep independently, so ``step`` is ``layer`` on the block. A layer whose
function maps 0 to 0 keeps a :class:`~sl.types.MaskedSequence` input masked (no
re-masking needed downstream); any other returns a plain :class:`~sl.types.Sequence`.

Broadcasting constants (``Add.shift``, ``Scale.scale``, ``Maximum``, ``Minimum``,
``Mod``) are stored as non-persistent buffers (they come from the config, not from
training) and are cast to the input dtype when applied, as in the reference. As in
the reference's ``get_output_shape``, the output channel shape is
``broadcast_shapes(input_channel_shape, constant.shape)``; a constant with more
dimensions than the channel shape, or one that does not broadcast, is a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sl import activations
from sl.layer import PreservesType, Stateless, StatelessPointwiseFunctor
from sl.types import Constants, Sequence
from sl.validation import as_shape

__all__ = [
    "Abs",
    "Add",
    "Affine",
    "Elu",
    "Exp",
    "GatedLinearUnit",
    "GatedTanhUnit",
    "GatedUnit",
    "Gelu",
    "LeakyRelu",
    "Log",
    "Maximum",
    "Minimum",
    "Mod",
    "PRelu",
    "Power",
    "Relu",
    "Scale",
    "Sigmoid",
    "Snake",
    "Softmax",
    "Softplus",
    "Swish",
    "Tanh",
]

_REAL_OF_COMPLEX = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}

ShapeLike = int | tuple[int, ...] | list[int]


def _broadcast_output_shape(
    owner: str, what: str, input_shape: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The reference's broadcasting rule for constants/parameters against the channel shape."""
    input_shape = tuple(input_shape)
    if len(shape) > len(input_shape):
        raise ValueError(
            f"{owner} {what} has shape {shape}, which has more dimensions than the input channel shape "
            f"{input_shape}; it must broadcast against the channel axes only (not batch or time)."
        )
    try:
        return tuple(torch.broadcast_shapes(input_shape, shape))
    except RuntimeError:
        raise ValueError(
            f"{owner} {what} of shape {shape} does not broadcast against the input channel shape {input_shape}."
        ) from None


# -- broadcasting constants -----------------------------------------------------------


class _BroadcastConstant(PreservesType, Stateless):
    """Base of layers that combine the input with a fixed, broadcast constant."""

    constant: torch.Tensor
    _arg: str = ""
    # True when op(0, c) == 0, so a MaskedSequence stays masked.
    _keeps_masked: bool = False

    def _set_constant(self, value: Any) -> None:
        owner = type(self).__name__
        if isinstance(value, torch.Tensor):
            tensor = value.detach().clone()
        else:
            try:
                tensor = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(
                    f"{owner} expects {self._arg} to be a number, a nested list of numbers or a tensor; "
                    f"got {value!r} ({e})."
                ) from None
        if tensor.dtype == torch.bool:
            raise TypeError(f"{owner} expects a numeric {self._arg}; got a bool tensor.")
        self.register_buffer("constant", tensor, persistent=False)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        # Cached per input shape: torch.broadcast_shapes is slow Python on every step of a stream.
        input_shape = tuple(input_shape)
        cache = self.__dict__.setdefault("_sl_shapes", {})
        shape = cache.get(input_shape)
        if shape is None:
            shape = cache[input_shape] = _broadcast_output_shape(
                type(self).__name__, self._arg, input_shape, tuple(self.constant.shape)
            )
        return shape  # type: ignore[no-any-return]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)  # clear error before computing

        constant = self.constant

        def fn(v: torch.Tensor) -> torch.Tensor:
            return self._op(v, constant if constant.dtype == v.dtype else constant.to(dtype=v.dtype))

        return x.apply_values_masked(fn) if self._keeps_masked else x.apply_values(fn)


class Scale(_BroadcastConstant):
    """Multiplies by a fixed constant (a number or an array broadcast over the channels)."""

    _arg = "scale"
    _keeps_masked = True

    def __init__(self, scale: Any) -> None:
        super().__init__()
        self._set_constant(scale)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return values * constant


class Add(_BroadcastConstant):
    """Adds a fixed constant (a number or an array broadcast over the channels)."""

    _arg = "shift"

    def __init__(self, shift: Any) -> None:
        super().__init__()
        self._set_constant(shift)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return values + constant


class Maximum(_BroadcastConstant):
    """``max(x, maximum)``: clips the input from below with a fixed constant."""

    _arg = "maximum"

    def __init__(self, maximum: Any) -> None:
        super().__init__()
        self._set_constant(maximum)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return torch.maximum(values, constant)


class Minimum(_BroadcastConstant):
    """``min(x, minimum)``: clips the input from above with a fixed constant."""

    _arg = "minimum"

    def __init__(self, minimum: Any) -> None:
        super().__init__()
        self._set_constant(minimum)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return torch.minimum(values, constant)


class Mod(_BroadcastConstant):
    """Remainder of division by ``divisor`` (sign of the divisor, like ``jnp.mod``/``torch.remainder``)."""

    _arg = "divisor"
    _keeps_masked = True

    def __init__(self, divisor: Any) -> None:
        super().__init__()
        self._set_constant(divisor)

    def _op(self, values: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return torch.remainder(values, constant)


# -- learnable affine -------------------------------------------------------------------


class Affine(PreservesType, Stateless):
    """Learnable ``x * scale + bias`` with parameters of ``shape`` broadcast over the channels.

    ``scale`` starts at ones and ``bias`` at zeros (the reference's initialisers). The
    default ``shape=()`` learns one scalar of each.
    """

    def __init__(
        self,
        shape: ShapeLike | None = (),
        use_scale: bool = True,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = as_shape(type(self).__name__, "shape", shape, allow_zero=True)
        self.use_scale = bool(use_scale)
        self.scale: torch.nn.Parameter | None
        self.bias: torch.nn.Parameter | None
        if self.use_scale:
            self.scale = torch.nn.Parameter(torch.ones(self.shape, device=device, dtype=dtype))
        else:
            self.register_parameter("scale", None)
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(self.shape, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return _broadcast_output_shape(type(self).__name__, "parameter", input_shape, self.shape)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)

        def fn(v: torch.Tensor) -> torch.Tensor:
            if self.scale is not None:
                v = v * self.scale.to(v.dtype)
            if self.bias is not None:
                v = v + self.bias.to(v.dtype)
            return v

        # Without a bias, 0 maps to 0 and the masked state survives.
        return x.apply_values(fn) if self.bias is not None else x.apply_values_masked(fn)


# -- elementwise functions --------------------------------------------------------------


class Abs(StatelessPointwiseFunctor):
    """``|x|``; complex inputs give their real magnitude (complex64 -> float32)."""

    mask_required = False

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.abs(values), mask

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        # A table, not dtype.to_real(): torch.compile cannot trace that method.
        return _REAL_OF_COMPLEX.get(input_dtype, input_dtype)


class _Elementwise(PreservesType, StatelessPointwiseFunctor):
    """A pointwise function of the values alone.

    ``floating_only`` functions (exp, tanh, softmax, ...) refuse integer and bool
    inputs with an error naming the layer, instead of torch's kernel error or a silent
    change of dtype; cast first (``sl.Cast(torch.float32)``).
    """

    floating_only: ClassVar[bool] = True

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if self.floating_only and not (input_dtype.is_floating_point or input_dtype.is_complex):
            raise TypeError(
                f"{type(self).__name__} expects floating-point input; got {input_dtype}. "
                "Cast it first, e.g. sl.Cast(torch.float32)."
            )
        return input_dtype

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.floating_only and not (values.is_floating_point() or values.is_complex()):
            self.get_output_dtype(values.dtype)
        return self._f(values), mask


class Tanh(_Elementwise):
    """``tanh(x)``."""

    mask_required = False

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.tanh(values)


class Relu(_Elementwise):
    """``max(x, 0)``."""

    mask_required = False
    floating_only = False

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.relu(values)


class LeakyRelu(_Elementwise):
    """``x`` for ``x >= 0``, else ``negative_slope * x``."""

    mask_required = False

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(values, self.negative_slope)


class PRelu(_Elementwise):
    """Leaky ReLU with a learnable scalar ``negative_slope`` parameter (starts at ``negative_slope_init``)."""

    mask_required = False

    def __init__(
        self,
        negative_slope_init: float = 0.01,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.negative_slope = torch.nn.Parameter(torch.full((), negative_slope_init, device=device, dtype=dtype))

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.where(values >= 0, values, self.negative_slope.to(values.dtype) * values)


class Elu(_Elementwise):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``.

    elu(0) == 0, so unlike the reference (which re-masks) a MaskedSequence stays masked.
    """

    mask_required = False

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return F.elu(values, self.alpha)


class Exp(_Elementwise):
    """``exp(x)``."""

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.exp(values)


class Log(_Elementwise):
    """Natural logarithm (NaN for negative inputs, ``-inf`` at 0)."""

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.log(values)


class Power(StatelessPointwiseFunctor):
    """``x ** power``.

    The reference always keeps the masked state; here it is kept only for
    ``power > 0``, since ``0 ** 0 == 1`` and ``0 ** -1 == inf``.
    """

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        self.power = power
        self.mask_required = not power > 0

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.pow(values, self.power), mask

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        # torch's promotion of a tensor with a Python scalar: integer inputs raised to a
        # float power become floating (dtype arithmetic only, so step stays compilable).
        if input_dtype.is_floating_point or input_dtype.is_complex:
            return input_dtype
        if isinstance(self.power, float):
            return torch.get_default_dtype()
        return torch.int64 if input_dtype == torch.bool else input_dtype


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``."""

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(values)


class Softplus(_Elementwise):
    """``log(1 + exp(x))``."""

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return F.softplus(values)


class Swish(_Elementwise):
    """``x * sigmoid(x)`` (SiLU)."""

    mask_required = False

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return F.silu(values)


class Gelu(_Elementwise):
    """Gaussian error linear unit; ``approximate=True`` (the reference default) uses the tanh form."""

    mask_required = False

    def __init__(self, approximate: bool = True) -> None:
        super().__init__()
        self.approximate = bool(approximate)

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return F.gelu(values, approximate="tanh" if self.approximate else "none")


class Softmax(_Elementwise):
    """Softmax over ``axis``, an axis of the full ``[batch, time, *channels]`` values (default last).

    As in the reference, the axis counts batch and time, so ``axis=2`` is the first
    channel axis; batch and time themselves are rejected.
    """

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Softmax expects an int axis; got {axis!r}.")
        self.axis = axis

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        ndim = len(input_shape) + 2
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 2 <= axis < ndim:
            raise ValueError(
                f"Softmax axis={self.axis} must name a channel axis of the [batch, time, *channels] values "
                f"(2..{ndim - 1} or -{ndim - 2}..-1 for input channel shape {tuple(input_shape)}); softmax over "
                "batch or time is not allowed."
            )
        return tuple(input_shape)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        return super().layer(x, training=training, constants=constants)

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        return torch.softmax(values, dim=self.axis)


class Snake(_Elementwise):
    """Snake activation ``x + sin(alpha * x)**2 / beta`` with per-channel log-scale parameters.

    From https://arxiv.org/abs/2006.08195 with BigVGAN's extensions (separate beta,
    parameters per channel, learned in log scale). ``shape`` is the input channel
    shape; parameters ``alpha_log`` (and ``beta_log`` when ``separate_beta``) start at
    zero, i.e. alpha = beta = 1. Computed in the promoted dtype of input and parameters
    and returned in the input dtype.
    """

    mask_required = False

    def __init__(
        self,
        shape: ShapeLike,
        separate_beta: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = as_shape(type(self).__name__, "shape", shape, allow_zero=True)
        self.separate_beta = bool(separate_beta)
        self.alpha_log = torch.nn.Parameter(torch.zeros(self.shape, device=device, dtype=dtype))
        self.beta_log: torch.nn.Parameter | None
        if self.separate_beta:
            self.beta_log = torch.nn.Parameter(torch.zeros(self.shape, device=device, dtype=dtype))
        else:
            self.register_parameter("beta_log", None)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if tuple(input_shape) != self.shape:
            raise ValueError(f"Snake expected input channel shape {self.shape}; got {tuple(input_shape)}.")
        return self.shape

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        return super().layer(x, training=training, constants=constants)

    def _f(self, values: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(values.dtype, self.alpha_log.dtype)
        v = values.to(dtype)
        alpha = torch.exp(self.alpha_log.to(dtype))
        beta = alpha if self.beta_log is None else torch.exp(self.beta_log.to(dtype))
        return (v + torch.sin(v * alpha).square() / (beta + 1e-12)).to(values.dtype)


# -- gated units --------------------------------------------------------------------------


def _maps_zero_to_zero(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    with torch.no_grad():  # on the CPU explicitly: this also runs under a meta-device context
        out = fn(torch.zeros(1, device="cpu"))
    return bool((out == 0).all())


def _finite_at_zero(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    with torch.no_grad():
        out = fn(torch.zeros(1, device="cpu"))
    return bool(torch.isfinite(out).all())


class GatedUnit(PreservesType, Stateless):
    """``feature_activation(a) * gate_activation(b)`` where ``a, b`` split the last axis in half.

    The output has half the input's last-axis channels. Activations are names from
    :mod:`sl.activations`, its functions, or None (identity). The masked state is kept
    when ``feature(0) * gate(0) == 0`` (e.g. GLU, GTU, bilinear); the reference always
    returns an unmasked Sequence.
    """

    def __init__(
        self,
        feature_activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        gate_activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.feature_activation = activations.resolve(
            feature_activation, owner=type(self).__name__, arg="feature_activation"
        )
        self.gate_activation = activations.resolve(gate_activation, owner=type(self).__name__, arg="gate_activation")
        feature_zero = self.feature_activation is None or _maps_zero_to_zero(self.feature_activation)
        gate_finite = self.gate_activation is None or _finite_at_zero(self.gate_activation)
        self._keeps_masked = feature_zero and gate_finite

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if not input_shape or input_shape[-1] % 2:
            raise ValueError(
                f"{type(self).__name__} expected an input channel shape whose last axis has an even number "
                f"of channels (..., 2 * n); got {input_shape}."
            )
        return (*input_shape[:-1], input_shape[-1] // 2)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)

        def fn(v: torch.Tensor) -> torch.Tensor:
            feature, gate = torch.chunk(v, 2, dim=-1)
            if self.feature_activation is not None:
                feature = self.feature_activation(feature)
            if self.gate_activation is not None:
                gate = self.gate_activation(gate)
            return feature * gate

        return x.apply_values_masked(fn) if self._keeps_masked else x.apply_values(fn)


class GatedLinearUnit(GatedUnit):
    """GLU: ``a * sigmoid(b)`` over the two halves of the last axis."""

    def __init__(self) -> None:
        super().__init__(None, "sigmoid")


class GatedTanhUnit(GatedUnit):
    """GTU: ``tanh(a) * sigmoid(b)`` over the two halves of the last axis."""

    def __init__(self) -> None:
        super().__init__("tanh", "sigmoid")
