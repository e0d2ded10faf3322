"""``Repeat``: independently initialised copies of one layer, run in series."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils.checkpoint

from sl.combinators._common import check_child, check_tuple_state, copy_constants
from sl.combinators.serial import (
    SerialCombinatorMixin,
    serial_flush,
    serial_initial_state,
    serial_shift_initial_state,
    serial_step,
)
from sl.config import construct
from sl.layer import SequenceLayer
from sl.types import ChannelSpec, Constants, Emits, Sequence, State

__all__ = ["Repeat", "rebuild"]


def rebuild(layer: SequenceLayer) -> SequenceLayer:
    """A new instance of ``layer`` built from its recorded constructor arguments.

    Nested layer arguments are rebuilt too, so the result shares nothing with ``layer``
    and every parameter comes from the constructors' own initialisers. This works for
    any sl layer (its arguments need not be JSON-able, unlike ``from_config``).
    """
    args = layer.__dict__.get("_sl_init_args")
    if args is None:
        raise TypeError(f"{type(layer).__name__} has no recorded constructor arguments.")

    def fresh(value: Any) -> Any:
        if isinstance(value, SequenceLayer):
            return rebuild(value)
        if isinstance(value, (list, tuple)):
            return type(value)(fresh(v) for v in value)
        if isinstance(value, dict):
            return {k: fresh(v) for k, v in value.items()}
        return value

    return construct(type(layer), {k: fresh(v) for k, v in args.items()})  # type: ignore[no-any-return]


def _independent_copy(layer: SequenceLayer) -> SequenceLayer:
    """A deep copy of ``layer`` with freshly initialised parameters and buffers.

    The reference initialises every repeat separately (``nn.scan`` with
    ``split_rngs={'params': True}``). Here the fresh values come from :func:`rebuild`
    (the layer's own initialisers), copied into the deep copy so the original's dtype,
    device and requires_grad are kept. If the layer cannot be rebuilt,
    ``reset_parameters()`` is called on every submodule that has one.
    """
    clone = copy.deepcopy(layer)
    try:
        fresh: torch.nn.Module | None = rebuild(layer)
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

    def __init__(self, layer: SequenceLayer, num_repeats: int, remat: bool = False) -> None:
        super().__init__()
        check_child("Repeat", "layer", layer)
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
        out = child.get_output_spec(spec, constants=copy_constants(constants))
        if tuple(out.shape) != tuple(spec.shape) or out.dtype != spec.dtype:
            raise ValueError(
                f"Repeat requires a child that preserves channel shape and dtype; {type(child).__name__} maps "
                f"{tuple(spec.shape)} {spec.dtype} to {tuple(out.shape)} {out.dtype}."
            )

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(input_shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self._validate(input_spec, constants)
        return serial_initial_state(self._children, batch_size, input_spec, training, constants)

    def shift_initial_state(self, state: State, latency: int) -> State:
        self._check_state(state)
        return serial_shift_initial_state(self._children, state, latency)

    def _layer(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        self._validate(x.channel_spec, constants)
        remat = self.remat and training and torch.is_grad_enabled()
        emits = []
        for child in self._children:
            run = child.layer_with_emits if with_emits else child.layer
            c = copy_constants(constants)
            if remat:
                out = torch.utils.checkpoint.checkpoint(
                    lambda x, c, run=run: run(x, training=training, constants=c), x, c, use_reentrant=False
                )
            else:
                out = run(x, training=training, constants=c)
            if with_emits:
                x, e = out
                emits.append(e)
            else:
                x = out
        return (x, tuple(emits)) if with_emits else x

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer(x, training, constants, with_emits=True)  # type: ignore[return-value]

    def _check_state(self, state: State) -> None:
        check_tuple_state(f"Repeat with num_repeats={self.num_repeats}", state, self.num_repeats, "per-repeat states")

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_state(state)
        self._validate(x.channel_spec, constants)
        y, state, _ = serial_step(self._children, x, state, training, constants, with_emits=False)
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        self._check_state(state)
        self._validate(x.channel_spec, constants)
        y, state, emits = serial_step(self._children, x, state, training, constants, with_emits=True)
        return y, state, tuple((emits or {}).values())

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        self._check_state(state)
        return serial_flush(self._children, state, training, constants)
