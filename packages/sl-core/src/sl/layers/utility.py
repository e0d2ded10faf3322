"""Utility layers: identities with a side effect (emits, logging, sharding, gradient
control), dtype casts, masking and user functions (the utility half of the
reference's ``simple.py``).

All of them are stateless and steppable with a receptive field of ``(0, 0)``.
Layers that return their input values unchanged (or map 0 to 0) keep a
:class:`~sl.types.MaskedSequence` input masked, exactly as the reference does.

A few reference layers exist for XLA/JAX compilation and have no torch
counterpart with the same meaning (``CheckpointName``, ``OptimizationBarrier``);
they are kept as documented identities so reference configs port unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from sl import activations
from sl.layer import (
    PreservesShape,
    PreservesType,
    Stateless,
    StatelessEmitting,
    StatelessPointwise,
    StatelessPointwiseFunctor,
)
from sl.types import ChannelSpec, Constants, Emits, MaskedSequence, Sequence, State

__all__ = [
    "ApplySharding",
    "Cast",
    "CheckpointName",
    "Emit",
    "GradientClipping",
    "Identity",
    "Lambda",
    "Logging",
    "MaskInvalid",
    "NamedEmit",
    "OptimizationBarrier",
    "StopGradient",
]

_LOGGER = logging.getLogger(__name__)


class Identity(PreservesType, StatelessPointwise):
    """Returns its input unchanged (masked state included)."""

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return x


def _as_dtype(owner: str, dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(resolved, torch.dtype):
            return resolved
        raise TypeError(
            f"{owner} expected a torch.dtype or a dtype name such as 'float32'; got unknown name {dtype!r}."
        )
    raise TypeError(
        f"{owner} expected a torch.dtype or a dtype name such as 'float32'; got {dtype!r} ({type(dtype).__name__})."
    )


class Cast(StatelessPointwiseFunctor):
    """Casts values to ``dtype`` (a ``torch.dtype`` or its name). Casting keeps zeros zero."""

    mask_required = False

    def __init__(self, dtype: torch.dtype | str) -> None:
        super().__init__()
        self.dtype = _as_dtype(type(self).__name__, dtype)

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values.to(self.dtype), mask

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return self.dtype


class MaskInvalid(PreservesType, StatelessPointwise):
    """Zeroes invalid timesteps, returning a MaskedSequence (a no-op on one)."""

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return x.mask_invalid()


class Emit(PreservesType, PreservesShape, StatelessEmitting):
    """Identity that also emits its input Sequence (read it with ``layer_with_emits``)."""

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return x, x


class NamedEmit(PreservesType, PreservesShape, StatelessEmitting):
    """Identity that emits ``{emit_name: input}``, so combinator emits are easy to find."""

    def __init__(self, emit_name: str) -> None:
        super().__init__()
        if not isinstance(emit_name, str):
            raise TypeError(f"NamedEmit expected a str emit_name; got {emit_name!r} ({type(emit_name).__name__}).")
        self.emit_name = emit_name

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return x, {self.emit_name: x}


# -- Lambda ------------------------------------------------------------------------------


def _as_channel_spec(owner: str, spec: Any) -> ChannelSpec | None:
    if spec is None:
        return None
    if isinstance(spec, ChannelSpec):
        return ChannelSpec(tuple(int(d) for d in spec.shape), _as_dtype(owner, spec.dtype))
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], (tuple, list)):
        return ChannelSpec(tuple(int(d) for d in spec[0]), _as_dtype(owner, spec[1]))
    raise TypeError(f"{owner} expected expected_input_spec as a ChannelSpec or (shape, dtype); got {spec!r}.")


class Lambda(Stateless):
    """Wraps a stateless user function that works on each timestep independently.

    With ``sequence_input=False`` ``fn`` maps values ``[B, T, *C] -> [B, T, *C']``;
    with ``sequence_input=True`` it maps a Sequence to a Sequence. The function may
    change the channel shape and dtype but not the batch or time axes, and must not
    mix timesteps (receptive field ``(0, 0)``). ``mask_required=False`` declares
    that ``fn(0) == 0`` so a MaskedSequence stays masked (values mode only).

    ``fn`` may also be the name of an activation in :mod:`sl.activations`; only then
    can the layer be written to a config (a Python function cannot be serialised).
    """

    def __init__(
        self,
        fn: Callable[..., Any] | str,
        sequence_input: bool = False,
        mask_required: bool = True,
        expected_input_spec: ChannelSpec | tuple[tuple[int, ...], torch.dtype] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(fn, str):
            fn = activations.get(fn)
        if not callable(fn):
            raise TypeError(f"Lambda expected a callable fn (or an activation name); got {fn!r}.")
        self.fn: Callable[..., Any] = fn
        self.sequence_input = bool(sequence_input)
        self.mask_required = bool(mask_required)
        self.expected_input_spec = _as_channel_spec(type(self).__name__, expected_input_spec)

    def _fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    def get_config(self) -> dict[str, Any]:
        if activations.name_of(self.fn) is None:
            raise TypeError(
                f"Lambda cannot be written to a config: its fn {self._fn_name()!r} is a Python function, which "
                "cannot be serialised. Register it with sl.activations.register(name, fn) and pass the name, or "
                "write a SequenceLayer subclass."
            )
        return super().get_config()

    def _probe(self, input_spec: ChannelSpec) -> ChannelSpec:
        """Runs ``fn`` on a one-step dummy input (meta device, else CPU zeros) to read its output spec."""
        shape = (1, 1, *input_spec.shape)
        errors: list[BaseException] = []
        for device in ("meta", "cpu"):
            values = torch.zeros(shape, dtype=input_spec.dtype, device=device)
            try:
                if self.sequence_input:
                    mask = torch.ones((1, 1), dtype=torch.bool, device=device)
                    out = self.fn(Sequence(values, mask))
                    if not isinstance(out, Sequence):
                        raise TypeError(
                            f"Lambda fn {self._fn_name()!r} returned {type(out).__name__}, expected an sl.Sequence."
                        )
                    out_values = out.values
                else:
                    out_values = self.fn(values)
            except (NotImplementedError, RuntimeError) as e:
                errors.append(e)
                continue
            if not isinstance(out_values, torch.Tensor) or out_values.dim() < 2:
                raise TypeError(
                    f"Lambda fn {self._fn_name()!r} must return a tensor of rank >= 2 ([batch, time, ...]); "
                    f"got {type(out_values).__name__}."
                )
            return ChannelSpec(tuple(out_values.shape[2:]), out_values.dtype)
        raise ValueError(
            f"Lambda could not evaluate fn {self._fn_name()!r} on an input of spec {input_spec} to find its output "
            f"spec: {errors[-1]}"
        ) from errors[-1]

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        shape, dtype = input_spec
        return self._probe(ChannelSpec(tuple(shape), dtype))

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if self.expected_input_spec is None:
            raise ValueError(
                "Lambda.get_output_shape needs expected_input_spec (to know the input dtype); pass it to the "
                "constructor or call get_output_spec(ChannelSpec(shape, dtype)) instead."
            )
        return self._probe(ChannelSpec(tuple(input_shape), self.expected_input_spec.dtype)).shape

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if self.expected_input_spec is None:
            raise ValueError(
                "Lambda.get_output_dtype needs expected_input_spec (to know the input shape); pass it to the "
                "constructor or call get_output_spec(ChannelSpec(shape, dtype)) instead."
            )
        return self._probe(ChannelSpec(self.expected_input_spec.shape, input_dtype)).dtype

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if self.sequence_input:
            y = self.fn(x)
            if not isinstance(y, Sequence):
                raise TypeError(f"Lambda fn {self._fn_name()!r} returned {type(y).__name__}, expected an sl.Sequence.")
            if y.shape[:2] != x.shape[:2]:
                raise ValueError(
                    f"Lambda fn {self._fn_name()!r} must not change the batch or time axes: input shape "
                    f"{x.shape} -> output shape {y.shape}."
                )
            return y
        values = self.fn(x.values)
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"Lambda fn {self._fn_name()!r} returned {type(values).__name__}, expected a torch.Tensor.")
        if tuple(values.shape[:2]) != x.shape[:2]:
            raise ValueError(
                f"Lambda fn {self._fn_name()!r} must not change the batch or time axes: input shape "
                f"{x.shape} -> output shape {tuple(values.shape)}."
            )
        if self.mask_required or not isinstance(x, MaskedSequence):
            return Sequence._trusted(values, x.mask)
        return MaskedSequence._trusted(values, x.mask)


# -- Logging -----------------------------------------------------------------------------

_LAYER_FORMAT = "{prefix} layer():\n\tx={x}\n\ttraining={training}\n\tconstants={constants}"
_INITIAL_STATE_FORMAT = (
    "{prefix} get_initial_state():\n\tbatch_size={batch_size}\n\tinput_spec={input_spec}\n\t"
    "training={training}\n\tconstants={constants}"
)
_STEP_FORMAT = "{prefix} step():\n\tx={x}\n\tstate={state}\n\ttraining={training}\n\tconstants={constants}"


def _describe(obj: Any, dump: bool) -> Any:
    """Tensors become ``ShapeDType(...)`` strings (or their values when ``dump``), recursively."""
    if isinstance(obj, Sequence):
        if not dump:
            return f"{type(obj).__name__}(shape={obj.shape}, dtype={_dtype_str(obj.dtype)})"
        return f"{type(obj).__name__}(values={obj.values!r}, mask={obj.mask!r})"
    if isinstance(obj, torch.Tensor):
        if dump:
            return repr(obj)
        return f"ShapeDType(shape={tuple(obj.shape)}, dtype={_dtype_str(obj.dtype)})"
    if isinstance(obj, Mapping):
        return {k: _describe(v, dump) for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_describe(v, dump) for v in obj)
    if isinstance(obj, list):
        return [_describe(v, dump) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.ndarray) and not dump:
            return f"ShapeDType(shape={obj.shape}, dtype={obj.dtype})"
    except ImportError:  # pragma: no cover
        pass
    return obj


def _dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Logging(PreservesType, StatelessPointwise):
    """Identity that logs (``logging`` module, INFO, logger ``sl.layers.utility``) the
    arguments of ``layer``, ``step`` and ``get_initial_state``.

    By default tensors are logged as shape and dtype only; ``dump_tensors=True`` logs
    their values too (which forces a device sync, so use it for debugging only).
    The format strings receive ``prefix`` and the call's arguments by name. Inside
    ``torch.compile`` nothing is logged.
    """

    def __init__(
        self,
        prefix: str = "",
        dump_tensors: bool = False,
        *,
        layer_format_str: str = _LAYER_FORMAT,
        get_initial_state_format_str: str = _INITIAL_STATE_FORMAT,
        step_format_str: str = _STEP_FORMAT,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.dump_tensors = dump_tensors
        self.layer_format_str = layer_format_str
        self.get_initial_state_format_str = get_initial_state_format_str
        self.step_format_str = step_format_str

    def _log(self, format_str: str, **kwargs: Any) -> None:
        # Under torch.compile the layer is a pure identity: a Python logging call cannot
        # be traced into a graph (and would run once, at trace time, anyway).
        if torch.compiler.is_compiling() or not _LOGGER.isEnabledFor(logging.INFO):
            return
        described = {k: _describe(v, self.dump_tensors) for k, v in kwargs.items()}
        _LOGGER.info(format_str.format(prefix=self.prefix, **described))

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self._log(self.layer_format_str, x=x, training=training, constants=constants)
        return x

    def get_initial_state(
        self,
        batch_size: int,
        input_spec: ChannelSpec,
        *,
        training: bool,
        constants: Constants | None = None,
    ) -> State:
        spec = f"ChannelSpec(shape={tuple(input_spec.shape)}, dtype={_dtype_str(input_spec.dtype)})"
        self._log(
            self.get_initial_state_format_str,
            batch_size=batch_size,
            input_spec=spec,
            training=training,
            constants=constants,
        )
        return ()

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._log(self.step_format_str, x=x, state=state, training=training, constants=constants)
        return x, state


# -- Sharding / compiler hints ---------------------------------------------------------------

ShardingSpec = tuple[str | tuple[str, ...] | None, ...]


def _check_sharding_spec(owner: str, name: str, spec: Any) -> ShardingSpec | None:
    if spec is None:
        return None
    if not isinstance(spec, (tuple, list)):
        raise TypeError(f"{owner} expected {name} as a tuple of mesh axis names / None per dimension; got {spec!r}.")
    out: list[str | tuple[str, ...] | None] = []
    for entry in spec:
        if entry is None or isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, (tuple, list)) and all(isinstance(e, str) for e in entry):
            out.append(tuple(entry))
        else:
            raise TypeError(
                f"{owner} {name} entries must be None, a mesh axis name or a tuple of names; got {entry!r} in {spec!r}."
            )
    return tuple(out)


def _placements(owner: str, spec: ShardingSpec, ndim: int, mesh_dim_names: tuple[str, ...] | None) -> list[Any]:
    from torch.distributed.tensor import Replicate, Shard

    if len(spec) > ndim:
        raise ValueError(f"{owner} sharding {spec} has {len(spec)} entries for a rank-{ndim} tensor.")
    if mesh_dim_names is None:
        raise ValueError(f"{owner} needs a DeviceMesh with mesh_dim_names to map the sharding {spec}.")
    placements: list[Any] = [Replicate() for _ in mesh_dim_names]
    for dim, entry in enumerate(spec):
        names = () if entry is None else (entry,) if isinstance(entry, str) else entry
        last = -1
        for name in names:
            if name not in mesh_dim_names:
                raise ValueError(f"{owner} sharding {spec} names mesh axis {name!r}; the mesh has {mesh_dim_names}.")
            mesh_dim = mesh_dim_names.index(name)
            if not isinstance(placements[mesh_dim], Replicate):
                raise ValueError(f"{owner} sharding {spec} uses mesh axis {name!r} twice.")
            if mesh_dim < last:
                raise ValueError(
                    f"{owner} sharding {spec}: a dimension sharded over several mesh axes must list them in mesh "
                    f"order {mesh_dim_names} (DTensor shards major-to-minor by mesh dimension)."
                )
            last = mesh_dim
            placements[mesh_dim] = Shard(dim)
    return placements


def _redistribute(owner: str, tensor: torch.Tensor, spec: ShardingSpec | None) -> torch.Tensor:
    if spec is None or not torch.distributed.is_available():
        return tensor
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return tensor
    mesh = tensor.device_mesh
    placements = _placements(owner, spec, tensor.dim(), mesh.mesh_dim_names)
    if tuple(placements) == tuple(tensor.placements):
        return tensor
    return tensor.redistribute(mesh, placements)


class ApplySharding(PreservesType, StatelessPointwise):
    """Constrains the sharding of values (and mask) on a DTensor device mesh.

    The reference takes PartitionSpec-like tuples, one entry per array dimension:
    ``None`` (not sharded), a mesh axis name, or a tuple of names. Here the tensor's
    own ``DeviceMesh`` (its ``mesh_dim_names``) plays the role of JAX's current mesh:
    an entry ``name`` at dimension ``d`` becomes ``Shard(d)`` on the mesh dimension
    called ``name``; mesh dimensions not named stay ``Replicate()``; a tuple of
    names shards ``d`` over each (listed in mesh order). The tensor is then
    ``redistribute``-d to those placements. When torch.distributed is not in use or
    the values are plain tensors (not DTensors) the layer is an identity, like the
    reference without a mesh. ``mask_sharding`` defaults to ``values_sharding[:2]``.
    """

    def __init__(
        self,
        values_sharding: ShardingSpec | list[Any] | None = None,
        mask_sharding: ShardingSpec | list[Any] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.values_sharding = _check_sharding_spec(owner, "values_sharding", values_sharding)
        self.mask_sharding = _check_sharding_spec(owner, "mask_sharding", mask_sharding)
        if self.values_sharding and not self.mask_sharding:
            self.mask_sharding = self.values_sharding[:2]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        owner = type(self).__name__
        values = _redistribute(owner, x.values, self.values_sharding)
        mask = _redistribute(owner, x.mask, self.mask_sharding)
        if values is x.values and mask is x.mask:
            return x
        return type(x)(values, mask)


class CheckpointName(StatelessPointwiseFunctor):
    """Names values for activation-checkpoint policies; an identity in torch.

    The reference tags the array with ``jax.ad_checkpoint.checkpoint_name`` so a
    remat policy such as ``save_only_these_names`` can keep it. torch's selective
    activation checkpointing (``torch.utils.checkpoint.create_selective_checkpoint_contexts``)
    decides what to save per *operator* (e.g. ``torch.ops.aten.mm``), not per named
    tensor, and there is no tensor tag it reads, so there is nothing to attach
    here: the layer returns its input and keeps ``checkpoint_name`` (in the config
    and as an attribute) so reference configs port and tools can inspect it.
    """

    mask_required = False

    def __init__(self, checkpoint_name: str) -> None:
        super().__init__()
        if not isinstance(checkpoint_name, str):
            raise TypeError(f"CheckpointName expected a str checkpoint_name; got {checkpoint_name!r}.")
        self.checkpoint_name = checkpoint_name

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values, mask

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype


class OptimizationBarrier(PreservesType, StatelessPointwise):
    """An identity; the reference's ``jax.lax.optimization_barrier`` has no torch equivalent.

    XLA's barrier stops the compiler moving computation across it (e.g. to control
    rematerialisation or overlap). Neither eager torch nor ``torch.compile``
    exposes such a barrier for arbitrary values, so the layer returns its input
    (masked state included). ``apply_to_mask`` is kept in the config for parity.
    """

    def __init__(self, apply_to_mask: bool = False) -> None:
        super().__init__()
        self.apply_to_mask = apply_to_mask

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return x


class StopGradient(PreservesType, StatelessPointwiseFunctor):
    """Identity whose values are ``detach()``-ed: no gradient flows to earlier layers."""

    mask_required = False

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values.detach(), mask


class _ClipGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient is clamped to ``[-clip, clip]``."""

    @staticmethod
    def forward(values: torch.Tensor, clip_value: float) -> torch.Tensor:  # type: ignore[override]
        return values.view_as(values)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.clip_value = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.clamp(-ctx.clip_value, ctx.clip_value), None


class GradientClipping(PreservesType, StatelessPointwise):
    """Identity forward; the gradient w.r.t. the values is clipped to ``[-clip_value, clip_value]``."""

    def __init__(self, clip_value: float) -> None:
        super().__init__()
        if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value > 0:
            raise ValueError(f"GradientClipping expected a positive clip_value; got {clip_value!r}.")
        self.clip_value = float(clip_value)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return x.apply_values_masked(_ClipGradient.apply, self.clip_value)
