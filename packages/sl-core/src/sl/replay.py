"""A step captured once per input layout and replayed as plain torch calls: :func:`replay_step`.

On a CPU, a streamed step of small blocks costs more in Python (each layer's ``step``, its
checks, the ``Sequence`` objects it builds) than in kernels, and ``torch.compile`` trades that
for its own per-call machinery. ``replay_step`` keeps the eager kernels and drops the Python:
the first step on an input of a given layout (the shapes, strides, dtypes and devices of the
input's and the state's tensors, and their pytree structure) is traced by torch.compile's
graph capture (dynamo, ``fullgraph=True``) into a straight-line FX graph of the torch calls it
makes; every later step on that layout runs the graph directly, with no guards and no
compiler. What the trace read besides the step's tensors (the layer's configuration, its
constants and buffers: the tensors themselves, so in-place updates are seen) is frozen at the
capture, as with :func:`sl.compile_step` ``(frozen=True)``: move or convert the layer
(``.to()``) before the first step, or make a new ``replay_step`` after.

Safety: a graph only runs on exactly the layout it was traced on; a new layout is traced
(up to ``max_graphs`` per step function, then it runs eagerly), a step dynamo cannot capture
as one graph runs eagerly, and each of these says so once with a RuntimeWarning. A state the
replay did not return is validated against ``get_initial_state`` as ``layer.step`` would; the
state it returned is trusted as it was returned (mutating its containers in place, rather
than stepping, is not seen).
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.layer import SequenceLayer, check_step_state, remember_step_state
from sl.lazy import has_uninitialized_parameters
from sl.types import Constants, Sequence, State
from sl.validation import check_positive_int

__all__ = ["is_replay_capturing", "replay_step"]

_capturing: list[bool] = [False]


def is_replay_capturing() -> bool:
    """True while :func:`replay_step` traces a step (``torch.compiler.is_compiling()`` is true
    then too). A layer that picks an operation's form for the compiler (one that fuses) may
    check it to pick the eager-fastest form instead: a replayed graph runs op by op."""
    return _capturing[0]


# Where a replayed output leaf comes from: a graph output, an input leaf, or a fixed tensor.
_GRAPH, _INPUT, _FIXED = 0, 1, 2


def _builder(spec: pytree.TreeSpec) -> Callable[[list[Any]], Any]:
    """``spec.unflatten`` as one generated expression over the list of leaves: the structure is
    walked once here, not on every call (``pytree.tree_unflatten`` costs tens of microseconds);
    tuples and Sequences are built directly, other nodes by their registered unflatten."""
    names: dict[str, Any] = {}
    count = [0]

    def expr(node: pytree.TreeSpec) -> str:
        if node.is_leaf():
            count[0] += 1
            return f"o[{count[0] - 1}]"
        parts = [expr(node.child(i)) for i in range(node.num_children)]
        kind = node.type
        if kind is tuple:
            return "(" + "".join(p + ", " for p in parts) + ")"
        ref = f"n{len(names)}"
        if isinstance(kind, type) and issubclass(kind, Sequence) and len(parts) == 2:
            names[ref] = kind._trusted
            return f"{ref}({parts[0]}, {parts[1]})"
        names[ref] = pytree.SUPPORTED_NODES[kind].unflatten_fn
        names[ref + "c"] = node.context
        return f"{ref}([{', '.join(parts)}], {ref}c)"

    body = expr(spec)
    return eval(f"lambda o: {body}", names)  # built above from the spec: no user text


class _Graph:
    """One captured step, as a generated function ``run(leaves) -> ((y, new_state), out_leaves)``
    of the input leaves ``[x.values, x.mask, *state]``: it calls the graph with its inputs (input
    leaves or fixed tensors), picks each output leaf (a graph output, an input leaf or a fixed
    tensor) and builds ``(y, new_state)`` from them. ``state_key``: the structure and layout of
    the states it returns."""

    __slots__ = ("run", "state_key")

    def __init__(
        self,
        forward: Callable[..., Any] | None,
        inputs: list[tuple[int, Any]],
        outputs: list[tuple[int, Any]],
        out_spec: pytree.TreeSpec,
        state_key: tuple[Any, ...],
    ) -> None:
        names: dict[str, Any] = {"forward": forward, "build": _builder(out_spec)}

        def ref(kind: int, value: Any, n: int) -> str:
            if kind == _GRAPH:
                return f"r[{value}]"
            if kind == _INPUT:
                return f"a[{value}]"
            names[f"f{n}"] = value
            return f"f{n}"

        args = ", ".join(ref(kind, value, n) for n, (kind, value) in enumerate(inputs))
        outs = ", ".join(ref(kind, value, len(inputs) + n) for n, (kind, value) in enumerate(outputs))
        call = f"forward({args})" if forward is not None else "()"
        exec(f"def run(a):\n    r = {call}\n    o = [{outs}]\n    return build(o), o\n", names)  # no user text
        self.run: Callable[[list[torch.Tensor]], tuple[Any, list[torch.Tensor]]] = names["run"]
        self.state_key = state_key


def _layout(leaves: list[Any]) -> tuple[Any, ...]:
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in leaves)


def _input_layout(x: Sequence) -> tuple[Any, ...]:
    values = x.values
    return (type(x), values.shape, values.stride(), values.dtype, values.device, x.mask.stride())


def _index(tensor: torch.Tensor, leaves: list[Any]) -> int:
    for i, leaf in enumerate(leaves):
        if leaf is tensor:
            return i
    return -1


def replay_step(
    layer: SequenceLayer, *, constants: Constants | None = None, max_graphs: int = 16
) -> Callable[[Sequence, State], tuple[Sequence, State]]:
    """``layer.step`` (eval, no grad) captured once per input layout and replayed as plain torch
    calls (see the module docstring): ``step(x, state) -> (y, new_state)`` as ``layer.step``.

    For streaming small blocks on a CPU, where Python overhead dominates: the kernels are the
    eager ones, so results match ``layer.step`` to rounding (an operation may take the form it
    has under ``torch.compile``, unless the layer checks :func:`is_replay_capturing`). A stream
    whose blocks have one length needs two or three captures (the initial state's layout
    differs from a stepped one's); each takes about as long as ``torch.compile`` tracing the step (a second or so),
    without code generation. ``sl.Streamer(..., replay=True)`` streams with it.
    """
    from sl.deploy import _check_steppable, _check_tensor_state  # deploy imports the stepping helpers

    _check_steppable(layer, "sl.replay_step")
    max_graphs = check_positive_int("sl.replay_step", "max_graphs", max_graphs)
    name = type(layer).__name__
    graphs: dict[Any, _Graph | None] = {}
    tokens: dict[pytree.TreeSpec, int] = {}  # state structures, numbered (hashing a TreeSpec is slow)
    # The state the last call returned (held, so that no other object can take its id), its
    # leaves and its key. It is trusted as returned: mutating its containers in place is not seen.
    last: list[Any] = [None, None, None]
    warned: set[str] = set()

    def token(spec: pytree.TreeSpec) -> int:
        return tokens.setdefault(spec, len(tokens))

    def warn(kind: str, message: str) -> None:
        if kind not in warned:
            warned.add(kind)
            warnings.warn(f"sl.replay_step({name}): {message}", RuntimeWarning, stacklevel=4)

    def eager(x: Sequence, state: State) -> tuple[Sequence, State]:
        with torch.no_grad():
            return layer.step(x, state, training=False, constants=constants)  # type: ignore[no-any-return]

    def traced(x: Sequence, state: State) -> tuple[Sequence, State]:
        return layer.step(x, state, training=False, constants=constants)  # type: ignore[no-any-return]

    def capture(x: Sequence, state: State, leaves: list[Any]) -> tuple[_Graph | None, tuple[Sequence, State]]:
        captured: list[tuple[torch.fx.GraphModule, list[Any]]] = []
        results: list[Any] = []

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
            captured.append((gm, list(example_inputs)))

            def run(*args: Any) -> Any:
                out = gm.forward(*args)
                results.append(out)
                return out

            return run

        # A code object of its own per capture: dynamo keeps its cache on the code object, so
        # this capture neither reuses nor leaves behind a graph for another one.
        fresh = types.FunctionType(
            traced.__code__.replace(), traced.__globals__, "replay_capture", None, traced.__closure__
        )
        _capturing[0] = True
        try:
            with torch.no_grad():
                y, new_state = torch.compile(fresh, fullgraph=True, dynamic=False, backend=backend)(x, state)
        except Exception as exc:  # whatever dynamo cannot capture runs eagerly
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            _capturing[0] = False
        if failure is not None:
            warn("capture", f"the step cannot be captured as one graph ({type(failure).__name__}), so it runs eagerly.")
            return None, eager(x, state)
        if len(captured) > 1 or len(results) != len(captured):
            warn("capture", "the step was captured as more than one graph, so it runs eagerly.")
            return None, (y, new_state)
        forward, example_inputs, graph_out = None, [], ()
        if captured:
            forward, example_inputs, graph_out = captured[0][0].forward, captured[0][1], tuple(results[0])
        inputs: list[tuple[int, Any]] = []
        for tensor in example_inputs:
            if not isinstance(tensor, torch.Tensor):
                warn("capture", f"the captured graph takes a {type(tensor).__name__}, so the step runs eagerly.")
                return None, (y, new_state)
            j = _index(tensor, leaves)
            inputs.append((_INPUT, j) if j >= 0 else (_FIXED, tensor))
        fixed = [t for kind, t in inputs if kind == _FIXED]
        out_leaves, out_spec = pytree.tree_flatten((y, new_state))
        outputs: list[tuple[int, Any]] = []
        for leaf in out_leaves:
            if not isinstance(leaf, torch.Tensor):
                warn("capture", f"the step returns a {type(leaf).__name__}, so it runs eagerly.")
                return None, (y, new_state)
            if (k := _index(leaf, list(graph_out))) >= 0:
                outputs.append((_GRAPH, k))
            elif (j := _index(leaf, leaves)) >= 0:
                outputs.append((_INPUT, j))
            elif _index(leaf, fixed) >= 0:
                outputs.append((_FIXED, leaf))
            else:
                warn("capture", "a tensor the step returns is made outside its graph, so it runs eagerly.")
                return None, (y, new_state)
        # A graph's outputs have the layout its inputs' layout gives them, so the state it returns
        # has this layout on every replay: the next call's key needs no walk of the state.
        state_leaves, state_spec = pytree.tree_flatten(new_state)
        state_key = (token(state_spec), _layout(state_leaves))
        return _Graph(forward, inputs, outputs, out_spec, state_key), (y, new_state)

    def step(x: Sequence, state: State) -> tuple[Sequence, State]:
        if not isinstance(x, Sequence):
            raise TypeError(f"sl.replay_step({name}) expects an sl.Sequence input; got {type(x).__name__}.")
        if state is last[0] and state is not None:  # the state this function returned last: leaves known
            leaves = [x.values, x.mask, *last[1]]
            key: Any = (_input_layout(x), last[2])
        else:
            check_step_state(layer, x, state, False, constants)
            _check_tensor_state(layer, state)
            state_leaves, state_spec = pytree.tree_flatten(state)
            leaves = [x.values, x.mask, *state_leaves]
            key = (_input_layout(x), (token(state_spec), _layout(state_leaves)))
        graph = graphs.get(key, False)
        if isinstance(graph, _Graph):
            if torch.is_grad_enabled():
                with torch.no_grad():
                    (y, new_state), out = graph.run(leaves)
            else:  # already under no_grad / inference_mode (a live loop): no context to enter
                (y, new_state), out = graph.run(leaves)
            new_leaves, new_key = out[2:], graph.state_key
        else:
            # A layout that runs eagerly, or a lazy layer, which sizes its parameters in an eager step first.
            if graph is None or has_uninitialized_parameters(layer):
                y, new_state = eager(x, state)
            elif len(graphs) >= max_graphs:
                warn("limit", f"{max_graphs} input layouts are captured already; steps on a new one run eagerly.")
                graphs[key] = None
                y, new_state = eager(x, state)
            else:
                graphs[key], (y, new_state) = capture(x, state, leaves)
            new_leaves, new_spec = pytree.tree_flatten(new_state)
            new_key = (token(new_spec), _layout(new_leaves))
        remember_step_state(layer, x, new_state, False)
        last[0], last[1], last[2] = new_state, new_leaves, new_key
        return y, new_state

    return step
