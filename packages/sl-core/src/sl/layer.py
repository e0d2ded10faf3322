"""The :class:`SequenceLayer` contract and its mixins.

Every layer runs layer-wise (``layer``: the whole sequence) and, when
``supports_step``, step-wise (``step``: one block at a time with explicit state).
The two must agree after accounting for the declared latencies; ``sl.testing``
checks that they do.

Subclasses implement ``layer``/``step`` (or the ``*_with_emits`` pair through
:class:`Emitting`), ``get_initial_state``, ``get_output_shape`` and
``get_output_dtype``. The base class wraps those methods once per subclass to
resolve ``training=None`` to ``self.training`` and to validate inputs and outputs
(the reference's ``check_layer``/``check_step`` decorators), so every layer gets
clear errors for free.
"""

from __future__ import annotations

import fractions
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from sl import config as _config
from sl.composition import reduce_receptive_field_per_step, validate_receptive_field_per_step
from sl.types import ChannelSpec, Constants, Emits, MaskedSequence, ReceptiveField, Sequence, State

__all__ = [
    "Emitting",
    "PreservesShape",
    "PreservesType",
    "SequenceLayer",
    "Stateless",
    "StatelessEmitting",
    "StatelessPointwise",
    "StatelessPointwiseFunctor",
    "get_constant",
]


def _layer_name(layer: Any) -> str:
    return type(layer).__name__


def _check_sequence(layer: SequenceLayer, x: Any, method: str) -> None:
    if not isinstance(x, Sequence):
        raise TypeError(
            f"{_layer_name(layer)}.{method} expects an sl.Sequence input; got {type(x).__name__}. "
            "Wrap tensors with sl.Sequence(values, mask) or sl.Sequence.from_values(values)."
        )


def _check_output(layer: SequenceLayer, x: Sequence, y: Any, constants: Constants | None, method: str) -> None:
    if not isinstance(y, Sequence):
        raise TypeError(f"{_layer_name(layer)}.{method} returned {type(y).__name__}, expected an sl.Sequence.")
    # get_output_spec (as the reference's check does), so a layer that needs the dtype to know
    # its shape (Lambda) can override get_output_spec alone.
    expected = tuple(layer.get_output_spec(x.channel_spec, constants=constants).shape)
    if y.channel_shape != expected:
        raise ValueError(
            f"{_layer_name(layer)}.{method} produced channel shape {y.channel_shape} for input channel "
            f"shape {x.channel_shape}, but get_output_spec declares {expected}."
        )


def _check_step_input(layer: SequenceLayer, x: Sequence) -> None:
    if not layer.supports_step:
        raise ValueError(
            f"{_layer_name(layer)} does not support step(): it is not streamable with its current "
            "configuration (see its supports_step property). Use layer() instead."
        )
    block = layer.block_size
    if x.values.shape[1] % block:
        raise ValueError(
            f"{_layer_name(layer)}.step received {x.values.shape[1]} timesteps, which is not a multiple "
            f"of its block_size={block}. Pad the block (Sequence.pad_to_multiple) or use sl.step_by_step."
        )


def _check_step_output(layer: SequenceLayer, x: Sequence, y: Sequence) -> None:
    # Integer arithmetic only: under torch.compile the lengths may be symbolic ints, which
    # do not mix with fractions.Fraction.
    ratio = layer.output_ratio
    x_len, y_len = x.values.shape[1], y.values.shape[1]
    if y_len * ratio.denominator != x_len * ratio.numerator:
        expected = x_len * ratio.numerator // ratio.denominator
        raise ValueError(
            f"{_layer_name(layer)}.step produced {y.values.shape[1]} timesteps for {x.values.shape[1]} "
            f"input timesteps; output_ratio={layer.output_ratio} requires {expected}."
        )


def _wrap_layer(fn: Callable[..., Any], with_emits: bool) -> Callable[..., Any]:
    method = fn.__name__

    @functools.wraps(fn)
    def layer(
        self: SequenceLayer, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> Any:
        if training is None:
            training = self.training
        _check_sequence(self, x, method)
        out = fn(self, x, training=training, constants=constants)
        if not self.outputs_checked_by_children:
            _check_output(self, x, out[0] if with_emits else out, constants, method)
        return out

    layer.__sl_checked__ = True  # type: ignore[attr-defined]
    return layer


def _wrap_step(fn: Callable[..., Any], with_emits: bool) -> Callable[..., Any]:
    method = fn.__name__

    @functools.wraps(fn)
    def step(
        self: SequenceLayer,
        x: Sequence,
        state: State,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> Any:
        if training is None:
            training = self.training
        _check_sequence(self, x, method)
        _check_step_input(self, x)
        out = fn(self, x, state, training=training, constants=constants)
        if not self.outputs_checked_by_children:
            y = out[0]
            _check_output(self, x, y, constants, method)
            _check_step_output(self, x, y)
        return out

    step.__sl_checked__ = True  # type: ignore[attr-defined]
    return step


def _wrap_initial_state(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def get_initial_state(
        self: SequenceLayer,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        if training is None:
            training = self.training
        if not isinstance(input_spec, ChannelSpec):
            if isinstance(input_spec, Sequence):
                raise TypeError(
                    f"{_layer_name(self)}.get_initial_state expects a ChannelSpec; got a Sequence "
                    "(pass x.channel_spec)."
                )
            input_spec = ChannelSpec(*input_spec)
        return fn(self, batch_size, input_spec, training=training, constants=constants)

    get_initial_state.__sl_checked__ = True  # type: ignore[attr-defined]
    return get_initial_state


_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "layer": lambda f: _wrap_layer(f, with_emits=False),
    "layer_with_emits": lambda f: _wrap_layer(f, with_emits=True),
    "step": lambda f: _wrap_step(f, with_emits=False),
    "step_with_emits": lambda f: _wrap_step(f, with_emits=True),
    "get_initial_state": _wrap_initial_state,
}


class SequenceLayer(torch.nn.Module):
    """Base class of every layer. See the module docstring for the contract."""

    # A combinator whose output is its last (checked) child's output, unchanged, sets this
    # so the same check does not run twice per call (it is Python overhead on every step).
    outputs_checked_by_children: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, wrap in _WRAPPERS.items():
            fn = cls.__dict__.get(name)
            if fn is not None and callable(fn) and not getattr(fn, "__sl_checked__", False):
                setattr(cls, name, wrap(fn))
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__sl_captures__", False):
            cls.__init__ = _config.capture_init_args(init)  # type: ignore[method-assign]

    # -- metadata -------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        """Step inputs must have a multiple of this many timesteps."""
        return 1

    @property
    def output_ratio(self) -> fractions.Fraction:
        """Output timesteps per input timestep (constant)."""
        return fractions.Fraction(1)

    @property
    def supports_step(self) -> bool:
        return True

    @property
    def input_latency(self) -> int:
        """Extra invalid input steps needed to flush every valid output out of ``step``."""
        return 0

    @property
    def output_latency(self) -> int:
        """Leading ``step`` outputs to drop before they line up with ``layer``."""
        return int(self.input_latency * self.output_ratio)

    def get_accumulated_input_latency(self, input_latency: int) -> int:
        return math.ceil(input_latency / self.output_ratio) + self.input_latency

    def get_accumulated_output_latency(self, output_latency: int) -> int:
        ratio = self.output_ratio
        required = -output_latency % (1 / ratio)
        if required:
            raise ValueError(
                f"Input to {_layer_name(self)} has a step-wise incoming output_latency={output_latency} "
                f"which is not divisible by the layer's output_ratio={ratio}. Insert "
                f"sl.Delay({int(required)}, delay_layer_output=False) before the layer "
                "(-output_latency % (1/output_ratio)) to compensate."
            )
        return int(output_latency * ratio) + self.output_latency

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        """Per output phase ``{step: (start, end)}``, relative to ``floor(step / ratio)``."""
        raise NotImplementedError(f"receptive_field_per_step is not implemented by {_layer_name(self)}.")

    @property
    def receptive_field(self) -> ReceptiveField:
        """Union of ``receptive_field_per_step``: input offsets that affect an output."""
        rf = self.receptive_field_per_step
        validate_receptive_field_per_step(rf)
        return reduce_receptive_field_per_step(rf)

    # -- processing -----------------------------------------------------------------
    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        raise NotImplementedError(f"{_layer_name(self)} does not implement layer().")

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self.layer(x, training=training, constants=constants), ()

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        raise NotImplementedError(f"{_layer_name(self)} does not implement step().")

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        y, state = self.step(x, state, training=training, constants=constants)
        return y, state, ()

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        raise NotImplementedError(f"{_layer_name(self)} does not implement get_initial_state().")

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        raise NotImplementedError(f"{_layer_name(self)} does not implement get_output_shape().")

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        raise NotImplementedError(f"{_layer_name(self)} does not implement get_output_dtype().")

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        shape, dtype = input_spec
        return ChannelSpec(
            tuple(self.get_output_shape(tuple(shape), constants=constants)),
            self.get_output_dtype(dtype, constants=constants),
        )

    def forward(self, x: Sequence, constants: Constants | None = None) -> Sequence:
        """``layer`` in the module's training mode, so hooks, DDP and compile work as usual."""
        return self.layer(x, training=self.training, constants=constants)

    # -- configuration --------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """A JSON-able description (``{"type": name, **args}``) that ``sl.from_config`` rebuilds."""
        return _config.layer_config(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SequenceLayer:
        return _config.from_config(config, expected_type=cls)

    def extra_repr(self) -> str:
        args = getattr(self, "_sl_init_args", None)
        if not args:
            return ""
        parts = []
        for k, v in args.items():
            if isinstance(v, torch.nn.Module):
                continue
            if isinstance(v, (list, tuple)) and any(isinstance(i, torch.nn.Module) for i in v):
                continue
            parts.append(f"{k}={v!r}")
        return ", ".join(parts)


def get_constant(layer: SequenceLayer, constants: Constants | None, name: str) -> Any:
    """Reads ``constants[name]`` with an error that names the layer when it is missing."""
    if constants is None or name not in constants:
        have = sorted(constants) if constants else []
        raise ValueError(
            f"{_layer_name(layer)} requires the constant {name!r}, but it was not provided "
            f"(constants given: {have}). Pass constants={{{name!r}: ...}}."
        )
    return constants[name]


# -- mixins ----------------------------------------------------------------------------


class PreservesType:
    """Output dtype equals input dtype."""

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype


class PreservesShape:
    """Output channel shape equals input channel shape."""

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(input_shape)


class Emitting(SequenceLayer):
    """Implement ``layer_with_emits`` and ``step_with_emits``; ``layer``/``step`` follow."""

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return self.layer_with_emits(x, training=training, constants=constants)[0]

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        y, state, _ = self.step_with_emits(x, state, training=training, constants=constants)
        return y, state


class Stateless(SequenceLayer):
    """No state across time: ``step`` is ``layer`` on the block, state is ``()``."""

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return ()

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self.layer(x, training=training, constants=constants), state


class StatelessEmitting(Emitting):
    """Stateless and emitting: implement ``layer_with_emits`` only."""

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool | None = None,
        constants: Constants | None = None,
    ) -> State:
        return ()

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        y, emits = self.layer_with_emits(x, training=training, constants=constants)
        return y, state, emits


class StatelessPointwise(PreservesShape, Stateless):
    """Stateless and shape-preserving, operating on each timestep independently."""


class StatelessPointwiseFunctor(StatelessPointwise):
    """Pointwise ``fn(values, mask) -> (values, mask)``.

    Set ``mask_required = False`` when ``fn(0) == 0`` so a MaskedSequence input
    stays a MaskedSequence (no re-masking downstream).
    """

    mask_required: bool = True

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{_layer_name(self)} does not implement fn().")

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        if self.mask_required or not isinstance(x, MaskedSequence):
            return x.apply(self.fn)
        return x.apply_masked(self.fn)
