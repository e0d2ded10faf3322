"""Combinators: layers built from other layers (Serial, Parallel, Residual, ...).

Combinators compose their children's metadata with the rules in
:mod:`sl.composition` and hand each child a shallow copy of ``constants`` so a
child cannot mutate what its siblings see.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable
from typing import Any

import torch

from sl import composition
from sl.layer import SequenceLayer
from sl.registry import LayerExample, LayerRegistry
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Serial", "Sequential"]


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


def _as_layer_list(owner: str, layers: tuple[Any, ...]) -> list[SequenceLayer]:
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    for i, layer in enumerate(layers):
        if not isinstance(layer, SequenceLayer):
            raise TypeError(f"{owner} expects SequenceLayer children; child {i} is {type(layer).__name__}.")
    return list(layers)


class Serial(SequenceLayer):
    """Runs children in order: ``Serial(a, b, c)`` (or ``Serial([a, b, c])``).

    Block size, output ratio, latencies and receptive field are composed from the
    children; state is the tuple of child states; emits are a dict keyed
    ``layers_{i}``.
    """

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

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for child in self._children:
            shape = tuple(child.get_output_shape(shape, constants=constants))
        return shape

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        dtype = input_dtype
        for child in self._children:
            dtype = child.get_output_dtype(dtype, constants=constants)
        return dtype

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool | None = None, constants: Constants | None = None
    ) -> State:
        states = []
        spec = input_spec
        for child in self._children:
            states.append(child.get_initial_state(batch_size, spec, training=training, constants=copy_constants(constants)))
            spec = child.get_output_spec(spec, constants=constants)
        return tuple(states)

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        emits: dict[str, Emits] = {}
        for i, child in enumerate(self._children):
            x, e = child.layer_with_emits(x, training=training, constants=copy_constants(constants))
            insert_with_unique_key(emits, f"layers_{i}", e)
        return x, emits

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        for child in self._children:
            x = child.layer(x, training=training, constants=copy_constants(constants))
        return x

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        self._check_state(state)
        new_state = []
        emits: dict[str, Emits] = {}
        for i, (child, s) in enumerate(zip(self._children, state)):
            x, s, e = child.step_with_emits(x, s, training=training, constants=copy_constants(constants))
            new_state.append(s)
            insert_with_unique_key(emits, f"layers_{i}", e)
        return x, tuple(new_state), emits

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_state(state)
        new_state = []
        for child, s in zip(self._children, state):
            x, s = child.step(x, s, training=training, constants=copy_constants(constants))
            new_state.append(s)
        return x, tuple(new_state)

    def _check_state(self, state: State) -> None:
        if not isinstance(state, tuple) or len(state) != len(self.layers):
            raise ValueError(
                f"{type(self).__name__} with {len(self.layers)} children expects a tuple of "
                f"{len(self.layers)} child states; got {type(state).__name__} of length "
                f"{len(state) if isinstance(state, (tuple, list)) else 'n/a'}."
            )


Sequential = Serial


def register_layers(registry: LayerRegistry) -> None:
    registry.add(Serial, aliases=("Sequential",))


def example_layers() -> Iterable[LayerExample]:
    return [LayerExample(Serial(), (3,), name="Serial(empty)")]
