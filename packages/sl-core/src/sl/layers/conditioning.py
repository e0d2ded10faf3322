"""Conditioning: combine a sequence with a side input taken from ``constants``.

``Conditioning`` computes ``Combine(x, Project(c))`` where ``c = constants[name]`` is
either a tensor ``[B, *C]`` (one vector per batch item, broadcast over time) or a
time-synchronous Sequence ``[B, T, *C]``. Channel shapes broadcast NumPy-style
(right-aligned); batch and time must match or be 1.

In ``step``, a Sequence conditioning is either sliced out of the full sequence with a
per-batch time index state (``streaming=False``, the default) or arrives already cut
into the same blocks as ``x`` (``streaming=True``; ``sl.step_by_step(...,
stream_constants=True)``).
"""

from __future__ import annotations

import enum
from typing import Any

import torch

from sl.layer import SequenceLayer, get_constant
from sl.layers.dense import DenseShaped
from sl.toolkit import as_shape, check_in_stream, coerce_enum
from sl.types import ChannelSpec, Constants, MaskedSequence, ReceptiveField, Sequence, State

__all__ = ["Combination", "Conditioning", "Projection", "batched_time_slice"]


class Projection(str, enum.Enum):
    """How the conditioning is projected before it is combined."""

    IDENTITY = "identity"
    # Dense from the conditioning channel shape to the input's (or projection_channel_shape).
    LINEAR = "linear"
    # Dense to (2, *shape): a scale and a shift for AFFINE.
    LINEAR_AFFINE = "linear_affine"


class Combination(str, enum.Enum):
    """How the projected conditioning is combined with the input."""

    ADD = "add"
    # Broadcast, then concatenate on the last channel axis (x first).
    CONCAT = "concat"
    # x * (scale + affine_scale_offset) + shift. Requires LINEAR_AFFINE.
    AFFINE = "affine"
    # x + c. Requires LINEAR.
    AFFINE_SHIFT = "affine_shift"
    # x * (c + affine_scale_offset). Requires LINEAR.
    AFFINE_SCALE = "affine_scale"
    MUL = "mul"
    # Like CONCAT with the conditioning first.
    CONCAT_BEFORE = "concat_before"


ProjectionArg = Projection | str
CombinationArg = Combination | str


def _optional_shape(arg: str, value: Any) -> tuple[int, ...] | None:
    return None if value is None else as_shape("Conditioning", arg, value)


def batched_time_slice(x: Sequence, begin: torch.Tensor, size: int) -> Sequence:
    """``x[b, begin[b] : begin[b] + size]`` per batch item, fixed size (steps outside ``x`` are invalid).

    Reference ``utils.batched_time_slice``: a gather with clamped indices, so it runs
    without host syncs. Values past the end are not zeroed; the result is a plain Sequence.
    """
    time = x.values.shape[1]
    if time == 0:
        return x.pad_time(0, size, valid=False)
    offsets = torch.arange(size, dtype=torch.int64, device=x.device)
    idx = begin.to(torch.int64)[:, None] + offsets[None, :]
    in_range = (idx >= 0) & (idx < time)
    idx = idx.clamp(0, time - 1)
    mask = in_range & torch.gather(x.mask, 1, idx)
    vidx = idx.reshape(*idx.shape, *([1] * (x.values.dim() - 2))).expand(-1, -1, *x.values.shape[2:])
    return Sequence._trusted(torch.gather(x.values, 1, vidx), mask)


def _broadcast(layer: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise ValueError(
            f"{layer}: channel shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast."
        ) from None


def _expand_rank(v: torch.Tensor, rank: int) -> torch.Tensor:
    """Inserts size-1 channel axes after [B, T] so ``v`` has ``rank`` channel axes (right alignment)."""
    extra = rank - (v.dim() - 2)
    if extra <= 0:
        return v
    return v.reshape(*v.shape[:2], *([1] * extra), *v.shape[2:])


class Conditioning(SequenceLayer):
    """Conditions ``x`` on ``constants[conditioning_name]``: ``Combine(x, Project(c))``, time-synchronously.

    Projections: ``IDENTITY``; ``LINEAR`` (a ``DenseShaped`` from the conditioning channel
    shape to ``projection_channel_shape``, default the input channel shape);
    ``LINEAR_AFFINE`` (to ``(2, *shape)``: scale and shift). Combinations: ``ADD``, ``MUL``,
    ``CONCAT`` / ``CONCAT_BEFORE`` (last channel axis, outer axes broadcast), ``AFFINE``
    (needs LINEAR_AFFINE), ``AFFINE_SHIFT`` / ``AFFINE_SCALE`` (need LINEAR). Scales get
    ``affine_scale_offset`` added, so near-zero projections start near identity.

    The LINEAR projections are created eagerly, so they need ``conditioning_shape`` (the
    conditioning channel shape) and ``input_shape`` (unless ``projection_channel_shape``
    is given). When given, both are checked against the actual inputs. The output has the
    input's dtype and the mask ``x.mask & c.mask``.
    """

    Projection = Projection
    Combination = Combination

    def __init__(
        self,
        conditioning_name: str,
        projection: ProjectionArg,
        combination: CombinationArg,
        conditioning_shape: int | tuple[int, ...] | list[int] | None = None,
        input_shape: int | tuple[int, ...] | list[int] | None = None,
        projection_channel_shape: int | tuple[int, ...] | list[int] | None = None,
        streaming: bool = False,
        compute_dtype: torch.dtype | None = None,
        affine_scale_offset: float = 1.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conditioning_name = conditioning_name
        self.projection = coerce_enum(Projection, projection, owner="Conditioning", arg="projection")
        self.combination = coerce_enum(Combination, combination, owner="Conditioning", arg="combination")
        self.conditioning_shape = _optional_shape("conditioning_shape", conditioning_shape)
        self.input_shape = _optional_shape("input_shape", input_shape)
        self.projection_channel_shape = _optional_shape("projection_channel_shape", projection_channel_shape)
        self.streaming = streaming
        self.compute_dtype = compute_dtype
        self.affine_scale_offset = affine_scale_offset
        self._validate_modes()
        self.dense: DenseShaped | None = None
        if self.projection is not Projection.IDENTITY:
            if self.conditioning_shape is None:
                raise ValueError(
                    f"Conditioning with projection {self.projection.name} needs conditioning_shape (the "
                    "conditioning's channel shape) to create its projection."
                )
            target = self.projection_channel_shape or self.input_shape
            if target is None:
                raise ValueError(
                    f"Conditioning with projection {self.projection.name} needs input_shape (the input's "
                    "channel shape) or projection_channel_shape to create its projection."
                )
            if self.projection is Projection.LINEAR_AFFINE:
                target = (2, *target)
            self.dense = DenseShaped(
                self.conditioning_shape, target, compute_dtype=compute_dtype, device=device, dtype=dtype
            )

    def _validate_modes(self) -> None:
        p, c = self.projection, self.combination
        if c is Combination.AFFINE and p is not Projection.LINEAR_AFFINE:
            raise ValueError("Conditioning: the AFFINE combination requires the LINEAR_AFFINE projection.")
        if c in (Combination.AFFINE_SHIFT, Combination.AFFINE_SCALE) and p is not Projection.LINEAR:
            raise ValueError(f"Conditioning: the {c.name} combination requires the LINEAR projection.")
        if p is Projection.LINEAR_AFFINE and c is not Combination.AFFINE:
            raise ValueError("Conditioning: the LINEAR_AFFINE projection requires the AFFINE combination.")

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (0, 0)}

    # -- shapes ------------------------------------------------------------------------

    def _get_conditioning(self, constants: Constants | None) -> torch.Tensor | Sequence:
        c = get_constant(self, constants, self.conditioning_name)
        if isinstance(c, Sequence):
            shape = c.channel_shape
        elif isinstance(c, torch.Tensor):
            if c.dim() < 1:
                raise ValueError(
                    f"Conditioning expected constant {self.conditioning_name!r} to be a [batch, ...] tensor or a "
                    "Sequence; got a scalar tensor."
                )
            shape = tuple(c.shape[1:])
        else:
            raise ValueError(
                f"Conditioning expected constant {self.conditioning_name!r} to be a tensor or a Sequence; got "
                f"{type(c).__name__}."
            )
        if self.conditioning_shape is not None and shape != self.conditioning_shape:
            raise ValueError(
                f"Conditioning expected constant {self.conditioning_name!r} with channel shape "
                f"{self.conditioning_shape}; got {shape}."
            )
        return c

    def _conditioning_channel_shape(self, constants: Constants | None) -> tuple[int, ...]:
        if self.conditioning_shape is not None and (constants is None or self.conditioning_name not in constants):
            return self.conditioning_shape
        c = self._get_conditioning(constants)
        return c.channel_shape if isinstance(c, Sequence) else tuple(c.shape[1:])

    def _check_input_shape(self, input_shape: tuple[int, ...]) -> None:
        if self.input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(f"Conditioning expected input channel shape {self.input_shape}; got {tuple(input_shape)}.")

    def _projected_shape(self, input_shape: tuple[int, ...], c_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.projection is Projection.IDENTITY:
            return c_shape
        assert self.dense is not None
        return self.dense.output_shape

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._check_input_shape(input_shape)
        proj = self._projected_shape(input_shape, self._conditioning_channel_shape(constants))
        name = "Conditioning"
        if self.combination in (Combination.CONCAT, Combination.CONCAT_BEFORE):
            inner = (input_shape[-1] if input_shape else 1) + (proj[-1] if proj else 1)
            return (*_broadcast(name, input_shape[:-1], proj[:-1]), inner)
        if self.combination is Combination.AFFINE:
            return _broadcast(name, input_shape, proj[1:])
        return _broadcast(name, input_shape, proj)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype

    # -- processing ----------------------------------------------------------------------

    def _project(self, c: Sequence, training: bool) -> Sequence:
        if self.dense is None:
            return c
        return self.dense.layer(c, training=training)

    def _combine(self, x: Sequence, c: Sequence) -> Sequence:
        xv, cv = x.values, c.values
        compute = torch.promote_types(xv.dtype, cv.dtype)
        xv, cv = xv.to(compute), cv.to(compute)
        combo = self.combination
        if combo is Combination.AFFINE:
            scale, shift = cv.unbind(2)
            rank = max(xv.dim(), scale.dim()) - 2
            xv, scale, shift = (_expand_rank(v, rank) for v in (xv, scale, shift))
            y = xv * (scale + self.affine_scale_offset) + shift
        else:
            rank = max(xv.dim(), cv.dim()) - 2
            xv, cv = _expand_rank(xv, rank), _expand_rank(cv, rank)
            if combo in (Combination.ADD, Combination.AFFINE_SHIFT):
                y = xv + cv
            elif combo is Combination.MUL:
                y = xv * cv
            elif combo is Combination.AFFINE_SCALE:
                y = xv * (cv + self.affine_scale_offset)
            else:
                if rank == 0:
                    xv, cv = xv[..., None], cv[..., None]
                lead = torch.broadcast_shapes(xv.shape[:-1], cv.shape[:-1])
                xv = xv.expand(*lead, xv.shape[-1])
                cv = cv.expand(*lead, cv.shape[-1])
                y = torch.cat([xv, cv] if combo is Combination.CONCAT else [cv, xv], -1)
        return Sequence._trusted(y.to(x.dtype), x.mask & c.mask)

    def _check_batch_time(self, x: Sequence, c: Sequence) -> None:
        xb, xt = x.values.shape[:2]
        cb, ct = c.values.shape[:2]
        # Explicit comparisons (not `in`): they guard correctly on symbolic sizes under torch.compile.
        if not (cb == 1 or cb == xb) or not (ct == 1 or ct == xt):
            raise ValueError(
                f"Conditioning: the conditioning {self.conditioning_name!r} has [batch, time] = [{cb}, {ct}], "
                f"which does not match the input's [{xb}, {xt}] (each must be equal or 1)."
            )

    def _as_sequence(self, c: torch.Tensor | Sequence) -> Sequence:
        if isinstance(c, Sequence):
            return c
        return MaskedSequence._trusted(c[:, None], torch.ones((c.shape[0], 1), dtype=torch.bool, device=c.device))

    def _condition(self, x: Sequence, c: Sequence, training: bool) -> Sequence:
        self.get_output_shape(x.channel_shape, constants={self.conditioning_name: c})
        self._check_batch_time(x, c)
        return self._combine(x, self._project(c, training))

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        c = self._get_conditioning(constants)
        if isinstance(c, Sequence) and not self.streaming:
            return torch.zeros((batch_size,), dtype=torch.int32, device=c.device)
        return ()

    def shift_initial_state(self, state: State, latency: int) -> State:
        # The time index into a whole-sequence conditioning starts before it, at -latency.
        return state - latency if isinstance(state, torch.Tensor) else state

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        c = self._as_sequence(self._get_conditioning(constants))
        return self._condition(x, c, training)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        c = self._get_conditioning(constants)
        if isinstance(c, Sequence) and not self.streaming:
            if not isinstance(state, torch.Tensor):
                raise ValueError(
                    "Conditioning.step got a Sequence conditioning but no time-index state; the state must come "
                    "from get_initial_state with the same constants."
                )
            time = x.values.shape[1]
            batch = x.values.shape[0]
            if c.values.shape[0] == 1 and batch > 1:
                c = Sequence._trusted(c.values.expand(batch, *c.values.shape[1:]), c.mask.expand(batch, -1))
            length = c.values.shape[1]
            if length != 1:
                # As layer() refuses a conditioning shorter than the input: a valid step past its end is an error.
                index = state.to(torch.int64)[:, None] + torch.arange(time, device=x.device)
                check_in_stream(
                    self,
                    ~(x.mask & (index >= length)),
                    f"the conditioning {self.conditioning_name!r} has {length} steps, and the stream has run past "
                    "them on a valid step. Give a conditioning as long as the stream (or use streaming=True).",
                )
                c = batched_time_slice(c, state, time)
            state = state + time
        return self._condition(x, self._as_sequence(c), training), state
