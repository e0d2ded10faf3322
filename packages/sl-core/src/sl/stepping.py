"""Running a layer block by block: :func:`step_by_step` for a whole sequence, :class:`Streamer`
for a live stream, and the bare loop :func:`run_steps` they share.

Both user-facing drivers line the stream up with ``layer`` for you: they feed
``input_latency`` extra invalid steps at the end and drop the first ``output_latency``
outputs, so ``step_by_step(layer, x)`` equals ``layer.layer(x)`` on valid steps. Both
run without autograd unless ``grad=True``: a stream's state carries the graph of every
step before it, so streaming with gradients grows memory without bound. For a live
stream, ``torch.inference_mode()`` around the loop is faster still.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.layer import SequenceLayer, coerce_spec
from sl.types import ChannelSpec, Constants, Emits, Sequence, State

__all__ = ["Streamer", "concatenate_emits", "run_steps", "step_by_step"]


def streamed_keys(constants: Constants | None, stream_constants: bool | Iterable[str]) -> frozenset[str]:
    """The constants cut into blocks with the input: every Sequence constant for ``True``, none for
    ``False``, or the named ones (a layer may take a whole source and a time-synchronous side input)."""
    if not constants or stream_constants is False:
        return frozenset()
    if stream_constants is True:
        return frozenset(k for k, v in constants.items() if isinstance(v, Sequence))
    names = frozenset(stream_constants)
    missing = sorted(names - set(constants))
    if missing:
        raise ValueError(
            f"stream_constants names constants that were not given: {missing} (given: {sorted(constants)})."
        )
    return names


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

    return pytree.tree_map(cat, *emits, is_leaf=lambda v: isinstance(v, Sequence))


def _empty_output(layer: SequenceLayer, x: Sequence, constants: Constants | None) -> Sequence:
    spec = layer.get_output_spec(x.channel_spec, constants=constants)
    return Sequence._trusted(
        torch.zeros((x.values.shape[0], 0, *spec.shape), dtype=spec.dtype, device=x.values.device),
        torch.zeros((x.values.shape[0], 0), dtype=torch.bool, device=x.values.device),
    ).mask_invalid()


def run_steps(
    layer: SequenceLayer,
    x: Sequence,
    state: State,
    *,
    block: int,
    training: bool,
    constants: Constants | None = None,
    stream_constants: bool | Iterable[str] = False,
    with_emits: bool = False,
) -> tuple[Sequence, State, Emits]:
    """The bare loop: ``layer.step`` over ``x`` in blocks of ``block`` steps (the tail padded
    with invalid steps), from ``state``. No latency handling, grad mode untouched.

    Returns ``(y, final_state, emits)`` (emits concatenated over time; ``()`` unless
    ``with_emits``). With ``stream_constants``, Sequence-valued constants are cut into the
    same blocks (for time-synchronous side inputs).
    """
    total = x.values.shape[1]
    streamed = streamed_keys(constants, stream_constants)
    outputs: list[Sequence] = []
    emits: list[Emits] = []
    for start in range(0, total, block):
        xb = _block(x, start, block)
        step_constants = constants
        if streamed and constants is not None:
            step_constants = {k: (_block(v, start, block) if k in streamed else v) for k, v in constants.items()}
        if with_emits:
            yb, state, eb = layer.step_with_emits(xb, state, training=training, constants=step_constants)
            emits.append(eb)
        else:
            yb, state = layer.step(xb, state, training=training, constants=step_constants)
        outputs.append(yb)
    y = Sequence.concatenate_sequences(outputs) if outputs else _empty_output(layer, x, constants)
    return y, state, concatenate_emits(emits)


def _grad_context(grad: bool) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if grad else torch.no_grad()


def step_by_step(
    layer: SequenceLayer,
    x: Sequence,
    *,
    training: bool | None = None,
    initial_state: State | None = None,
    blocks_per_step: int = 1,
    constants: Constants | None = None,
    stream_constants: bool | Iterable[str] = False,
    with_emits: bool = False,
    align_latency: bool = True,
    grad: bool = False,
) -> tuple[Sequence, State] | tuple[Sequence, State, Emits]:
    """Runs ``layer.step`` over ``x`` in blocks of ``block_size * blocks_per_step``.

    With ``align_latency`` (the default) the result lines up with ``layer.layer(x)``:
    ``input_latency`` invalid steps are fed after ``x`` and the first ``output_latency``
    outputs are dropped, and the output is as long as the layer-wise one for ``x``
    padded to whole blocks. ``align_latency=False`` returns the raw step outputs.

    Runs under ``torch.no_grad()`` unless ``grad=True`` (e.g. to train through the
    step path). Returns ``(y, final_state)``, plus the emits concatenated over time
    when ``with_emits`` (emits are never latency-trimmed).
    """
    if training is None:
        training = layer.training
    if not isinstance(x, Sequence):
        raise TypeError(f"sl.step_by_step expects an sl.Sequence; got {type(x).__name__}.")
    if not layer.supports_step:
        raise ValueError(f"{type(layer).__name__} does not support step(); sl.step_by_step cannot run it.")
    if isinstance(blocks_per_step, bool) or not isinstance(blocks_per_step, int) or blocks_per_step < 1:
        raise ValueError(f"sl.step_by_step: blocks_per_step must be a positive int; got {blocks_per_step!r}.")
    block = layer.block_size
    with _grad_context(grad):
        if initial_state is None:
            initial_state = layer.get_initial_state(
                x.values.shape[0], x.channel_spec, training=training, constants=constants
            )
        t = x.values.shape[1]
        if align_latency and layer.input_latency:
            x = x.pad_time(0, layer.input_latency, valid=False)
            streamed = streamed_keys(constants, stream_constants)
            if streamed and constants is not None:
                constants = {
                    k: (v.pad_time(0, layer.input_latency, valid=False) if k in streamed else v)
                    for k, v in constants.items()
                }
        y, state, emits = run_steps(
            layer,
            x,
            initial_state,
            block=block * blocks_per_step,
            training=training,
            constants=dict(constants) if constants is not None else None,
            stream_constants=stream_constants,
            with_emits=with_emits,
        )
    if align_latency:
        ratio = layer.output_ratio
        padded = -(-t // block) * block
        length = padded * ratio.numerator // ratio.denominator
        start = layer.output_latency
        y = y[:, start : start + length]
    if with_emits:
        return y, state, emits
    return y, state


class Streamer:
    """Feeds a live stream to ``layer`` in chunks of any length; output lines up with ``layer``.

    ``push(chunk)`` buffers partial blocks, steps every whole block and returns the new
    output, without the first ``output_latency`` steps of the stream (they only line the
    stream up). ``flush()`` ends the stream: it feeds the buffered remainder and
    ``input_latency`` invalid steps, then collects the tails layers still hold
    (``SequenceLayer.flush``), and resets the streamer for the next stream.
    Concatenating every returned chunk gives the layer-wise output of the concatenated
    input (plus any tail a layer owes beyond it).

    A live loop may refill one chunk buffer for every ``push``: a partial block is copied when
    buffered, layers keep copies in their state (the contract checks it), and the output of
    ``push`` never shares memory with the chunk.

    Runs under ``torch.no_grad()`` unless ``grad=True``. For the lowest overhead in a
    live loop, also wrap it in ``torch.inference_mode()``. The state is
    ``streamer.state``; ``torch.save`` it to resume a stream elsewhere.

    ``compile=True`` steps with :func:`sl.compile_step` ``(frozen=True)``: a graph per block
    length the chunks produce and per memory layout of the state a step hands the next
    (chunks of one length need two to four; past torch's recompile limit, steps of a new
    shape run eagerly, with a warning), the layer's configuration frozen at the first call
    (eval only: not with ``training`` or ``grad``). Blocks are handed to the graph contiguous,
    whatever the layout of the chunks.

    ``replay=True`` steps with :func:`sl.replay_step`: each block layout's step is captured
    once and then replayed as its plain torch calls, without the layers' Python (eval only,
    as ``compile``). On a CPU it beats the eager step on every benchmark model, and the
    compiled one on the small ones (docs/deploy.md).
    """

    def __init__(
        self,
        layer: SequenceLayer,
        batch_size: int,
        input_spec: ChannelSpec | tuple[Any, Any],
        *,
        training: bool = False,
        constants: Constants | None = None,
        grad: bool = False,
        compile: bool = False,
        replay: bool = False,
    ) -> None:
        if not layer.supports_step:
            raise ValueError(f"{type(layer).__name__} does not support step(); it cannot be streamed.")
        for flag, what in (
            (compile, "compile=True runs the compiled eval step (sl.compile_step)"),
            (replay, "replay=True replays the captured eval step (sl.replay_step)"),
        ):
            if flag and (training or grad):
                raise ValueError(
                    f"Streamer for {type(layer).__name__}: {what}; it cannot train or keep gradients. Pass "
                    "training=False and grad=False, or leave it off."
                )
        if compile and replay:
            raise ValueError(f"Streamer for {type(layer).__name__}: pass compile=True or replay=True, not both.")
        self.layer = layer
        self.batch_size = batch_size
        self.training = training
        self.constants = constants
        self.grad = grad
        self._input_spec = coerce_spec(layer, input_spec)
        self._channel_shape = torch.Size(self._input_spec.shape)
        self._step: Any = None
        if compile:
            from sl.deploy import compile_step  # deploy imports this module's neighbours

            self._step = compile_step(layer, constants=constants, frozen=True)
        elif replay:
            from sl.replay import replay_step

            self._step = replay_step(layer, constants=constants)
        self.reset()

    def reset(self) -> None:
        """Starts a new stream (fresh state, nothing buffered)."""
        with _grad_context(self.grad):
            self.state = self.layer.get_initial_state(
                self.batch_size, self._input_spec, training=self.training, constants=self.constants
            )
        self._pending: Sequence | None = None
        self._to_drop = self.layer.output_latency
        self._block = self.layer.block_size  # computed once: a deep stack derives it from every child

    def _run(self, x: Sequence) -> Sequence:
        """Steps every whole block of ``x`` (after what was buffered) and buffers the rest."""
        pending = self._pending
        if pending is not None:
            x = pending.concatenate(x)
        values, mask = x.values, x.mask
        t = values.shape[1]
        usable = t - t % self._block
        if usable < t:
            cut = type(x)._trusted
            rest_values, rest_mask = values[:, usable:], mask[:, usable:]
            if pending is None:  # a view of the caller's chunk, whose buffer a live loop refills: copy
                rest_values, rest_mask = rest_values.clone(), rest_mask.clone()
            self._pending = cut(rest_values, rest_mask)
            x = cut(values[:, :usable], mask[:, :usable])
        else:
            self._pending = None
        if self._step is not None and usable:  # (an empty step runs eagerly: no graph for length 0)
            # A graph is specialised to its inputs' memory layout too: a block cut from a chunk
            # (a view with the chunk's strides) would need a graph per chunk length.
            x = type(x)._trusted(x.values.contiguous(), x.mask.contiguous())
            y, self.state = self._step(x, self.state)
        else:
            with _grad_context(self.grad):
                y, state = self.layer.step(x, self.state, training=self.training, constants=self.constants)
            if usable or self._step is None:
                self.state = state
            # else: a chunk that completes no block. Its step leaves the state as it was (the
            # contract's empty step), and keeping the object keeps the compiled or replayed step's
            # fast path, which trusts the state it returned.
        return self._drop_latency(y)

    def _drop_latency(self, y: Sequence) -> Sequence:
        if self._to_drop:
            n = min(self._to_drop, y.values.shape[1])
            self._to_drop -= n
            y = y[:, n:]
        return y

    def push(self, chunk: Sequence) -> Sequence:
        """Processes ``chunk`` (any number of timesteps) and returns the output it releases."""
        if not isinstance(chunk, Sequence):
            raise TypeError(f"Streamer.push expects an sl.Sequence; got {type(chunk).__name__}.")
        values = chunk.values
        if (
            values.shape[0] != self.batch_size
            or values.shape[2:] != self._channel_shape
            or values.dtype != self._input_spec.dtype
        ):
            raise ValueError(
                f"Streamer for {type(self.layer).__name__} expects chunks of batch {self.batch_size} and channel spec "
                f"{tuple(self._input_spec.shape)} {self._input_spec.dtype}; got batch {chunk.values.shape[0]} and "
                f"{chunk.channel_shape} {chunk.dtype}."
            )
        steps_the_chunk = self._pending is None  # else the layer steps a new concatenation
        y = self._run(chunk)
        # A layer may hand back views of its input (a decimation's values, a passed-through mask):
        # the output gets its own memory, so refilling the chunk's buffer leaves it as it was.
        values, mask = y.values, y.mask
        if steps_the_chunk and (_shares_memory(values, chunk) or _shares_memory(mask, chunk)):
            y = type(y)._trusted(
                values.clone() if _shares_memory(values, chunk) else values,
                mask.clone() if _shares_memory(mask, chunk) else mask,
            )
        return y

    def flush(self) -> Sequence:
        """Ends the stream and returns everything still owed; the streamer is reset after."""
        layer = self.layer
        pending = 0 if self._pending is None else self._pending.values.shape[1]
        pad = layer.input_latency
        pad += -(pending + pad) % self._block
        device = self._pending.device if self._pending is not None else _device_of(self.state)
        filler = Sequence._trusted(
            torch.zeros((self.batch_size, pad, *self._input_spec.shape), dtype=self._input_spec.dtype, device=device),
            torch.zeros((self.batch_size, pad), dtype=torch.bool, device=device),
        )
        parts = [self._run(filler)]
        with _grad_context(self.grad):
            tail = layer.flush(self.state, training=self.training, constants=self.constants)
        if tail is not None:
            parts.append(self._drop_latency(tail))
        self.reset()
        return Sequence.concatenate_sequences(parts)


def _shares_memory(t: torch.Tensor, chunk: Sequence) -> bool:
    if not t.numel():
        return False
    storage = t.untyped_storage().data_ptr()
    return storage in (chunk.values.untyped_storage().data_ptr(), chunk.mask.untyped_storage().data_ptr())


def _device_of(state: State) -> torch.device:
    for leaf in pytree.tree_leaves(state):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
