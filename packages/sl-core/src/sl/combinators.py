"""Combinators: layers built from other layers (Serial, Parallel, Residual, ...).

Combinators compose their children's metadata with the rules in
:mod:`sl.composition` (ported from the reference ``combinators.py``/``utils.py``),
pass ``training`` to every child explicitly and hand each child a shallow copy of
``constants`` so a child cannot change what its siblings see (upstream 5fed1df).

States are tuples in child order; emits are dicts keyed ``layers_{i}`` for
Serial/Parallel (the reference keys them by the Flax child name, which defaults to
``layers_{i}``) and tuples elsewhere, as in the reference.
"""

from __future__ import annotations

import copy
import fractions
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.utils.checkpoint

from sl import composition
from sl.combination import (
    CombinationMode,
    sequence_broadcast_add,
    sequence_broadcast_combine,
    sequence_broadcast_combine_output_channel_shape,
    sequence_broadcast_combine_output_dtype,
)
from sl.layer import SequenceLayer
from sl.registry import LayerExample, LayerRegistry
from sl.stepping import step_by_step
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = [
    "Bidirectional",
    "Blockwise",
    "CheckpointGradient",
    "CombinationMode",
    "Parallel",
    "ParallelChannels",
    "Repeat",
    "Residual",
    "Sequential",
    "Serial",
    "SerialCombinatorMixin",
    "SerialModules",
]


def copy_constants(constants: Constants | None) -> Constants | None:
    return None if constants is None else dict(constants)


def insert_with_unique_key(emits: dict[str, Emits], key: str, value: Emits) -> str:
    """Adds ``value`` under ``key``, or ``key_1``, ``key_2``... if taken."""
    if key not in emits:
        emits[key] = value
        return key
    i = 1
    while f"{key}_{i}" in emits:
        i += 1
    emits[f"{key}_{i}"] = value
    return f"{key}_{i}"


def _check_child(owner: str, what: str, layer: Any) -> SequenceLayer:
    if not isinstance(layer, SequenceLayer):
        raise TypeError(f"{owner} expects a SequenceLayer as {what}; got {type(layer).__name__} ({layer!r}).")
    return layer


def _as_layer_list(owner: str, layers: tuple[Any, ...]) -> list[SequenceLayer]:
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    return [_check_child(owner, f"child {i}", layer) for i, layer in enumerate(layers)]


def _check_tuple_state(owner: str, state: State, n: int, what: str = "child states") -> None:
    if not isinstance(state, tuple) or len(state) != n:
        got = (
            f"{type(state).__name__} of length {len(state)}"
            if isinstance(state, (tuple, list))
            else type(state).__name__
        )
        raise ValueError(f"{owner} expects a state tuple of {n} {what} (from get_initial_state); got {got}.")


def _lcm(*values: int) -> int:
    return math.lcm(*values) if values else 1


# -- serial helpers (shared by Serial, Residual's body and Repeat) ----------------------


def _serial_output_shape(
    children: list[SequenceLayer], shape: tuple[int, ...], constants: Constants | None
) -> tuple[int, ...]:
    shape = tuple(shape)
    for child in children:
        shape = tuple(child.get_output_shape(shape, constants=copy_constants(constants)))
    return shape


def _serial_output_dtype(children: list[SequenceLayer], dtype: torch.dtype, constants: Constants | None) -> torch.dtype:
    for child in children:
        dtype = child.get_output_dtype(dtype, constants=copy_constants(constants))
    return dtype


def _serial_initial_state(
    children: list[SequenceLayer], batch_size: int, spec: ChannelSpec, training: bool, constants: Constants | None
) -> tuple[State, ...]:
    states = []
    for child in children:
        states.append(child.get_initial_state(batch_size, spec, training=training, constants=copy_constants(constants)))
        spec = child.get_output_spec(spec, constants=copy_constants(constants))
    return tuple(states)


def _serial_layer(children: list[SequenceLayer], x: Sequence, training: bool, constants: Constants | None) -> Sequence:
    for child in children:
        x = child.layer(x, training=training, constants=copy_constants(constants))
    return x


def _serial_layer_with_emits(
    children: list[SequenceLayer], x: Sequence, training: bool, constants: Constants | None
) -> tuple[Sequence, dict[str, Emits]]:
    emits: dict[str, Emits] = {}
    for i, child in enumerate(children):
        x, e = child.layer_with_emits(x, training=training, constants=copy_constants(constants))
        insert_with_unique_key(emits, f"layers_{i}", e)
    return x, emits


def _serial_step(
    children: list[SequenceLayer], x: Sequence, state: tuple[State, ...], training: bool, constants: Constants | None
) -> tuple[Sequence, tuple[State, ...]]:
    new_state = []
    for child, s in zip(children, state):
        x, s = child.step(x, s, training=training, constants=copy_constants(constants))
        new_state.append(s)
    return x, tuple(new_state)


def _serial_step_with_emits(
    children: list[SequenceLayer], x: Sequence, state: tuple[State, ...], training: bool, constants: Constants | None
) -> tuple[Sequence, tuple[State, ...], dict[str, Emits]]:
    new_state = []
    emits: dict[str, Emits] = {}
    for i, (child, s) in enumerate(zip(children, state)):
        x, s, e = child.step_with_emits(x, s, training=training, constants=copy_constants(constants))
        new_state.append(s)
        insert_with_unique_key(emits, f"layers_{i}", e)
    return x, tuple(new_state), emits


class SerialCombinatorMixin:
    """Metadata of children run in series (``_children``): the reference's Serial rules."""

    @property
    def _children(self) -> list[SequenceLayer]:
        raise NotImplementedError

    @property
    def supports_step(self) -> bool:
        return all(child.supports_step for child in self._children)

    @property
    def block_size(self) -> int:
        return composition.serial_block_size(self._children)

    @property
    def output_ratio(self) -> fractions.Fraction:
        return composition.serial_output_ratio(self._children)

    @property
    def input_latency(self) -> int:
        return self.get_accumulated_input_latency(0)

    @property
    def output_latency(self) -> int:
        return self.get_accumulated_output_latency(0)

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        return composition.serial_input_latency(self._children, input_latency)

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        return composition.serial_output_latency(self._children, output_latency)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return composition.receptive_field_per_step_of_serial_layers(self._children)


# -- Serial ---------------------------------------------------------------------------


class Serial(SerialCombinatorMixin, SequenceLayer):
    """Runs children in order: ``Serial(a, b, c)`` (or ``Serial([a, b, c])``).

    Block size (lcm rule), output ratio, latencies and receptive field are composed
    from the children; state is the tuple of child states; emits are a dict keyed
    ``layers_{i}``. Latency is checked lazily, as in the reference: reading
    ``output_latency`` raises if a resampling child gets an incoming latency its
    ratio cannot divide (the message names the ``Delay`` to insert).
    """

    outputs_checked_by_children = True

    def __init__(self, *layers: SequenceLayer) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(_as_layer_list(type(self).__name__, layers))

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> SequenceLayer:
        return self.layers[i]  # type: ignore[return-value]

    def __iter__(self) -> Any:
        return iter(self.layers)

    @property
    def _children(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return _serial_output_shape(self._children, input_shape, constants)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return _serial_output_dtype(self._children, input_dtype, constants)

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        # Chains full specs, so a child whose shape depends on the dtype (Lambda) works inside.
        spec = ChannelSpec(tuple(input_spec[0]), input_spec[1])
        for child in self._children:
            spec = child.get_output_spec(spec, constants=copy_constants(constants))
        return spec

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return _serial_initial_state(self._children, batch_size, input_spec, bool(training), constants)

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return _serial_layer_with_emits(self._children, x, bool(training), constants)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return _serial_layer(self._children, x, bool(training), constants)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        self._check_state(state)
        return _serial_step_with_emits(self._children, x, state, bool(training), constants)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_state(state)
        return _serial_step(self._children, x, state, bool(training), constants)

    def _check_state(self, state: State) -> None:
        _check_tuple_state(f"{type(self).__name__} with {len(self.layers)} children", state, len(self.layers))


Sequential = Serial


class SerialModules(Serial):
    """``Serial`` over a list of pre-built layers: ``SerialModules([encoder, decoder])``.

    In the reference this exists because Flax modules passed into another module change
    the variable tree; torch modules have no such issue, so it behaves exactly like
    ``Serial`` and is kept for API parity (its config stores ``layers`` as a list).
    """

    def __init__(self, layers: Iterable[SequenceLayer]) -> None:
        if isinstance(layers, SequenceLayer) or not isinstance(layers, Iterable):
            raise TypeError(f"SerialModules expects a list of SequenceLayers; got {type(layers).__name__}.")
        super().__init__(*list(layers))


# -- Parallel -------------------------------------------------------------------------


class Parallel(SequenceLayer):
    """Feeds the same input to every child and combines their outputs (``combination``).

    Children must share ``output_ratio`` and latency (otherwise their outputs would not
    line up step-wise); this is checked at construction for the ratio and input latency
    and when the accumulated output latency is read. Block size is the lcm of the
    children's. State is the tuple of child states, emits a dict keyed ``layers_{i}``.
    With no children the layer is the identity.
    """

    def __init__(self, *layers: SequenceLayer, combination: CombinationMode | str = CombinationMode.STACK) -> None:
        super().__init__()
        children = _as_layer_list("Parallel", layers)
        self.layers = torch.nn.ModuleList(children)
        self.combination = CombinationMode.coerce(combination)
        if children:
            ratios = [c.output_ratio for c in children]
            if len(set(ratios)) > 1:
                raise ValueError(
                    "Parallel children must have equal output_ratio; got "
                    f"{[str(r) for r in ratios]} for {[type(c).__name__ for c in children]}."
                )
            latencies = [c.input_latency for c in children]
            if len(set(latencies)) > 1:
                worst = max(latencies)
                i = latencies.index(min(latencies))
                raise ValueError(
                    f"Parallel children must have equal input_latency; got {latencies} for "
                    f"{[type(c).__name__ for c in children]}. Delay the step-wise output of the lower-latency "
                    f"children, e.g. wrap child {i} as sl.Serial(sl.Delay({worst - latencies[i]}, "
                    "delay_layer_output=False), child)."
                )

    @property
    def _children(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    @property
    def supports_step(self) -> bool:
        return all(c.supports_step for c in self._children)

    @property
    def block_size(self) -> int:
        return _lcm(*(c.block_size for c in self._children))

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
        if not self._children:
            return input_latency
        values = [c.get_accumulated_input_latency(input_latency) for c in self._children]
        return self._same("input_latency", values, input_latency)

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        if not self._children:
            return output_latency
        values = [c.get_accumulated_output_latency(output_latency) for c in self._children]
        return self._same("output_latency", values, output_latency)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        children = self._children
        if not children:
            return {0: (0, 0)}
        return composition.aggregate_receptive_field_per_steps([c.receptive_field_per_step for c in children])

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
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        # Every child sees the Parallel's input spec, whatever its own output shape (upstream 74ff252).
        return tuple(
            c.get_initial_state(batch_size, input_spec, training=training, constants=copy_constants(constants))
            for c in self._children
        )

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        emits: dict[str, Emits] = {}
        if not self._children:
            return x, emits
        ys = []
        for i, c in enumerate(self._children):
            y, e = c.layer_with_emits(x, training=training, constants=copy_constants(constants))
            ys.append(y)
            insert_with_unique_key(emits, f"layers_{i}", e)
        return sequence_broadcast_combine(self.combination, *ys), emits

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if not self._children:
            return x
        ys = [c.layer(x, training=training, constants=copy_constants(constants)) for c in self._children]
        return sequence_broadcast_combine(self.combination, *ys)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        children = self._children
        _check_tuple_state(f"Parallel with {len(children)} children", state, len(children))
        emits: dict[str, Emits] = {}
        if not children:
            return x, state, emits
        ys, new_state = [], []
        for i, (c, s) in enumerate(zip(children, state)):
            y, s, e = c.step_with_emits(x, s, training=training, constants=copy_constants(constants))
            ys.append(y)
            new_state.append(s)
            insert_with_unique_key(emits, f"layers_{i}", e)
        return sequence_broadcast_combine(self.combination, *ys), tuple(new_state), emits

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        children = self._children
        _check_tuple_state(f"Parallel with {len(children)} children", state, len(children))
        if not children:
            return x, state
        ys, new_state = [], []
        for c, s in zip(children, state):
            y, s = c.step(x, s, training=training, constants=copy_constants(constants))
            ys.append(y)
            new_state.append(s)
        return sequence_broadcast_combine(self.combination, *ys), tuple(new_state)


# -- wrappers -------------------------------------------------------------------------


class _Wrapper(SequenceLayer):
    """Forwards every property and method to ``self.child_layer`` (reference ``WrapperMixin``)."""

    child_layer: SequenceLayer

    @property
    def supports_step(self) -> bool:
        return self.child_layer.supports_step

    @property
    def block_size(self) -> int:
        return self.child_layer.block_size

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self.child_layer.output_ratio

    @property
    def input_latency(self) -> int:
        return self.child_layer.input_latency

    @property
    def output_latency(self) -> int:
        return self.child_layer.output_latency

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        return self.child_layer.get_accumulated_input_latency(input_latency)

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        return self.child_layer.get_accumulated_output_latency(output_latency)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return self.child_layer.receptive_field_per_step

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(self.child_layer.get_output_shape(tuple(input_shape), constants=copy_constants(constants)))

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return self.child_layer.get_output_dtype(input_dtype, constants=copy_constants(constants))

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return self.child_layer.get_initial_state(
            batch_size, input_spec, training=training, constants=copy_constants(constants)
        )

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return self.child_layer.layer(x, training=training, constants=copy_constants(constants))

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self.child_layer.layer_with_emits(x, training=training, constants=copy_constants(constants))

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self.child_layer.step(x, state, training=training, constants=copy_constants(constants))

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        return self.child_layer.step_with_emits(x, state, training=training, constants=copy_constants(constants))


def _split_channels(owner: str, x: Sequence, num_groups: int) -> list[Sequence]:
    if x.values.dim() < 3:
        raise ValueError(f"{owner} needs at least one channel axis to split; got input shape {tuple(x.values.shape)}.")
    c = x.values.shape[-1]
    if c % num_groups:
        raise ValueError(f"{owner} expected the last channel dim ({c}) to be divisible by num_groups={num_groups}.")
    return [type(x)(v, x.mask) for v in torch.split(x.values, c // num_groups, dim=-1)]


class ParallelChannels(_Wrapper):
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
        self.child_layer = _check_child("ParallelChannels", "child_layer", child_layer)
        if not isinstance(num_groups, int) or num_groups < 1:
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

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        spec = ChannelSpec(self._group_shape(input_spec.shape), input_spec.dtype)
        return tuple(
            self.child_layer.get_initial_state(batch_size, spec, training=training, constants=copy_constants(constants))
            for _ in range(self.num_groups)
        )

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        ys, emits = [], []
        for xi in _split_channels("ParallelChannels", x, self.num_groups):
            y, e = self.child_layer.layer_with_emits(xi, training=training, constants=copy_constants(constants))
            ys.append(y)
            emits.append(e)
        return sequence_broadcast_combine(self.combination, *ys), tuple(emits)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        ys = [
            self.child_layer.layer(xi, training=training, constants=copy_constants(constants))
            for xi in _split_channels("ParallelChannels", x, self.num_groups)
        ]
        return sequence_broadcast_combine(self.combination, *ys)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        _check_tuple_state("ParallelChannels", state, self.num_groups, "per-group states")
        ys, states, emits = [], [], []
        for xi, si in zip(_split_channels("ParallelChannels", x, self.num_groups), state):
            y, si, e = self.child_layer.step_with_emits(xi, si, training=training, constants=copy_constants(constants))
            ys.append(y)
            states.append(si)
            emits.append(e)
        return sequence_broadcast_combine(self.combination, *ys), tuple(states), tuple(emits)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        _check_tuple_state("ParallelChannels", state, self.num_groups, "per-group states")
        ys, states = [], []
        for xi, si in zip(_split_channels("ParallelChannels", x, self.num_groups), state):
            y, si = self.child_layer.step(xi, si, training=training, constants=copy_constants(constants))
            ys.append(y)
            states.append(si)
        return sequence_broadcast_combine(self.combination, *ys), tuple(states)


class CheckpointGradient(_Wrapper):
    """Gradient checkpointing around ``layer``: activations are recomputed in the backward pass.

    Uses ``torch.utils.checkpoint.checkpoint(use_reentrant=False)`` (RNG state is
    preserved, so stochastic children recompute identically) in layer mode when training
    with grad enabled; otherwise, and in ``step``, it is a pass-through. All metadata is
    the child's.
    """

    def __init__(self, layer: SequenceLayer) -> None:
        super().__init__()
        self.child_layer = _check_child("CheckpointGradient", "layer", layer)

    def _active(self, training: bool | None) -> bool:
        return bool(training) and torch.is_grad_enabled()

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        c = copy_constants(constants)
        if not self._active(training):
            return self.child_layer.layer(x, training=training, constants=c)

        def run(x: Sequence, c: Constants | None) -> Sequence:
            return self.child_layer.layer(x, training=training, constants=c)

        return torch.utils.checkpoint.checkpoint(run, x, c, use_reentrant=False)  # type: ignore[no-any-return]

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        c = copy_constants(constants)
        if not self._active(training):
            return self.child_layer.layer_with_emits(x, training=training, constants=c)

        def run(x: Sequence, c: Constants | None) -> tuple[Sequence, Emits]:
            return self.child_layer.layer_with_emits(x, training=training, constants=c)

        return torch.utils.checkpoint.checkpoint(run, x, c, use_reentrant=False)  # type: ignore[no-any-return]


class Blockwise(_Wrapper):
    """Processes ``child_layer`` in blocks of ``block_size`` timesteps.

    ``block_size`` must be a multiple of the child's block size; ``step`` then takes
    blocks of that size. Unlike the reference (where ``layer`` is the child's
    ``layer``), ``layer`` here runs the child step by step, ``block_size`` steps at a
    time (flushing its input latency and dropping its output latency), so peak memory
    is bounded by the block rather than the sequence. Sequence-valued constants are
    passed whole to every step (not cut into blocks). A child that cannot step falls
    back to its own ``layer``. Other metadata is the child's.
    """

    def __init__(self, child_layer: SequenceLayer, block_size: int) -> None:
        super().__init__()
        self.child_layer = _check_child("Blockwise", "child_layer", child_layer)
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"Blockwise expected block_size to be a positive int; got {block_size!r}.")
        if block_size % child_layer.block_size:
            raise ValueError(
                f"Blockwise block_size={block_size} must be a multiple of the child's block_size="
                f"{child_layer.block_size} ({type(child_layer).__name__}); {block_size} % "
                f"{child_layer.block_size} = {block_size % child_layer.block_size}."
            )
        self._block = block_size

    @property
    def block_size(self) -> int:
        return self._block

    def _run(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> Any:
        child = self.child_layer
        t = x.values.shape[1]
        x = x.pad_time(0, child.input_latency, valid=False)
        out = step_by_step(
            child,
            x,
            training=training,
            blocks_per_step=self._block // child.block_size,
            constants=copy_constants(constants),
            with_emits=with_emits,
        )
        y: Sequence = out[0]
        start = child.output_latency
        ratio = child.output_ratio
        length = -(-t * ratio.numerator // ratio.denominator)  # ceil, symbolic-int friendly
        y = y[:, start : start + length]
        return (y, out[-1]) if with_emits else y

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if not self.child_layer.supports_step:
            return self.child_layer.layer(x, training=training, constants=copy_constants(constants))
        return self._run(x, bool(training), constants, with_emits=False)  # type: ignore[no-any-return]

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        """Emits are the child's step-wise emits concatenated over time (not latency-trimmed)."""
        if not self.child_layer.supports_step:
            return self.child_layer.layer_with_emits(x, training=training, constants=copy_constants(constants))
        return self._run(x, bool(training), constants, with_emits=True)  # type: ignore[no-any-return]


# -- Residual -------------------------------------------------------------------------


class Residual(SequenceLayer):
    """``y = body(x) + shortcut(x)``; the body is ``layers`` run in series.

    ``layers`` is a layer or a list of layers; ``shortcut_layers`` is None (identity),
    a layer, or a list (run as a ``Serial``), as in the reference. Body and shortcut must
    have the same output ratio, latencies and output shape (no broadcasting); the output
    dtype is their promotion and the mask the AND of both masks. State is
    ``(body_states, shortcut_state)`` and emits ``(body_emits, shortcut_emits)``.
    """

    def __init__(
        self,
        layers: SequenceLayer | Iterable[SequenceLayer],
        shortcut_layers: SequenceLayer | Iterable[SequenceLayer] | None = None,
    ) -> None:
        super().__init__()
        body = (
            [layers]
            if isinstance(layers, SequenceLayer)
            else _as_layer_list("Residual", (list(_iter(layers, "layers")),))
        )
        self.layers = torch.nn.ModuleList(body)
        self.shortcut: SequenceLayer | None
        if shortcut_layers is None:
            self.shortcut = None
        elif isinstance(shortcut_layers, SequenceLayer):
            self.shortcut = shortcut_layers
        else:
            self.shortcut = Serial(
                *_as_layer_list("Residual shortcut", (list(_iter(shortcut_layers, "shortcut_layers")),))
            )
        self._validate_alignment()

    def _validate_alignment(self) -> None:
        body_ratio = composition.serial_output_ratio(self._body)
        sc_ratio = self.shortcut.output_ratio if self.shortcut is not None else fractions.Fraction(1)
        if body_ratio != sc_ratio:
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same output_ratio; body has {body_ratio}, "
                f"shortcut has {sc_ratio}. Give the shortcut a matching resampling layer."
            )
        body_in = composition.serial_input_latency(self._body, 0)
        sc_in = self.shortcut.input_latency if self.shortcut is not None else 0
        try:
            body_out = composition.serial_output_latency(self._body, 0)
            sc_out = self.shortcut.output_latency if self.shortcut is not None else 0
        except ValueError:
            body_out = sc_out = 0  # Reported lazily by output_latency, as in Serial.
        if body_in != sc_in or body_out != sc_out:
            raise ValueError(self._latency_message(body_in, sc_in, body_out, sc_out))

    @staticmethod
    def _latency_message(body_in: int, sc_in: int, body_out: int, sc_out: int) -> str:
        head = (
            f"Residual layers and shortcut_layers must have the same latency; body has input_latency={body_in}, "
            f"output_latency={body_out}; shortcut has input_latency={sc_in}, output_latency={sc_out}."
        )
        if body_out == sc_out:
            # A Delay adds to both latencies, so it cannot fix an input-only mismatch.
            return (
                f"{head} Only the input latencies differ, which happens when a branch resamples after a "
                "lookahead; move the lookahead out of the Residual or give both branches the same structure."
            )
        where, n = ("shortcut_layers", body_out - sc_out) if body_out > sc_out else ("layers", sc_out - body_out)
        return f"{head} Insert sl.Delay({n}, delay_layer_output=False) in {where} so step-wise outputs line up."

    @property
    def _body(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    @property
    def supports_step(self) -> bool:
        return all(c.supports_step for c in self._body) and (self.shortcut is None or self.shortcut.supports_step)

    @property
    def block_size(self) -> int:
        body = composition.serial_block_size(self._body)
        return _lcm(body, self.shortcut.block_size) if self.shortcut is not None else body

    @property
    def output_ratio(self) -> fractions.Fraction:
        return composition.serial_output_ratio(self._body)

    @property
    def input_latency(self) -> int:
        return self.get_accumulated_input_latency(0)

    @property
    def output_latency(self) -> int:
        return self.get_accumulated_output_latency(0)

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        body = composition.serial_input_latency(self._body, input_latency)
        sc = self.shortcut.get_accumulated_input_latency(input_latency) if self.shortcut is not None else input_latency
        if body != sc:
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same accumulated input latency; "
                f"{body} != {sc} for incoming input_latency={input_latency}."
            )
        return body

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        body = composition.serial_output_latency(self._body, output_latency)
        sc = (
            self.shortcut.get_accumulated_output_latency(output_latency)
            if self.shortcut is not None
            else output_latency
        )
        if body != sc:
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same accumulated output latency; "
                f"{body} != {sc} for incoming output_latency={output_latency}."
            )
        return body

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        # Both branches share the output ratio (checked at construction), so their
        # step-relative fields can be united phase by phase, as for Parallel.
        body_rf = composition.receptive_field_per_step_of_serial_layers(self._body)
        sc_rf = self.shortcut.receptive_field_per_step if self.shortcut is not None else {0: (0, 0)}
        return composition.aggregate_receptive_field_per_steps([body_rf, sc_rf])

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        body = _serial_output_shape(self._body, input_shape, constants)
        sc = (
            tuple(self.shortcut.get_output_shape(tuple(input_shape), constants=copy_constants(constants)))
            if self.shortcut is not None
            else tuple(input_shape)
        )
        if body != sc:
            raise ValueError(
                f"Residual layers and shortcut_layers must produce the same output shape; for input channel shape "
                f"{tuple(input_shape)} the body gives {body} and the shortcut {sc}."
            )
        return body

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        body = _serial_output_dtype(self._body, input_dtype, constants)
        sc = (
            self.shortcut.get_output_dtype(input_dtype, constants=copy_constants(constants))
            if self.shortcut is not None
            else input_dtype
        )
        return torch.promote_types(body, sc)

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        body = _serial_initial_state(self._body, batch_size, input_spec, bool(training), constants)
        sc = (
            self.shortcut.get_initial_state(
                batch_size, input_spec, training=training, constants=copy_constants(constants)
            )
            if self.shortcut is not None
            else ()
        )
        return (body, sc)

    def _combine(self, y_body: Sequence, y_sc: Sequence) -> Sequence:
        return sequence_broadcast_add(y_body, y_sc)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape, constants=constants)
        y = _serial_layer(self._body, x, bool(training), constants)
        s = (
            self.shortcut.layer(x, training=training, constants=copy_constants(constants))
            if self.shortcut is not None
            else x
        )
        return self._combine(y, s)

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        y, body_emits = _serial_layer_with_emits(self._body, x, bool(training), constants)
        if self.shortcut is not None:
            s, sc_emits = self.shortcut.layer_with_emits(x, training=training, constants=copy_constants(constants))
        else:
            s, sc_emits = x, ()
        return self._combine(y, s), (body_emits, sc_emits)

    def _split_state(self, state: State) -> tuple[tuple[State, ...], State]:
        _check_tuple_state("Residual", state, 2, "entries (body_states, shortcut_state)")
        body_state, sc_state = state
        _check_tuple_state(f"Residual body with {len(self.layers)} layers", body_state, len(self.layers))
        return body_state, sc_state

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        body_state, sc_state = self._split_state(state)
        y, body_state = _serial_step(self._body, x, body_state, bool(training), constants)
        if self.shortcut is not None:
            s, sc_state = self.shortcut.step(x, sc_state, training=training, constants=copy_constants(constants))
        else:
            s = x
        return self._combine(y, s), (body_state, sc_state)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        body_state, sc_state = self._split_state(state)
        y, body_state, body_emits = _serial_step_with_emits(self._body, x, body_state, bool(training), constants)
        if self.shortcut is not None:
            s, sc_state, sc_emits = self.shortcut.step_with_emits(
                x, sc_state, training=training, constants=copy_constants(constants)
            )
        else:
            s, sc_emits = x, ()
        return self._combine(y, s), (body_state, sc_state), (body_emits, sc_emits)


def _iter(value: Any, name: str) -> Iterable[Any]:
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise TypeError(f"Residual expects {name} to be a SequenceLayer or a list of them; got {type(value).__name__}.")
    return value


# -- Repeat ---------------------------------------------------------------------------


def _rebuild(layer: SequenceLayer) -> SequenceLayer:
    """A new instance of ``layer`` built from its captured constructor arguments.

    Nested layer arguments are rebuilt too, so the result shares nothing with ``layer``
    and every parameter comes from the constructors' own initialisers. This works for
    any sl layer (its arguments need not be JSON-able, unlike ``from_config``).
    """
    args = getattr(layer, "_sl_init_args", None)
    if args is None:
        raise TypeError(f"{type(layer).__name__} has no captured constructor arguments.")

    def fresh(value: Any) -> Any:
        if isinstance(value, SequenceLayer):
            return _rebuild(value)
        if isinstance(value, (list, tuple)):
            return type(value)(fresh(v) for v in value)
        if isinstance(value, dict):
            return {k: fresh(v) for k, v in value.items()}
        return value

    kwargs = {k: fresh(v) for k, v in args.items()}
    params = inspect.signature(type(layer).__init__).parameters
    positional: list[Any] = []
    var_pos = next((n for n, p in params.items() if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    if var_pos is not None and var_pos in kwargs:
        for name, p in params.items():
            if name == "self":
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                break
            if name in kwargs:
                positional.append(kwargs.pop(name))
        positional.extend(kwargs.pop(var_pos))
    return type(layer)(*positional, **kwargs)


def _independent_copy(layer: SequenceLayer) -> SequenceLayer:
    """A deep copy of ``layer`` with freshly initialised parameters and buffers.

    The reference initialises every repeat separately (``nn.scan`` with
    ``split_rngs={'params': True}``). Here the fresh values come from rebuilding the
    layer from its constructor arguments (:func:`_rebuild`, i.e. its own initialisers),
    copied into the deep copy so the original's dtype, device and requires_grad are
    kept. If the layer cannot be rebuilt, ``reset_parameters()`` is called on every
    submodule that has one.
    """
    clone = copy.deepcopy(layer)
    try:
        fresh: torch.nn.Module | None = _rebuild(layer)
    except (TypeError, ValueError):
        fresh = None
    with torch.no_grad():
        if fresh is not None:
            source = fresh.state_dict()
            for name, tensor in clone.state_dict(keep_vars=True).items():
                new = source.get(name)
                if new is not None and new.shape == tensor.shape:
                    tensor.copy_(new)
        else:
            for module in clone.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    return clone


def _checkpointed(fn: Callable[..., Any], *args: Any) -> Any:
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)


class Repeat(SerialCombinatorMixin, SequenceLayer):
    """``num_repeats`` independently initialised copies of ``layer`` run in series.

    The child must have output ratio 1 and keep the channel shape and dtype (the
    reference's scan needs that; checked at construction and on every input). Copy 0 is
    ``layer`` itself; the others are deep copies re-initialised as the reference does
    (see :func:`_independent_copy`). Parameters are separate modules ``layers.{i}``,
    not stacked on a leading axis as in the reference.

    State is a tuple of per-repeat states and emits a tuple per repeat. The state is
    not stacked on a leading axis (as the reference's scan does) because torch runs the
    repeats as a Python loop: stacking would copy the whole state in and out on every
    step and force every child state leaf to be a tensor, with no benefit.

    ``remat=True`` wraps each repeat in ``torch.utils.checkpoint`` (non-reentrant) when
    running ``layer`` in training with grad enabled.
    """

    outputs_checked_by_children = True

    def __init__(self, layer: SequenceLayer, num_repeats: int, remat: bool = False) -> None:
        super().__init__()
        _check_child("Repeat", "layer", layer)
        if not isinstance(num_repeats, int) or isinstance(num_repeats, bool) or num_repeats < 1:
            raise ValueError(f"Repeat expected num_repeats to be a positive int; got {num_repeats!r}.")
        if layer.output_ratio != 1:
            raise ValueError(
                f"Repeat requires a child with output_ratio 1 (its output feeds its next copy); "
                f"{type(layer).__name__} has output_ratio {layer.output_ratio}."
            )
        self.layers = torch.nn.ModuleList([layer] + [_independent_copy(layer) for _ in range(num_repeats - 1)])
        self.num_repeats = num_repeats
        self.remat = bool(remat)

    @property
    def _children(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    def _validate(self, spec: ChannelSpec, constants: Constants | None) -> None:
        child = self._children[0]
        shape = tuple(child.get_output_shape(tuple(spec.shape), constants=copy_constants(constants)))
        dtype = child.get_output_dtype(spec.dtype, constants=copy_constants(constants))
        if shape != tuple(spec.shape) or dtype != spec.dtype:
            raise ValueError(
                f"Repeat requires a child that preserves channel shape and dtype; {type(child).__name__} maps "
                f"{tuple(spec.shape)} {spec.dtype} to {shape} {dtype}."
            )

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(input_shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        self._validate(input_spec, constants)
        return tuple(
            c.get_initial_state(batch_size, input_spec, training=training, constants=copy_constants(constants))
            for c in self._children
        )

    def _remat(self, training: bool | None) -> bool:
        return self.remat and bool(training) and torch.is_grad_enabled()

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        self._validate(x.channel_spec, constants)
        remat = self._remat(training)
        for child in self._children:
            c = copy_constants(constants)
            if remat:
                x = _checkpointed(lambda x, c, child=child: child.layer(x, training=training, constants=c), x, c)
            else:
                x = child.layer(x, training=training, constants=c)
        return x

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        self._validate(x.channel_spec, constants)
        remat = self._remat(training)
        emits = []
        for child in self._children:
            c = copy_constants(constants)
            if remat:
                x, e = _checkpointed(
                    lambda x, c, child=child: child.layer_with_emits(x, training=training, constants=c), x, c
                )
            else:
                x, e = child.layer_with_emits(x, training=training, constants=c)
            emits.append(e)
        return x, tuple(emits)

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        _check_tuple_state(f"Repeat with num_repeats={self.num_repeats}", state, self.num_repeats, "per-repeat states")
        self._validate(x.channel_spec, constants)
        return _serial_step(self._children, x, state, bool(training), constants)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        _check_tuple_state(f"Repeat with num_repeats={self.num_repeats}", state, self.num_repeats, "per-repeat states")
        self._validate(x.channel_spec, constants)
        y, state, emits = _serial_step_with_emits(self._children, x, state, bool(training), constants)
        return y, state, tuple(emits.values())


# -- Bidirectional --------------------------------------------------------------------


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
        self.forward_layer = _check_child("Bidirectional", "forward", forward)
        self.backward_layer = _check_child("Bidirectional", "backward", backward)
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
        composition.validate_receptive_field_per_step(fwd)
        composition.validate_receptive_field_per_step(bwd)
        n = math.lcm(len(fwd), len(bwd))
        out: dict[int, ReceptiveField] = {}
        for step in range(n):
            rf_b = bwd[(n - step) % len(bwd)]
            if rf_b is not None:
                rf_b = (-rf_b[1], -rf_b[0])
            out[step] = composition.receptive_field_union(fwd[step % len(fwd)], rf_b)
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
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return (
            self.forward_layer.get_initial_state(
                batch_size, input_spec, training=training, constants=copy_constants(constants)
            ),
            self.backward_layer.get_initial_state(
                batch_size, input_spec, training=training, constants=copy_constants(constants)
            ),
        )

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        y_f = self.forward_layer.layer(x, training=training, constants=copy_constants(constants))
        y_b = self.backward_layer.layer(x.reverse_time(), training=training, constants=copy_constants(constants))
        return sequence_broadcast_combine(self.combination, y_f, y_b.reverse_time())

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        y_f, e_f = self.forward_layer.layer_with_emits(x, training=training, constants=copy_constants(constants))
        y_b, e_b = self.backward_layer.layer_with_emits(
            x.reverse_time(), training=training, constants=copy_constants(constants)
        )
        return sequence_broadcast_combine(self.combination, y_f, y_b.reverse_time()), (e_f, e_b)

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        raise ValueError("Bidirectional does not support step-wise processing; use layer().")

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        raise ValueError("Bidirectional does not support step-wise processing; use layer().")


# -- registration ---------------------------------------------------------------------


def register_layers(registry: LayerRegistry) -> None:
    registry.add(Serial, aliases=("Sequential",))
    registry.add(SerialModules)
    registry.add(Parallel)
    registry.add(ParallelChannels)
    registry.add(Residual)
    registry.add(Repeat)
    registry.add(Bidirectional)
    registry.add(Blockwise)
    registry.add(CheckpointGradient)


def _stateful(width: int) -> SequenceLayer:
    """A small stateful child with parameters, built from core layers, for the examples."""
    from sl.layers.dense import Dense
    from sl.layers.position import AddTimingSignal

    return Serial(Dense(width, width), AddTimingSignal())


def example_layers() -> Iterable[LayerExample]:
    from sl.layers.dense import Dense
    from sl.layers.pointwise import Scale

    return [
        LayerExample(Serial(), (3,), name="Serial(empty)"),
        LayerExample(Serial(_stateful(3), Scale(0.5), Dense(3, 2)), (3,), random_mask=True, name="Serial"),
        LayerExample(SerialModules([_stateful(3), Scale(2.0)]), (3,), name="SerialModules"),
        LayerExample(Parallel(_stateful(3), Scale(2.0), combination="stack"), (3,), name="Parallel(stack)"),
        LayerExample(Parallel(_stateful(3), Dense(3, 2), combination="concat"), (3,), name="Parallel(concat)"),
        LayerExample(Parallel(_stateful(3), Scale(-1.0), combination="mean"), (3,), name="Parallel(mean)"),
        LayerExample(ParallelChannels(_stateful(2), 2, combination="concat"), (4,), name="ParallelChannels"),
        LayerExample(Residual([_stateful(3), Scale(0.5)]), (3,), name="Residual"),
        LayerExample(Residual(_stateful(3), shortcut_layers=[Scale(3.0)]), (3,), name="Residual(shortcut)"),
        LayerExample(Repeat(_stateful(3), 3), (3,), name="Repeat"),
        LayerExample(Bidirectional(_stateful(3), Dense(3, 2), combination="concat"), (3,), name="Bidirectional"),
        LayerExample(Blockwise(_stateful(3), 4), (3,), time=13, name="Blockwise"),
        LayerExample(CheckpointGradient(_stateful(3)), (3,), training=True, name="CheckpointGradient"),
    ]
