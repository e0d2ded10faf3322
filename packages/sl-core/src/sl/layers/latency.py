"""Latency alignment layers: :class:`Delay` and :class:`Lookahead` (reference ``dsp.py``).

They live in sl-core because every plugin needs them to line up branches and to
make an accumulated step-wise latency divisible by a following resampling layer
(see :func:`sl.composition.get_required_stepwise_delay`).
"""

from __future__ import annotations

import torch

from sl.layer import PreservesShape, PreservesType, SequenceLayer
from sl.registry import LayerExample, LayerRegistry
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State

__all__ = ["Delay", "Lookahead"]


def _check_length(owner: str, length: object) -> int:
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(f"{owner} expected an integer length; got {type(length).__name__} ({length!r}).")
    if length < 0:
        raise ValueError(f"{owner} expected a non-negative length; got {length}.")
    return length


class Delay(PreservesShape, PreservesType, SequenceLayer):
    """Delays the sequence by ``length`` steps, inserting invalid steps at the front.

    ``delay_layer_output=True``: both ``layer`` and ``step`` are delayed (the layer
    output is ``length`` steps longer; output latency 0). ``delay_layer_output=False``:
    ``layer`` is the identity and only ``step`` is delayed (output latency ``length``).
    Use the latter to pad the step-wise latency of one branch or of a prefix of a
    Serial (e.g. before a downsampling layer) without changing layer-wise results.

    The step state is a fixed-size buffer ``Sequence`` holding the ``length`` pending
    input steps (values and mask), initially invalid zeros.
    """

    def __init__(self, length: int, delay_layer_output: bool = True) -> None:
        super().__init__()
        self.length = _check_length(type(self).__name__, length)
        self.delay_layer_output = bool(delay_layer_output)

    @property
    def input_latency(self) -> int:
        return self.length

    @property
    def output_latency(self) -> int:
        # With delay_layer_output the layer is delayed too, so step and layer agree at once.
        return 0 if self.delay_layer_output else self.length

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        if self.delay_layer_output:
            return {0: (-self.length, -self.length)}
        return {0: (0, 0)}

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        if not self.length:
            return ()
        return Sequence(
            torch.zeros((batch_size, self.length, *input_spec.shape), dtype=input_spec.dtype),
            torch.zeros((batch_size, self.length), dtype=torch.bool),
        )

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if not self.length:
            return x, state
        t = x.values.shape[1]
        values = torch.cat([state.values.to(x.values.device, x.values.dtype), x.values], 1)
        mask = torch.cat([state.mask.to(x.mask.device), x.mask], 1)
        y = Sequence(values[:, :t], mask[:, :t])
        return y, Sequence(values[:, t:], mask[:, t:])

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if self.delay_layer_output:
            return x.pad_time(self.length, 0, valid=False)
        return x


class Lookahead(PreservesShape, PreservesType, SequenceLayer):
    """Drops the first ``length`` steps of the sequence (the opposite of :class:`Delay`).

    ``layer`` drops them outright (``preserve_length_in_layer=True`` appends as many
    invalid steps to keep the length); ``step`` passes its input through and marks the
    first ``length`` timesteps invalid (output latency ``length``).

    The step state is a per-batch-row countdown (int32 ``[B]``) of timesteps still to
    drop. Deviation: the reference counts down only on *valid* steps, which disagrees
    with its own ``layer`` (which drops timesteps regardless of the mask) whenever the
    input has leading invalid steps, e.g. in ``Serial(Delay(2), Lookahead(2))``; here
    every timestep counts, so ``step`` matches ``layer`` for any mask. The two agree
    on the prefix masks the reference is tested with.
    """

    def __init__(self, length: int, preserve_length_in_layer: bool = False) -> None:
        super().__init__()
        self.length = _check_length(type(self).__name__, length)
        self.preserve_length_in_layer = bool(preserve_length_in_layer)

    @property
    def input_latency(self) -> int:
        return 0

    @property
    def output_latency(self) -> int:
        return self.length

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (self.length, self.length)}

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        if not self.length:
            return ()
        return torch.full((batch_size,), self.length, dtype=torch.int32)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if not self.length:
            return x, state
        t = x.values.shape[1]
        # remaining[b, i]: steps still to drop before input step i of this block.
        steps = torch.arange(t, dtype=torch.int32, device=x.mask.device)
        remaining = state.to(x.mask.device)[:, None] - steps[None, :]
        mask = x.mask & (remaining <= 0)
        new_state = torch.clamp(remaining[:, -1] - 1, min=0).to(torch.int32)  # = max(0, state - t)
        return Sequence(x.values, mask), new_state

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if not self.length:
            return x
        y = x[:, self.length :]
        if self.preserve_length_in_layer:
            # Fewer than `length` input steps leave an empty y; pad back to the input length.
            return y.pad_time(0, x.values.shape[1] - y.values.shape[1], valid=False)
        return y


def register_layers(registry: LayerRegistry) -> None:
    registry.add(Delay)
    registry.add(Lookahead)


def example_layers() -> list[LayerExample]:
    # Delay/Lookahead change the layer-wise length by design (as in the reference).
    no_len = {"test_output_length": False}
    return [
        LayerExample(Delay(2), (3,), contract=no_len, name="Delay(2)"),
        LayerExample(Delay(3, delay_layer_output=False), (3,), name="Delay(3, delay_layer_output=False)"),
        LayerExample(Lookahead(2), (3,), contract=no_len, name="Lookahead(2)"),
        LayerExample(Lookahead(3, preserve_length_in_layer=True), (2, 2), name="Lookahead(3, preserve_length)"),
    ]
