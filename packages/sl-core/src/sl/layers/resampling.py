"""Resampling by decimation and repetition: Downsample1D, Upsample1D, Upsample2D (reference ``simple.py``)."""

from __future__ import annotations

import fractions

import torch

from sl.layer import PreservesShape, PreservesType, Stateless
from sl.types import Constants, ReceptiveField, Sequence

__all__ = ["Downsample1D", "Upsample1D", "Upsample2D"]


def _check_rate(owner: str, rate: object, what: str = "rate") -> int:
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise TypeError(f"{owner} expected an integer {what}; got {type(rate).__name__} ({rate!r}).")
    if rate < 1:
        raise ValueError(f"{owner} expected a positive {what}; got {rate}.")
    return rate


class Downsample1D(PreservesType, PreservesShape, Stateless):
    """Keeps the first of every ``rate`` timesteps (values and mask); no filtering.

    Block size ``rate``, output ratio ``1/rate``. As in the reference it declares an
    input latency of ``rate - 1`` (so a step-wise run is flushed up to a whole block)
    and output latency 0. A layer-wise input whose length is not a multiple of ``rate``
    gives ``ceil(T / rate)`` outputs. The masked state is preserved.
    """

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = _check_rate(type(self).__name__, rate)

    @property
    def block_size(self) -> int:
        return self.rate

    @property
    def output_ratio(self) -> fractions.Fraction:
        return fractions.Fraction(1, self.rate)

    @property
    def input_latency(self) -> int:
        return self.rate - 1

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return type(x)(x.values[:, :: self.rate], x.mask[:, :: self.rate])


class Upsample1D(PreservesType, PreservesShape, Stateless):
    """Repeats every timestep ``rate`` times (values and mask); output ratio ``rate``."""

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = _check_rate(type(self).__name__, rate)

    @property
    def output_ratio(self) -> fractions.Fraction:
        return fractions.Fraction(self.rate)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return dict.fromkeys(range(self.rate), (0, 0))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return type(x)(
            torch.repeat_interleave(x.values, self.rate, dim=1),
            torch.repeat_interleave(x.mask, self.rate, dim=1),
        )


class Upsample2D(PreservesType, Stateless):
    """Repeats ``[B, T, H, C]`` inputs ``rate[0]`` times in time and ``rate[1]`` times along H.

    ``rate`` is an int (both axes) or a ``(time, spatial)`` pair. Output ratio ``rate[0]``.
    """

    def __init__(self, rate: int | tuple[int, int]) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(rate, (tuple, list)):
            if len(rate) != 2:
                raise ValueError(f"{name} expected rate as an int or a (time, spatial) pair; got {rate!r}.")
            rates = (_check_rate(name, rate[0], "time rate"), _check_rate(name, rate[1], "spatial rate"))
        else:
            r = _check_rate(name, rate)
            rates = (r, r)
        self.rate: tuple[int, int] = rates

    @property
    def output_ratio(self) -> fractions.Fraction:
        return fractions.Fraction(self.rate[0])

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return dict.fromkeys(range(self.rate[0]), (0, 0))

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expected a rank-4 input [batch, time, height, channels] (channel shape "
                f"of 2 dims); got channel shape {tuple(input_shape)}."
            )
        return (input_shape[0] * self.rate[1], input_shape[1])

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        values = torch.repeat_interleave(x.values, self.rate[0], dim=1)
        values = torch.repeat_interleave(values, self.rate[1], dim=2)
        return type(x)(values, torch.repeat_interleave(x.mask, self.rate[0], dim=1))
