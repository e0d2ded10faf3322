"""The recurrences behind LSTM, GRU, VanillaRNN and RNN(torch cell), on plain tensors.

Two paths, one set of equations (torch.nn's gate conventions):

* :func:`fused_layer`: the whole sequence through torch's fused kernels
  (``torch._VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu``, what ``torch.nn.LSTM`` calls; cuDNN
  on CUDA, oneDNN/ATen on CPU). The kernels run every row from ``t = 0`` with no mask, which
  is exact for the valid steps of a row whose mask is a prefix (causality: the invalid tail
  comes after them). A row with holes is made a prefix first: its valid steps are gathered
  to the front in order (a stable sort of the mask), the kernel runs, and the outputs are
  gathered back. Holding the state through invalid steps is exactly "skip them", so this is
  the same recurrence, still one fused call. Whether every row already is a prefix is one
  bool read from the device (skipped under ``torch.compile``, which always gathers).
* :func:`cell_steps`: a loop over the timesteps of a block with the state held where the mask
  is False (``torch.where``, no host syncs, fixed shapes): ``step`` and the layer-wise
  fallback for activations the fused kernels do not have. The input projection of the whole
  block is one matmul; only the recurrent projection runs per timestep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["GATES", "Activation", "cell_steps", "fused_layer", "is_prefix_mask", "mask_values"]

Activation = Callable[[torch.Tensor], torch.Tensor]

# Gate blocks per mode, in torch.nn's order: LSTM (i, f, g, o), GRU (r, z, n), RNN (one).
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def mask_values(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zeros at invalid steps (``where``, so NaN padding reaches neither values nor gradients)."""
    keep = mask.reshape(mask.shape + (1,) * (values.dim() - 2))
    return torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))


def is_prefix_mask(mask: torch.Tensor) -> bool:
    """Whether every row's valid steps form a prefix (one bool read from the device)."""
    if mask.shape[1] < 2:
        return True
    return not bool((mask[:, 1:] & ~mask[:, :-1]).any())


def _run_fused(
    mode: str,
    values: torch.Tensor,
    weights: list[torch.Tensor],
    has_bias: bool,
    training: bool,
    initial: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    if initial is None:
        batch = values.shape[0]
        hidden = weights[1].shape[1]
        h0 = c0 = torch.zeros((1, batch, hidden), dtype=values.dtype, device=values.device)
    else:
        h0 = initial["h"].unsqueeze(0)
        c0 = initial["c"].unsqueeze(0) if mode == "lstm" else h0
    vf: Any = torch._VF  # type: ignore[attr-defined]
    out: Any
    if mode == "lstm":
        out = vf.lstm(values, (h0, c0), weights, has_bias, 1, 0.0, training, False, True)
    elif mode == "gru":
        out = vf.gru(values, h0, weights, has_bias, 1, 0.0, training, False, True)
    elif mode == "rnn_tanh":
        out = vf.rnn_tanh(values, h0, weights, has_bias, 1, 0.0, training, False, True)
    else:
        out = vf.rnn_relu(values, h0, weights, has_bias, 1, 0.0, training, False, True)
    return out[0]  # type: ignore[no-any-return]


def fused_layer(
    mode: str,
    values: torch.Tensor,
    mask: torch.Tensor,
    weights: list[torch.Tensor],
    has_bias: bool,
    training: bool,
    initial: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Outputs ``[B, T, hidden]`` of the recurrence from ``initial`` (``{"h", "c"}`` ``[B, hidden]``;
    None: zeros), exact on valid steps.

    ``values`` must already be masked (:func:`mask_values`) and in the weights' dtype;
    ``weights`` are ``[w_ih, w_hh(, b_ih, b_hh)]`` in torch.nn's layout.
    """
    if torch.compiler.is_compiling() or not is_prefix_mask(mask):
        # Valid steps to the front of each row, in order; invalid ones after them.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        gathered = torch.gather(values, 1, order.unsqueeze(-1).expand_as(values))
        y = _run_fused(mode, gathered, weights, has_bias, training, initial)
        back = torch.argsort(order, dim=1)
        return torch.gather(y, 1, back.unsqueeze(-1).expand_as(y))
    return _run_fused(mode, values, weights, has_bias, training, initial)


def _lstm_update(
    gates: torch.Tensor, c: torch.Tensor, activation: Activation, recurrent_activation: Activation
) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
    h_new = recurrent_activation(o) * activation(c_new)
    return h_new, c_new


def cell_steps(
    mode: str,
    values: torch.Tensor,
    mask: torch.Tensor,
    state: dict[str, torch.Tensor],
    weights: list[torch.Tensor],
    activation: Activation = torch.tanh,
    recurrent_activation: Activation = torch.sigmoid,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Runs ``values [B, T, in]`` (masked, compute dtype) from ``state`` one timestep at a time.

    ``state`` is ``{"h": [B, H]}`` (and ``"c"`` for LSTM). Where ``mask[:, t]`` is False the
    state is carried through unchanged; the output there is the would-be update (invalid).
    Returns ``(y [B, T, H], new_state)``.
    """
    w_ih, w_hh = weights[0], weights[1]
    b_ih = weights[2] if len(weights) > 2 else None
    b_hh = weights[3] if len(weights) > 3 else None
    projected = F.linear(values, w_ih, b_ih)  # [B, T, G * H]: one matmul for the block
    h = state["h"]
    c = state.get("c")
    outputs = []
    for t in range(values.shape[1]):
        keep = mask[:, t, None]
        xp = projected[:, t]
        hp = F.linear(h, w_hh, b_hh)
        if mode == "lstm":
            assert c is not None
            h_new, c_new = _lstm_update(xp + hp, c, activation, recurrent_activation)
            c = torch.where(keep, c_new, c)
        elif mode == "gru":
            x_r, x_z, x_n = xp.chunk(3, dim=-1)
            h_r, h_z, h_n = hp.chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h_new = n + z * (h - n)
        elif mode == "rnn_tanh":
            h_new = torch.tanh(xp + hp)
        else:
            h_new = torch.relu(xp + hp)
        h = torch.where(keep, h_new, h)
        outputs.append(h_new)
    if outputs:
        y = torch.stack(outputs, dim=1)
    else:
        y = values.new_zeros((values.shape[0], 0, w_hh.shape[1]))
    new_state = {"h": h}
    if c is not None:
        new_state["c"] = c
    return y, new_state
