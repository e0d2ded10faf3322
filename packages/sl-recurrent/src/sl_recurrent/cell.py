"""``RNN(cell)``: any recurrent cell as a steppable SequenceLayer (the TF reference's ``RNN``).

Two kinds of cell:

* torch's own ``torch.nn.LSTMCell``, ``torch.nn.GRUCell`` and ``torch.nn.RNNCell`` (and
  subclasses that keep their ``forward``): the wrapper runs them with the same kernels as
  :class:`~sl_recurrent.LSTM`/``GRU``/``VanillaRNN`` (one fused call for the whole sequence in
  layer mode, the cell's equations per timestep in ``step``), reading the cell's own
  ``weight_ih``/``weight_hh``/``bias_ih``/``bias_hh``. Output ``[B, T, hidden_size]``; state
  ``{"h": [B, hidden_size]}`` plus ``"c"`` for an LSTMCell, zeros at the start. Their configs
  round-trip (the cell is described as ``{"cell": "LSTMCell", "input_size": ..., ...}``, and the
  constructor accepts that description in place of a module).
* any other ``torch.nn.Module`` following the protocol
  ``cell(x_t, state) -> (output_t, new_state)``: ``x_t`` is one timestep ``[B, *input_channels]``,
  ``output_t`` is ``[B, *output_channels]`` and ``state`` a pytree of tensors whose first axis
  is the batch. Layer mode is a loop over time (an arbitrary cell has no parallel form).
  Such a layer has no config (a module cannot be written to JSON).

The rule for a custom cell's initial state: ``initial_state(batch_size, input_spec)`` if given
(a callable returning the state pytree; its tensors are moved to the layer's device);
otherwise the cell is called once as ``cell(x, None)`` on the ``meta`` device (no memory, no
compute) and the initial state is zeros shaped like the state it returns, so a cell that
accepts ``None`` as "start from zeros" (as torch's cells do) needs nothing more. The output's
channel shape and dtype are measured the same way, once per input spec.

An ``initial_state`` for one of torch's cells returns what that cell takes: ``(h, c)`` for an
LSTMCell, ``h`` for the others.

Masking (all cells): invalid timesteps reach the cell as zeros and leave the state unchanged
(the LSTM rule); the output there is unspecified. Receptive field ``(-inf, 0)``, block size 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl.layer import SequenceLayer
from sl.toolkit import layer_device, promoted_dtype, state_full, track_device
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_recurrent import _kernels
from sl_recurrent.recurrent import check_float_input

__all__ = ["RNN"]

_TORCH_CELLS: dict[str, type[torch.nn.Module]] = {
    "LSTMCell": torch.nn.LSTMCell,
    "GRUCell": torch.nn.GRUCell,
    "RNNCell": torch.nn.RNNCell,
}
_DESCRIPTION_KEYS = {"cell", "input_size", "hidden_size", "bias", "nonlinearity"}


def _torch_cell_mode(cell: torch.nn.Module) -> str | None:
    """The kernel mode of one of torch's cells (None for any other module)."""
    for cls, mode in ((torch.nn.LSTMCell, "lstm"), (torch.nn.GRUCell, "gru"), (torch.nn.RNNCell, "rnn")):
        if isinstance(cell, cls) and type(cell).forward is cls.forward:  # type: ignore[comparison-overlap]
            return f"rnn_{cell.nonlinearity}" if mode == "rnn" else mode
    return None


def _build_torch_cell(description: Mapping[str, Any], device: Any, dtype: torch.dtype | None) -> torch.nn.Module:
    kind = description.get("cell")
    if kind not in _TORCH_CELLS:
        raise ValueError(
            f"RNN: a cell description needs 'cell' set to one of {sorted(_TORCH_CELLS)}; got {kind!r}. "
            "Pass a module for any other cell."
        )
    allowed = _DESCRIPTION_KEYS if kind == "RNNCell" else _DESCRIPTION_KEYS - {"nonlinearity"}
    extra = set(description) - allowed
    if extra:
        raise ValueError(f"RNN: unexpected keys {sorted(extra)} in the {kind} description {dict(description)!r}.")
    kwargs = {k: v for k, v in description.items() if k != "cell"}
    return _TORCH_CELLS[kind](**kwargs, device=device, dtype=dtype)


def _describe(cell: torch.nn.Module, mode: str) -> dict[str, Any]:
    kind = "LSTMCell" if mode == "lstm" else "GRUCell" if mode == "gru" else "RNNCell"
    out: dict[str, Any] = {
        "cell": kind,
        "input_size": int(cell.input_size),  # type: ignore[arg-type]
        "hidden_size": int(cell.hidden_size),  # type: ignore[arg-type]
        "bias": bool(cell.bias),
    }
    if kind == "RNNCell":
        out["nonlinearity"] = cell.nonlinearity
    return out


def _hold(mask_t: torch.Tensor, new: Any, old: Any) -> Any:
    """``new`` where ``mask_t [B]`` is True, else ``old``, leaf by leaf (leaves are ``[B, ...]``)."""

    def pick(n: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return torch.where(mask_t.reshape(mask_t.shape + (1,) * (n.dim() - 1)), n, o)

    return pytree.tree_map(pick, new, old)


class RNN(SequenceLayer):
    """Wraps a recurrent ``cell`` (see the module docstring for the protocol and the state rule).

    >>> layer = RNN(torch.nn.GRUCell(8, 16))        # torch's cells: fused layer mode, config round trip
    >>> layer = RNN(MyCell(), initial_state=fn)     # your own (input, state) -> (output, state) cell
    """

    def __init__(
        self,
        cell: torch.nn.Module | Mapping[str, Any],
        initial_state: Callable[[int, ChannelSpec], Any] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(cell, Mapping):
            cell = _build_torch_cell(cell, device, dtype)
        elif isinstance(cell, SequenceLayer):
            raise TypeError(
                f"RNN wraps a recurrent cell ((input, state) -> (output, state)); got the SequenceLayer "
                f"{type(cell).__name__}, which is already a layer."
            )
        elif not isinstance(cell, torch.nn.Module):
            raise TypeError(
                "RNN expects a torch.nn.Module cell ((input, state) -> (output, state), or torch.nn.LSTMCell/"
                f"GRUCell/RNNCell) or a description of one of torch's cells; got {type(cell).__name__}."
            )
        elif device is not None or dtype is not None:
            cell = cell.to(device=device, dtype=dtype)
        if initial_state is not None and not callable(initial_state):
            raise TypeError(
                f"RNN expects initial_state to be a callable (batch_size, input_spec) -> state; got {initial_state!r}."
            )
        self.cell = cell
        self.initial_state_fn = initial_state
        self._mode = _torch_cell_mode(cell)
        track_device(self)

    # -- metadata -----------------------------------------------------------------------
    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, 0)}

    def _torch_cell_spec(self, input_spec: ChannelSpec) -> ChannelSpec:
        cell: Any = self.cell
        shape = tuple(input_spec.shape)
        if shape != (cell.input_size,):
            raise ValueError(
                f"RNN({type(cell).__name__}) expected input channel shape (input_size,) = ({cell.input_size},); "
                f"got {shape}."
            )
        check_float_input(f"RNN({type(cell).__name__})", input_spec.dtype)
        return ChannelSpec((cell.hidden_size,), promoted_dtype(input_spec.dtype, cell.weight_hh.dtype, None))

    def _probe(self, batch: int, input_spec: ChannelSpec) -> tuple[ChannelSpec, Any]:
        """``(output spec, meta initial state)`` of a custom cell, measured on the meta device (cached)."""
        shape = tuple(int(d) for d in input_spec.shape)
        dtype = input_spec.dtype
        cache = self._probes()
        key = ("probe", batch, shape, dtype)
        hit = cache.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"RNN({type(self.cell).__name__}) measures its output spec eagerly; call get_initial_state or "
                "get_output_spec for this input spec before torch.compile."
            )
        cell_name = type(self.cell).__name__
        check_float_input(f"RNN({cell_name})", dtype)
        tensors = {n: torch.empty_like(t, device="meta") for n, t in self.cell.named_parameters()}
        tensors.update({n: torch.empty_like(t, device="meta") for n, t in self.cell.named_buffers()})
        x = torch.zeros((batch, *shape), dtype=dtype, device="meta")
        if self.initial_state_fn is not None:
            state = self._user_initial_state(batch, ChannelSpec(shape, dtype))
            state = pytree.tree_map(lambda t: torch.empty_like(t, device="meta"), state)
            how = "with the state from initial_state"
        else:
            state = None
            how = "with state=None (its state is derived from what it returns; pass initial_state otherwise)"
        try:
            with torch.no_grad():
                out = torch.func.functional_call(self.cell, tensors, (x, state), strict=False)
        except Exception as e:
            raise TypeError(
                f"RNN could not run the cell {cell_name} on one timestep [{batch}, {', '.join(map(str, shape))}] "
                f"{how} on the meta device: {type(e).__name__}: {e}"
            ) from e
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)):
            raise TypeError(
                f"RNN expects the cell {cell_name} to return (output, new_state) with a tensor output; got "
                f"{type(out).__name__}."
            )
        output, new_state = out
        if output.dim() < 1 or output.shape[0] != batch:
            raise TypeError(
                f"RNN expects the cell {cell_name}'s output to be [batch={batch}, *channels]; got {list(output.shape)}."
            )
        leaves = pytree.tree_leaves(new_state)
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor) or leaf.dim() < 1 or leaf.shape[0] != batch:
                what = list(leaf.shape) if isinstance(leaf, torch.Tensor) else type(leaf).__name__
                raise TypeError(
                    f"RNN expects every state leaf of the cell {cell_name} to be a tensor whose first axis is the "
                    f"batch ({batch}); got {what}."
                )
        if not leaves:
            raise TypeError(f"RNN: the cell {cell_name} returned an empty state; a recurrent cell needs one.")
        spec = ChannelSpec(tuple(output.shape[1:]), output.dtype)
        result = (spec, new_state)
        if len(cache) > 32:
            cache.clear()
        cache[key] = result
        cache["last_shape"] = shape
        return result

    def _probes(self) -> dict[Any, Any]:
        """Measurements of a custom cell (kept across train()/eval(); forgotten by .to() and a new cell)."""
        cache = self.__dict__.get("_rnn_probes")
        if cache is None:
            cache = self.__dict__["_rnn_probes"] = {}
        return cache  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("cell", "initial_state_fn"):
            self.__dict__.pop("_rnn_probes", None)
        super().__setattr__(name, value)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self.__dict__.pop("_rnn_probes", None)
        return super()._apply(fn, recurse)

    def _user_initial_state(self, batch: int, input_spec: ChannelSpec) -> Any:
        assert self.initial_state_fn is not None
        state = self.initial_state_fn(batch, input_spec)
        device = layer_device(self)

        def place(t: Any) -> Any:
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"RNN: initial_state must return a pytree of tensors; it returned a {type(t).__name__} leaf."
                )
            return t.to(device)

        return pytree.tree_map(place, state)

    def get_output_spec(self, input_spec: ChannelSpec, *, constants: Constants | None = None) -> ChannelSpec:
        shape, dtype = input_spec
        spec = ChannelSpec(tuple(shape), dtype)
        if self._mode is not None:
            return self._torch_cell_spec(spec)
        return self._probe(1, spec)[0]

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(self.get_output_spec(ChannelSpec(tuple(input_shape), self._param_dtype())).shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        if self._mode is not None:
            check_float_input(f"RNN({type(self.cell).__name__})", input_dtype)
            cell: Any = self.cell
            return promoted_dtype(input_dtype, cell.weight_hh.dtype, None)
        shape = self._probes().get("last_shape", None)
        if shape is None:
            size = getattr(self.cell, "input_size", None)
            if not isinstance(size, int):
                raise ValueError(
                    f"RNN({type(self.cell).__name__}) measures its output dtype on an input shape; call "
                    "get_output_spec(input_spec) (or run the layer) first."
                )
            shape = (size,)
        return self.get_output_spec(ChannelSpec(shape, input_dtype)).dtype

    def _param_dtype(self) -> torch.dtype:
        for p in self.cell.parameters():
            if p.dtype.is_floating_point:
                return p.dtype
        return torch.get_default_dtype()

    # -- state --------------------------------------------------------------------------
    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if self._mode is not None:
            spec = self._torch_cell_spec(input_spec)
            hidden = spec.shape
            if self.initial_state_fn is not None:
                return self._torch_cell_start(batch_size, input_spec, spec)
            state = {"h": state_full(self, (batch_size, *hidden), 0.0, spec.dtype)}
            if self._mode == "lstm":
                state["c"] = state_full(self, (batch_size, *hidden), 0.0, spec.dtype)
            return state
        self._probe(1, input_spec)
        if self.initial_state_fn is not None:
            return self._user_initial_state(batch_size, input_spec)
        _, meta_state = self._probe(batch_size, input_spec)
        device = layer_device(self)
        return pytree.tree_map(lambda t: torch.zeros(t.shape, dtype=t.dtype, device=device), meta_state)

    def _torch_cell_start(self, batch: int, input_spec: ChannelSpec, spec: ChannelSpec) -> State:
        """``initial_state`` for one of torch's cells, in torch's convention: ``(h, c)`` for an
        LSTMCell, ``h`` for the others (each ``[B, hidden_size]``)."""
        given = self._user_initial_state(batch, input_spec)
        parts = given if self._mode == "lstm" else (given,)
        expected = (batch, *spec.shape)
        if not (
            isinstance(parts, tuple)
            and len(parts) == (2 if self._mode == "lstm" else 1)
            and all(isinstance(p, torch.Tensor) and tuple(p.shape) == expected for p in parts)
        ):
            want = "(h, c), each" if self._mode == "lstm" else "h"
            raise TypeError(
                f"RNN({type(self.cell).__name__}): initial_state must return {want} of shape {list(expected)}, as "
                f"torch's cell takes it; got {given!r:.200}."
            )
        names = ("h", "c")
        return {names[i]: p.to(spec.dtype) for i, p in enumerate(parts)}

    # -- processing ---------------------------------------------------------------------
    def _torch_cell_weights(self, dtype: torch.dtype) -> list[torch.Tensor]:
        cell: Any = self.cell
        tensors = [cell.weight_ih, cell.weight_hh]
        if cell.bias:
            tensors += [cell.bias_ih, cell.bias_hh]
        return [t if t.dtype == dtype else t.to(dtype) for t in tensors]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        spec = self.get_output_spec(x.channel_spec)
        batch, time = x.values.shape[:2]
        if self._mode is not None:
            dtype = spec.dtype
            values = _kernels.mask_values(x.values.to(dtype), x.mask)
            if batch == 0 or time == 0:
                return Sequence._trusted(values.new_zeros((batch, time, *spec.shape)), x.mask)
            weights = self._torch_cell_weights(dtype)
            initial = None
            if self.initial_state_fn is not None:
                initial = self.get_initial_state(batch, x.channel_spec, training=training, constants=constants)
            y = _kernels.fused_layer(self._mode, values, x.mask, weights, len(weights) == 4, training, initial)
            return Sequence._trusted(y, x.mask)
        state = self.get_initial_state(batch, x.channel_spec, training=training, constants=constants)
        y, _ = self._custom_steps(x, state)
        return Sequence._trusted(y, x.mask)

    def _custom_steps(self, x: Sequence, state: Any) -> tuple[torch.Tensor, Any]:
        values = _kernels.mask_values(x.values, x.mask)
        outputs = []
        for t in range(values.shape[1]):
            out, new_state = self.cell(values[:, t], state)
            state = _hold(x.mask[:, t], new_state, state)
            outputs.append(out)
        if outputs:
            return torch.stack(outputs, dim=1), state
        spec = self.get_output_spec(x.channel_spec)
        empty = torch.zeros((values.shape[0], 0, *spec.shape), dtype=spec.dtype, device=values.device)
        return empty, state

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        if self._mode is not None:
            dtype = self._torch_cell_spec(x.channel_spec).dtype
            values = _kernels.mask_values(x.values.to(dtype), x.mask)
            y, new_state = _kernels.cell_steps(self._mode, values, x.mask, state, self._torch_cell_weights(dtype))
            return Sequence._trusted(y, x.mask), new_state
        y, new_state = self._custom_steps(x, state)
        return Sequence._trusted(y, x.mask), new_state

    # -- configuration ------------------------------------------------------------------
    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = dict(arguments)
        if self._mode is not None:
            arguments["cell"] = _describe(self.cell, self._mode)
            dtype = self.cell.weight_hh.dtype
            if arguments.get("dtype") is not None or dtype != torch.get_default_dtype():
                arguments["dtype"] = dtype
        return arguments

    def get_config(self) -> dict[str, Any]:
        """A config for torch's cells (described by their sizes); a custom cell or an
        ``initial_state`` callable has none (a TypeError says so)."""
        name = type(self.cell).__name__
        if self._mode is None:
            raise TypeError(
                f"RNN({name}) has no config: only torch.nn.LSTMCell, GRUCell and RNNCell are described in configs, "
                "and a custom cell is code. Rebuild it in code and keep its weights with state_dict()."
            )
        if self.initial_state_fn is not None:
            raise TypeError(
                f"RNN({name}) has no config: its initial_state callable is code. Rebuild it in code and keep its "
                "weights with state_dict()."
            )
        return super().get_config()

    def extra_repr(self) -> str:
        return "" if self.initial_state_fn is None else f"initial_state={self.initial_state_fn!r}"
