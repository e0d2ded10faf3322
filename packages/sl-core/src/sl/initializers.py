"""Parameter initialisers matching the reference's flax defaults.

flax's ``variance_scaling`` draws with variance ``scale / fan`` where the fan is the
fan-in, fan-out or their average *of the reference kernel layout* (the kernel's
last axis is its output, everything but the last two axes is the receptive field).
``"truncated_normal"`` draws a unit normal truncated to (-2, 2) divided by that
distribution's standard deviation, so the variance is exact. ``lecun_normal`` is scale
1 over fan-in with a truncated normal; flax's default embedding init is the same with
the embedding dimension as the fan.
"""

from __future__ import annotations

import math

import torch

__all__ = ["TRUNCATED_NORMAL_STD", "lecun_normal_", "reference_fan_in", "reference_fans", "variance_scaling_"]

# Standard deviation of a unit normal truncated to (-2, 2).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def reference_fans(reference_kernel_shape: tuple[int, ...]) -> tuple[int, int]:
    """flax's ``(fan_in, fan_out)`` of a kernel in the reference layout ``[*receptive, in, out]``."""
    shape = tuple(reference_kernel_shape)
    if len(shape) < 2:
        # flax refuses kernels of rank < 2; treat the whole kernel as the fan.
        n = max(1, math.prod(shape))
        return n, n
    receptive = math.prod(shape[:-2])
    return max(1, shape[-2] * receptive), max(1, shape[-1] * receptive)


def reference_fan_in(reference_kernel_shape: tuple[int, ...]) -> int:
    """flax's fan-in: all axes but the last, multiplied (``reference_fans`` for rank >= 2)."""
    if len(reference_kernel_shape) <= 1:
        return max(1, math.prod(reference_kernel_shape))
    return max(1, math.prod(reference_kernel_shape[:-1]))


@torch.no_grad()
def variance_scaling_(
    tensor: torch.Tensor,
    scale: float,
    fan: float,
    distribution: str = "truncated_normal",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fills ``tensor`` with variance ``scale / fan`` (flax ``variance_scaling``; pick the fan with
    :func:`reference_fans`). ``distribution``: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.

    Drawn in float32 (torch's truncated normal needs erfinv, which low-precision dtypes
    lack) and copied in; complex tensors get a real initialisation.
    """
    variance = scale / max(fan, 1)
    draw = torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device)
    if distribution == "truncated_normal":
        torch.nn.init.trunc_normal_(draw, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
        draw.mul_(math.sqrt(variance) / TRUNCATED_NORMAL_STD)
    elif distribution == "normal":
        draw.normal_(0.0, math.sqrt(variance), generator=generator)
    elif distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        draw.uniform_(-limit, limit, generator=generator)
    else:
        raise ValueError(f"variance_scaling_: unknown distribution {distribution!r}.")
    tensor.copy_(draw)
    return tensor


def lecun_normal_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fills ``tensor`` with a (-2, 2)-truncated normal of variance ``1 / fan_in`` (flax ``lecun_normal``)."""
    return variance_scaling_(tensor, 1.0, fan_in, "truncated_normal", generator)
