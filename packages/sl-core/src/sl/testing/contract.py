"""``verify_contract``: the checks every layer must pass (DESIGN.md section 4).

1. ``step``: layer-wise and step-wise outputs agree (after flushing
   ``input_latency`` invalid steps and dropping ``output_latency`` outputs);
   masks must be exactly equal.
2. ``step_2x``: the same with two blocks per step.
3. ``gradients``: input and parameter gradients agree between layer and step.
4. ``padding``: ``4 * block_size`` extra invalid steps and NaN in every invalid
   position change no valid output (layer and step).
5. ``batching``: garbage rows (NaN, mask True) added around the batch change nothing.
6. ``spec`` / ``state``: outputs match ``get_output_spec``; the state keeps its
   structure, shapes and dtypes across steps. ``empty_step``: a 0-length block
   steps to a 0-length output and the same state (structure and values).
   ``aliasing``: the state keeps copies, not views of the input block: the step pass
   overwrites each block after its step, as a live loop refilling one buffer does.
   ``mutation``: ``layer`` and ``step`` leave their input tensors as they were given.
7. ``receptive_field``: the declared receptive field equals the Jacobian's.
   ``latency``: when ``step`` disagrees with ``layer`` but would agree under a
   different output latency, the declared latency is wrong (reported instead of
   ``step``).
8. ``compile`` (opt-in): ``step`` runs under ``torch.compile(fullgraph=True)``
   with the eager results.

Each failure raises :class:`ContractViolation` whose ``check`` names the check.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.errors import SpecMismatchError
from sl.layer import SequenceLayer
from sl.stepping import _block, _empty_output, run_steps, streamed_keys
from sl.testing.sequences import fill_invalid, garbage_value, sequences_close
from sl.types import ChannelSpec, Constants, Sequence, State

__all__ = ["CHECKS", "ContractViolation", "measure_receptive_field", "verify_contract"]

CHECKS = (
    "step",
    "step_2x",
    "latency",
    "gradients",
    "padding",
    "batching",
    "spec",
    "state",
    "empty_step",
    "aliasing",
    "mutation",
    "receptive_field",
    "compile",
)


class ContractViolation(AssertionError):
    """A layer broke its contract; ``check`` is one of :data:`CHECKS`."""

    def __init__(self, check: str, layer: SequenceLayer, message: str) -> None:
        self.check = check
        super().__init__(f"[{check}] {type(layer).__name__}: {message}")


def _floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


@contextlib.contextmanager
def _fork_rng(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _pad_constants(constants: Constants | None, amount: int, keys: Any = True) -> Constants | None:
    if constants is None or amount == 0:
        return constants
    padded = streamed_keys(constants, keys)
    out = {}
    for k, v in constants.items():
        if k in padded and isinstance(v, Sequence):
            v = fill_invalid(v.pad_time(0, amount, valid=False), garbage_value(v.dtype) if _floating(v.dtype) else 0)
        out[k] = v
    return out


def _batch_garbage(x: Sequence) -> Sequence:
    g = garbage_value(x.dtype)
    row_v = torch.full((1, *x.values.shape[1:]), g, dtype=x.dtype, device=x.device)
    row_m = torch.ones((1, x.values.shape[1]), dtype=torch.bool, device=x.device)
    return Sequence(torch.cat([row_v, x.values, row_v], 0), torch.cat([row_m, x.mask, row_m], 0))


def _batch_garbage_constants(constants: Constants | None) -> Constants | None:
    if constants is None:
        return None

    def pad(v: Any) -> Any:
        if isinstance(v, Sequence):
            return _batch_garbage(v)
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            g = garbage_value(v.dtype)
            row = torch.full((1, *v.shape[1:]), g, dtype=v.dtype, device=v.device)
            return torch.cat([row, v, row], 0)
        return v

    return {k: pad(v) for k, v in constants.items()}


def _strip_batch(y: Sequence) -> Sequence:
    return y[1:-1]


def _run_layer(layer: SequenceLayer, x: Sequence, training: bool, constants: Constants | None, seed: int) -> Sequence:
    with _fork_rng(seed):
        return layer.layer(x, training=training, constants=constants)


def _run_step(
    layer: SequenceLayer,
    x: Sequence,
    training: bool,
    constants: Constants | None,
    stream_constants: Any,
    blocks_per_step: int,
    seed: int,
    step_fn: Callable[..., Any] | None = None,
) -> tuple[Sequence, State, State]:
    """Flushes, steps, drops the output latency. Returns (y, initial_state, final_state)."""
    x = x.pad_time(0, layer.input_latency, valid=False)
    if stream_constants:
        constants = _pad_constants(constants, layer.input_latency, stream_constants)
    with _fork_rng(seed):
        state0 = layer.get_initial_state(x.values.shape[0], x.channel_spec, training=training, constants=constants)
        if step_fn is None:
            y, state, _ = run_steps(
                layer,
                x,
                state0,
                block=layer.block_size * blocks_per_step,
                training=training,
                constants=constants,
                stream_constants=stream_constants,
            )
        else:
            y, state = _step_with_fn(layer, x, state0, constants, stream_constants, step_fn)
    return y[:, layer.output_latency :], state0, state


def _step_with_fn(
    layer: SequenceLayer,
    x: Sequence,
    state: State,
    constants: Constants | None,
    stream_constants: Any,
    step_fn: Callable[..., Any],
) -> tuple[Sequence, State]:
    size = layer.block_size
    keys = streamed_keys(constants, stream_constants)
    outs = []
    for start in range(0, x.values.shape[1], size):
        c = constants
        if keys and constants is not None:
            c = {k: (_block(v, start, size) if k in keys else v) for k, v in constants.items()}
        y, state = step_fn(_block(x, start, size), state, c)
        outs.append(y)
    if not outs:
        return _empty_output(layer, x, constants), state
    return Sequence.concatenate_sequences(outs), state


def _scribble(t: torch.Tensor) -> None:
    """Overwrites ``t`` in place with other values (as a caller reusing a buffer would)."""
    if t.dtype == torch.bool:
        t.logical_not_()
    elif t.dtype.is_floating_point or t.dtype.is_complex:
        t.fill_(float("nan"))
    else:
        t.add_(1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN matching NaN (invalid steps may hold NaN)."""
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return torch.equal(a, b)


def _check_input_untouched(
    layer: SequenceLayer, x: Sequence, kept: tuple[torch.Tensor, torch.Tensor], mode: str
) -> None:
    if not (_same(x.values, kept[0]) and torch.equal(x.mask, kept[1])):
        raise ContractViolation(
            "mutation", layer, f"{mode} changed its input in place (the caller's tensors); compute into new tensors"
        )


def _reused_blocks_step_fn(layer: SequenceLayer, training: bool) -> Callable[..., Any]:
    """``layer.step`` on a copy of each block, overwritten after the step as a live loop reuses its
    audio buffer: a state that keeps a view of its input (not a copy) changes the later steps.
    The step must also leave the block as it was given."""

    def step_fn(xb: Sequence, s: State, c: Constants | None) -> Any:
        own = type(xb)._trusted(xb.values.clone(), xb.mask.clone())
        y, s = layer.step(own, s, training=training, constants=c)
        _check_input_untouched(layer, own, (xb.values, xb.mask), "step")
        y = type(y)._trusted(y.values.clone(), y.mask.clone())  # the output may alias the input
        _scribble(own.values)
        _scribble(own.mask)
        return y, s

    return step_fn


def _find_output_latency(
    layer: SequenceLayer,
    x: Sequence,
    y: Sequence,
    training: bool,
    constants: Constants | None,
    stream_constants: Any,
    seed: int,
    rtol: float,
    atol: float,
) -> int | None:
    """The output latency (other than the declared one) at which step lines up with layer, if any."""
    block = layer.block_size
    flush = layer.input_latency + max(8, 2 * layer.input_latency)
    flush += -(x.values.shape[1] + flush) % block
    xp = x.pad_time(0, flush, valid=False)
    c = _pad_constants(constants, flush, stream_constants) if stream_constants else constants
    try:
        with _fork_rng(seed):
            state0 = layer.get_initial_state(xp.values.shape[0], xp.channel_spec, training=training, constants=c)
            y_raw, _, _ = run_steps(
                layer, xp, state0, block=block, training=training, constants=c, stream_constants=stream_constants
            )
    except Exception:
        return None
    if not bool(y.mask.any()):
        return None  # nothing valid to line up
    for lat in range(y_raw.values.shape[1]):
        if lat != layer.output_latency and sequences_close(y, y_raw[:, lat:], rtol=rtol, atol=atol)[0]:
            return lat
    return None


def _check_close(
    check: str, layer: SequenceLayer, a: Sequence, b: Sequence, rtol: float, atol: float, what: str
) -> None:
    ok, reason = sequences_close(a, b, rtol=rtol, atol=atol)
    if not ok:
        raise ContractViolation(check, layer, f"{what}: {reason}")


def _spec_of_state(state: State) -> tuple[Any, list[tuple[tuple[int, ...], torch.dtype]]]:
    leaves, spec = pytree.tree_flatten(state)
    out = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            out.append((tuple(leaf.shape), leaf.dtype))
        else:
            out.append((type(leaf).__name__, leaf))  # type: ignore[arg-type]
    return spec, out


def _check_state(layer: SequenceLayer, initial: State, final: State) -> None:
    spec0, leaves0 = _spec_of_state(initial)
    spec1, leaves1 = _spec_of_state(final)
    for which, leaves in (("initial", leaves0), ("final", leaves1)):
        for i, leaf in enumerate(leaves):
            if not isinstance(leaf[0], tuple):
                raise ContractViolation(
                    "state",
                    layer,
                    f"{which} state leaf {i} is a Python {leaf[0]} ({leaf[1]!r}), not a tensor; step state must "
                    "be tensors (counters too) so that step compiles and its shapes stay fixed",
                )
    if spec0 != spec1:
        raise ContractViolation("state", layer, f"state structure changed while stepping: {spec0} -> {spec1}")
    for i, (a, b) in enumerate(zip(leaves0, leaves1)):
        if a != b:
            raise ContractViolation(
                "state", layer, f"state leaf {i} changed from (shape, dtype) {a} to {b} while stepping"
            )


def _check_empty_step(
    layer: SequenceLayer, x: Sequence, training: bool, constants: Constants | None, stream_constants: Any, seed: int
) -> None:
    """A 0-length block is a valid step (a stream can deliver nothing): no output, same state."""
    empty = x[:, :0]
    c = constants
    if stream_constants and constants is not None:
        keys = streamed_keys(constants, stream_constants)
        c = {k: (v[:, :0] if k in keys else v) for k, v in constants.items()}
    with _fork_rng(seed):
        state0 = layer.get_initial_state(x.values.shape[0], x.channel_spec, training=training, constants=constants)
        try:
            y, state1 = layer.step(empty, state0, training=training, constants=c)
        except Exception as e:
            raise ContractViolation(
                "empty_step", layer, f"step on a 0-length block raised {type(e).__name__}: {e}"
            ) from e
    if y.values.shape[1] != 0:
        raise ContractViolation("empty_step", layer, f"step on a 0-length block returned {y.values.shape[1]} steps")
    try:
        _check_state(layer, state0, state1)
    except ContractViolation as e:
        raise ContractViolation("empty_step", layer, f"after a 0-length block: {e}") from e
    # The same values too: a Streamer keeps its state across a push that completes no block.
    for i, (a, b) in enumerate(zip(pytree.tree_leaves(state0), pytree.tree_leaves(state1))):
        if isinstance(a, torch.Tensor):
            try:
                torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True)
            except AssertionError:
                raise ContractViolation("empty_step", layer, f"a 0-length block changed state leaf {i}") from None


def _output_cotangent(y: Sequence) -> torch.Tensor:
    return y.expanded_mask().to(torch.float32).expand(y.values.shape)


def _loss(y: Sequence) -> torch.Tensor:
    v = y.values
    if v.is_complex():
        v = torch.view_as_real(v).sum(-1)
    cot = _output_cotangent(y)
    v = torch.where(cot.bool(), v, torch.zeros((), dtype=v.dtype, device=v.device))
    return (v.float() * cot).sum()


def _gradients(
    layer: SequenceLayer, run: Callable[[Sequence], Sequence], x: Sequence, params: list[torch.nn.Parameter]
) -> list[torch.Tensor | None]:
    xv = x.values.detach().clone().requires_grad_(_floating(x.dtype))
    xin = type(x)(xv, x.mask)
    y = run(xin).mask_invalid()
    inputs = ([xv] if xv.requires_grad else []) + params
    if not inputs:
        return []
    loss = _loss(y)
    if not loss.requires_grad:
        return [None] * len(inputs)
    grads: list[torch.Tensor | None] = list(torch.autograd.grad(loss, inputs, allow_unused=True))
    if xv.requires_grad and grads[0] is not None:
        grads[0] = torch.where(x.expanded_mask(), grads[0], torch.zeros((), dtype=grads[0].dtype))
    return grads


def _fresh_step_fn(layer: SequenceLayer, training: bool) -> Callable[..., Any]:
    """A step function with its own code object.

    Dynamo caches compiled graphs per code object, so reusing one lambda for every layer
    checked in a process would hit its recompile limit (a hard error under fullgraph).
    """

    def step_fn(xb: Sequence, s: State, c: Constants | None) -> Any:
        return layer.step(xb, s, training=training, constants=c)

    fresh = types.FunctionType(step_fn.__code__.replace(), step_fn.__globals__, "step_fn", None, step_fn.__closure__)
    return fresh


def _as_real(t: torch.Tensor) -> torch.Tensor:
    """Float32 view for comparisons; complex tensors keep both parts."""
    return torch.view_as_real(t).float() if t.is_complex() else t.float()


def measure_receptive_field(
    layer: SequenceLayer,
    x: Sequence,
    *,
    training: bool = False,
    constants: Constants | None = None,
) -> tuple[float, float] | None:
    """The receptive field seen by autograd: input offsets whose values reach each output.

    ``x`` is made all-valid and lengthened with noise to at least twice the declared span,
    as in the reference; offsets are relative to ``floor(output_step / output_ratio)``.
    """
    # Every step becomes valid, so invalid (zero) steps get noise: an all-zero input would
    # hide dependencies behind zero gradients (|y| at 0, ReLU at 0).
    values = x.values
    if _floating(values.dtype):
        values = torch.where(x.expanded_mask(), values, torch.randn(values.shape).to(values.dtype))
    declared = layer.receptive_field
    if declared is not None:
        s, e = declared
        span = (0 if e == math.inf else e) - (0 if s == -math.inf else s) + 1
        need = int(2 * span)
        if values.shape[1] < need:
            noise = torch.randn((values.shape[0], need - values.shape[1], *values.shape[2:])).to(values.dtype)
            values = torch.cat([noise, values], 1)
    values = values.detach().clone()
    if values.is_complex():
        parts = [torch.view_as_real(values).detach().clone().requires_grad_(True)]

        def make(p: list[torch.Tensor]) -> torch.Tensor:
            return torch.view_as_complex(p[0])
    else:
        parts = [values.requires_grad_(True)]

        def make(p: list[torch.Tensor]) -> torch.Tensor:
            return p[0]

    mask = torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
    y = layer.layer(Sequence(make(parts), mask), training=training, constants=constants).mask_invalid().values
    if y.is_complex():
        y = torch.view_as_real(y)
        mag = y.abs().sum(dim=tuple(range(2, y.dim())))
    else:
        mag = y.abs().sum(dim=tuple(range(2, y.dim()))) if y.dim() > 2 else y.abs()
    ratio = layer.output_ratio
    t_out = mag.shape[1]
    start = end = None
    for to in range(t_out):
        (g,) = torch.autograd.grad(mag[:, to].sum(), parts, retain_graph=True, allow_unused=True)
        if g is None:
            continue
        g = torch.where(torch.isfinite(g), g, torch.zeros((), dtype=g.dtype))
        has = (g != 0).reshape(g.shape[0], g.shape[1], -1).any(-1).any(0)
        idx = has.nonzero().flatten()
        if idx.numel() == 0:
            continue
        row = (to * ratio.denominator) // ratio.numerator
        lo = int(idx[0]) - row
        hi = int(idx[-1]) - row
        start = lo if start is None else min(start, lo)
        end = hi if end is None else max(end, hi)
    if start is None or end is None:
        return None
    return (start, end)


def _check_receptive_field(
    layer: SequenceLayer, x: Sequence, training: bool, constants: Constants | None, relaxed: bool
) -> None:
    declared = layer.receptive_field
    if declared is not None and declared[0] == -math.inf and declared[1] == math.inf:
        return
    measured = measure_receptive_field(layer, x, training=training, constants=constants)
    if declared is None or measured is None:
        if declared != measured:
            raise ContractViolation(
                "receptive_field", layer, f"declared receptive field {declared}, measured {measured}"
            )
        return
    ds, de = declared
    ms, me = measured
    if relaxed:
        ok = (ds == -math.inf or ds <= ms) and (de == math.inf or de >= me)
    else:
        ok = (ds == -math.inf or ds == ms) and (de == math.inf or de == me)
    if not ok:
        raise ContractViolation("receptive_field", layer, f"declared receptive field {declared}, measured {measured}")


def verify_contract(
    layer: SequenceLayer,
    x: Sequence,
    *,
    training: bool = False,
    constants: Constants | None = None,
    stream_constants: bool | Any = False,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    grad_rtol: float | None = None,
    grad_atol: float | None = None,
    test_gradients: bool = True,
    test_2x_step: bool = True,
    test_padding_invariance: bool = True,
    test_batching: bool = True,
    test_receptive_field: bool = True,
    test_output_length: bool = True,
    receptive_field_relaxed: bool = False,
    pad_constants: bool = False,
    pad_constants_ratio: int = 1,
    compile: bool = False,
    compile_backend: str = "inductor",
    seed: int = 0,
) -> Sequence:
    """Checks ``layer`` against the contract on input ``x``; returns the layer-wise output.

    ``x`` should come from :func:`sl.testing.random_sequence`. Stochastic layers are
    run with the same RNG seed in every mode. Gradients in bfloat16/float16 also pass within
    4 ulps of the gradient's largest entry (step mode sums them once per step, layer mode
    once per call). Raises :class:`ContractViolation`.
    """
    if not isinstance(x, Sequence):
        raise TypeError(f"verify_contract expects an sl.Sequence input; got {type(x).__name__}.")
    x = x.mask_invalid()
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    grad_atol = atol if grad_atol is None else grad_atol
    block = layer.block_size
    params = [p for p in layer.parameters() if p.requires_grad]

    # Layer pass and its spec.
    kept = (x.values.clone(), x.mask.clone())
    try:
        y = _run_layer(layer, x, training, constants, seed).mask_invalid()
    except SpecMismatchError as e:  # the base class's output checks
        raise ContractViolation("spec", layer, str(e)) from e
    _check_input_untouched(layer, x, kept, "layer")
    spec = layer.get_output_spec(x.channel_spec, constants=constants)
    if y.channel_shape != tuple(spec.shape) or y.dtype != spec.dtype:
        raise ContractViolation(
            "spec",
            layer,
            f"layer output spec {y.channel_spec} != get_output_spec {ChannelSpec(tuple(spec.shape), spec.dtype)}",
        )
    # Some layers change the layer-wise length by design (Delay, Lookahead): opt out. Otherwise
    # T * ratio for whole blocks; for a partial last block anything from floor(T * ratio) to the
    # length of T padded to whole blocks (as step_by_step pads), since layers differ there.
    t_in = x.values.shape[1]
    lo_len = math.floor(t_in * layer.output_ratio)
    hi_len = -(-t_in // block) * block * layer.output_ratio
    if test_output_length and not lo_len <= y.values.shape[1] <= hi_len:
        expected = f"{hi_len}" if lo_len == hi_len else f"between {lo_len} and {hi_len}"
        raise ContractViolation(
            "spec",
            layer,
            f"layer output length {y.values.shape[1]} for input length {t_in} (output_ratio "
            f"{layer.output_ratio}, block_size {block}); expected {expected}",
        )

    # Padding invariance (layer).
    nan_pad = garbage_value(x.dtype) if _floating(x.dtype) else 0
    x_padded = fill_invalid(x.pad_time(0, 4 * block, valid=False), nan_pad)
    padded_constants = (
        _pad_constants(constants, 4 * block * pad_constants_ratio, True if pad_constants else stream_constants)
        if (pad_constants or stream_constants)
        else constants
    )
    if test_padding_invariance:
        y_pad = _run_layer(layer, x_padded, training, padded_constants, seed)
        _check_close(
            "padding", layer, y, y_pad, rtol, atol, "layer output changed when invalid steps were NaN and padded"
        )

    # Batch independence (layer).
    if test_batching:
        y_b = _strip_batch(_run_layer(layer, _batch_garbage(x), training, _batch_garbage_constants(constants), seed))
        _check_close("batching", layer, y, y_b, rtol, atol, "layer output changed when garbage batch rows were added")

    if layer.supports_step:
        reusing = _reused_blocks_step_fn(layer, training)
        y_step, state0, state1 = _run_step(layer, x, training, constants, stream_constants, 1, seed, reusing)
        if not sequences_close(y, y_step, rtol=rtol, atol=atol)[0]:
            y_own, _, _ = _run_step(layer, x, training, constants, stream_constants, 1, seed)
            if sequences_close(y, y_own, rtol=rtol, atol=atol)[0]:
                raise ContractViolation(
                    "aliasing",
                    layer,
                    "step output changed when each input block was overwritten after its step (as a live "
                    "loop reusing one buffer does): the state keeps a view of the input; keep a copy "
                    "(torch.cat or .clone())",
                )
        _check_state(layer, state0, state1)
        _check_empty_step(layer, x, training, constants, stream_constants, seed)
        if y_step.channel_spec != y.channel_spec:
            raise ContractViolation("spec", layer, f"step output spec {y_step.channel_spec} != layer {y.channel_spec}")
        if not sequences_close(y, y_step, rtol=rtol, atol=atol)[0]:
            lat = _find_output_latency(layer, x, y, training, constants, stream_constants, seed, rtol, atol)
            if lat is not None:
                raise ContractViolation(
                    "latency",
                    layer,
                    f"step output lines up with layer output at output latency {lat}, but the layer declares "
                    f"input_latency={layer.input_latency}, output_latency={layer.output_latency}",
                )
        _check_close("step", layer, y, y_step, rtol, atol, "step-wise output differs from layer-wise output")
        if test_2x_step:
            y_step2, _, _ = _run_step(layer, x, training, constants, stream_constants, 2, seed)
            _check_close("step_2x", layer, y, y_step2, rtol, atol, "step-wise output with 2 blocks per step differs")
        if test_padding_invariance:
            y_step_pad, _, _ = _run_step(layer, x_padded, training, padded_constants, stream_constants, 1, seed)
            _check_close("padding", layer, y, y_step_pad, rtol, atol, "step output changed when invalid steps were NaN")
        if test_batching:
            y_step_b, _, _ = _run_step(
                layer, _batch_garbage(x), training, _batch_garbage_constants(constants), stream_constants, 1, seed
            )
            _check_close(
                "batching", layer, y, _strip_batch(y_step_b), rtol, atol, "step output changed with garbage rows"
            )
        if test_gradients and (params or _floating(x.dtype)) and _floating(y.dtype):
            g_layer = _gradients(layer, lambda xi: _run_layer(layer, xi, training, constants, seed), x, params)
            g_step = _gradients(
                layer, lambda xi: _run_step(layer, xi, training, constants, stream_constants, 1, seed)[0], x, params
            )
            names = (["input"] if _floating(x.dtype) else []) + [
                n for n, p in layer.named_parameters() if p.requires_grad
            ]
            for name, a, b in zip(names, g_layer, g_step):
                if a is None and b is None:
                    continue
                a = torch.zeros_like(b) if a is None else a  # type: ignore[arg-type]
                b = torch.zeros_like(a) if b is None else b
                eps = torch.finfo(a.dtype).eps if a.dtype in (torch.bfloat16, torch.float16) else 0.0
                a, b = _as_real(a), _as_real(b)
                atol = grad_atol
                if eps and a.numel():
                    # A low-precision parameter sums its gradient in its own dtype, one rounding per
                    # step in step mode against one per call in layer mode: the difference is a few
                    # ulps of the gradient's largest entry, whatever the size of the entry compared.
                    atol = max(atol, 4 * eps * float(a.abs().max()))
                if not torch.allclose(a, b, rtol=grad_rtol, atol=atol, equal_nan=False):
                    err = (a - b).abs().max().item()
                    raise ContractViolation(
                        "gradients",
                        layer,
                        f"gradient w.r.t. {name} differs between layer and step (max |diff| {err:.3g})",
                    )
        if compile:
            compiled = torch.compile(_fresh_step_fn(layer, training), fullgraph=True, backend=compile_backend)
            try:
                y_c, _, _ = _run_step(layer, x, training, constants, stream_constants, 1, seed, step_fn=compiled)
            except Exception as e:
                raise ContractViolation(
                    "compile", layer, f"step failed under torch.compile(fullgraph=True): {e}"
                ) from e
            _check_close(
                "compile", layer, y_step, y_c, max(rtol, 1e-5), max(atol, 1e-5), "compiled step differs from eager"
            )

    if test_receptive_field and _floating(x.dtype) and _floating(y.dtype):
        _check_receptive_field(layer, x, training, constants, receptive_field_relaxed)
    return y
