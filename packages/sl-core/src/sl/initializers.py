"""Parameter initialisers matching the reference's flax defaults.

flax's ``variance_scaling(..., "truncated_normal")`` draws a unit normal truncated to
(-2, 2) and divides by that distribution's standard deviation, so the variance is
exactly ``scale / fan``. ``lecun_normal`` is scale 1 over fan-in; flax's default
embedding init is the same with the embedding dimension as the fan.
"""

from __future__ import annotations

import math

import torch

__all__ = ["TRUNCATED_NORMAL_STD", "lecun_normal_", "reference_fan_in"]

# Standard deviation of a unit normal truncated to (-2, 2).
TRUNCATED_NORMAL_STD = 0.87962566103423978


@torch.no_grad()
def lecun_normal_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fills ``tensor`` with a (-2, 2)-truncated normal of variance ``1 / fan_in``.

    Drawn in float32 (torch's truncated normal needs erfinv, which low-precision dtypes
    lack) and copied in; complex tensors get a real initialisation.
    """
    std = math.sqrt(1.0 / max(fan_in, 1)) / TRUNCATED_NORMAL_STD
    draw = torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device)
    torch.nn.init.trunc_normal_(draw, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
    tensor.copy_(draw * std)
    return tensor


def reference_fan_in(reference_kernel_shape: tuple[int, ...]) -> int:
    """flax's fan-in for a kernel in the reference layout: all axes but the last, multiplied."""
    if len(reference_kernel_shape) <= 1:
        # flax refuses kernels of rank < 2; the whole kernel is the fan-in then.
        return max(1, math.prod(reference_kernel_shape))
    return max(1, math.prod(reference_kernel_shape[:-1]))
