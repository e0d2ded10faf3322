"""Small, correct stateful layers used to exercise the harness and the combinators."""

from __future__ import annotations

import fractions

import torch

import sl
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State


class CausalFIR(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    """y[t] = sum_k w[k] * x[t - k] over the last ``taps`` valid-or-zero inputs (causal)."""

    def __init__(self, taps: int = 3, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.taps = taps
        self.weight = torch.nn.Parameter(torch.randn(taps, dtype=dtype))

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-(self.taps - 1), 0)}

    def _fir(self, padded: torch.Tensor, t: int) -> torch.Tensor:
        w = self.weight.to(padded.dtype)
        out = torch.zeros_like(padded[:, self.taps - 1 :][:, :t])
        for k in range(self.taps):
            out = out + w[k] * padded[:, self.taps - 1 - k : self.taps - 1 - k + t]
        return out

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        x = x.mask_invalid()
        t = x.values.shape[1]
        padded = x.pad_time(self.taps - 1, 0, valid=False).values
        return Sequence(self._fir(padded, t), x.mask).mask_invalid()

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool | None = None, constants: Constants | None = None
    ) -> State:
        return torch.zeros((batch_size, self.taps - 1, *input_spec.shape), dtype=input_spec.dtype)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        x = x.mask_invalid()
        t = x.values.shape[1]
        padded = torch.cat([state, x.values], 1)
        y = self._fir(padded, t)
        return Sequence(y, x.mask).mask_invalid(), padded[:, padded.shape[1] - (self.taps - 1) :]


class Decimate(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    """Keeps every ``rate``-th step (block size ``rate``, ratio 1/rate)."""

    def __init__(self, rate: int = 2) -> None:
        super().__init__()
        self.rate = rate

    @property
    def block_size(self) -> int:
        return self.rate

    @property
    def output_ratio(self) -> fractions.Fraction:
        return fractions.Fraction(1, self.rate)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        x = x.pad_to_multiple(self.rate)
        return type(x)(x.values[:, :: self.rate], x.mask[:, :: self.rate])
