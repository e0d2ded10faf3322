"""Converters for sl-conv's layers (reference Flax variable layout -> sl tensors).

Registered by the plugin's ``sl_register_converters`` hook; ``sl.interop.load_flax_params``
uses them. Layouts:

* ``Conv*``: kernel ``[*k, in / groups, out]`` -> weight ``[out, in / groups, *k]``.
* ``Conv*Transpose``: kernel ``[*k, in / groups, out]`` -> weight ``[in, out / groups, *k]``
  (per group, and flipped along every kernel axis: the reference correlates the
  stride-dilated input with its kernel, torch's transposed convolution is the adjoint).
* ``use_weight_norm``: ``scale`` -> ``weight_scale``; a ``kernel_constraint`` submodule reads
  ``params/kernel_constraint/scale`` (L2) or ``batch_stats/kernel_constraint/{u, sigma}``
  (spectral).
* LayerNorm/RMSNorm/GroupNorm: ``scale`` -> ``weight``, ``bias`` -> ``bias``.
* BatchNorm: the reference's inner flax ``BatchNorm`` scope (``BatchNorm_0`` unless
  named): ``scale``/``bias`` -> ``weight``/``bias``, ``batch_stats`` ``mean``/``var`` ->
  ``running_mean``/``running_var``.

A layer whose input size is still unknown (``sl.lazy``: built without ``in_channels`` /
``normalized_shape`` / ``num_features`` / ``num_channels`` and not called yet) is built
from the reference variables first: a convolution's ``in_channels`` from its kernel
(``kernel.shape[-2] * groups``; a depthwise kernel ``[k, 1, in * multiplier]`` gives
``shape[-1] / depth_multiplier``), a normalization's size from its ``scale`` (BatchNorm:
``mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sl.interop.flax import ConverterRegistry, Variables
from sl.lazy import LazyInputSize
from sl_conv import convolution as C
from sl_conv import normalization as N

__all__ = ["conv_kernel_to_weight", "register_converters", "transpose_kernel_to_weight"]


def conv_kernel_to_weight(kernel: np.ndarray) -> np.ndarray:
    """Reference conv kernel ``[*k, in / groups, out]`` -> torch ``[out, in / groups, *k]``."""
    n = kernel.ndim - 2
    if n < 1:
        return kernel  # the shape check reports it
    return np.transpose(kernel, (n + 1, n, *range(n)))


def transpose_kernel_to_weight(groups: int) -> Callable[[np.ndarray], np.ndarray]:
    """Reference transposed-conv kernel ``[*k, in / groups, out]`` -> torch ``[in, out / groups, *k]``."""

    def transform(kernel: np.ndarray) -> np.ndarray:
        n = kernel.ndim - 2
        if n < 1 or kernel.shape[-1] % groups:
            return kernel
        *k, in_g, out = kernel.shape
        out_g = out // groups
        a = kernel.reshape(*k, in_g, groups, out_g)
        a = np.transpose(a, (n + 1, n, n + 2, *range(n)))  # [groups, in_g, out_g, *k]
        a = a.reshape(groups * in_g, out_g, *k)
        return np.flip(a, axis=tuple(range(2, 2 + n)))

    return transform


def _tensor(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    t = getattr(module, name, None)
    return t if isinstance(t, torch.Tensor) else None


def _build_lazy(
    module: torch.nn.Module, variables: Variables, name: str, size: Callable[[tuple[int, ...]], Any], collection: str
) -> None:
    """Builds a layer still waiting for its input size from the shape of reference value ``name``."""
    if not isinstance(module, LazyInputSize) or module.is_built or not variables.has(name, collection):
        return
    shape = tuple(variables.take(name, collection).shape)
    if shape:
        module._build(size(shape))


def _conv_in_channels(module: C._ConvBase) -> Callable[[tuple[int, ...]], int]:
    def size(kernel: tuple[int, ...]) -> int:
        if module._depthwise:
            return kernel[-1] // module.depth_multiplier
        return kernel[-2] * module.groups if len(kernel) >= 2 else kernel[-1]

    return size


def _convert_conv(module: torch.nn.Module, variables: Variables) -> None:
    assert isinstance(module, C._ConvBase)
    _build_lazy(module, variables, "kernel", _conv_in_channels(module), "params")
    transform = transpose_kernel_to_weight(module.groups) if module._transposed else conv_kernel_to_weight
    variables.assign(module.weight, "kernel", transform=transform, target_name="weight")
    variables.assign(module.bias, "bias")
    variables.assign(module.weight_scale, "scale", target_name="weight_scale")
    if module.kernel_constraint is not None:
        variables.convert_child(module.kernel_constraint, "kernel_constraint")


def _convert_l2_weight_norm(module: torch.nn.Module, variables: Variables) -> None:
    variables.assign(_tensor(module, "scale"), "scale")


def _convert_spectral(module: torch.nn.Module, variables: Variables) -> None:
    variables.assign(_tensor(module, "u"), "u", collection="batch_stats")
    variables.assign(_tensor(module, "sigma"), "sigma", collection="batch_stats")


def _convert_affine_norm(module: torch.nn.Module, variables: Variables) -> None:
    if isinstance(module, N._AffineNorm):
        axis = module.axis
        _build_lazy(module, variables, "scale", lambda s: s[0] if isinstance(axis, int) else s, "params")
    elif isinstance(module, N.GroupNormalization):
        _build_lazy(module, variables, "scale", lambda s: s[0], "params")
    variables.assign(_tensor(module, "weight"), "scale", target_name="weight")
    variables.assign(_tensor(module, "bias"), "bias")


def _convert_batch_norm(module: torch.nn.Module, variables: Variables) -> None:
    scopes = sorted(set(variables.names("params")) | set(variables.names("batch_stats")))
    if len(scopes) != 1:
        variables._ctx.problems.append(
            f"mis-shaped: {variables.path_of()} should hold the reference's single flax BatchNorm scope; found "
            f"{scopes or 'nothing'}"
        )
        return
    inner = variables.child(scopes[0])
    _build_lazy(module, inner, "mean", lambda s: s[0], "batch_stats")
    inner.assign(_tensor(module, "weight"), "scale", target_name="weight")
    inner.assign(_tensor(module, "bias"), "bias")
    inner.assign(_tensor(module, "running_mean"), "mean", collection="batch_stats", target_name="running_mean")
    inner.assign(_tensor(module, "running_var"), "var", collection="batch_stats", target_name="running_var")


_CONVERTERS: dict[type, Callable[[torch.nn.Module, Variables], None]] = {
    C._ConvBase: _convert_conv,
    N.L2WeightNormalization: _convert_l2_weight_norm,
    N.SpectralWeightNormalization: _convert_spectral,
    N.LayerNormalization: _convert_affine_norm,
    N.RMSNormalization: _convert_affine_norm,
    N.GroupNormalization: _convert_affine_norm,
    N.BatchNormalization: _convert_batch_norm,
}


def register_converters(converters: ConverterRegistry) -> None:
    """Registers the converters of sl-conv's layers (the plugin's ``sl_register_converters`` hook)."""
    for cls, fn in _CONVERTERS.items():
        converters.register(cls, fn)
