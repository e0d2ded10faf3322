"""Layers run one after another: ``Serial`` (alias ``Sequential``) and ``SerialModules``.

The serial helpers here (one code path for plain and ``*_with_emits`` calls) also run
``Residual``'s body and ``Repeat``'s copies. Metadata composes with the reference's
rules (:mod:`sl.composition_rules`): lcm block size, product of ratios, accumulated
latencies, per-step receptive fields.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable, Iterator

import torch

from sl import composition_rules as rules
from sl.combinators._common import (
    as_layer_list,
    check_tuple_state,
    concatenate_tails,
    copy_constants,
    insert_with_unique_key,
)
from sl.layer import SequenceLayer
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Sequential", "Serial", "SerialCombinatorMixin", "SerialModules"]


# -- serial helpers (Serial, Residual's body, Repeat) -----------------------------------


def serial_output_spec(children: list[SequenceLayer], spec: ChannelSpec, constants: Constants | None) -> ChannelSpec:
    # Chains full specs, so a child whose shape depends on the dtype (Lambda) works inside.
    spec = ChannelSpec(tuple(spec[0]), spec[1])
    for child in children:
        spec = child.get_output_spec(spec, constants=copy_constants(constants))
    return spec


def serial_initial_state(
    children: list[SequenceLayer],
    batch_size: int,
    spec: ChannelSpec,
    training: bool,
    constants: Constants | None,
    latency: int = 0,
) -> tuple[State, ...]:
    """Child states, each shifted by the step-wise latency accumulated in front of it: from
    ``latency`` (what an enclosing Serial has in front of this chain) through the children before it.

    A nested Serial gets the true incoming latency rather than being computed from 0 and shifted
    afterwards: a chain whose strided layers are aligned only given the latency in front of it
    (``Delay(n, delay_layer_output=False)`` before a stride-2 convolution, as the Gemma 3n encoder
    does) cannot accumulate its latency from 0.
    """
    states = []
    for child in children:
        c = copy_constants(constants)
        if latency and isinstance(child, Serial) and type(child).get_initial_state is Serial.get_initial_state:
            state = serial_initial_state(child._children, batch_size, spec, training, c, latency)
        else:
            state = child.get_initial_state(batch_size, spec, training=training, constants=c)
            if latency:
                state = child.shift_initial_state(state, latency)
        states.append(state)
        latency = child.get_accumulated_output_latency(latency)
        spec = child.get_output_spec(spec, constants=c)
    return tuple(states)


def serial_shift_initial_state(
    children: list[SequenceLayer], states: tuple[State, ...], latency: int
) -> tuple[State, ...]:
    """Shifts every child by ``latency`` more steps, scaled by the ratios before it."""
    out = []
    for child, state in zip(children, states):
        out.append(child.shift_initial_state(state, latency) if latency else state)
        if latency:
            latency = child.get_accumulated_output_latency(latency) - child.get_accumulated_output_latency(0)
    return tuple(out)


def serial_layer(
    children: Iterable[SequenceLayer], x: Sequence, training: bool, constants: Constants | None, with_emits: bool
) -> tuple[Sequence, dict[str, Emits] | None]:
    emits: dict[str, Emits] | None = {} if with_emits else None
    for i, child in enumerate(children):
        if emits is None:
            x = child.layer(x, training=training, constants=copy_constants(constants))
        else:
            x, e = child.layer_with_emits(x, training=training, constants=copy_constants(constants))
            insert_with_unique_key(emits, f"layers_{i}", e)
    return x, emits


def serial_step(
    children: Iterable[SequenceLayer],
    x: Sequence,
    state: tuple[State, ...],
    training: bool,
    constants: Constants | None,
    with_emits: bool,
) -> tuple[Sequence, tuple[State, ...], dict[str, Emits] | None]:
    new_state = []
    emits: dict[str, Emits] | None = {} if with_emits else None
    for i, (child, s) in enumerate(zip(children, state)):
        if emits is None:
            x, s = child.step(x, s, training=training, constants=copy_constants(constants))
        else:
            x, s, e = child.step_with_emits(x, s, training=training, constants=copy_constants(constants))
            insert_with_unique_key(emits, f"layers_{i}", e)
        new_state.append(s)
    return x, tuple(new_state), emits


def serial_flush(
    children: Iterable[SequenceLayer], state: tuple[State, ...], training: bool, constants: Constants | None
) -> Sequence | None:
    """Each child's tail runs through the children after it, which add their own tails."""
    tail: Sequence | None = None
    for child, s in zip(children, state):
        parts: list[Sequence] = []
        if tail is not None and tail.values.shape[1]:
            y, s = child.step(
                tail.pad_to_multiple(child.block_size), s, training=training, constants=copy_constants(constants)
            )
            parts.append(y)
        own = child.flush(s, training=training, constants=copy_constants(constants))
        if own is not None:
            parts.append(own)
        tail = concatenate_tails(parts)
    return tail


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
        return rules.serial_block_size(self._children)

    @property
    def output_ratio(self) -> fractions.Fraction:
        return rules.serial_output_ratio(self._children)

    @property
    def input_latency(self) -> int:
        return self.get_accumulated_input_latency(0)

    @property
    def output_latency(self) -> int:
        return self.get_accumulated_output_latency(0)

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        return rules.serial_input_latency(self._children, input_latency)

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        return rules.serial_output_latency(self._children, output_latency)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return rules.receptive_field_per_step_of_serial_layers(self._children)


class Serial(SerialCombinatorMixin, SequenceLayer):
    """Runs children in order: ``Serial(a, b, c)`` or ``Serial([a, b, c])``.

    Block size (lcm rule), output ratio, latencies and receptive field are composed
    from the children; state is the tuple of child states; emits are a dict keyed
    ``layers_{i}`` (the reference keys them by the Flax child name, which defaults to
    that). Latency is checked lazily, as in the reference: reading ``output_latency``
    raises if a resampling child gets an incoming latency its ratio cannot divide (the
    message names the ``Delay`` to insert).
    """

    def __init__(self, *layers: SequenceLayer) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(as_layer_list(type(self).__name__, layers))

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> SequenceLayer:
        return self.layers[i]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[SequenceLayer]:
        return iter(self.layers)  # type: ignore[arg-type]

    @property
    def _children(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        return serial_output_spec(self._children, input_spec, constants)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for child in self._children:
            shape = tuple(child.get_output_shape(shape, constants=copy_constants(constants)))
        return shape

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        for child in self._children:
            input_dtype = child.get_output_dtype(input_dtype, constants=copy_constants(constants))
        return input_dtype

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        return serial_initial_state(self._children, batch_size, input_spec, training, constants)

    def shift_initial_state(self, state: State, latency: int) -> State:
        self._check_state(state)
        return serial_shift_initial_state(self._children, state, latency)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return serial_layer(self.layers, x, training, constants, with_emits=False)[0]  # type: ignore[arg-type]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return serial_layer(self.layers, x, training, constants, with_emits=True)  # type: ignore[arg-type]

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_state(state)
        y, state, _ = serial_step(self.layers, x, state, training, constants, with_emits=False)  # type: ignore[arg-type]
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        self._check_state(state)
        return serial_step(self.layers, x, state, training, constants, with_emits=True)  # type: ignore[arg-type]

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        self._check_state(state)
        return serial_flush(self.layers, state, training, constants)  # type: ignore[arg-type]

    def _check_state(self, state: State) -> None:
        if not isinstance(state, tuple) or len(state) != len(self.layers):
            check_tuple_state(f"{type(self).__name__} with {len(self.layers)} children", state, len(self.layers))


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
