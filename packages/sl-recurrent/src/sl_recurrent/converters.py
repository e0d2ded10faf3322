"""Converters for sl-recurrent's layers (reference Flax variable layout -> sl tensors).

Registered by the plugin's ``sl_register_converters`` hook; ``sl.interop.load_flax_params``
uses them. Layouts:

* ``LSTM``: ``kernel/kernel [input, 4 * units]`` -> ``weight_ih_l0`` (transposed),
  ``recurrent_kernel/kernel [units, 4 * units]`` -> ``weight_hh_l0`` (transposed), ``bias`` ->
  ``bias_ih_l0`` with ``bias_hh_l0`` set to zeros (the reference has one bias; the sum is what
  the cell adds). The gate blocks ``(i, f, c, o)`` are in torch's order already.
* ``RGLRU``: ``a_param`` and ``a_imag_param`` as they are; ``input_gate/kernel [heads, in, out]``
  -> ``input_gate.w``, ``input_gate/bias [heads, out]`` -> ``input_gate.b``, the same for ``a_gate``.

GRU, VanillaRNN and RNN have no counterpart in the JAX reference (no converter).
"""

from __future__ import annotations

import numpy as np
import torch

from sl.interop.flax import ConverterRegistry, Variables
from sl_recurrent.recurrent import LSTM
from sl_recurrent.rglru import RGLRU

__all__ = ["register_converters"]


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T if a.ndim == 2 else a  # a wrong rank is reported by the shape check


def _zeros(a: np.ndarray) -> np.ndarray:
    return np.zeros_like(a)


def _convert_lstm(module: torch.nn.Module, variables: Variables) -> None:
    assert isinstance(module, LSTM)
    variables.child("kernel").assign(module.weight_ih_l0, "kernel", transform=_transpose, target_name="weight_ih_l0")
    variables.child("recurrent_kernel").assign(
        module.weight_hh_l0, "kernel", transform=_transpose, target_name="weight_hh_l0"
    )
    variables.assign(module.bias_ih_l0, "bias", target_name="bias_ih_l0")
    if module.bias_hh_l0 is not None and variables.has("bias"):
        variables.assign(module.bias_hh_l0, "bias", transform=_zeros, target_name="bias_hh_l0")


def _convert_rglru(module: torch.nn.Module, variables: Variables) -> None:
    assert isinstance(module, RGLRU)
    variables.assign(module.a_param, "a_param")
    variables.assign(module.a_imag_param, "a_imag_param")
    for name in ("input_gate", "a_gate"):
        gate = getattr(module, name)
        scope = variables.child(name)
        scope.assign(gate.w, "kernel", target_name=f"{name}.w")
        scope.assign(gate.b, "bias", target_name=f"{name}.b")


def register_converters(converters: ConverterRegistry) -> None:
    """sl-recurrent's ``sl_register_converters`` hook."""
    converters.register(LSTM, _convert_lstm)
    converters.register(RGLRU, _convert_rglru)
