"""Dtype sweeps for contract tests."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["DtypeConfig", "dtype_sweep", "tolerances"]


@dataclasses.dataclass(frozen=True)
class DtypeConfig:
    """Parameter dtype and input dtype for one sweep entry."""

    param_dtype: torch.dtype
    input_dtype: torch.dtype

    @property
    def id(self) -> str:
        p = str(self.param_dtype).removeprefix("torch.")
        i = str(self.input_dtype).removeprefix("torch.")
        return f"param-{p}-input-{i}"


def dtype_sweep(low_precision: bool = True) -> list[DtypeConfig]:
    """float32 everywhere, plus bfloat16 parameters/inputs (the reference's standard configs)."""
    configs = [DtypeConfig(torch.float32, torch.float32)]
    if low_precision:
        configs += [
            DtypeConfig(torch.bfloat16, torch.bfloat16),
            DtypeConfig(torch.float32, torch.bfloat16),
            DtypeConfig(torch.bfloat16, torch.float32),
        ]
    return configs


def tolerances(*dtypes: torch.dtype) -> dict[str, float]:
    """``verify_contract`` tolerances for the lowest precision among ``dtypes``."""
    low = any(d in (torch.bfloat16, torch.float16) for d in dtypes)
    if low:
        return {"rtol": 1e-2, "atol": 1e-2, "grad_rtol": 1e-1, "grad_atol": 1e-1}
    if all(d == torch.float64 for d in dtypes):
        return {"rtol": 1e-10, "atol": 1e-10}
    return {"rtol": 1e-5, "atol": 1e-5, "grad_rtol": 1e-5, "grad_atol": 1e-5}
