"""Branches fed the same input and combined: ``Parallel`` and ``ParallelChannels``."""

from __future__ import annotations

import fractions
import math

import torch

from sl import composition_rules as rules
from sl.combinators._common import (
    as_layer_list,
    check_child,
    check_tuple_state,
    copy_constants,
    insert_with_unique_key,
    same_length_tails,
)
from sl.combinators.wrappers import WrapperMixin
from sl.layer import SequenceLayer
from sl.merging import (
    CombinationMode,
    sequence_broadcast_combine,
    sequence_broadcast_combine_output_channel_shape,
    sequence_broadcast_combine_output_dtype,
)
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Parallel", "ParallelChannels", "branch_latency_hint"]


def branch_latency_hint(names: list[str], input_latencies: list[int], output_latencies: list[int]) -> str:
    """How to line up branches whose step-wise latencies differ (a hint that works when followed).

    ``sl.Delay(n, delay_layer_output=False)`` before a branch adds ``n`` to both of its
    latencies and leaves its layer-wise output alone, so it fixes branches whose
    ``input_latency - output_latency`` agree; nothing else in a branch can.
    """
    gaps = [i - o for i, o in zip(input_latencies, output_latencies)]
    if len(set(gaps)) > 1:
        return (
            "No Delay can line these branches up: sl.Delay(n, delay_layer_output=False) adds n to a branch's input "
            f"and output latency alike, and input_latency - output_latency differs between branches ({gaps}). "
            "This happens when a branch resamples after a lookahead, or when a branch delays its layer-wise output "
            "(sl.Delay(n) with delay_layer_output=True; for a causal tap beside the current frame use "
            "sl.Delay(n, keep_mask=True), which keeps both latencies 0)."
        )
    target = max(input_latencies)
    fixes = [
        f"wrap branch {i} ({name}) as sl.Serial(sl.Delay({target - lat}, delay_layer_output=False), branch)"
        for i, (name, lat) in enumerate(zip(names, input_latencies))
        if lat < target
    ]
    return "Delay the step-wise output of the lower-latency branches: " + "; ".join(fixes) + "."


class Parallel(SequenceLayer):
    """Feeds the same input to every child and combines their outputs (``combination``).

    Children must share ``output_ratio`` and latencies (otherwise their step-wise
    outputs would not line up); this is checked at construction (with a hint naming
    the ``Delay`` to insert) and when accumulated latencies are read. Block size is the
    lcm of the children's. State is the tuple of child states, emits a dict keyed
    ``layers_{i}``. With no children the layer is the identity.
    """

    def __init__(self, *layers: SequenceLayer, combination: CombinationMode | str = CombinationMode.STACK) -> None:
        super().__init__()
        children = as_layer_list("Parallel", layers)
        self.layers = torch.nn.ModuleList(children)
        self.combination = CombinationMode.coerce(combination)
        if children:
            ratios = [c.output_ratio for c in children]
            if len(set(ratios)) > 1:
                raise ValueError(
                    "Parallel children must have equal output_ratio; got "
                    f"{[str(r) for r in ratios]} for {[type(c).__name__ for c in children]}."
                )
            ins = [c.input_latency for c in children]
            try:
                outs = [c.output_latency for c in children]
            except ValueError:
                outs = ins  # reported lazily by output_latency, as in Serial
            if len(set(ins)) > 1 or len(set(outs)) > 1:
                names = [type(c).__name__ for c in children]
                raise ValueError(
                    f"Parallel children must have equal latencies; got input_latency {ins} and output_latency "
                    f"{outs} for {names}. " + branch_latency_hint(names, ins, outs)
                )

    @property
    def _children(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    @property
    def supports_step(self) -> bool:
        return all(c.supports_step for c in self._children)

    @property
    def block_size(self) -> int:
        return math.lcm(*(c.block_size for c in self._children)) if len(self.layers) else 1

    @property
    def output_ratio(self) -> fractions.Fraction:
        children = self._children
        return children[0].output_ratio if children else fractions.Fraction(1)

    @property
    def input_latency(self) -> int:
        return self.get_accumulated_input_latency(0)

    @property
    def output_latency(self) -> int:
        return self.get_accumulated_output_latency(0)

    def _same(self, what: str, values: list[int], latency: int) -> int:
        if len(set(values)) > 1:
            raise ValueError(
                f"Parallel children must have the same accumulated {what}; got {values} for incoming "
                f"{what}={latency} ({[type(c).__name__ for c in self._children]})."
            )
        return values[0]

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        if not len(self.layers):
            return input_latency
        values = [c.get_accumulated_input_latency(input_latency) for c in self._children]
        return self._same("input_latency", values, input_latency)

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        if not len(self.layers):
            return output_latency
        values = [c.get_accumulated_output_latency(output_latency) for c in self._children]
        return self._same("output_latency", values, output_latency)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        children = self._children
        if not children:
            return {0: (0, 0)}
        return rules.aggregate_receptive_field_per_steps([c.receptive_field_per_step for c in children])

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        children = self._children
        if not children:
            return tuple(input_shape)
        shapes = [tuple(c.get_output_shape(tuple(input_shape), constants=copy_constants(constants))) for c in children]
        return sequence_broadcast_combine_output_channel_shape(self.combination, *shapes)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        children = self._children
        if not children:
            return input_dtype
        dtypes = [c.get_output_dtype(input_dtype, constants=copy_constants(constants)) for c in children]
        return sequence_broadcast_combine_output_dtype(self.combination, *dtypes)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        # Every child sees the Parallel's input spec, whatever its own output shape (upstream 74ff252).
        return tuple(
            c.get_initial_state(batch_size, input_spec, training=training, constants=copy_constants(constants))
            for c in self._children
        )

    def shift_initial_state(self, state: State, latency: int) -> State:
        check_tuple_state(f"Parallel with {len(self.layers)} children", state, len(self.layers))
        return tuple(c.shift_initial_state(s, latency) for c, s in zip(self._children, state))

    def _layer(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        emits: dict[str, Emits] = {}
        if not len(self.layers):
            return (x, emits) if with_emits else x
        ys = []
        for i, c in enumerate(self._children):
            if with_emits:
                y, e = c.layer_with_emits(x, training=training, constants=copy_constants(constants))
                insert_with_unique_key(emits, f"layers_{i}", e)
            else:
                y = c.layer(x, training=training, constants=copy_constants(constants))
            ys.append(y)
        y = sequence_broadcast_combine(self.combination, *ys)
        return (y, emits) if with_emits else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer(x, training, constants, with_emits=True)  # type: ignore[return-value]

    def _step(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, with_emits: bool
    ) -> tuple[Sequence, State, Emits]:
        children = self._children
        check_tuple_state(f"Parallel with {len(children)} children", state, len(children))
        emits: dict[str, Emits] = {}
        if not children:
            return x, state, emits
        ys, new_state = [], []
        for i, (c, s) in enumerate(zip(children, state)):
            if with_emits:
                y, s, e = c.step_with_emits(x, s, training=training, constants=copy_constants(constants))
                insert_with_unique_key(emits, f"layers_{i}", e)
            else:
                y, s = c.step(x, s, training=training, constants=copy_constants(constants))
            ys.append(y)
            new_state.append(s)
        return sequence_broadcast_combine(self.combination, *ys), tuple(new_state), emits

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        y, state, _ = self._step(x, state, training, constants, with_emits=False)
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        return self._step(x, state, training, constants, with_emits=True)

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        children = self._children
        check_tuple_state(f"Parallel with {len(children)} children", state, len(children))
        tails = same_length_tails(
            "Parallel",
            [c.flush(s, training=training, constants=copy_constants(constants)) for c, s in zip(children, state)],
        )
        return None if tails is None else sequence_broadcast_combine(self.combination, *tails)


def _split_channels(owner: str, x: Sequence, num_groups: int) -> list[Sequence]:
    if x.values.dim() < 3:
        raise ValueError(f"{owner} needs at least one channel axis to split; got input shape {tuple(x.values.shape)}.")
    c = x.values.shape[-1]
    if c % num_groups:
        raise ValueError(f"{owner} expected the last channel dim ({c}) to be divisible by num_groups={num_groups}.")
    return [type(x)._trusted(v, x.mask) for v in torch.split(x.values, c // num_groups, dim=-1)]


class ParallelChannels(WrapperMixin):
    """Splits the last channel axis into ``num_groups`` groups and runs ``child_layer`` on each.

    The same child (shared parameters) processes every group, like a grouped
    convolution for any layer; outputs are combined with ``combination``. State is a
    tuple with one child state per group, emits a tuple per group. Metadata is the
    child's. Groups are processed in a loop (not folded into the batch axis) so
    batch-coupled children and batch-shaped constants keep their meaning.
    """

    def __init__(
        self, child_layer: SequenceLayer, num_groups: int, combination: CombinationMode | str = CombinationMode.STACK
    ) -> None:
        super().__init__()
        self.child_layer = check_child("ParallelChannels", "child_layer", child_layer)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"ParallelChannels expected num_groups to be a positive int; got {num_groups!r}.")
        self.num_groups = num_groups
        self.combination = CombinationMode.coerce(combination)

    def _group_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if not shape:
            raise ValueError("ParallelChannels needs at least one channel axis to split; got channel shape ().")
        if shape[-1] % self.num_groups:
            raise ValueError(
                f"ParallelChannels expected the last channel dim ({shape[-1]}) to be divisible by "
                f"num_groups={self.num_groups}."
            )
        return (*shape[:-1], shape[-1] // self.num_groups)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        child = tuple(
            self.child_layer.get_output_shape(self._group_shape(input_shape), constants=copy_constants(constants))
        )
        return sequence_broadcast_combine_output_channel_shape(self.combination, *([child] * self.num_groups))

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        dtype = self.child_layer.get_output_dtype(input_dtype, constants=copy_constants(constants))
        return sequence_broadcast_combine_output_dtype(self.combination, *([dtype] * self.num_groups))

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        return SequenceLayer.get_output_spec(self, input_spec, constants=constants)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        spec = ChannelSpec(self._group_shape(input_spec.shape), input_spec.dtype)
        return tuple(
            self.child_layer.get_initial_state(batch_size, spec, training=training, constants=copy_constants(constants))
            for _ in range(self.num_groups)
        )

    def shift_initial_state(self, state: State, latency: int) -> State:
        check_tuple_state("ParallelChannels", state, self.num_groups, "per-group states")
        return tuple(self.child_layer.shift_initial_state(s, latency) for s in state)

    def _layer(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        ys, emits = [], []
        for xi in _split_channels("ParallelChannels", x, self.num_groups):
            if with_emits:
                y, e = self.child_layer.layer_with_emits(xi, training=training, constants=copy_constants(constants))
                emits.append(e)
            else:
                y = self.child_layer.layer(xi, training=training, constants=copy_constants(constants))
            ys.append(y)
        y = sequence_broadcast_combine(self.combination, *ys)
        return (y, tuple(emits)) if with_emits else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer(x, training, constants, with_emits=True)  # type: ignore[return-value]

    def _step(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, with_emits: bool
    ) -> tuple[Sequence, State, Emits]:
        check_tuple_state("ParallelChannels", state, self.num_groups, "per-group states")
        ys, states, emits = [], [], []
        for xi, si in zip(_split_channels("ParallelChannels", x, self.num_groups), state):
            if with_emits:
                y, si, e = self.child_layer.step_with_emits(
                    xi, si, training=training, constants=copy_constants(constants)
                )
                emits.append(e)
            else:
                y, si = self.child_layer.step(xi, si, training=training, constants=copy_constants(constants))
            ys.append(y)
            states.append(si)
        return sequence_broadcast_combine(self.combination, *ys), tuple(states), tuple(emits)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        y, state, _ = self._step(x, state, training, constants, with_emits=False)
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        return self._step(x, state, training, constants, with_emits=True)

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        check_tuple_state("ParallelChannels", state, self.num_groups, "per-group states")
        tails = same_length_tails(
            "ParallelChannels",
            [self.child_layer.flush(s, training=training, constants=copy_constants(constants)) for s in state],
        )
        return None if tails is None else sequence_broadcast_combine(self.combination, *tails)
