"""Helpers the sl-dsp layers share: cached constants (windows, mel matrices) and argument checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sl.toolkit import check_positive_int, is_floating

__all__ = ["ConstantCache", "check_positive_int", "complex_dtype", "floating_dtype", "real_dtype"]


class ConstantCache:
    """Per-layer cache of constant tensors (a window, a mel matrix) keyed by what shapes them
    (length, dtype, device).

    Constants are plain cached tensors, not buffers: they are computed in float64 for the
    input's dtype and device at first use, so ``.to(torch.bfloat16)`` or a float64 input never
    sees a constant rounded through another dtype, and ``state_dict()`` stays empty (the
    reference keeps them out of its variables too). Under ``torch.compile``/``torch.export``
    a missing entry is computed inside the graph (without being stored).
    """

    _sl_dsp_constants: dict[tuple[Any, ...], torch.Tensor]

    def _init_constants(self) -> None:
        """Call in ``__init__``."""
        self._sl_dsp_constants = {}

    def _constant(self, key: tuple[Any, ...], build: Callable[[], torch.Tensor]) -> torch.Tensor:
        cache = self._sl_dsp_constants
        hit = cache.get(key)
        if hit is not None:
            return hit
        value = build()
        if not torch.compiler.is_compiling():
            if len(cache) > 32:
                cache.clear()
            cache[key] = value
        return value


def floating_dtype(dtype: torch.dtype, *, owner: str, what: str) -> torch.dtype:
    """``dtype`` if it is floating point or complex; a layer whose constant (a window, a mel matrix)
    would be rounded to integers or bools refuses the input instead (ValueError naming ``owner``)."""
    if not is_floating(dtype):
        raise ValueError(f"{owner} expects {what} with a floating point or complex dtype; got {dtype}.")
    return dtype


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real counterpart of a complex dtype (real dtypes unchanged)."""
    if dtype == torch.complex64:
        return torch.float32
    if dtype == torch.complex128:
        return torch.float64
    if dtype == torch.complex32:
        return torch.float16
    return dtype


def complex_dtype(dtype: torch.dtype, *, owner: str) -> torch.dtype:
    """The complex dtype an FFT of ``dtype`` produces (bfloat16/float16 compute in float32, as the reference)."""
    if dtype.is_complex:
        if dtype == torch.complex32:
            return torch.complex64
        return dtype
    if dtype in (torch.float32, torch.bfloat16, torch.float16):
        return torch.complex64
    if dtype == torch.float64:
        return torch.complex128
    raise ValueError(f"{owner} computes FFTs of floating point or complex inputs; got dtype {dtype}.")
