"""Stochastic layers: Dropout and AddNoise (reference ``simple.py``).

Randomness comes from torch's global RNG (``torch.rand``/``torch.randn``), so
``torch.manual_seed`` (and ``torch.random.fork_rng``) control it, as for
``torch.nn.Dropout``.
"""

from __future__ import annotations

import math

import torch

from sl.layer import PreservesType, StatelessPointwise
from sl.types import Constants, Sequence, State

__all__ = ["AddNoise", "Dropout"]


class Dropout(PreservesType, StatelessPointwise):
    """Inverted dropout: in training, zeroes each entry with probability ``rate`` and
    scales the rest by ``1 / (1 - rate)``; the identity when not training.

    ``broadcast_dims`` are axes of the full ``[B, T, *C]`` values (negative allowed)
    along which one dropout decision is shared (e.g. ``(1,)``: the same channels
    dropped at every timestep). Float inputs are multiplied by the scaled keep mask
    (which keeps a MaskedSequence masked); integer and bool inputs are selected
    without scaling, as in the reference. ``rate == 1`` gives zeros.

    ``step`` with ``training=True`` raises, as in the reference: independent per-step
    draws could not match the layer-wise draw.
    """

    def __init__(self, rate: float = 0.0, broadcast_dims: tuple[int, ...] = ()) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{name} expected a rate in [0, 1]; got {rate!r}.")
        dims = tuple(broadcast_dims)
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise TypeError(f"{name} expected integer broadcast_dims; got {broadcast_dims!r}.")
        self.rate = float(rate)
        self.broadcast_dims = dims

    def _noise_shape(self, shape: torch.Size) -> list[int]:
        out = list(shape)
        for d in self.broadcast_dims:
            if not -len(shape) <= d < len(shape):
                raise ValueError(
                    f"{type(self).__name__} broadcast_dims {self.broadcast_dims} out of range for input of rank "
                    f"{len(shape)} (shape {tuple(shape)})."
                )
            out[d] = 1
        return out

    def _dropout(self, v: torch.Tensor) -> torch.Tensor:
        shape = self._noise_shape(v.shape)
        if self.rate == 1.0:
            return torch.zeros_like(v)
        keep = 1.0 - self.rate
        if v.is_floating_point():
            u = torch.rand(shape, dtype=v.dtype, device=v.device)
            return v * (torch.floor(keep + u) / keep)
        u = torch.rand(shape, dtype=torch.float32, device=v.device)
        return torch.where(u < keep, v, torch.zeros((), dtype=v.dtype, device=v.device))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if not training or self.rate == 0.0:
            return x
        return x.apply_values_masked(self._dropout)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if training and self.rate > 0.0:
            raise ValueError(
                f"{type(self).__name__}.step does not support training=True (step-wise dropout cannot match "
                "layer-wise dropout); use layer() for training or step with training=False."
            )
        return x, state


_SAMPLER_PARAMS = {
    "uniform": ("minval", "maxval"),
    "normal": ("mean", "stddev"),
    "truncated_normal": ("mean", "stddev"),
}
_SAMPLER_DEFAULTS = {"minval": 0.0, "maxval": 1.0, "mean": 0.0, "stddev": 1.0}


class AddNoise(PreservesType, StatelessPointwise):
    """Adds noise from ``sampler`` to the values (reference ``AddNoise``).

    Samplers (the reference's NoiseSampler classes, as a name plus parameters):
    ``"uniform"`` in ``[minval, maxval)`` (defaults 0, 1); ``"normal"`` with ``mean``,
    ``stddev`` (defaults 0, 1); ``"truncated_normal"``: a standard normal truncated to
    [-2, 2], then scaled by ``stddev`` and shifted by ``mean``. With
    ``training_only`` the layer is the identity when not training.

    RNG semantics: each ``layer`` call and each ``step`` call draws fresh noise of its
    input's shape, so a step-wise run has the same distribution as a layer-wise run but
    not the same samples; layer and step agree exactly only when no noise is added
    (``training_only`` and not training) or the noise is deterministic (``stddev=0``).
    Noise is also added at invalid steps, so the output is not a MaskedSequence.
    """

    def __init__(
        self,
        sampler: str,
        training_only: bool,
        *,
        minval: float | None = None,
        maxval: float | None = None,
        mean: float | None = None,
        stddev: float | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if sampler not in _SAMPLER_PARAMS:
            raise ValueError(f"{name} expected sampler in {sorted(_SAMPLER_PARAMS)}; got {sampler!r}.")
        given = {"minval": minval, "maxval": maxval, "mean": mean, "stddev": stddev}
        wanted = _SAMPLER_PARAMS[sampler]
        stray = [k for k, v in given.items() if v is not None and k not in wanted]
        if stray:
            raise ValueError(f"{name} sampler {sampler!r} takes parameters {list(wanted)}; got {stray}.")
        params = {k: float(_SAMPLER_DEFAULTS[k] if given[k] is None else given[k]) for k in wanted}  # type: ignore[arg-type]
        if not all(math.isfinite(v) for v in params.values()):
            raise ValueError(f"{name} expected finite sampler parameters; got {params}.")
        if sampler == "uniform" and params["minval"] > params["maxval"]:
            raise ValueError(f"{name} expected minval <= maxval; got {params['minval']} > {params['maxval']}.")
        if "stddev" in params and params["stddev"] < 0:
            raise ValueError(f"{name} expected a non-negative stddev; got {params['stddev']}.")
        self.sampler = sampler
        self.training_only = bool(training_only)
        self.params = params

    def sample(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Noise of ``shape`` in ``dtype`` (drawn in float32 for low-precision dtypes)."""
        draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        p = self.params
        if self.sampler == "uniform":
            u = torch.rand(shape, dtype=draw_dtype, device=device).to(dtype)
            lo = torch.tensor(p["minval"], dtype=dtype, device=device)
            hi = torch.tensor(p["maxval"], dtype=dtype, device=device)
            return u * (hi - lo) + lo
        if self.sampler == "normal":
            n = torch.randn(shape, dtype=draw_dtype, device=device)
        else:
            n = torch.nn.init.trunc_normal_(torch.empty(shape, dtype=draw_dtype, device=device), a=-2.0, b=2.0)
        return n.to(dtype) * torch.tensor(p["stddev"], dtype=dtype, device=device) + torch.tensor(
            p["mean"], dtype=dtype, device=device
        )

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if self.training_only and not training:
            return x
        if not x.dtype.is_floating_point:
            raise TypeError(f"{type(self).__name__} expected a floating-point input; got {x.dtype}.")
        noise = self.sample(x.values.shape, x.dtype, x.device)
        return x.apply_values(lambda v: v + noise)
