"""Latency alignment layers: :class:`Delay` and :class:`Lookahead` (reference ``dsp.py``).

They live in sl-core because every plugin needs them to line up branches and to
make an accumulated step-wise latency divisible by a following resampling layer
(see :func:`sl.composition_rules.get_required_stepwise_delay`).
"""

from __future__ import annotations

import torch

from sl.layer import PreservesShape, PreservesType, SequenceLayer
from sl.toolkit import check_positive_int, state_full, track_device
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State

__all__ = ["Delay", "Lookahead"]


class Delay(PreservesShape, PreservesType, SequenceLayer):
    """Delays the sequence by ``length`` steps, inserting invalid steps at the front.

    ``delay_layer_output=True`` (default): both ``layer`` and ``step`` are delayed (the
    layer output is ``length`` steps longer; output latency 0).
    ``delay_layer_output=False``: ``layer`` is the identity and only ``step`` is delayed
    (input and output latency ``length``). Use it to pad the step-wise latency of one
    branch or of a prefix of a Serial (e.g. a Residual's shortcut around lookahead, or
    before a downsampling layer) without changing layer-wise results.

    ``keep_mask=True`` (beyond the reference): a causal tap. Only the values are
    delayed (zeros before the start, invalid inputs read as zeros); the output keeps
    the input's mask and length, so it lines up with its input in ``layer`` and
    ``step`` alike, with both latencies 0. "Current plus previous frame" is
    ``sl.Parallel(sl.Identity(), sl.Delay(1, keep_mask=True), combination="concat")``.

    State: the ``length`` pending input steps on the layer's device, as a ``Sequence``
    (values ``[B, length, *C]``, mask ``[B, length]``, initially invalid zeros), or with
    ``keep_mask`` the values alone (``[B, length, *C]``, initially zeros).
    """

    def __init__(self, length: int, delay_layer_output: bool = True, keep_mask: bool = False) -> None:
        super().__init__()
        self.length = check_positive_int(type(self).__name__, "length", length, allow_zero=True)
        self.delay_layer_output = bool(delay_layer_output)
        self.keep_mask = bool(keep_mask)
        if self.keep_mask and not self.delay_layer_output:
            raise ValueError(
                "Delay: keep_mask=True delays the layer-wise values too, so it needs delay_layer_output=True."
            )
        track_device(self)

    @property
    def input_latency(self) -> int:
        return 0 if self.keep_mask else self.length

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
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.length:
            return ()
        values = state_full(self, (batch_size, self.length, *input_spec.shape), 0, input_spec.dtype)
        if self.keep_mask:
            return values
        return Sequence._trusted(values, state_full(self, (batch_size, self.length), False, torch.bool))

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if not self.length:
            return x, state
        t = x.values.shape[1]
        if self.keep_mask:
            values = torch.cat([state, x.mask_invalid().values], 1)
            return Sequence._trusted(values[:, :t], x.mask), values[:, t:]
        values = torch.cat([state.values, x.values], 1)
        mask = torch.cat([state.mask, x.mask], 1)
        return Sequence._trusted(values[:, :t], mask[:, :t]), Sequence._trusted(values[:, t:], mask[:, t:])

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if not self.delay_layer_output or not self.length:
            return x
        if self.keep_mask:
            # Not a MaskedSequence: delayed values land on steps that may be invalid now.
            values = x.mask_invalid().pad_time(self.length, 0, valid=False).values[:, : x.values.shape[1]]
            return Sequence._trusted(values, x.mask)
        return x.pad_time(self.length, 0, valid=False)


class Lookahead(PreservesShape, PreservesType, SequenceLayer):
    """Drops the first ``length`` steps of the sequence (the opposite of :class:`Delay`).

    ``layer`` drops them outright (``preserve_length_in_layer=True`` appends as many
    invalid steps to keep the length); ``step`` passes its input through and marks the
    first ``length`` timesteps invalid (output latency ``length``).

    State: a per-batch-row countdown (int32 ``[B]``) of timesteps still to drop.
    Deviation: the reference counts down only on *valid* steps, which disagrees with
    its own ``layer`` (which drops timesteps regardless of the mask) whenever the input
    has leading invalid steps, e.g. in ``Serial(Delay(2), Lookahead(2))``; here every
    timestep counts, so ``step`` matches ``layer`` for any mask. Behind a layer with
    step-wise latency the countdown also covers the latency's filler steps
    (:meth:`shift_initial_state`).
    Deviation: with fewer than ``length`` input steps, ``preserve_length_in_layer`` keeps
    the input's length here; the reference appends ``length`` steps to the empty rest, so
    its output is longer than its input.
    """

    def __init__(self, length: int, preserve_length_in_layer: bool = False) -> None:
        super().__init__()
        self.length = check_positive_int(type(self).__name__, "length", length, allow_zero=True)
        self.preserve_length_in_layer = bool(preserve_length_in_layer)
        track_device(self)

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
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.length:
            return ()
        return state_full(self, (batch_size,), self.length, torch.int32)

    def shift_initial_state(self, state: State, latency: int) -> State:
        return state + latency if self.length else state

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if not self.length:
            return x, state
        t = x.values.shape[1]
        # remaining[b, i]: steps still to drop before input step i of this block.
        steps = torch.arange(t, dtype=torch.int32, device=x.mask.device)
        remaining = state[:, None] - steps[None, :]
        mask = x.mask & (remaining <= 0)
        return Sequence._trusted(x.values, mask), torch.clamp(state - t, min=0).to(torch.int32)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if not self.length:
            return x
        y = x[:, self.length :]
        if self.preserve_length_in_layer:
            # Fewer than `length` input steps leave an empty y; pad back to the input length.
            return y.pad_time(0, x.values.shape[1] - y.values.shape[1], valid=False)
        return y
