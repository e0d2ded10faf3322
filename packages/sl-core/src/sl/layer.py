"""The :class:`SequenceLayer` contract and its mixins.

Every layer runs layer-wise (``layer``: the whole sequence) and, when
``supports_step``, step-wise (``step``: one block at a time with explicit state).
The two must agree after accounting for the declared latencies; ``sl.testing``
checks that they do.

Subclasses implement ``layer``/``step`` (or the ``*_with_emits`` pair through
:class:`Emitting`), ``get_initial_state``, ``get_output_shape`` and
``get_output_dtype``, with ``training: bool`` (always a bool: the public call turns
``training=None`` into ``self.training``). The base class wraps those methods once
per subclass. The wrapper validates the outermost call only (the reference's
``check_layer``/``check_step``: input type, step block size, the state against
``get_initial_state``, the output's channel shape and length); calls a layer makes
to its children while it runs are trusted and skip the checks, so a deep stack pays
for them once per call, not once per layer.
"""

from __future__ import annotations

import fractions
import functools
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl import config as _config
from sl.composition_rules import reduce_receptive_field_per_step, validate_receptive_field_per_step
from sl.errors import SpecMismatchError, StateMismatchError
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


class _CallDepth(threading.local):
    """How many checked public calls are running in this thread (0 = the next call is outermost)."""

    depth = 0


_calls = _CallDepth()
_ONE = fractions.Fraction(1)
# Per-instance caches (in __dict__, not module attributes) forgotten on assignment and .to().
_CACHE_KEYS = ("_sl_declared", "_sl_state_signatures", "_sl_last_state", "_sl_dtypes")
_is_compiling = torch.compiler.is_compiling


def _name(layer: Any) -> str:
    return type(layer).__name__


# -- input and output checks ----------------------------------------------------------


def _check_sequence(layer: SequenceLayer, x: Any, method: str) -> None:
    if not isinstance(x, Sequence):
        raise TypeError(
            f"{_name(layer)}.{method} expects an sl.Sequence input; got {type(x).__name__}. "
            "Wrap tensors with sl.Sequence(values, mask) or sl.Sequence.from_values(values)."
        )


def _check_output(layer: SequenceLayer, x: Sequence, y: Any, constants: Constants | None, method: str) -> None:
    if not isinstance(y, Sequence):
        raise TypeError(f"{_name(layer)}.{method} returned {type(y).__name__}, expected an sl.Sequence.")
    # get_output_spec (as the reference's check does), so a layer that needs the dtype to know
    # its shape (Lambda) can override get_output_spec alone.
    expected = tuple(layer.get_output_spec(x.channel_spec, constants=constants).shape)
    if tuple(y.values.shape[2:]) != expected:
        raise SpecMismatchError(
            f"{_name(layer)}.{method} produced channel shape {y.channel_shape} for input channel "
            f"shape {x.channel_shape}, but get_output_spec declares {expected}."
        )


def _check_step_input(layer: SequenceLayer, x: Sequence) -> None:
    if not layer.supports_step:
        raise ValueError(
            f"{_name(layer)} does not support step(): it is not streamable with its current "
            "configuration (see its supports_step property). Use layer() instead."
        )
    block = layer.block_size
    if x.values.shape[1] % block:
        raise ValueError(
            f"{_name(layer)}.step received {x.values.shape[1]} timesteps, which is not a multiple "
            f"of its block_size={block}. Pad the block (Sequence.pad_to_multiple), or use sl.step_by_step "
            "or sl.Streamer, which buffer partial blocks."
        )


def _check_step_length(layer: SequenceLayer, x: Sequence, y: Sequence) -> None:
    # Integer arithmetic only: under torch.compile the lengths may be symbolic ints, which
    # do not mix with fractions.Fraction.
    ratio = layer.output_ratio
    x_len, y_len = x.values.shape[1], y.values.shape[1]
    if y_len * ratio.denominator != x_len * ratio.numerator:
        expected = x_len * ratio.numerator // ratio.denominator
        raise SpecMismatchError(
            f"{_name(layer)}.step produced {y_len} timesteps for {x_len} input timesteps; "
            f"output_ratio={ratio} requires {expected}."
        )


# -- state checks -----------------------------------------------------------------------


def _describe_state(state: State, limit: int = 240) -> str:
    """A compact description of a state's structure: ``(Tensor[2, 3] float32, ())``."""

    def desc(s: Any) -> str:
        if isinstance(s, torch.Tensor):
            return f"Tensor{list(s.shape)} {str(s.dtype).removeprefix('torch.')}"
        if isinstance(s, Sequence):
            return f"{type(s).__name__}(values={desc(s.values)}, mask={desc(s.mask)})"
        if isinstance(s, tuple):
            inner = ", ".join(desc(i) for i in s)
            return f"({inner},)" if len(s) == 1 else f"({inner})"
        if isinstance(s, list):
            return "[" + ", ".join(desc(i) for i in s) + "]"
        if isinstance(s, dict):
            return "{" + ", ".join(f"{k!r}: {desc(v)}" for k, v in s.items()) + "}"
        return f"{type(s).__name__}({s!r})"

    text = desc(state)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state_signature(state: State) -> tuple[Any, list[tuple[str, Any]]]:
    leaves, spec = pytree.tree_flatten_with_path(state)
    out: list[tuple[str, Any]] = []
    for path, leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            out.append((pytree.keystr(path), (tuple(leaf.shape), leaf.dtype)))
        else:
            out.append((pytree.keystr(path), type(leaf).__name__))
    return spec, out


def _constants_key(constants: Constants | None) -> Any:
    if not constants:
        return None
    items: list[tuple[Any, ...]] = []
    for k in sorted(constants):
        v = constants[k]
        if isinstance(v, Sequence):
            items.append((k, tuple(v.values.shape), v.values.dtype))
        elif isinstance(v, torch.Tensor):
            items.append((k, tuple(v.shape), v.dtype))
        else:
            items.append((k, type(v).__name__))
    return tuple(items)


def _validate_state(
    layer: SequenceLayer,
    batch: int,
    spec: ChannelSpec,
    state: State,
    training: bool,
    constants: Constants | None,
    method: str,
) -> None:
    """Compares ``state`` with what ``get_initial_state`` gives for this input (cached per input spec)."""
    key = (batch, spec, training, _constants_key(constants))
    cache: dict[Any, Any] = layer.__dict__.setdefault("_sl_state_signatures", {})
    expected = cache.get(key)
    if expected is None:
        _calls.depth += 1  # a state made only to compare with is not the stream's (not remembered)
        try:
            initial = layer.get_initial_state(batch, spec, training=training, constants=constants)
        finally:
            _calls.depth -= 1
        expected = (_state_signature(initial), _describe_state(initial))
        if len(cache) > 16:
            cache.clear()
        cache[key] = expected
    (exp_spec, exp_leaves), exp_text = expected
    try:
        got_spec, got_leaves = _state_signature(state)
    except Exception:  # an object pytree cannot walk
        got_spec, got_leaves = None, []
    problem = None
    if got_spec != exp_spec:
        problem = f"its structure is {_describe_state(state)}, but get_initial_state gives {exp_text}"
    else:
        for (path, got), (_, want) in zip(got_leaves, exp_leaves):
            if got != want:
                if isinstance(got, tuple) and isinstance(want, tuple):
                    problem = (
                        f"state leaf {path or '(root)'} has shape {list(got[0])} and dtype {got[1]}, but "
                        f"get_initial_state gives shape {list(want[0])} and dtype {want[1]}"
                    )
                else:
                    problem = f"state leaf {path or '(root)'} is {got}, but get_initial_state gives {want}"
                break
    if problem is not None:
        raise StateMismatchError(
            f"{_name(layer)}.{method}: the state does not match "
            f"{'the stream it last started or stepped' if method == 'flush' else 'this input'} (batch_size={batch}, "
            f"input_spec={tuple(spec.shape)} {str(spec.dtype).removeprefix('torch.')}): {problem}. Pass the "
            "state from get_initial_state for this input, or the state the previous step returned."
        )


def _check_state(
    layer: SequenceLayer, x: Sequence, state: State, training: bool, constants: Constants | None, method: str
) -> None:
    # The state the previous outermost step returned is trusted (it is what a stream passes
    # back), so a running stream pays one identity comparison, not a walk of the state.
    last = layer.__dict__.get("_sl_last_state")
    key = (x.values.shape[0], x.values.shape[2:], x.values.dtype, training)
    if last is not None and last[0] == id(state) and last[1] is type(state) and last[2] == key:
        return
    _validate_state(layer, x.values.shape[0], x.channel_spec, state, training, constants, method)


def _remember_state(layer: SequenceLayer, x: Sequence, state: State, training: bool) -> None:
    key = (x.values.shape[0], x.values.shape[2:], x.values.dtype, training)
    layer.__dict__["_sl_last_state"] = (id(state), type(state), key)
    layer.__dict__["_sl_stream_key"] = key


def _check_flush_state(layer: SequenceLayer, state: State, training: bool, constants: Constants | None) -> None:
    """``flush`` has no input to check its state against; it uses the input of the layer's last
    ``get_initial_state`` or ``step``. A stream flushes once, so the state is always compared (no
    identity shortcut). A layer that has done neither (a state loaded in a fresh process) cannot
    be checked."""
    key = layer.__dict__.get("_sl_stream_key")
    if key is None:
        return
    batch, channel_shape, dtype, _ = key
    _validate_state(layer, batch, ChannelSpec(tuple(channel_shape), dtype), state, training, constants, "flush")


def check_step_state(
    layer: SequenceLayer, x: Sequence, state: State, training: bool, constants: Constants | None
) -> None:
    """Raises :class:`StateMismatchError` unless ``state`` fits ``layer.step`` on ``x``: the check the
    step wrapper makes, for callers that step a layer outside it (``sl.compile_step(frozen=True)``).
    The state :func:`remember_step_state` recorded last passes with one identity comparison."""
    _check_state(layer, x, state, training, constants, "step")


def remember_step_state(layer: SequenceLayer, x: Sequence, state: State, training: bool) -> None:
    """Records ``state`` (what a step of ``layer`` on ``x`` returned) as the next trusted state."""
    _remember_state(layer, x, state, training)


# -- the wrappers -----------------------------------------------------------------------


def _declared(
    layer: SequenceLayer, x: Sequence, constants: Constants | None
) -> tuple[int, fractions.Fraction, tuple[int, ...], bool]:
    """``(block_size, output_ratio, output channel shape, supports_step)`` for this input.

    Cached per input spec (without constants: they may shape the output), because a deep
    stack recomputes them from every child; the cache is forgotten on attribute
    assignment and ``.to()`` (see :meth:`SequenceLayer.invalidate_caches`).
    """
    key = (x.values.shape[2:], x.values.dtype)
    cache: dict[Any, Any] | None = layer.__dict__.get("_sl_declared")
    if constants is None and cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
    shape = tuple(layer.get_output_spec(x.channel_spec, constants=constants).shape)
    entry = (layer.block_size, layer.output_ratio, shape, layer.supports_step)
    if constants is None and not _is_compiling():
        if cache is None or len(cache) > 16:
            cache = layer.__dict__["_sl_declared"] = {}
        cache[key] = entry
    return entry


def _mismatched_shape(
    layer: SequenceLayer, x: Sequence, y: Sequence, shape: tuple[int, ...], method: str
) -> SpecMismatchError:
    return SpecMismatchError(
        f"{_name(layer)}.{method} produced channel shape {y.channel_shape} for input channel "
        f"shape {x.channel_shape}, but get_output_spec declares {shape}."
    )


def _wrap_layer(fn: Callable[..., Any], with_emits: bool) -> Callable[..., Any]:
    method = fn.__name__

    @functools.wraps(fn)
    def layer(
        self: SequenceLayer, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> Any:
        if training is None:
            training = self.training
        if _calls.depth:  # called by a layer that is already being checked: trusted
            return fn(self, x, training=training, constants=constants)
        _check_sequence(self, x, method)
        if _is_compiling():  # traced once: the checks cost nothing per call, nested calls skip them
            _calls.depth += 1
            try:
                out = fn(self, x, training=training, constants=constants)
            finally:
                _calls.depth -= 1
            _check_output(self, x, out[0] if with_emits else out, constants, method)
            return out
        _calls.depth += 1
        try:
            out = fn(self, x, training=training, constants=constants)
        finally:
            _calls.depth -= 1
        y = out[0] if with_emits else out
        if not isinstance(y, Sequence):
            raise TypeError(f"{_name(self)}.{method} returned {type(y).__name__}, expected an sl.Sequence.")
        shape = _declared(self, x, constants)[2]
        if y.values.shape[2:] != shape:
            raise _mismatched_shape(self, x, y, shape, method)
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
        if _calls.depth:  # called by a layer that is already being checked: trusted
            return fn(self, x, state, training=training, constants=constants)
        _check_sequence(self, x, method)
        if _is_compiling():  # traced once: the checks cost nothing per call, nested calls skip them
            _check_step_input(self, x)
            _calls.depth += 1
            try:
                out = fn(self, x, state, training=training, constants=constants)
            finally:
                _calls.depth -= 1
            _check_output(self, x, out[0], constants, method)
            _check_step_length(self, x, out[0])
            return out
        block, ratio, shape, steppable = _declared(self, x, constants)
        if not steppable or x.values.shape[1] % block:
            _check_step_input(self, x)
        _check_state(self, x, state, training, constants, method)
        _calls.depth += 1
        try:
            out = fn(self, x, state, training=training, constants=constants)
        finally:
            _calls.depth -= 1
        y = out[0]
        if not isinstance(y, Sequence):
            raise TypeError(f"{_name(self)}.{method} returned {type(y).__name__}, expected an sl.Sequence.")
        if y.values.shape[2:] != shape:
            raise _mismatched_shape(self, x, y, shape, method)
        if y.values.shape[1] * ratio.denominator != x.values.shape[1] * ratio.numerator:
            _check_step_length(self, x, y)
        _remember_state(self, x, out[1], training)
        return out

    step.__sl_checked__ = True  # type: ignore[attr-defined]
    return step


def coerce_spec(layer: SequenceLayer, input_spec: Any) -> ChannelSpec:
    """``input_spec`` as a ChannelSpec: accepts one, or a ``(shape, dtype)`` pair; a TypeError naming
    ``layer`` says exactly what it wants otherwise."""
    if isinstance(input_spec, ChannelSpec):
        return input_spec
    if isinstance(input_spec, Sequence):
        raise TypeError(
            f"{_name(layer)}.get_initial_state expects the input's channel spec, not a Sequence: pass x.channel_spec."
        )
    if isinstance(input_spec, (tuple, list)) and len(input_spec) == 2 and isinstance(input_spec[1], torch.dtype):
        shape = input_spec[0]
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if isinstance(shape, (tuple, list, torch.Size)) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            return ChannelSpec(tuple(shape), input_spec[1])
    raise TypeError(
        f"{_name(layer)}.get_initial_state expects input_spec as sl.ChannelSpec(shape, dtype) or a (shape, dtype) "
        f"pair (the channel shape, without batch and time, e.g. x.channel_spec or ((80,), torch.float32)); "
        f"got {input_spec!r}."
    )


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
        if _calls.depth:
            return fn(self, batch_size, input_spec, training=training, constants=constants)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, torch.SymInt)) or batch_size < 0:
            raise TypeError(
                f"{_name(self)}.get_initial_state expects a non-negative int batch_size; got {batch_size!r}."
            )
        input_spec = coerce_spec(self, input_spec)
        if _is_compiling():
            return fn(self, batch_size, input_spec, training=training, constants=constants)
        _calls.depth += 1
        try:
            state = fn(self, batch_size, input_spec, training=training, constants=constants)
        finally:
            _calls.depth -= 1
        # The stream's input, for checking the state a later flush gets (only the key: trusting the
        # object's id would trust whatever reuses it once a discarded state is freed).
        self.__dict__["_sl_stream_key"] = (batch_size, torch.Size(input_spec.shape), input_spec.dtype, training)
        return state

    get_initial_state.__sl_checked__ = True  # type: ignore[attr-defined]
    return get_initial_state


def _wrap_flush(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def flush(
        self: SequenceLayer, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> Sequence | None:
        if training is None:
            training = self.training
        if _calls.depth or _is_compiling():  # a combinator's child, or traced: trusted
            return fn(self, state, training=training, constants=constants)  # type: ignore[no-any-return]
        _check_flush_state(self, state, training, constants)
        _calls.depth += 1
        try:
            return fn(self, state, training=training, constants=constants)  # type: ignore[no-any-return]
        finally:
            _calls.depth -= 1

    flush.__sl_checked__ = True  # type: ignore[attr-defined]
    return flush


_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "layer": lambda f: _wrap_layer(f, with_emits=False),
    "layer_with_emits": lambda f: _wrap_layer(f, with_emits=True),
    "step": lambda f: _wrap_step(f, with_emits=False),
    "step_with_emits": lambda f: _wrap_step(f, with_emits=True),
    "get_initial_state": _wrap_initial_state,
    "flush": _wrap_flush,
}


class SequenceLayer(torch.nn.Module):
    """Base class of every layer. See the module docstring for the contract.

    Constructor arguments are recorded automatically (the base class wraps each
    subclass ``__init__``), so every layer has ``get_config()`` without writing any
    code; override :meth:`normalize_config` to store an argument in a canonical form.
    """

    _sl_init_args: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        if "_sl_init_args" not in self.__dict__:  # a layer without an __init__ of its own
            object.__setattr__(self, "_sl_init_args", {})

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
        return _ONE

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
                f"Input to {_name(self)} has a step-wise incoming output_latency={output_latency} "
                f"which is not divisible by the layer's output_ratio={ratio}. Insert "
                f"sl.Delay({int(required)}, delay_layer_output=False) before the layer "
                "(-output_latency % (1/output_ratio)) to compensate."
            )
        return int(output_latency * ratio) + self.output_latency

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        """Per output phase ``{step: (start, end)}``, relative to ``floor(step / ratio)``."""
        raise NotImplementedError(f"receptive_field_per_step is not implemented by {_name(self)}.")

    @property
    def receptive_field(self) -> ReceptiveField:
        """Union of ``receptive_field_per_step``: input offsets that affect an output."""
        rf = self.receptive_field_per_step
        validate_receptive_field_per_step(rf)
        return reduce_receptive_field_per_step(rf)

    # -- processing -----------------------------------------------------------------
    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        raise NotImplementedError(f"{_name(self)} does not implement layer().")

    def layer_with_emits(
        self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self.layer(x, training=training, constants=constants), ()

    def step(
        self, x: Sequence, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        raise NotImplementedError(f"{_name(self)} does not implement step().")

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
        raise NotImplementedError(f"{_name(self)} does not implement get_initial_state().")

    def shift_initial_state(self, state: State, latency: int) -> State:
        """The initial state for a stream whose step-wise input reaches this layer ``latency``
        timesteps late (the output latency accumulated by the layers before it).

        Upstream latency delays step-wise inputs relative to layer-wise ones: the first
        ``latency`` step inputs are the invalid filler that lines the stream up. Layers
        whose output depends on the absolute time index (positions, per-step
        parameters) count from ``-latency`` so step and layer agree; combinators pass
        the shift to their children. Everything else ignores it (the default).
        """
        return state

    def flush(
        self, state: State, *, training: bool | None = None, constants: Constants | None = None
    ) -> Sequence | None:
        """End of stream: outputs that ``state`` still holds and no further input would release.

        Most layers owe nothing once their ``input_latency`` has been fed as invalid steps
        (``sl.Streamer.flush`` does that first), so the default is ``None``. Layers with an
        output tail (overlap-add, transposed convolutions) return it here; combinators pass
        a child's flushed output through the layers after it. The result is a Sequence of
        any whole number of the layer's output blocks.
        """
        return None

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        raise NotImplementedError(f"{_name(self)} does not implement get_output_shape().")

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        raise NotImplementedError(f"{_name(self)} does not implement get_output_dtype().")

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
    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Hook: the constructor arguments ``get_config`` records, in canonical form.

        ``arguments`` are the arguments the layer was built with (defaults filled in).
        Override to store a normalised value (``Slice`` stores its parsed slices); the
        result must rebuild an equal layer through the constructor. The default records
        the parameters' current dtype as ``dtype`` (so a layer moved with ``.to()`` says so).
        """
        if "dtype" in arguments:
            dtype = _parameter_dtype(self)
            if dtype is not None and (arguments["dtype"] is not None or dtype != torch.get_default_dtype()):
                arguments = {**arguments, "dtype": dtype}
        return arguments

    def get_config(self) -> dict[str, Any]:
        """A JSON-able description (``{"type": name, **args}``) that ``sl.from_config`` rebuilds."""
        return _config.layer_config(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> SequenceLayer:
        return _config.from_config(config, expected_type=cls, **kwargs)

    def extra_repr(self) -> str:
        args = self.__dict__.get("_sl_init_args")
        if not args:
            return ""
        parts = []
        for k, v in self.normalize_config(dict(args)).items():
            if isinstance(v, torch.nn.Module):
                continue
            if isinstance(v, (list, tuple)) and any(isinstance(i, torch.nn.Module) for i in v):
                continue
            parts.append(f"{k}={v!r}")
        return ", ".join(parts)

    def invalidate_caches(self) -> None:
        """Forgets what the call checks cached about this layer (its declared output shape,
        block size and ratio per input spec, and its expected state). Attribute assignment
        and ``.to()`` do this automatically; call it after editing a child container in
        place (``serial.layers.append(...)``)."""
        for module in self.modules():
            for key in _CACHE_KEYS:
                module.__dict__.pop(key, None)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        # train()/eval() set `training`, which changes no metadata: keep the caches then.
        if name != "training" and ("_sl_declared" in d or "_sl_state_signatures" in d or "_sl_dtypes" in d):
            for key in _CACHE_KEYS:
                d.pop(key, None)
        super().__setattr__(name, value)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Any:
        # .to()/.cuda()/.half() change what get_initial_state returns: forget cached checks.
        for key in _CACHE_KEYS:
            self.__dict__.pop(key, None)
        return super()._apply(fn, recurse)


def _parameter_dtype(layer: torch.nn.Module) -> torch.dtype | None:
    for p in layer.parameters(recurse=False):
        if p.dtype.is_floating_point or p.dtype.is_complex:
            return p.dtype
    return None


def get_constant(layer: SequenceLayer, constants: Constants | None, name: str) -> Any:
    """Reads ``constants[name]`` with an error that names the layer when it is missing."""
    if constants is None or name not in constants:
        have = sorted(constants) if constants else []
        raise ValueError(
            f"{_name(layer)} requires the constant {name!r}, but it was not provided "
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

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self.layer_with_emits(x, training=training, constants=constants)[0]

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
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
        training: bool,
        constants: Constants | None = None,
    ) -> State:
        return ()

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        return self.layer(x, training=training, constants=constants), state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        y, emits = self.layer_with_emits(x, training=training, constants=constants)
        return y, state, emits


class StatelessEmitting(Emitting, Stateless):
    """Stateless and emitting: implement ``layer_with_emits`` only."""


class StatelessPointwise(PreservesShape, Stateless):
    """Stateless and shape-preserving, operating on each timestep independently."""


class StatelessPointwiseFunctor(StatelessPointwise):
    """Pointwise ``fn(values, mask) -> (values, mask)``.

    Set ``mask_required = False`` when ``fn(0) == 0`` so a MaskedSequence input
    stays a MaskedSequence (no re-masking downstream).
    """

    mask_required: bool = True

    def fn(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{_name(self)} does not implement fn().")

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        if self.mask_required or not isinstance(x, MaskedSequence):
            return x.apply(self.fn)
        return x.apply_masked(self.fn)
