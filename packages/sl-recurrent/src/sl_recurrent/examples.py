"""sl-recurrent's example layers for the conformance kit (``sl_example_layers``).

Every registered layer appears at least once, in small configurations that exercise its
options (bias, activations, nonlinearity, torch's cells, custom cells with tuple and
user-given initial states, complex and multi-head RG-LRU, both scan types). The shared suite
(``tests/test_examples.py``, ``python -m sl check recurrent``) runs ``verify_contract``
(float32 with declared and random non-contiguous masks, bfloat16), the config round trip and
compiled/exported/ONNX steps on each. Biases are randomised so zeros cannot hide a bug.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from sl.registry import LayerExample
from sl.types import ChannelSpec
from sl_recurrent.cell import RNN
from sl_recurrent.recurrent import GRU, LSTM, VanillaRNN
from sl_recurrent.rglru import RGLRU

__all__ = ["LeakyCell", "example_layers"]

L = TypeVar("L", bound=torch.nn.Module)


def _randomized(layer: L, seed: int = 0) -> L:
    """Random biases (the weights are random already)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "bias" in name or name.endswith(".b"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen).to(p.dtype))
    return layer


class LeakyCell(torch.nn.Module):
    """A custom cell for the examples and tests: ``(x, (h, s)) -> (y, (h', s'))`` with a tuple state.

    ``h' = tanh(W x + U h)``, ``s' = 0.5 s + x`` (a leaky sum of the input, another width),
    ``y = h' + V s'``. ``state=None`` means zeros, as for torch's cells.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.w = torch.nn.Linear(input_size, hidden_size)
        self.u = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = torch.nn.Linear(input_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if state is None:
            state = (x.new_zeros((x.shape[0], self.hidden_size)), torch.zeros_like(x))
        h, s = state
        h = torch.tanh(self.w(x) + self.u(h))
        s = 0.5 * s + x
        return h + self.v(s), (h, s)


def learned_start(batch_size: int, input_spec: ChannelSpec) -> Any:
    """An ``initial_state`` callable for LeakyCell: a non-zero start, to show it is used."""
    width, dtype = input_spec.shape[-1], input_spec.dtype
    return (torch.full((batch_size, 5), 0.25, dtype=dtype), torch.full((batch_size, width), -0.5, dtype=dtype))


def _ex(layer: Any, input_shape: tuple[int, ...], name: str, **kw: Any) -> LayerExample:
    return LayerExample(_randomized(layer), input_shape, name=name, **kw)


def example_layers() -> list[LayerExample]:
    torch.manual_seed(1234)
    custom = {"config_round_trip": False}
    return [
        _ex(LSTM(4, 6), (4,), "LSTM(4->6)"),
        _ex(LSTM(3, 5, bias=False), (3,), "LSTM(3->5, no bias)", random_mask=True),
        _ex(
            LSTM(4, 5, activation="softsign", recurrent_activation="sigmoid"),
            (4,),
            "LSTM(softsign, loop path)",
        ),
        _ex(GRU(4, 6), (4,), "GRU(4->6)"),
        _ex(GRU(3, 4, bias=False), (3,), "GRU(3->4, no bias)", random_mask=True),
        _ex(VanillaRNN(4, 6), (4,), "VanillaRNN(tanh)"),
        _ex(VanillaRNN(3, 5, nonlinearity="relu"), (3,), "VanillaRNN(relu)", random_mask=True),
        _ex(RNN(torch.nn.LSTMCell(4, 5)), (4,), "RNN(LSTMCell)"),
        _ex(RNN(torch.nn.GRUCell(3, 4)), (3,), "RNN(GRUCell)", random_mask=True),
        _ex(RNN(torch.nn.RNNCell(3, 4, nonlinearity="relu", bias=False)), (3,), "RNN(RNNCell relu)"),
        _ex(RNN(LeakyCell(3, 5)), (3,), "RNN(custom cell, tuple state)", **custom),
        _ex(
            RNN(LeakyCell(3, 5), initial_state=learned_start),
            (3,),
            "RNN(custom cell, initial_state)",
            random_mask=True,
            **custom,
        ),
        _ex(RGLRU(8, 2), (8,), "RGLRU(8, 2 heads)"),
        _ex(RGLRU(8, 2, only_real=False), (8,), "RGLRU(complex)", random_mask=True),
        _ex(RGLRU(6, 3, scan_type="linear", min_rad=0.5), (6,), "RGLRU(linear scan, min_rad 0.5)"),
    ]
