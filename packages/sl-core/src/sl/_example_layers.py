"""Tiny building blocks for the combinators' ``LayerExample``s (and tests).

The combinator examples ship with the package, so their children must too. These two
layers are deliberately minimal and are NOT part of the public API: a causal FIR
(stateful, fixed-shape buffer state) and a stateless per-channel-free scale. They are
not registered; configs refer to them by import path (``sl._example_layers:ExampleFIR``).
"""

from __future__ import annotations

import torch

from sl.layer import PreservesShape, PreservesType, SequenceLayer, StatelessPointwise
from sl.types import ChannelSpec, Constants, MaskedSequence, ReceptiveField, Sequence, State

__all__ = ["ExampleFIR", "ExampleScale"]


class ExampleFIR(PreservesType, PreservesShape, SequenceLayer):
    """``y[t] = sum_k weight[k] * x[t - k]`` with a buffer of the last ``taps - 1`` inputs."""

    def __init__(
        self, taps: int = 3, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if taps < 1:
            raise ValueError(f"ExampleFIR expected taps >= 1; got {taps}.")
        self.taps = taps
        self.weight = torch.nn.Parameter(torch.randn(taps, device=device, dtype=dtype) / taps)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-(self.taps - 1), 0)}

    def _filter(self, padded: torch.Tensor, t: int) -> torch.Tensor:
        w = self.weight.to(padded.dtype)
        out = w[0] * padded[:, self.taps - 1 : self.taps - 1 + t]
        for k in range(1, self.taps):
            out = out + w[k] * padded[:, self.taps - 1 - k : self.taps - 1 - k + t]
        return out

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        x = x.mask_invalid()
        padded = x.pad_time(self.taps - 1, 0, valid=False).values
        return Sequence(self._filter(padded, x.values.shape[1]), x.mask).mask_invalid()

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return torch.zeros(
            (batch_size, self.taps - 1, *input_spec.shape), dtype=input_spec.dtype, device=self.weight.device
        )

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        x = x.mask_invalid()
        padded = torch.cat([state, x.values], 1)
        y = Sequence(self._filter(padded, x.values.shape[1]), x.mask).mask_invalid()
        return y, padded[:, padded.shape[1] - (self.taps - 1) :]


class ExampleScale(PreservesType, StatelessPointwise):
    """``y = scale * x`` (a fixed float; maps 0 to 0, so masked inputs stay masked)."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if isinstance(x, MaskedSequence):
            return x.apply_values_masked(lambda v: v * self.scale)
        return x.apply_values(lambda v: v * self.scale)
