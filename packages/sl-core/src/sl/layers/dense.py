"""Dense layers: ``Dense``, ``DenseShaped`` and ``EinsumDense`` (the reference's ``dense.py``).

All three are stateless and act on each timestep independently. Parameters are
``weight`` and (optionally) ``bias``:

* ``Dense``: ``weight [features, in_features]`` (``torch.nn.Linear``'s layout; the
  reference's kernel is its transpose ``[in, out]``), ``bias [features]``.
* ``DenseShaped``: ``weight [*output_shape, *input_shape]`` (Linear's ``[out, in]``
  with both sides unflattened; an empty side is stored as size 1, as in the
  reference), ``bias [*output_shape]``. The reference kernel is
  ``[*input_shape, *output_shape]``: ``weight.permute`` of it.
* ``EinsumDense``: ``weight`` laid out by the equation's kernel spec (the same as the
  reference kernel), ``bias`` shaped by ``bias_axes`` as in the reference.

Default initialisers follow the reference (flax ``lecun_normal`` for the kernel:
truncated normal, variance ``1 / fan_in`` where ``fan_in`` is computed on the
reference kernel layout, i.e. its size divided by its last axis; zeros for the bias).

Compute happens in ``compute_dtype`` if given, else in the promotion of the input and
parameter dtypes (integer inputs promote to floating), as in the reference. The
output stays a MaskedSequence only with no bias and no activation (the reference's
rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sl import activations
from sl.dtypes import promoted_dtype
from sl.initializers import lecun_normal_, reference_fan_in
from sl.layer import Stateless
from sl.lazy import LazyInputSize
from sl.types import Constants, MaskedSequence, Sequence
from sl.validation import as_shape, check_float_dtype, check_positive_int

__all__ = ["Dense", "DenseShaped", "EinsumDense"]

Activation = str | Callable[[torch.Tensor], torch.Tensor] | None


class _DenseBase(Stateless):
    """Shared dtype handling, activation and output masking."""

    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
    compute_dtype: torch.dtype | None
    activation: Callable[[torch.Tensor], torch.Tensor] | None

    def _set_activation(self, activation: Activation) -> None:
        self.activation = activations.resolve(activation, owner=type(self).__name__)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.weight.dtype, self.compute_dtype, owner=type(self).__name__)

    def _project(self, values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

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
        self.get_output_shape(x.channel_shape)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self._check_input(x)  # clear error before computing
        values = x.values
        dtype = self._compute_dtype(values.dtype)
        weight: torch.Tensor = self.weight
        if weight.dtype != dtype:
            weight = weight.to(dtype)
        bias: torch.Tensor | None = self.bias
        if bias is not None and bias.dtype != dtype:
            bias = bias.to(dtype)
        if values.dtype != dtype:
            values = values.to(dtype)
        y = self._project(values, weight, bias)
        activation = self.activation
        if activation is not None:
            y = activation(y)
        elif bias is None and isinstance(x, MaskedSequence):
            return MaskedSequence._trusted(y, x.mask)
        return Sequence._trusted(y, x.mask)


class Dense(LazyInputSize, _DenseBase):
    """``y = activation(x @ weight.T + bias)`` over the last channel axis (like ``torch.nn.Linear``).

    Input channel shape ``(..., in_features)`` -> ``(..., features)``. ``in_features`` may be
    omitted (``sl.Dense(features=256)``): it is inferred at the first call, as
    ``torch.nn.LazyLinear`` does (see :mod:`sl.lazy`).
    """

    lazy_input_arg = "in_features"

    def __init__(
        self,
        in_features: int | None = None,
        features: int | None = None,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if features is None:
            raise TypeError(
                "Dense needs features, the output size: sl.Dense(features=256) or sl.Dense(in_features, features)."
            )
        self.features = check_positive_int("Dense", "features", features)
        self.in_features = None if in_features is None else check_positive_int("Dense", "in_features", in_features)
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        self._set_activation(activation)
        self.weight: Any = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(self.features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        if self.in_features is None:
            self._register_lazy_loading()
        else:
            self._make_parameters(self.in_features)

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        if not input_shape:
            raise ValueError(f"Dense expected input channel shape (..., in_features); got {input_shape}.")
        return input_shape[-1]

    def _make_parameters(self, size: int) -> None:
        self.weight.materialize((self.features, size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisers: lecun_normal kernel (fan_in = in_features), zero bias."""
        if self.in_features is None:
            return  # created at the first call
        lecun_normal_(self.weight, self.in_features)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def _check_input(self, x: Sequence) -> None:
        if x.values.dim() < 3 or x.values.shape[-1] != self.in_features:
            self.get_output_shape(x.channel_shape)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._ensure_built(input_shape)
        if not input_shape or input_shape[-1] != self.in_features:
            raise ValueError(f"Dense expected input channel shape (..., {self.in_features}); got {input_shape}.")
        return (*input_shape[:-1], self.features)

    def _project(self, values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(values, weight, bias)


class DenseShaped(_DenseBase):
    """A dense map from channel shape ``input_shape`` to channel shape ``output_shape``.

    Every timestep's ``[*input_shape]`` tensor is flattened, multiplied by ``weight``
    (``[*output_shape, *input_shape]``, empty sides stored as size 1) and reshaped.
    """

    def __init__(
        self,
        input_shape: int | tuple[int, ...] | list[int],
        output_shape: int | tuple[int, ...] | list[int],
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = as_shape("DenseShaped", "input_shape", input_shape)
        self.output_shape = as_shape("DenseShaped", "output_shape", output_shape)
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        self._set_activation(activation)
        in_k = self.input_shape or (1,)
        out_k = self.output_shape or (1,)
        self._in_size = math.prod(in_k)
        self._out_size = math.prod(out_k)
        self.weight = torch.nn.Parameter(torch.empty(*out_k, *in_k, device=device, dtype=dtype))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_k, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisers, with fan_in taken from the reference kernel ``[*in, *out]``."""
        in_k = self.input_shape or (1,)
        out_k = self.output_shape or (1,)
        lecun_normal_(self.weight, reference_fan_in(in_k + out_k))
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"DenseShaped expected input channel shape {self.input_shape}; got {tuple(input_shape)}.")
        return self.output_shape

    def _project(self, values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lead = values.shape[:2]
        flat = values.reshape(*lead, self._in_size)
        w = weight.reshape(self._out_size, self._in_size)
        b = None if bias is None else bias.reshape(self._out_size)
        return F.linear(flat, w, b).reshape(*lead, *self.output_shape)


def _parse_equation(equation: str) -> tuple[str, str, str]:
    """Splits ``'...X,Y->...Z'`` into ``(X, Y, Z)`` with the reference's validation."""
    if not isinstance(equation, str) or "->" not in equation:
        raise ValueError(f"EinsumDense equation must look like '...ab,bc->...ac'; got {equation!r}.")
    left, output_spec = equation.split("->", 1)
    operands = left.split(",")
    if len(operands) != 2:
        raise ValueError(f"EinsumDense equation must have exactly two operands (input and kernel); got {equation!r}.")
    input_spec, kernel_spec = operands
    if not input_spec.startswith("...") or not output_spec.startswith("..."):
        raise ValueError(
            f"EinsumDense equation must be of the form '...X,Y->...Z' (leading ellipses over batch and time); "
            f"got {equation!r}."
        )
    input_spec, output_spec = input_spec[3:], output_spec[3:]
    for name, spec in (("input", input_spec), ("kernel", kernel_spec), ("output", output_spec)):
        if not all(c.isalpha() for c in spec):
            raise ValueError(f"EinsumDense equation {equation!r}: {name} spec {spec!r} must be letters only.")
        if len(set(spec)) != len(spec):
            raise ValueError(f"EinsumDense equation {equation!r}: {name} spec {spec!r} repeats a variable.")
    return input_spec, kernel_spec, output_spec


class EinsumDense(_DenseBase):
    """A dense layer given by an einsum ``equation`` over each timestep's channels.

    Example: input channels ``[c1, c2, c3]``, ``equation='...abc,bd->...bd'``,
    ``output_shape=(None, c4)``, ``bias_axes='d'`` gives output channels ``[c2, c4]``,
    ``weight [c2, c4]`` and ``bias [c4]``. ``None`` in ``output_shape`` is inferred
    from the input. ``input_shape`` (the channel shape) is needed up front to build
    the parameters.
    """

    def __init__(
        self,
        equation: str,
        input_shape: int | tuple[int, ...] | list[int],
        output_shape: tuple[int | None, ...] | list[int | None],
        bias_axes: str = "",
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.equation = equation
        self._input_spec, self._kernel_spec, self._output_spec = _parse_equation(equation)
        self.input_shape = as_shape("EinsumDense", "input_shape", input_shape)
        self.bias_axes = bias_axes or ""
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        self._set_activation(activation)
        self.output_shape = self._infer_output_shape(tuple(output_shape))
        kernel_shape, bias_shape = self._parameter_shapes()
        self.weight = torch.nn.Parameter(torch.empty(kernel_shape, device=device, dtype=dtype))
        if bias_shape is not None:
            self.bias = torch.nn.Parameter(torch.empty(bias_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _infer_output_shape(self, output_shape: tuple[int | None, ...]) -> tuple[int, ...]:
        i_spec, o_spec = self._input_spec, self._output_spec
        if len(i_spec) != len(self.input_shape):
            raise ValueError(
                f"EinsumDense equation {self.equation!r} has input spec {i_spec!r} of rank {len(i_spec)}, but "
                f"input_shape {self.input_shape} has rank {len(self.input_shape)}."
            )
        if len(o_spec) != len(output_shape):
            raise ValueError(
                f"EinsumDense equation {self.equation!r} has output spec {o_spec!r} of rank {len(o_spec)}, but "
                f"output_shape {output_shape} has rank {len(output_shape)}."
            )
        sizes = dict(zip(i_spec, self.input_shape))
        out: list[int] = []
        for d, size in zip(o_spec, output_shape):
            if size is None:
                if d not in sizes:
                    raise ValueError(
                        f"EinsumDense cannot infer output dimension {d!r} (None in output_shape "
                        f"{output_shape}): it is not in the input spec {i_spec!r}."
                    )
                size = sizes[d]
            elif d in sizes and int(size) != sizes[d]:
                raise ValueError(
                    f"EinsumDense output_shape {output_shape} gives dimension {d!r} size {size}, but the input "
                    f"shape {self.input_shape} gives it size {sizes[d]}."
                )
            out.append(int(size))
        return tuple(out)

    def _parameter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        i_spec, k_spec, o_spec = self._input_spec, self._kernel_spec, self._output_spec
        in_sizes = dict(zip(i_spec, self.input_shape))
        out_sizes = dict(zip(o_spec, self.output_shape))
        for d in o_spec:
            if d not in in_sizes and d not in k_spec:
                raise ValueError(
                    f"EinsumDense equation {self.equation!r}: output dimension {d!r} appears in neither the "
                    "input nor the kernel spec."
                )
        kernel_shape = []
        for d in k_spec:
            if d in in_sizes:
                kernel_shape.append(in_sizes[d])
            elif d in out_sizes:
                kernel_shape.append(out_sizes[d])
            else:
                raise ValueError(
                    f"EinsumDense equation {self.equation!r}: kernel dimension {d!r} appears in neither the "
                    "input nor the output spec, so its size is unknown."
                )
        if not self.bias_axes:
            return tuple(kernel_shape), None
        for c in self.bias_axes:
            if c not in o_spec:
                raise ValueError(
                    f"EinsumDense bias_axes {self.bias_axes!r}: {c!r} is not in the output spec {o_spec!r}."
                )
        first = min(o_spec.index(c) for c in self.bias_axes)
        bias_shape = tuple(out_sizes[c] if c in self.bias_axes else 1 for c in o_spec[first:])
        return tuple(kernel_shape), bias_shape

    def reset_parameters(self) -> None:
        """Reference initialisers (the weight layout is the reference kernel's)."""
        lecun_normal_(self.weight, reference_fan_in(tuple(self.weight.shape)))
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"EinsumDense expected input channel shape {self.input_shape}; got {tuple(input_shape)}.")
        return self.output_shape

    def _project(self, values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = torch.einsum(self.equation, values, weight)
        return y if bias is None else y + bias
