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
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
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


# -- test-only layers for the combinator tests ------------------------------------------


class ReverseFIR(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    """Lookahead filter y[t] = sum_k w[k] * x[t + k]: input/output latency ``taps - 1``.

    Step-wise it buffers the last ``taps - 1`` inputs (and their mask), so its outputs
    come ``taps - 1`` steps late.
    """

    def __init__(self, taps: int = 3) -> None:
        super().__init__()
        self.taps = taps
        self.weight = torch.nn.Parameter(torch.randn(taps))

    @property
    def input_latency(self) -> int:
        return self.taps - 1

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, self.taps - 1)}

    def _fir(self, padded: torch.Tensor, t: int) -> torch.Tensor:
        w = self.weight.to(padded.dtype)
        out = w[0] * padded[:, :t]
        for k in range(1, self.taps):
            out = out + w[k] * padded[:, k : k + t]
        return out

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        x = x.mask_invalid()
        t = x.values.shape[1]
        padded = x.pad_time(0, self.taps - 1, valid=False).values
        return Sequence(self._fir(padded, t), x.mask).mask_invalid()

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        n = self.taps - 1
        return (
            torch.zeros((batch_size, n, *input_spec.shape), dtype=input_spec.dtype),
            torch.zeros((batch_size, n), dtype=torch.bool),
        )

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        x = x.mask_invalid()
        t = x.values.shape[1]
        buf_v, buf_m = state
        pv = torch.cat([buf_v, x.values], 1)
        pm = torch.cat([buf_m, x.mask], 1)
        y = Sequence(self._fir(pv, t), pm[:, :t]).mask_invalid()
        n = self.taps - 1
        return y, (pv[:, pv.shape[1] - n :], pm[:, pm.shape[1] - n :])


class MutateConstants(sl.PreservesType, sl.StatelessPointwise):
    """Writes into ``constants`` (a badly behaved child) and records what it saw."""

    def __init__(self, key: str = "k") -> None:
        super().__init__()
        self.key = key
        self.seen: list[object] = []

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        self.seen.append(None if constants is None else constants.get(self.key))
        if constants is not None:
            constants[self.key] = "mutated"
        return x


class NonSteppable(sl.PreservesType, sl.StatelessPointwise):
    """An identity that declares supports_step = False."""

    @property
    def supports_step(self) -> bool:
        return False

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return x


class ZeroStuff(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    """Upsamples by inserting ``rate - 1`` zeros after each step (like Conv1DTranspose k=1)."""

    def __init__(self, rate: int = 2) -> None:
        super().__init__()
        self.rate = rate

    @property
    def output_ratio(self) -> fractions.Fraction:
        return fractions.Fraction(self.rate)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0), **dict.fromkeys(range(1, self.rate))}

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        x = x.mask_invalid()
        b, t = x.values.shape[:2]
        zeros = torch.zeros((b, t, self.rate - 1, *x.values.shape[2:]), dtype=x.dtype)
        v = torch.cat([x.values[:, :, None], zeros], 2).reshape(b, t * self.rate, *x.values.shape[2:])
        return type(x)(v, x.mask.repeat_interleave(self.rate, dim=1))


def stateful_stream_model() -> sl.Serial:
    """A small stack with every kind of step state: a projection, a delay buffer, a step counter
    (the timing signal) and a lookahead (input latency), on 4 channels."""
    return sl.Serial(
        sl.Dense(4, 4),
        sl.Delay(2, delay_layer_output=False),
        sl.AddTimingSignal(only_advance_position_for_valid_timesteps=False),
        sl.Lookahead(1),
    )
