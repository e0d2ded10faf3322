"""Normalization layers and kernel weight normalisation (the reference's ``normalization.py``).

Layers (all keep the input dtype, as in the reference):

* :class:`L2Normalize`: ``x * rsqrt(sum(x^2) + eps)`` over channel axes (no parameters).
* :class:`LayerNormalization` (alias ``LayerNorm``): ``F.layer_norm`` over the chosen
  channel axes. Parameters ``weight`` (the reference's ``scale``) and ``bias``, shaped like
  the normalized axes (``torch.nn.LayerNorm``'s names, so its state dicts load).
* :class:`RMSNormalization` (alias ``RMSNorm``): ``F.rms_norm``; parameter ``weight``
  (reference ``scale``), as ``torch.nn.RMSNorm``.
* :class:`BatchNormalization` (alias ``BatchNorm``): statistics over the *valid* timesteps
  of the batch in training, running statistics otherwise. Parameters ``weight``/``bias``,
  buffers ``running_mean``/``running_var``/``num_batches_tracked`` (``torch.nn.BatchNorm1d``'s
  names; the reference keeps ``mean``/``var`` in its ``batch_stats`` collection).
* :class:`GroupNormalization` (alias ``GroupNorm``): statistics per batch row and group
  over the valid timesteps (the whole sequence: not steppable), or with
  ``cumulative=True`` over the valid timesteps up to each step (causal and steppable;
  the state holds running sums). Parameters ``weight``/``bias`` of ``num_channels``.

Sizes inferred at the first call (``sl.lazy``, like ``torch.nn.LazyBatchNorm1d``): omit
``normalized_shape`` (``sl.LayerNorm()``, ``sl.RMSNorm(axis=-2)``), ``num_features``
(``sl.BatchNorm()``) or ``num_channels`` (``sl.GroupNorm(4)``; ``num_groups`` stays
first, torch's order) and the first call (``layer``, ``step``, ``get_initial_state`` or
``get_output_spec``) reads it from the normalized axis (axes); the config then records
it (an int for an int ``axis``, a tuple for a tuple of axes) and a state dict loaded
before the first call builds the layer from ``weight`` (``running_mean`` for BatchNorm).
Until then parameters are ``torch.nn.UninitializedParameter`` and BatchNorm's running
statistics empty buffers (``.to()`` moves both). A layer without parameters
(``elementwise_affine=False``, ``affine=False``) learns its size at the first call only.

Shared rules, as in the reference: axes are channel axes (never batch or time); the
statistics are computed in at least float32 (``reductions_in_at_least_fp32`` for
LayerNorm/RMSNorm, always for the others) and the result is cast back to the input
dtype before the affine step of LayerNorm/RMSNorm; gradients flowing to inputs whose
variance (mean square, squared norm) is exactly zero are zeroed (the reference's
custom-gradient guard). ``guard_against_excess_precision`` is accepted for config
compatibility; it guards against XLA fusions and is a no-op in PyTorch.

Kernel weight normalisation for the convolutions (``kernel_constraint=``; not layers):

* :class:`L2WeightNormalization`: each output filter L2-normalised over its other axes,
  times a learned per-filter ``scale`` (initialised to ones).
* :class:`SpectralWeightNormalization`: the kernel (as a ``[fan_in, filters]`` matrix)
  divided by its largest singular value estimated by power iteration; buffers ``u``
  ``[1, filters]`` and ``sigma`` are updated in training only (the reference's
  ``batch_stats``). Training-mode calls therefore change the kernel between calls, so
  layer and step agree only in eval mode (as in the reference).

A convolution's own ``use_weight_norm=True`` (the reference's flag) is the same as
L2 weight normalisation with the scale initialised to the initial filter norms.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sl.layer import PreservesShape, PreservesType, SequenceLayer, Stateless, StatelessPointwise
from sl.lazy import LazyInputSize
from sl.toolkit import check_positive_int, layer_device, track_device
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_conv._common import check_eps, check_float_input

__all__ = [
    "BatchNormalization",
    "GroupNormalization",
    "L2Normalize",
    "L2WeightNormalization",
    "LayerNormalization",
    "RMSNormalization",
    "SpectralWeightNormalization",
    "WeightNormalization",
    "make_kernel_constraint",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _axes_spec(owner: str, axis: Any) -> int | tuple[int, ...]:
    if isinstance(axis, bool):
        raise TypeError(f"{owner} expects axis to be an int or a tuple of ints; got {axis!r}.")
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError(f"{owner} expects at least one axis; got {axis!r}.")
        try:
            return tuple(operator.index(a) for a in axis)
        except TypeError:
            raise TypeError(f"{owner} expects axis to be an int or a tuple of ints; got {axis!r}.") from None
    try:
        return operator.index(axis)
    except TypeError:
        raise TypeError(f"{owner} expects axis to be an int or a tuple of ints; got {axis!r}.") from None


def _normalize_axes(owner: str, axis: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Sorted non-negative axes of a ``[B, T, *C]`` tensor of ``rank``; batch and time are errors."""
    axes = (axis,) if isinstance(axis, int) else axis
    out = set()
    for a in axes:
        n = a + rank if a < 0 else a
        if not 0 <= n < rank:
            raise ValueError(
                f"{owner}: axis {a} is out of range for an input of rank {rank} ([batch, time, *channels])."
            )
        if n in (0, 1):
            raise ValueError(
                f"{owner} normalizes over channel axes only; axis {a} is the {'batch' if n == 0 else 'time'} axis "
                f"of a rank-{rank} input ([batch, time, *channels])."
            )
        out.add(n)
    return tuple(sorted(out))


def _zero_grad_where(x: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``x`` whose gradient is zeroed where ``zero`` (broadcastable) is True; forward unchanged."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return torch.where(zero, x.detach(), x)


def _uninitialized(device: Any, dtype: Any) -> Any:
    return torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]


class _LazyNorm(LazyInputSize):
    """A normalization whose size may wait for the first call (``sl.lazy``): parameters and
    statistics start uninitialised and ``_make_parameters(size)`` creates them."""

    def _size_from_checkpoint(self, tensor: torch.Tensor) -> Any:
        return int(tensor.shape[0])

    def _register_lazy_loading(self) -> None:
        module: Any = self
        module._register_load_state_dict_pre_hook(_build_from_state_dict, with_module=True)


def _build_from_state_dict(module: Any, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """A lazy normalization loading a state dict before its first call takes its size from it."""
    tensor = state_dict.get(prefix + module.lazy_state_key)
    if (
        isinstance(tensor, torch.Tensor)
        and tensor.dim() >= 1
        and tensor.numel() > 0  # an unbuilt layer's checkpoint builds nothing
        and getattr(module, module.lazy_input_arg) is None
    ):
        module._build(module._size_from_checkpoint(tensor))


# -------------------------------------------------------------------------- pointwise norms
class L2Normalize(PreservesType, StatelessPointwise):
    """``x * rsqrt(sum(x^2, axis) + eps)`` over channel ``axis`` (an int or a tuple), in at least float32."""

    def __init__(self, axis: int | tuple[int, ...] | list[int] = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.axis = _axes_spec("L2Normalize", axis)
        self.eps = check_eps("L2Normalize", eps)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        check_float_input("L2Normalize", x.values.dtype)
        axes = _normalize_axes("L2Normalize", self.axis, x.values.dim())
        v = x.values
        compute = v.to(_at_least_fp32(v.dtype))
        with torch.no_grad():
            squared = compute.square().sum(axes, keepdim=True)
        compute = _zero_grad_where(compute, squared == 0)
        y = compute * torch.rsqrt(compute.square().sum(axes, keepdim=True) + self.eps)
        return Sequence._trusted(y.to(v.dtype), x.mask)


class _AffineNorm(_LazyNorm, PreservesType, StatelessPointwise):
    """Shared by LayerNormalization and RMSNormalization: axes, parameters, dtype handling."""

    _name: ClassVar[str]
    lazy_input_arg = "normalized_shape"
    normalized_shape: tuple[int, ...]  # None until a lazy layer sees its input (typed as built)
    weight: Any
    bias: Any

    def _setup(
        self,
        normalized_shape: Any,
        axis: Any,
        eps: float,
        elementwise_affine: bool,
        bias: bool,
        reductions_in_at_least_fp32: bool,
        guard_against_excess_precision: bool,
        device: Any,
        dtype: Any,
    ) -> None:
        owner = self._name
        self.axis = _axes_spec(owner, axis)
        self.eps = check_eps(owner, eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.reductions_in_at_least_fp32 = bool(reductions_in_at_least_fp32)
        self.guard_against_excess_precision = bool(guard_against_excess_precision)
        self._use_bias = bool(bias) and self._has_bias
        if self.elementwise_affine:
            self.weight = _uninitialized(device, dtype)
        else:
            self.register_parameter("weight", None)
        if self.elementwise_affine and self._use_bias:
            self.bias = _uninitialized(device, dtype)
        else:
            self.register_parameter("bias", None)
        if normalized_shape is None:
            self.normalized_shape = None  # type: ignore[assignment]
            self._register_lazy_loading()
        else:
            self._make_parameters(normalized_shape)

    def _n_axes(self) -> int:
        return 1 if isinstance(self.axis, int) else len(set(self.axis))

    def _input_size(self, input_shape: tuple[int, ...]) -> Any:
        """The sizes of the normalized axes (an int for a single int ``axis``, as it is written)."""
        axes = _normalize_axes(self._name, self.axis, len(input_shape) + 2)
        sizes = tuple(input_shape[a - 2] for a in axes)
        return sizes[0] if isinstance(self.axis, int) else sizes

    def _size_from_checkpoint(self, tensor: torch.Tensor) -> Any:
        return int(tensor.shape[0]) if isinstance(self.axis, int) else tuple(tensor.shape)

    def _make_parameters(self, size: Any) -> None:
        """The parameters for the normalized axes' sizes (the input size: created in this one place)."""
        owner = self._name
        shape = (size,) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
        self.normalized_shape = tuple(check_positive_int(owner, "normalized_shape", d) for d in shape)
        if self._n_axes() != len(self.normalized_shape):
            raise ValueError(
                f"{owner}: normalized_shape {self.normalized_shape} must give one size per normalized axis "
                f"(axis={self.axis!r}: {self._n_axes()} axes)."
            )
        if self.weight is not None:
            self.weight.materialize(self.normalized_shape)
        if self.bias is not None:
            self.bias.materialize(self.normalized_shape)
        self.reset_parameters()

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._ensure_built(input_shape)
        axes = _normalize_axes(self._name, self.axis, len(input_shape) + 2)
        sizes = tuple(input_shape[a - 2] for a in axes)
        if sizes != self.normalized_shape:
            raise ValueError(
                f"{self._name} expected sizes {self.normalized_shape} on channel axes {axes} of the input "
                f"[batch, time, *channels]; got channel shape {input_shape} (sizes {sizes} there)."
            )
        return input_shape

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self._ensure_built(tuple(input_spec.shape))
        return ()

    _has_bias: ClassVar[bool] = True

    def reset_parameters(self) -> None:
        """Reference initialisers: ones for the scale (``weight``), zeros for the bias."""
        if self.normalized_shape is None:
            return  # created at the first call
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def _prepare(self, x: Sequence) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        """Values with the normalized axes last (and whether they were moved)."""
        v = x.values
        check_float_input(self._name, v.dtype)
        rank = v.dim()
        self._ensure_built(x.channel_shape)
        axes = _normalize_axes(self._name, self.axis, rank)
        sizes = tuple(v.shape[a] for a in axes)
        if sizes != self.normalized_shape:
            raise ValueError(
                f"{self._name} expected sizes {self.normalized_shape} on channel axes {axes} of the input "
                f"[batch, time, *channels]; got channel shape {x.channel_shape} (sizes {sizes} there)."
            )
        trailing = tuple(range(rank - len(axes), rank))
        if axes == trailing:
            return v, axes, False
        return v.movedim(axes, trailing), axes, True

    def _restore(self, y: torch.Tensor, axes: tuple[int, ...], moved: bool) -> torch.Tensor:
        if not moved:
            return y
        rank = y.dim()
        return y.movedim(tuple(range(rank - len(axes), rank)), axes)

    def _normalize(
        self, v: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _zero_statistic(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        v, axes, moved = self._prepare(x)
        dtype = v.dtype
        dims = tuple(range(v.dim() - len(axes), v.dim()))
        compute_dtype = _at_least_fp32(dtype) if self.reductions_in_at_least_fp32 else dtype
        compute = v if v.dtype == compute_dtype else v.to(compute_dtype)
        if torch.is_grad_enabled() and compute.requires_grad:
            with torch.no_grad():
                zero = self._zero_statistic(compute, dims)
            compute = _zero_grad_where(compute, zero)
        weight, bias = self.weight, self.bias
        if (
            compute_dtype == dtype
            and (weight is None or weight.dtype == dtype)
            and (bias is None or bias.dtype == dtype)
        ):
            y = self._normalize(compute, weight, bias)  # fused affine
        else:
            y = self._normalize(compute, None, None).to(dtype)
            if weight is not None:
                y = y * weight.to(dtype)
            if bias is not None:
                y = y + bias.to(dtype)
        return Sequence._trusted(self._restore(y, axes, moved), x.mask)


class LayerNormalization(_AffineNorm):
    """Layer normalization over channel ``axis`` (default the last), like ``torch.nn.LayerNorm``.

    ``LayerNormalization(256)`` normalizes ``[B, T, 256]`` over its last axis;
    ``LayerNormalization((4, 8), axis=(-2, -1))`` over two axes; any channel axes work
    (they are moved last for ``F.layer_norm``). ``normalized_shape`` gives their sizes.
    ``elementwise_affine=False`` drops ``weight`` and ``bias``; ``bias=False`` drops the
    bias only (the reference's ``use_scale``/``use_bias``; a bias without a scale is not
    offered). Default ``eps=1e-6`` as in the reference (torch uses 1e-5). ``LayerNormalization()``
    (``normalized_shape`` omitted) takes the sizes from the first call.
    """

    _name = "LayerNormalization"

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int] | None = None,
        axis: int | tuple[int, ...] | list[int] = -1,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = True,
        reductions_in_at_least_fp32: bool = True,
        guard_against_excess_precision: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup(
            normalized_shape,
            axis,
            eps,
            elementwise_affine,
            bias,
            reductions_in_at_least_fp32,
            guard_against_excess_precision,
            device,
            dtype,
        )

    def _normalize(
        self, v: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.layer_norm(v, self.normalized_shape, weight, bias, self.eps)

    def _zero_statistic(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return v.var(dims, correction=0, keepdim=True) == 0


class RMSNormalization(_AffineNorm):
    """RMS normalization ``x * rsqrt(mean(x^2) + eps) * weight`` over channel ``axis``
    (``F.rms_norm``; like ``torch.nn.RMSNorm``). Reductions run in at least float32 unless
    ``reductions_in_at_least_fp32=False`` (the reference's default, which many RMSNorm
    implementations do not share)."""

    _name = "RMSNormalization"
    _has_bias = False

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int] | None = None,
        axis: int | tuple[int, ...] | list[int] = -1,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        reductions_in_at_least_fp32: bool = True,
        guard_against_excess_precision: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup(
            normalized_shape,
            axis,
            eps,
            elementwise_affine,
            False,
            reductions_in_at_least_fp32,
            guard_against_excess_precision,
            device,
            dtype,
        )

    def _normalize(
        self, v: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.rms_norm(v, self.normalized_shape, weight, self.eps)

    def _zero_statistic(self, v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return v.square().mean(dims, keepdim=True) == 0


# -------------------------------------------------------------------------- batch norm
class BatchNormalization(_LazyNorm, PreservesShape, PreservesType, Stateless):
    """Batch normalization of channel ``axis`` over the batch's *valid* timesteps.

    Training (``layer`` with ``training=True``): per-feature mean and variance over every
    valid timestep of every batch row (and every other channel axis), computed in at
    least float32 as ``E[x^2] - E[x]^2`` clipped at 0 (``use_fast_variance``, the
    default) or ``E[(x - E[x])^2]``; invalid timesteps never enter them, whatever their
    values. The running statistics are updated as ``running = (1 - momentum) * running +
    momentum * batch`` (torch's convention: the default ``momentum=0.01`` is the
    reference's 0.99), with the *biased* batch variance as in the reference (torch uses
    the unbiased one), and not at all when the batch has no valid timestep (the
    reference would write NaN). Eval: the running statistics. Output
    ``(x - mean) * rsqrt(var + eps) * weight + bias``.

    ``step`` works in eval only: training statistics depend on future timesteps, so a
    training ``step`` raises ValueError (as in the reference). ``affine=False`` drops
    ``weight`` and ``bias``; ``bias=False`` the bias only (the reference's
    ``use_scale``/``use_bias``; a bias without a scale is not offered). Default ``eps=1e-3``.
    """

    lazy_input_arg = "num_features"
    lazy_state_key = "running_mean"
    num_features: int | None
    weight: Any
    bias: Any
    running_mean: Any
    running_var: Any
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int | None = None,
        axis: int = -1,
        eps: float = 1e-3,
        momentum: float = 0.01,
        affine: bool = True,
        bias: bool = True,
        use_fast_variance: bool = True,
        guard_against_excess_precision: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"BatchNormalization expects a single int axis; got {axis!r}.")
        self.axis = axis
        self.eps = check_eps("BatchNormalization", eps)
        self.momentum = check_eps("BatchNormalization", momentum, "momentum")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(
                f"BatchNormalization expects momentum in [0, 1] (torch's convention: the weight of the new "
                f"batch; the reference's momentum m is 1 - m here); got {momentum!r}."
            )
        self.affine = bool(affine)
        self.use_fast_variance = bool(use_fast_variance)
        self.guard_against_excess_precision = bool(guard_against_excess_precision)
        self._use_bias = bool(bias)
        if self.affine:
            self.weight = _uninitialized(device, dtype)
        else:
            self.register_parameter("weight", None)
        if self.affine and self._use_bias:
            self.bias = _uninitialized(device, dtype)
        else:
            self.register_parameter("bias", None)
        # Empty until the size is known (not torch's UninitializedBuffer, which cannot be deep-copied);
        # .to() moves them, so _make_parameters creates the statistics on their device and dtype.
        stats_dtype = _at_least_fp32(dtype or torch.get_default_dtype())
        for name in ("running_mean", "running_var"):
            self.register_buffer(name, torch.empty(0, device=device, dtype=stats_dtype))
        self.register_buffer("num_batches_tracked", torch.zeros((), device=device, dtype=torch.long))
        if num_features is None:
            self.num_features = None
            self._register_lazy_loading()
        else:
            self.num_features = check_positive_int("BatchNormalization", "num_features", num_features)
            self._make_parameters(self.num_features)

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        (axis,) = _normalize_axes("BatchNormalization", self.axis, len(input_shape) + 2)
        return input_shape[axis - 2]

    def _make_parameters(self, size: int) -> None:
        """Parameters and running statistics for ``size`` features (created in this one place)."""
        for tensor in (self.weight, self.bias):
            if tensor is not None:
                tensor.materialize((size,))
        like = self.running_mean
        self.running_mean = torch.zeros(size, device=like.device, dtype=like.dtype)
        self.running_var = torch.ones(size, device=like.device, dtype=like.dtype)
        self.reset_parameters()

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._check_features(input_shape)
        return input_shape

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self._ensure_built(tuple(input_spec.shape))
        return ()

    def reset_parameters(self) -> None:
        """Ones/zeros for weight/bias, zero mean and unit variance."""
        self.num_batches_tracked.zero_()
        if self.num_features is None:
            return  # created at the first call
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def _check_features(self, channel_shape: tuple[int, ...]) -> int:
        self._ensure_built(channel_shape)
        (axis,) = _normalize_axes("BatchNormalization", self.axis, len(channel_shape) + 2)
        if channel_shape[axis - 2] != self.num_features:
            raise ValueError(
                f"BatchNormalization expected {self.num_features} features on channel axis {axis} of the input "
                f"[batch, time, *channels]; got channel shape {channel_shape}."
            )
        return axis

    def _axis(self, x: Sequence) -> int:
        check_float_input("BatchNormalization", x.values.dtype)
        return self._check_features(x.channel_shape)

    def _batch_statistics(self, x: Sequence, axis: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = x.values.to(_at_least_fp32(x.values.dtype))
        mask = x.expanded_mask()
        dims = tuple(d for d in range(v.dim()) if d != axis)
        per_step = math.prod([v.shape[d] for d in dims if d > 1])
        count = x.mask.sum().to(v.dtype) * per_step
        denom = torch.clamp(count, min=1.0)
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        mean = torch.where(mask, v, zero).sum(dims) / denom
        if self.use_fast_variance:
            mean_sq = torch.where(mask, v.square(), zero).sum(dims) / denom
            var = torch.clamp(mean_sq - mean.square(), min=0.0)
        else:
            centred = v - mean.reshape([-1 if d == axis else 1 for d in range(v.dim())])
            var = torch.where(mask, centred.square(), zero).sum(dims) / denom
        return mean, var, count

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        axis = self._axis(x)
        if training:
            mean, var, count = self._batch_statistics(x, axis)
            with torch.no_grad():
                has = count > 0
                m = self.momentum
                new_mean = (1 - m) * self.running_mean + m * mean.detach().to(self.running_mean.dtype)
                new_var = (1 - m) * self.running_var + m * var.detach().to(self.running_var.dtype)
                self.running_mean.copy_(torch.where(has, new_mean, self.running_mean))
                self.running_var.copy_(torch.where(has, new_var, self.running_var))
                self.num_batches_tracked.add_(has.to(torch.long))
        else:
            mean, var = self.running_mean, self.running_var
        v = x.values
        compute = v.to(torch.promote_types(_at_least_fp32(v.dtype), mean.dtype))
        shape = [-1 if d == axis else 1 for d in range(v.dim())]
        mul = torch.rsqrt(var.to(compute.dtype) + self.eps)
        if self.weight is not None:
            mul = mul * self.weight.to(compute.dtype)
        y = (compute - mean.to(compute.dtype).reshape(shape)) * mul.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.to(compute.dtype).reshape(shape)
        return Sequence._trusted(y.to(v.dtype), x.mask)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if training:
            raise ValueError(
                "BatchNormalization cannot step in training mode: its training statistics depend on every "
                "timestep of the batch (future ones included). Step in eval mode (training=False), which uses "
                "the running statistics."
            )
        return self.layer(x, training=False, constants=constants), state


# -------------------------------------------------------------------------- group norm
class GroupNormalization(_LazyNorm, PreservesShape, PreservesType, SequenceLayer):
    """Group normalization (arXiv:1803.08494) of channel ``axis`` split into ``num_groups``.

    Statistics are per batch row and group, over the group's channels, every other
    channel axis and the valid timesteps: all of them (``cumulative=False``: not causal,
    not steppable, receptive field ``(-inf, inf)``), or those up to each step
    (``cumulative=True``: causal, steppable, receptive field ``(-inf, 0)``). Invalid
    timesteps never enter the statistics. The cumulative variance follows the reference
    (Lingvo's streaming form): the running sum of squared deviations of each step from
    the running mean *at that step*, over the running count.

    Parameters ``weight``/``bias`` of ``num_channels`` (``torch.nn.GroupNorm``'s names and
    argument order; ``GroupNormalization(4)`` takes ``num_channels`` from the first call); ``affine=False`` drops both, ``bias=False`` the bias. Computed in
    at least float32, then cast to the input dtype.

    State (``cumulative=True``): ``(sum, count, sum_sq)``, three tensors of shape
    ``[B, 1, *C']`` where ``C'`` is the channel shape with ``axis`` split into
    ``(num_groups, 1)`` and every other channel axis 1, dtype the input's promoted to at
    least float32: the running sum of valid values, their count and the running sum of
    squared deviations, per batch row and group.
    """

    lazy_input_arg = "num_channels"
    num_channels: int | None
    weight: Any
    bias: Any

    def __init__(
        self,
        num_groups: int,
        num_channels: int | None = None,
        axis: int = -1,
        eps: float = 1e-6,
        affine: bool = True,
        bias: bool = True,
        cumulative: bool = False,
        guard_against_excess_precision: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = "GroupNormalization"
        self.num_groups = check_positive_int(owner, "num_groups", num_groups)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{owner} expects a single int axis; got {axis!r}.")
        self.axis = axis
        self.eps = check_eps(owner, eps)
        self.affine = bool(affine)
        self.cumulative = bool(cumulative)
        self.guard_against_excess_precision = bool(guard_against_excess_precision)
        self._use_bias = bool(bias)
        if self.affine:
            self.weight = _uninitialized(device, dtype)
        else:
            self.register_parameter("weight", None)
            track_device(self)
        if self.affine and self._use_bias:
            self.bias = _uninitialized(device, dtype)
        else:
            self.register_parameter("bias", None)
        if num_channels is None:
            self.num_channels = None
            self._register_lazy_loading()
        else:
            self.num_channels = self._check_channel_count(check_positive_int(owner, "num_channels", num_channels))
            self._make_parameters(self.num_channels)

    def _check_channel_count(self, n: int, channel_shape: tuple[int, ...] | None = None) -> int:
        if n % self.num_groups:
            where = "" if channel_shape is None else f" (input channel shape {channel_shape})"
            raise ValueError(
                f"GroupNormalization: num_channels={n} must be divisible by num_groups={self.num_groups}{where}."
            )
        return n

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        (axis,) = _normalize_axes("GroupNormalization", self.axis, len(input_shape) + 2)
        return self._check_channel_count(input_shape[axis - 2], input_shape)

    def _make_parameters(self, size: int) -> None:
        """``weight``/``bias`` for ``size`` channels (created in this one place)."""
        for tensor in (self.weight, self.bias):
            if tensor is not None:
                tensor.materialize((size,))
        self.reset_parameters()

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._axis(input_shape)
        return input_shape

    def reset_parameters(self) -> None:
        if self.num_channels is None:
            return  # created at the first call
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    @property
    def supports_step(self) -> bool:
        return self.cumulative

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, 0 if self.cumulative else math.inf)}

    def _axis(self, channel_shape: tuple[int, ...]) -> int:
        self._ensure_built(channel_shape)
        (axis,) = _normalize_axes("GroupNormalization", self.axis, len(channel_shape) + 2)
        if channel_shape[axis - 2] != self.num_channels:
            raise ValueError(
                f"GroupNormalization expected {self.num_channels} channels on axis {axis} of the input "
                f"[batch, time, *channels]; got channel shape {channel_shape}."
            )
        return axis

    def _grouped_shape(self, shape: tuple[int, ...], axis: int) -> list[int]:
        g = self.num_groups
        return [*shape[:axis], g, shape[axis] // g, *shape[axis + 1 :]]

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.cumulative:
            raise ValueError(
                "GroupNormalization cannot step with cumulative=False (its statistics span the whole sequence); "
                "use cumulative=True to stream."
            )
        check_float_input("GroupNormalization", input_spec.dtype)
        axis = self._axis(tuple(input_spec.shape))
        grouped = self._grouped_shape((batch_size, 1, *input_spec.shape), axis)
        shape = [d if i in (0, 1, axis) else 1 for i, d in enumerate(grouped)]
        dtype = _at_least_fp32(input_spec.dtype)
        device = layer_device(self)
        return tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(3))

    def _moments(
        self, v: torch.Tensor, mask: torch.Tensor, axis: int, state: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Grouped values' mean and variance (and the new state when cumulative)."""
        rank = v.dim()
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        if self.cumulative:
            dims = tuple(d for d in range(rank) if d not in (0, 1, axis))
        else:
            dims = tuple(d for d in range(rank) if d not in (0, axis))
        per_step = math.prod([v.shape[d] for d in dims if d > 1])
        total = torch.where(mask, v, zero).sum(dims, keepdim=True)
        # The mask is [B, T, 1, ...]: summing it over the reduced axes counts valid steps.
        count = mask.to(v.dtype).sum(dims, keepdim=True) * per_step
        new_state = None
        if self.cumulative:
            total = torch.cumsum(total, 1)
            count = torch.cumsum(count, 1)
            if state is not None:
                total = total + state[0]
                count = count + state[1]
        denom = torch.clamp(count, min=1.0)
        mean = total / denom
        sq = torch.where(mask, (v - mean).square(), zero).sum(dims, keepdim=True)
        if self.cumulative:
            sq = torch.cumsum(sq, 1)
            if state is not None:
                sq = sq + state[2]
                new_state = (total[:, -1:], count[:, -1:], sq[:, -1:])
        return mean, sq / denom, new_state

    def _normalize(
        self, x: Sequence, state: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        check_float_input("GroupNormalization", x.values.dtype)
        axis = self._axis(x.channel_shape)
        v = x.values
        dtype = _at_least_fp32(v.dtype)
        grouped_shape = self._grouped_shape(tuple(v.shape), axis)
        grouped = v.to(dtype).reshape(grouped_shape)
        mask = x.mask.reshape(x.mask.shape + (1,) * (grouped.dim() - 2))
        if torch.is_grad_enabled() and grouped.requires_grad:
            with torch.no_grad():
                _, var0, _ = self._moments(grouped, mask, axis, state)
            grouped = torch.where(var0 == 0, grouped.detach(), grouped)
        mean, var, new_state = self._moments(grouped, mask, axis, state)
        y = ((grouped - mean) * torch.rsqrt(var + self.eps)).reshape(v.shape)
        shape = [-1 if d == axis else 1 for d in range(v.dim())]
        if self.weight is not None:
            y = y * self.weight.to(dtype).reshape(shape)
        if self.bias is not None:
            y = y + self.bias.to(dtype).reshape(shape)
        return y.to(v.dtype), new_state

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        y, _ = self._normalize(x, None)
        return Sequence._trusted(y, x.mask)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if x.values.shape[1] == 0:
            return Sequence._trusted(x.values, x.mask), state
        y, new_state = self._normalize(x, state)
        return Sequence._trusted(y, x.mask), new_state


# -------------------------------------------------------------------------- kernel constraints
class WeightNormalization(torch.nn.Module):
    """Base of the kernel constraints a convolution takes as ``kernel_constraint``.

    A constraint is built unbound (``L2WeightNormalization(eps=...)``); the convolution
    makes its own bound copy (``bind(filters)``) with the parameters and buffers for its
    number of output filters, kept as its ``kernel_constraint`` submodule. ``forward``
    maps the kernel as a ``[fan_in, filters]`` matrix to the constrained matrix.
    """

    kind: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The constructor arguments (for configs and for binding a copy)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options()}

    def bind(self, filters: int, *, device: Any = None, dtype: Any = None) -> WeightNormalization:
        """A copy with its parameters and buffers for ``filters`` output filters."""
        bound = type(self)(**self.options())
        bound._make_parameters(filters, device, dtype)
        return bound

    def _make_parameters(self, filters: int, device: Any, dtype: Any) -> None:
        raise NotImplementedError

    def forward(self, matrix: torch.Tensor, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())


def _l2_normalize_columns(m: torch.Tensor, eps: float, at_least_fp32: bool) -> torch.Tensor:
    dtype = m.dtype
    c = m.to(_at_least_fp32(dtype)) if at_least_fp32 else m
    return (c * torch.rsqrt(c.square().sum(0, keepdim=True) + eps)).to(dtype)


class L2WeightNormalization(WeightNormalization):
    """Weight normalization (arXiv:1602.07868): each filter divided by its L2 norm
    (``rsqrt(sum + eps)``) and multiplied by a learned ``scale`` (per filter, initialised
    to ones; the reference's ``L2WeightNormalization``)."""

    kind = "l2"
    scale: torch.nn.Parameter

    def __init__(self, eps: float = 1e-12, reductions_in_at_least_fp32: bool = False) -> None:
        super().__init__()
        self.eps = check_eps("L2WeightNormalization", eps)
        self.reductions_in_at_least_fp32 = bool(reductions_in_at_least_fp32)

    def options(self) -> dict[str, Any]:
        return {"eps": self.eps, "reductions_in_at_least_fp32": self.reductions_in_at_least_fp32}

    def _make_parameters(self, filters: int, device: Any, dtype: Any) -> None:
        self.scale = torch.nn.Parameter(torch.ones(filters, device=device, dtype=dtype))

    def forward(self, matrix: torch.Tensor, training: bool) -> torch.Tensor:
        normed = _l2_normalize_columns(matrix, self.eps, self.reductions_in_at_least_fp32)
        return normed * self.scale.to(matrix.dtype)


class SpectralWeightNormalization(WeightNormalization):
    """Spectral normalization: the kernel matrix ``[fan_in, filters]`` divided by its
    largest singular value, estimated with ``n_power_iteration`` power iterations from
    the buffer ``u`` ``[1, filters]`` (initialised N(0, 0.01^2) as the reference's flax
    default). Training calls store the new ``u`` and ``sigma`` (buffers); eval calls
    iterate from the stored ``u`` without storing. ``error_on_non_matrix=True`` refuses
    kernels of rank > 2 (every convolution kernel), as in the reference."""

    kind = "spectral"
    u: torch.Tensor
    sigma: torch.Tensor

    def __init__(
        self,
        n_power_iteration: int = 1,
        eps: float = 1e-12,
        reductions_in_at_least_fp32: bool = False,
        error_on_non_matrix: bool = False,
    ) -> None:
        super().__init__()
        self.n_power_iteration = check_positive_int(
            "SpectralWeightNormalization", "n_power_iteration", n_power_iteration
        )
        self.eps = check_eps("SpectralWeightNormalization", eps)
        self.reductions_in_at_least_fp32 = bool(reductions_in_at_least_fp32)
        self.error_on_non_matrix = bool(error_on_non_matrix)

    def options(self) -> dict[str, Any]:
        return {
            "n_power_iteration": self.n_power_iteration,
            "eps": self.eps,
            "reductions_in_at_least_fp32": self.reductions_in_at_least_fp32,
            "error_on_non_matrix": self.error_on_non_matrix,
        }

    def _make_parameters(self, filters: int, device: Any, dtype: Any) -> None:
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("u", torch.empty((1, filters), device=device, dtype=dtype).normal_(0.0, 0.01))
        self.register_buffer("sigma", torch.ones((), device=device, dtype=dtype))

    def _normalize_rows(self, m: torch.Tensor) -> torch.Tensor:
        dtype = m.dtype
        c = m.to(_at_least_fp32(dtype)) if self.reductions_in_at_least_fp32 else m
        return (c * torch.rsqrt(c.square().sum(-1, keepdim=True) + self.eps)).to(dtype)

    def forward(self, matrix: torch.Tensor, training: bool) -> torch.Tensor:
        # The reference reshapes kernels of rank > 2 into this [fan_in, filters] matrix.
        dtype = torch.promote_types(matrix.dtype, self.u.dtype)
        value = matrix.to(dtype)
        with torch.no_grad():
            u = self.u.to(dtype)
            v = u
            for _ in range(self.n_power_iteration):
                v = self._normalize_rows(u @ value.detach().T)
                u = self._normalize_rows(v @ value.detach())
        sigma = ((v @ value) @ u.T)[0, 0]
        out = value / torch.where(sigma != 0, sigma, torch.ones((), dtype=sigma.dtype, device=sigma.device))
        if training:
            with torch.no_grad():
                self.u.copy_(u.to(self.u.dtype))
                self.sigma.copy_(sigma.detach().to(self.sigma.dtype))
        return out.to(matrix.dtype)


_CONSTRAINTS: dict[str, type[WeightNormalization]] = {
    "l2": L2WeightNormalization,
    "spectral": SpectralWeightNormalization,
}


def make_kernel_constraint(owner: str, spec: Any) -> WeightNormalization | None:
    """An unbound constraint from ``None``, a kind (``"l2"``, ``"spectral"``), a dict
    ``{"kind": ..., **options}`` or a :class:`WeightNormalization` instance."""
    if spec is None:
        return None
    if isinstance(spec, WeightNormalization):
        return type(spec)(**spec.options())
    options: dict[str, Any] = {}
    kind = spec
    if isinstance(spec, Mapping):
        options = {k: v for k, v in spec.items() if k != "kind"}
        kind = spec.get("kind")
    if not isinstance(kind, str) or kind.lower() not in _CONSTRAINTS:
        raise ValueError(
            f"{owner} expects kernel_constraint to be None, one of {sorted(_CONSTRAINTS)}, a dict "
            f"{{'kind': ..., **options}} or a WeightNormalization instance; got {spec!r}."
        )
    try:
        return _CONSTRAINTS[kind.lower()](**options)
    except TypeError as e:
        raise TypeError(f"{owner}: kernel_constraint {spec!r}: {e}") from None
