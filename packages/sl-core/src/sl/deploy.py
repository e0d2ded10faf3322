"""From a trained layer to on-device streaming: a compiled step, and a step module with flat state.

* :func:`compile_step`: ``layer.step`` under ``torch.compile(fullgraph=True)`` (static
  shapes by default: a stream feeds blocks of one size), returning the same
  ``(y, state)`` pairs as the eager step.
* :class:`StreamingModule`: a plain ``torch.nn.Module`` whose ``forward`` is one step on
  tensors only, ``(values, mask, *flat_state) -> (values, mask, *flat_state)``, with the
  state flattened in a fixed order under stable path-based names
  (:attr:`StreamingModule.state_names`). It is what ``torch.export`` and ONNX take: feed
  the returned state back in on the next call.
* :func:`export_step`: ``torch.export`` of a :class:`StreamingModule` for blocks of a given
  length.

The state's pytree structure (tuples, dicts, Sequences) lives in the module, so callers
only ever hold a tuple of tensors; :meth:`StreamingModule.unflatten_state` /
:meth:`StreamingModule.flatten_state` convert to and from the layer's own state.
"""

from __future__ import annotations

import re
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.layer import SequenceLayer, check_step_state, coerce_spec, remember_step_state
from sl.types import ChannelSpec, Constants, Sequence, State

__all__ = ["StreamingModule", "compile_step", "export_onnx", "export_step"]


def _check_steppable(layer: SequenceLayer, what: str) -> None:
    if not isinstance(layer, SequenceLayer):
        raise TypeError(f"{what} expects an sl.SequenceLayer; got {type(layer).__name__}.")
    if not layer.supports_step:
        raise ValueError(
            f"{what}: {type(layer).__name__} does not support step() in its current configuration "
            "(supports_step is False), so it cannot stream. Use layer() instead."
        )


# Guards that stay with ``frozen=True``: the tensors' own (shape, stride, dtype, device),
# symbolic-shape relations, input aliasing and the global modes a graph depends on. What is
# dropped (types, lengths and ids of Python objects, the layer's attributes) sl checks
# itself on each call, or the layer promises not to change.
_FROZEN_GUARDS = frozenset(
    {
        "TENSOR_MATCH",
        "SHAPE_ENV",
        "NO_TENSOR_ALIASING",
        "DUPLICATE_INPUT",
        "GRAD_MODE",
        "GLOBAL_STATE",
        "DEFAULT_DEVICE",
        "DETERMINISTIC_ALGORITHMS",
        "TORCH_FUNCTION_STATE",
        "TORCH_FUNCTION_MODE_STACK",
        "AUTOGRAD_SAVED_TENSORS_HOOKS",
    }
)


def _frozen_guard_filter(entries: list[Any]) -> list[bool]:
    return [entry.guard_type in _FROZEN_GUARDS for entry in entries]


def compile_step(
    layer: SequenceLayer,
    *,
    constants: Constants | None = None,
    dynamic: bool = False,
    mode: str | None = None,
    backend: str = "inductor",
    frozen: bool = False,
) -> Callable[[Sequence, State], tuple[Sequence, State]]:
    """``layer.step`` compiled with ``torch.compile(fullgraph=True)`` (eval mode, no grad).

    ``mode="reduce-overhead"`` uses CUDA graphs on a GPU. The state keeps its shapes from
    step to step, so one compilation serves the whole stream when blocks have one length.

    ``frozen=True`` is for a deployed stream whose layer no longer changes: torch.compile
    then re-checks only tensor properties on each call (shapes, strides, dtypes, devices,
    aliasing, grad mode), not the Python objects the trace read (the layer's attributes,
    the state's containers), which on CPU takes tens of microseconds off every call of a
    deep stack. sl checks the input and the state itself instead (the state the previous
    call returned costs one identity comparison), and feeds every input to the graph as a
    plain ``Sequence``, so one compiled graph masks whatever it is given. Changing the
    layer's configuration after the first call is not seen; its parameters' values are
    (they are graph inputs). The state must hold only tensors (a Python number in it would be
    baked into the graph): anything else is a TypeError.
    """
    _check_steppable(layer, "sl.compile_step")

    def step(x: Sequence, state: State) -> tuple[Sequence, State]:
        return layer.step(x, state, training=False, constants=constants)

    options: dict[str, str | int | bool | Callable[..., Any]] | None = None
    if frozen:
        options = {"guard_filter_fn": _frozen_guard_filter}
        # Dynamo keeps compiled graphs on the function's code object, shared by every closure
        # this function makes; without the guards on the closure (which layer), a second
        # compile_step of a same-shaped layer would reuse the first one's graph. A code object
        # of its own per call keeps each layer's graphs apart.
        step = types.FunctionType(
            step.__code__.replace(), step.__globals__, step.__name__, step.__defaults__, step.__closure__
        )
    graphs = torch.compile(step, fullgraph=True, dynamic=dynamic, mode=mode, backend=backend, options=options)
    warned: list[bool] = [False]

    def compiled(x: Sequence, state: State) -> tuple[Sequence, State]:
        # fullgraph=True turns torch.compile's recompile limit (a graph per input shape and
        # layout) into an error; past it, a step with a new shape runs eagerly instead.
        try:
            return graphs(x, state)  # type: ignore[no-any-return]
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            if not warned[0]:
                warned[0] = True
                warnings.warn(
                    f"sl.compile_step({type(layer).__name__}): torch.compile's recompile limit "
                    f"(torch._dynamo.config.recompile_limit = {torch._dynamo.config.recompile_limit}) is reached, "
                    "so steps on inputs of a shape or memory layout it has no graph for run eagerly. Feed blocks "
                    "of fewer distinct lengths (a Streamer steps the whole blocks of each chunk: chunks of one "
                    "length give at most two block lengths), or raise the limit.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return step(x, state)

    if not frozen:

        def run(x: Sequence, state: State) -> tuple[Sequence, State]:
            with torch.no_grad():
                return compiled(x, state)

        return run

    returned: list[int] = [0]  # id of the state the last call returned (its leaves are known)

    def run_frozen(x: Sequence, state: State) -> tuple[Sequence, State]:
        if not isinstance(x, Sequence):
            raise TypeError(
                f"sl.compile_step({type(layer).__name__}) expects an sl.Sequence input; got {type(x).__name__}."
            )
        x = Sequence._trusted(x.values, x.mask)  # one input type for every trace (see the docstring)
        check_step_state(layer, x, state, False, constants)
        if id(state) != returned[0]:
            _check_tensor_state(layer, state)
        if torch.is_grad_enabled():
            with torch.no_grad():
                y, new_state = compiled(x, state)
        else:  # already under no_grad / inference_mode (a live loop): skip entering a context per call
            y, new_state = compiled(x, state)
        remember_step_state(layer, x, new_state, False)
        returned[0] = id(new_state)
        return y, new_state

    return run_frozen


def _non_tensor_leaf(state: State) -> tuple[str, str] | None:
    """``(path, type name)`` of the first leaf of ``state`` that is not a tensor, or None."""
    for path, leaf in pytree.tree_flatten_with_path(state)[0]:
        if not isinstance(leaf, torch.Tensor):
            return pytree.keystr(path) or "(root)", type(leaf).__name__
    return None


def _check_tensor_state(layer: SequenceLayer, state: State) -> None:
    """A frozen graph drops the guards on Python values, so one in the state would be baked in."""
    found = _non_tensor_leaf(state)
    if found is not None:
        raise TypeError(
            f"sl.compile_step(frozen=True): {type(layer).__name__}'s state holds a {found[1]} at {found[0]}; "
            "a frozen graph would keep its first value. Keep step state in tensors, or compile with frozen=False."
        )


def _state_name(path: tuple[Any, ...]) -> str:
    text = pytree.keystr(path) or "state"
    name = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")
    return f"state_{name}" if name else "state"


class StreamingModule(torch.nn.Module):
    """One step of ``layer`` on tensors: ``forward(values, mask, *state) -> (values, mask, *state)``.

    ``batch_size`` and ``input_spec`` fix the state's shapes (as ``get_initial_state``
    does); ``constants`` (e.g. an attention source) are fixed too and become part of the
    module. ``state_names`` name the flat state tensors after their path in the layer's
    state (``state_0_values``, ...), ``initial_state()`` gives the first call's state, and
    ``state_bytes()`` its size.
    """

    def __init__(
        self,
        layer: SequenceLayer,
        batch_size: int,
        input_spec: ChannelSpec | tuple[Any, Any],
        *,
        constants: Constants | None = None,
    ) -> None:
        super().__init__()
        _check_steppable(layer, "StreamingModule")
        self.layer = layer
        self.batch_size = batch_size
        self.input_spec = coerce_spec(layer, input_spec)
        self.constants = constants
        with torch.no_grad():
            state = layer.get_initial_state(batch_size, self.input_spec, training=False, constants=constants)
        found = _non_tensor_leaf(state)
        if found is not None:
            raise TypeError(
                f"StreamingModule: {type(layer).__name__}'s state has a non-tensor leaf at {found[0]} ({found[1]}); "
                "step state must be tensors to export."
            )
        leaves, self._treespec = pytree.tree_flatten_with_path(state)
        self.state_names: list[str] = [_state_name(path) for path, _ in leaves]
        self._initial = [leaf for _, leaf in leaves]

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        """The flat state of a new stream (fresh copies)."""
        return tuple(t.clone() for t in self._initial)

    def flatten_state(self, state: State) -> tuple[torch.Tensor, ...]:
        leaves, spec = pytree.tree_flatten(state)
        if spec != self._treespec:
            raise ValueError(
                f"StreamingModule.flatten_state: the state does not have {type(self.layer).__name__}'s structure."
            )
        return tuple(leaves)

    def unflatten_state(self, flat: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> State:
        if len(flat) != len(self.state_names):
            raise ValueError(
                f"StreamingModule: expected {len(self.state_names)} state tensors ({', '.join(self.state_names)}); "
                f"got {len(flat)}."
            )
        return pytree.tree_unflatten(list(flat), self._treespec)

    def state_bytes(self, per_stream: bool = True) -> int:
        """Bytes of the state (of one stream of the batch, or of the whole batch)."""
        total = sum(t.numel() * t.element_size() for t in self._initial)
        return total // max(self.batch_size, 1) if per_stream else total

    def forward(self, values: torch.Tensor, mask: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = Sequence._trusted(values, mask)
        y, new_state = self.layer.step(x, self.unflatten_state(state), training=False, constants=self.constants)
        return (y.values, y.mask, *pytree.tree_leaves(new_state))


def export_step(
    layer: SequenceLayer,
    batch_size: int,
    input_spec: ChannelSpec | tuple[Any, Any],
    *,
    block: int | None = None,
    constants: Constants | None = None,
) -> tuple[torch.export.ExportedProgram, StreamingModule]:
    """``torch.export`` of one step on blocks of ``block`` timesteps (default: the layer's block size).

    Returns the program and the :class:`StreamingModule` it was exported from (for the
    initial state and the state names). ``block`` must be a multiple of the layer's block size.
    """
    _check_steppable(layer, "sl.export_step")
    size = layer.block_size if block is None else block
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % layer.block_size:
        raise ValueError(
            f"sl.export_step: block must be a positive multiple of {type(layer).__name__}.block_size="
            f"{layer.block_size}; got {block!r}."
        )
    module = StreamingModule(layer, batch_size, input_spec, constants=constants).eval()
    spec = module.input_spec
    values = torch.zeros((batch_size, size, *spec.shape), dtype=spec.dtype)
    mask = torch.ones((batch_size, size), dtype=torch.bool)
    with torch.no_grad():
        program = torch.export.export(module, (values, mask, *module.initial_state()))
    return program, module


def export_onnx(
    layer: SequenceLayer,
    batch_size: int,
    input_spec: ChannelSpec | tuple[Any, Any],
    path: str | Any,
    *,
    block: int | None = None,
    constants: Constants | None = None,
) -> StreamingModule:
    """Writes one step as an ONNX model (torch.onnx's dynamo exporter) to ``path``.

    Inputs are ``values``, ``mask`` and the state tensors under their
    :attr:`StreamingModule.state_names`; outputs are ``values_out``, ``mask_out`` and each
    state name with ``_out``: feed those back in on the next call. Needs the ``onnx``
    and ``onnxscript`` packages (``pip install sl-core[onnx]``).
    """
    program, module = export_step(layer, batch_size, input_spec, block=block, constants=constants)
    names = ["values", "mask", *module.state_names]
    outputs = ["values_out", "mask_out", *(f"{n}_out" for n in module.state_names)]
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=names, output_names=outputs)
    if onnx_program is None:  # pragma: no cover - torch.onnx returns None only for the legacy exporter
        raise RuntimeError("torch.onnx.export returned no program.")
    onnx_program.save(path)
    return module
