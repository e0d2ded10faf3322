"""Drivers that run a layer block by block: :func:`step_by_step`."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.layer import SequenceLayer
from sl.types import Constants, Emits, Sequence, State

__all__ = ["step_by_step"]


def _is_seq(x: Any) -> bool:
    return isinstance(x, Sequence)


def _block(x: Sequence, start: int, size: int) -> Sequence:
    block = x[:, start : start + size]
    short = size - block.values.shape[1]
    return block.pad_time(0, short, valid=False) if short else block


def concatenate_emits(emits: list[Emits]) -> Emits:
    """Concatenates per-step emits along time (Sequences and tensors alike)."""
    if not emits:
        return ()

    def cat(*parts: Any) -> Any:
        if isinstance(parts[0], Sequence):
            return Sequence.concatenate_sequences(parts)
        if isinstance(parts[0], torch.Tensor) and parts[0].dim() >= 2:
            return torch.cat(parts, 1)
        return parts[-1]

    return pytree.tree_map(cat, *emits, is_leaf=_is_seq)


def step_by_step(
    layer: SequenceLayer,
    x: Sequence,
    *,
    training: bool | None = None,
    initial_state: State | None = None,
    blocks_per_step: int = 1,
    constants: Constants | None = None,
    stream_constants: bool = False,
    with_emits: bool = False,
) -> tuple[Sequence, State] | tuple[Sequence, State, Emits]:
    """Runs ``layer.step`` over ``x`` in blocks of ``block_size * blocks_per_step``.

    The tail is padded with invalid steps to a whole block. With
    ``stream_constants``, Sequence-valued constants are cut into the same blocks
    (for time-synchronous side inputs). Returns ``(y, final_state)``, plus the
    emits concatenated over time when ``with_emits``.
    """
    if training is None:
        training = layer.training
    if not layer.supports_step:
        raise ValueError(f"{type(layer).__name__} does not support step(); sl.step_by_step cannot run it.")
    if blocks_per_step < 1:
        raise ValueError(f"blocks_per_step must be >= 1; got {blocks_per_step}.")
    if initial_state is None:
        initial_state = layer.get_initial_state(
            x.values.shape[0], x.channel_spec, training=training, constants=constants
        )
    size = layer.block_size * blocks_per_step
    total = x.values.shape[1]
    num_blocks = -(-total // size)
    constants = dict(constants) if constants is not None else None
    state = initial_state
    outputs: list[Sequence] = []
    emits: list[Emits] = []
    for b in range(num_blocks):
        xb = _block(x, b * size, size)
        step_constants = constants
        if stream_constants and constants is not None:
            step_constants = {
                k: (_block(v, b * size, size) if isinstance(v, Sequence) else v) for k, v in constants.items()
            }
        if with_emits:
            yb, state, eb = layer.step_with_emits(xb, state, training=training, constants=step_constants)
            emits.append(eb)
        else:
            yb, state = layer.step(xb, state, training=training, constants=step_constants)
        outputs.append(yb)
    if outputs:
        y = Sequence.concatenate_sequences(outputs)
    else:
        spec = layer.get_output_spec(x.channel_spec, constants=constants)
        y = Sequence(
            torch.zeros((x.values.shape[0], 0, *spec.shape), dtype=spec.dtype, device=x.values.device),
            torch.zeros((x.values.shape[0], 0), dtype=torch.bool, device=x.values.device),
        ).mask_invalid()
    if with_emits:
        return y, state, concatenate_emits(emits)
    return y, state
