"""Layers that wrap one child: ``WrapperMixin`` (public base), ``CheckpointGradient``, ``Blockwise``."""

from __future__ import annotations

import fractions

import torch
import torch.utils.checkpoint

from sl.combinators._common import check_child, copy_constants
from sl.layer import SequenceLayer
from sl.stepping import run_steps
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State

__all__ = ["Blockwise", "CheckpointGradient", "WrapperMixin"]


class WrapperMixin(SequenceLayer):
    """Forwards every property and method to ``self.child_layer`` (the reference's ``WrapperMixin``).

    Subclass it, set ``self.child_layer`` in ``__init__`` and override what the
    wrapper changes; everything else (metadata, state, flush) is the child's.
    """

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

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        return self.child_layer.get_output_spec(input_spec, constants=copy_constants(constants))

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        return self.child_layer.get_initial_state(
            batch_size, input_spec, training=training, constants=copy_constants(constants)
        )

    def shift_initial_state(self, state: State, latency: int) -> State:
        return self.child_layer.shift_initial_state(state, latency)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self.child_layer.layer(x, training=training, constants=copy_constants(constants))

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self.child_layer.layer_with_emits(x, training=training, constants=copy_constants(constants))

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self.child_layer.step(x, state, training=training, constants=copy_constants(constants))

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        return self.child_layer.step_with_emits(x, state, training=training, constants=copy_constants(constants))

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        return self.child_layer.flush(state, training=training, constants=copy_constants(constants))


class CheckpointGradient(WrapperMixin):
    """Gradient checkpointing around ``layer``: activations are recomputed in the backward pass.

    Uses ``torch.utils.checkpoint.checkpoint(use_reentrant=False)`` (RNG state is
    preserved, so stochastic children recompute identically) in layer mode when training
    with grad enabled; otherwise, and in ``step``, it is a pass-through. All metadata is
    the child's.
    """

    def __init__(self, layer: SequenceLayer) -> None:
        super().__init__()
        self.child_layer = check_child("CheckpointGradient", "layer", layer)

    def _run(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        child = self.child_layer
        run = child.layer_with_emits if with_emits else child.layer
        c = copy_constants(constants)
        if not (training and torch.is_grad_enabled()):
            return run(x, training=training, constants=c)
        return torch.utils.checkpoint.checkpoint(
            lambda x, c: run(x, training=training, constants=c), x, c, use_reentrant=False
        )

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._run(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._run(x, training, constants, with_emits=True)  # type: ignore[return-value]


class Blockwise(WrapperMixin):
    """Processes ``child_layer`` in blocks of ``block_size`` timesteps.

    ``block_size`` must be a multiple of the child's block size; ``step`` then takes
    blocks of that size. Unlike the reference (where ``layer`` is the child's
    ``layer``), ``layer`` here runs the child step by step, ``block_size`` steps at a
    time (flushing its input latency and dropping its output latency), so peak memory
    is bounded by the block rather than the sequence; gradients flow through it as
    through ``layer``. The output is always the latency-aligned ``ceil(T * output_ratio)``
    steps, so a child whose own ``layer`` changes the length by design (``Delay`` with
    ``delay_layer_output``, ``Lookahead``) gives a different length here than in the
    reference, whose ``Blockwise.layer`` returns the child's. Sequence-valued constants are
    passed whole to every step (not cut into blocks). A child that cannot step falls back to its own ``layer``. Other
    metadata is the child's.
    """

    def __init__(self, child_layer: SequenceLayer, block_size: int) -> None:
        super().__init__()
        self.child_layer = check_child("Blockwise", "child_layer", child_layer)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
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

    def _run(self, x: Sequence, training: bool, constants: Constants | None, with_emits: bool) -> object:
        child = self.child_layer
        if not child.supports_step:
            run = child.layer_with_emits if with_emits else child.layer
            return run(x, training=training, constants=copy_constants(constants))
        t = x.values.shape[1]
        state = child.get_initial_state(x.values.shape[0], x.channel_spec, training=training, constants=constants)
        y, _, emits = run_steps(
            child,
            x.pad_time(0, child.input_latency, valid=False),
            state,
            block=self._block,
            training=training,
            constants=copy_constants(constants),
            with_emits=with_emits,
        )
        ratio = child.output_ratio
        length = -(-t * ratio.numerator // ratio.denominator)  # ceil, symbolic-int friendly
        start = child.output_latency
        y = y[:, start : start + length]
        return (y, emits) if with_emits else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._run(x, training, constants, with_emits=False)  # type: ignore[return-value]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        """Emits are the child's step-wise emits concatenated over time (not latency-trimmed)."""
        return self._run(x, training, constants, with_emits=True)  # type: ignore[return-value]
