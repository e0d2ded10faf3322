"""``Bidirectional``: a forward layer and a time-reversed backward layer, combined (not steppable)."""

from __future__ import annotations

import fractions
import math

import torch

from sl import composition_rules as rules
from sl.combinators._common import check_child, copy_constants
from sl.layer import SequenceLayer
from sl.merging import (
    CombinationMode,
    sequence_broadcast_combine,
    sequence_broadcast_combine_output_channel_shape,
    sequence_broadcast_combine_output_dtype,
)
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Bidirectional"]


class Bidirectional(SequenceLayer):
    """Runs ``forward`` on the input and ``backward`` on the time-reversed input, then combines.

    As in the reference, reversal flips the whole padded time axis, not each sequence's
    valid region: for ``A B C X X`` (X = padding) the backward layer sees ``X X C B A``,
    and its output is flipped back before combining. The backward layer therefore sees
    padding *first*; layers that treat leading invalid steps specially (e.g. causal
    convolutions with causal padding) can shrink the valid region, see the reference
    docstring. The mask is the AND of both outputs' masks.

    Not steppable (block size 1, latency 0). Children must have equal output ratios.
    The children are stored as ``forward_layer`` / ``backward_layer`` because
    ``forward`` is ``torch.nn.Module.forward``. Emits are ``(forward, backward)``.
    """

    def __init__(
        self,
        forward: SequenceLayer,
        backward: SequenceLayer,
        combination: CombinationMode | str = CombinationMode.STACK,
    ) -> None:
        super().__init__()
        self.forward_layer = check_child("Bidirectional", "forward", forward)
        self.backward_layer = check_child("Bidirectional", "backward", backward)
        self.combination = CombinationMode.coerce(combination)
        if forward.output_ratio != backward.output_ratio:
            raise ValueError(
                "Bidirectional forward and backward layers must have equal output_ratio; got "
                f"forward={forward.output_ratio} ({type(forward).__name__}), "
                f"backward={backward.output_ratio} ({type(backward).__name__})."
            )

    @property
    def supports_step(self) -> bool:
        return False

    @property
    def block_size(self) -> int:
        return 1

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self.forward_layer.output_ratio

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        fwd = self.forward_layer.receptive_field_per_step
        bwd = self.backward_layer.receptive_field_per_step
        rules.validate_receptive_field_per_step(fwd)
        rules.validate_receptive_field_per_step(bwd)
        n = math.lcm(len(fwd), len(bwd))
        out: dict[int, ReceptiveField] = {}
        for step in range(n):
            rf_b = bwd[(n - step) % len(bwd)]
            if rf_b is not None:
                rf_b = (-rf_b[1], -rf_b[0])
            out[step] = rules.receptive_field_union(fwd[step % len(fwd)], rf_b)
        return out

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        f = tuple(self.forward_layer.get_output_shape(tuple(input_shape), constants=copy_constants(constants)))
        b = tuple(self.backward_layer.get_output_shape(tuple(input_shape), constants=copy_constants(constants)))
        return sequence_broadcast_combine_output_channel_shape(self.combination, f, b)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        f = self.forward_layer.get_output_dtype(input_dtype, constants=copy_constants(constants))
        b = self.backward_layer.get_output_dtype(input_dtype, constants=copy_constants(constants))
        return sequence_broadcast_combine_output_dtype(self.combination, f, b)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        return tuple(
            child.get_initial_state(batch_size, input_spec, training=training, constants=copy_constants(constants))
            for child in (self.forward_layer, self.backward_layer)
        )

    def _layer(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        c_f, c_b = copy_constants(constants), copy_constants(constants)
        if with_emits:
            y_f, e_f = self.forward_layer.layer_with_emits(x, training=training, constants=c_f)
            y_b, e_b = self.backward_layer.layer_with_emits(x.reverse_time(), training=training, constants=c_b)
        else:
            y_f = self.forward_layer.layer(x, training=training, constants=c_f)
            y_b = self.backward_layer.layer(x.reverse_time(), training=training, constants=c_b)
        y = sequence_broadcast_combine(self.combination, y_f, y_b.reverse_time())
        return (y, (e_f, e_b)) if with_emits else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer(x, training, constants, with_emits=True)  # type: ignore[return-value]

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        raise ValueError("Bidirectional does not support step-wise processing; use layer().")
