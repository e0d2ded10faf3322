"""``Residual``: ``y = body(x) + shortcut(x)`` with aligned latencies."""

from __future__ import annotations

import fractions
import math
from collections.abc import Iterable

import torch

from sl import composition_rules as rules
from sl.combinators._common import check_tuple_state, copy_constants, layer_list_argument, same_length_tails
from sl.combinators.parallel import branch_latency_hint
from sl.combinators.serial import (
    Serial,
    serial_flush,
    serial_initial_state,
    serial_layer,
    serial_output_spec,
    serial_shift_initial_state,
    serial_step,
)
from sl.layer import SequenceLayer
from sl.merging import sequence_broadcast_add
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Residual"]


class Residual(SequenceLayer):
    """``y = body(x) + shortcut(x)``; the body is ``layers`` run in series.

    ``layers`` is a layer or a list of layers; ``shortcut_layers`` is None (identity),
    a layer, or a list (run as a ``Serial``), as in the reference. Body and shortcut must
    have the same output ratio, latencies and output shape (no broadcasting); the output
    dtype is their promotion and the mask the AND of both masks. A body with lookahead
    needs a delayed shortcut: ``shortcut_layers=sl.Delay(F, delay_layer_output=False)``
    (the construction error says so). State is ``(body_states, shortcut_state)`` and
    emits ``(body_emits, shortcut_emits)``.
    """

    def __init__(
        self,
        layers: SequenceLayer | Iterable[SequenceLayer],
        shortcut_layers: SequenceLayer | Iterable[SequenceLayer] | None = None,
    ) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layer_list_argument("Residual", "layers", layers))
        self.shortcut: SequenceLayer | None
        if shortcut_layers is None:
            self.shortcut = None
        elif isinstance(shortcut_layers, SequenceLayer):
            self.shortcut = shortcut_layers
        else:
            self.shortcut = Serial(*layer_list_argument("Residual", "shortcut_layers", shortcut_layers))
        self._validate_alignment()

    def _validate_alignment(self) -> None:
        body_ratio = rules.serial_output_ratio(self._body)
        sc_ratio = self.shortcut.output_ratio if self.shortcut is not None else fractions.Fraction(1)
        if body_ratio != sc_ratio:
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same output_ratio; body has {body_ratio}, "
                f"shortcut has {sc_ratio}. Give the shortcut a matching resampling layer."
            )
        body_in = rules.serial_input_latency(self._body, 0)
        sc_in = self.shortcut.input_latency if self.shortcut is not None else 0
        try:
            body_out = rules.serial_output_latency(self._body, 0)
            sc_out = self.shortcut.output_latency if self.shortcut is not None else 0
        except ValueError:
            body_out, sc_out = body_in, sc_in  # Reported lazily by output_latency, as in Serial.
        if body_in != sc_in or body_out != sc_out:
            hint = branch_latency_hint(["layers", "shortcut_layers"], [body_in, sc_in], [body_out, sc_out])
            if sc_in < body_in and body_in - body_out == sc_in - sc_out:
                hint = (
                    f"Delay the shortcut to match: shortcut_layers=sl.Delay({body_in - sc_in}, "
                    "delay_layer_output=False) (or add it to the shortcut's list)."
                )
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same latency; body has input_latency={body_in}, "
                f"output_latency={body_out}; shortcut has input_latency={sc_in}, output_latency={sc_out}. {hint}"
            )

    @property
    def _body(self) -> list[SequenceLayer]:
        return list(self.layers)  # type: ignore[arg-type]

    @property
    def supports_step(self) -> bool:
        return all(c.supports_step for c in self._body) and (self.shortcut is None or self.shortcut.supports_step)

    @property
    def block_size(self) -> int:
        body = rules.serial_block_size(self._body)
        return math.lcm(body, self.shortcut.block_size) if self.shortcut is not None else body

    @property
    def output_ratio(self) -> fractions.Fraction:
        return rules.serial_output_ratio(self._body)

    @property
    def input_latency(self) -> int:
        return self.get_accumulated_input_latency(0)

    @property
    def output_latency(self) -> int:
        return self.get_accumulated_output_latency(0)

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        body = rules.serial_input_latency(self._body, input_latency)
        sc = self.shortcut.get_accumulated_input_latency(input_latency) if self.shortcut is not None else input_latency
        if body != sc:
            raise ValueError(
                f"Residual layers and shortcut_layers must have the same accumulated input latency; "
                f"{body} != {sc} for incoming input_latency={input_latency}."
            )
        return body

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        body = rules.serial_output_latency(self._body, output_latency)
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
        body_rf = rules.receptive_field_per_step_of_serial_layers(self._body)
        sc_rf = self.shortcut.receptive_field_per_step if self.shortcut is not None else {0: (0, 0)}
        return rules.aggregate_receptive_field_per_steps([body_rf, sc_rf])

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        body = serial_output_spec(self._body, input_spec, constants)
        sc = (
            self.shortcut.get_output_spec(input_spec, constants=copy_constants(constants))
            if self.shortcut is not None
            else ChannelSpec(tuple(input_spec[0]), input_spec[1])
        )
        if tuple(body.shape) != tuple(sc.shape):
            raise ValueError(
                f"Residual layers and shortcut_layers must produce the same output shape; for input channel shape "
                f"{tuple(input_spec[0])} the body gives {tuple(body.shape)} and the shortcut {tuple(sc.shape)}."
            )
        return ChannelSpec(tuple(body.shape), torch.promote_types(body.dtype, sc.dtype))

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(self.get_output_spec(ChannelSpec(tuple(input_shape), torch.float32), constants=constants).shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        body = input_dtype
        for child in self._body:
            body = child.get_output_dtype(body, constants=copy_constants(constants))
        sc = (
            self.shortcut.get_output_dtype(input_dtype, constants=copy_constants(constants))
            if self.shortcut is not None
            else input_dtype
        )
        return torch.promote_types(body, sc)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        body = serial_initial_state(self._body, batch_size, input_spec, training, constants)
        sc = (
            self.shortcut.get_initial_state(
                batch_size, input_spec, training=training, constants=copy_constants(constants)
            )
            if self.shortcut is not None
            else ()
        )
        return (body, sc)

    def shift_initial_state(self, state: State, latency: int) -> State:
        body_state, sc_state = self._split_state(state)
        body_state = serial_shift_initial_state(self._body, body_state, latency)
        if self.shortcut is not None:
            sc_state = self.shortcut.shift_initial_state(sc_state, latency)
        return (body_state, sc_state)

    def _layer(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        self.get_output_spec(x.channel_spec, constants=constants)  # clear error before computing
        y, body_emits = serial_layer(self._body, x, training, constants, with_emits)
        sc_emits: Emits = ()
        if self.shortcut is None:
            s = x
        elif with_emits:
            s, sc_emits = self.shortcut.layer_with_emits(x, training=training, constants=copy_constants(constants))
        else:
            s = self.shortcut.layer(x, training=training, constants=copy_constants(constants))
        out = sequence_broadcast_add(y, s)
        return (out, (body_emits, sc_emits)) if with_emits else out

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer(x, training, constants, with_emits=True)  # type: ignore[return-value]

    def _split_state(self, state: State) -> tuple[tuple[State, ...], State]:
        check_tuple_state("Residual", state, 2, "entries (body_states, shortcut_state)")
        body_state, sc_state = state
        check_tuple_state(f"Residual body with {len(self.layers)} layers", body_state, len(self.layers))
        return body_state, sc_state

    def _step(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, with_emits: bool
    ) -> tuple[Sequence, State, Emits]:
        body_state, sc_state = self._split_state(state)
        y, body_state, body_emits = serial_step(self._body, x, body_state, training, constants, with_emits)
        sc_emits: Emits = ()
        if self.shortcut is None:
            s = x
        elif with_emits:
            s, sc_state, sc_emits = self.shortcut.step_with_emits(
                x, sc_state, training=training, constants=copy_constants(constants)
            )
        else:
            s, sc_state = self.shortcut.step(x, sc_state, training=training, constants=copy_constants(constants))
        return sequence_broadcast_add(y, s), (body_state, sc_state), (body_emits, sc_emits)

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
        body_state, sc_state = self._split_state(state)
        body = serial_flush(self._body, body_state, training, constants)
        sc = (
            self.shortcut.flush(sc_state, training=training, constants=copy_constants(constants))
            if self.shortcut is not None
            else None
        )
        tails = same_length_tails("Residual", [body, sc])
        return None if tails is None else sequence_broadcast_add(*tails)
