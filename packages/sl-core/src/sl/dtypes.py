"""Dtype rules shared by layers with parameters (the reference's ``get_promoted_dtype``)."""

from __future__ import annotations

import torch

__all__ = ["promoted_dtype"]


def promoted_dtype(
    input_dtype: torch.dtype, param_dtype: torch.dtype, compute_dtype: torch.dtype | None, *, owner: str = "layer"
) -> torch.dtype:
    """``compute_dtype`` if given, else the promotion of input and parameter dtypes, made inexact.

    Integer inputs (token ids, say) promote to float32. A non-float ``compute_dtype`` is an
    error naming ``owner``.
    """
    if compute_dtype is not None:
        if not isinstance(compute_dtype, torch.dtype):
            raise TypeError(
                f"{owner} expects compute_dtype to be None or a torch.dtype (e.g. torch.float32); got "
                f"{type(compute_dtype).__name__} ({compute_dtype!r})."
            )
        dtype = compute_dtype
    else:
        # Equal dtypes (the streaming common case) skip torch.promote_types, a dispatched op.
        dtype = input_dtype if input_dtype == param_dtype else torch.promote_types(input_dtype, param_dtype)
        if not (dtype.is_floating_point or dtype.is_complex):
            dtype = torch.promote_types(dtype, torch.float32)
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"{owner} computes in a floating or complex dtype; got compute_dtype={dtype}.")
    return dtype
