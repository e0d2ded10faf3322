"""RNN(cell): torch's cells against the cells themselves and the sl layers, custom cells (state
derived on the meta device, or from initial_state), configs, compile, and errors."""

from __future__ import annotations

import json

import pytest
import torch

import sl
from sl.testing import random_sequence, verify_contract
from sl.testing.dtypes import tolerances
from sl_recurrent import GRU, LSTM, RNN
from sl_recurrent.examples import LeakyCell, learned_start


def _cell_loop(cell: torch.nn.Module, x: sl.Sequence, state, unpack) -> torch.Tensor:
    """An independent loop: torch's cell per timestep, the state held where the mask is False."""
    outs = []
    values = torch.where(x.mask.unsqueeze(-1), x.values, 0.0)
    for t in range(values.shape[1]):
        new = cell(values[:, t], state)
        out, new_state = unpack(new)
        keep = x.mask[:, t, None]
        state = (
            tuple(torch.where(keep, n, o) for n, o in zip(new_state, state))
            if isinstance(state, tuple)
            else (torch.where(keep, new_state, state))
        )
        outs.append(out)
    return torch.stack(outs, 1) * x.mask.unsqueeze(-1)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_torch_cells_match_the_cell_run_by_hand(kind):
    torch.manual_seed(0)
    x = random_sequence(3, 10, 4, random_mask=True, generator=torch.Generator().manual_seed(1))
    if kind == "lstm":
        cell = torch.nn.LSTMCell(4, 6)
        state = (torch.zeros(3, 6), torch.zeros(3, 6))

        def unpack(new):
            return new[0], new
    else:
        cell = torch.nn.GRUCell(4, 6) if kind == "gru" else torch.nn.RNNCell(4, 6, nonlinearity="relu")
        state = torch.zeros(3, 6)

        def unpack(new):
            return new, new

    layer = RNN(cell).eval()
    with torch.no_grad():
        want = _cell_loop(cell, x, state, unpack)
        torch.testing.assert_close(layer.layer(x).mask_invalid().values, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sl.step_by_step(layer, x)[0].mask_invalid().values, want, rtol=1e-5, atol=1e-6)


def test_rnn_of_lstm_cell_equals_lstm_with_the_same_weights():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(4, 5)
    lstm = LSTM(4, 5)
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = random_sequence(2, 8, 4, random_mask=True)
    with torch.no_grad():
        torch.testing.assert_close(RNN(cell).layer(x).mask_invalid().values, lstm.layer(x).mask_invalid().values)
    assert set(RNN(cell).get_initial_state(2, x.channel_spec)) == {"h", "c"}


def test_custom_cell_state_is_derived_on_the_meta_device():
    torch.manual_seed(0)
    cell = LeakyCell(3, 5)
    layer = RNN(cell).eval()
    spec = sl.ChannelSpec((3,), torch.float32)
    state = layer.get_initial_state(4, spec)
    assert [tuple(t.shape) for t in state] == [(4, 5), (4, 3)] and all(t.abs().sum() == 0 for t in state)
    assert layer.get_output_spec(spec) == sl.ChannelSpec((5,), torch.float32)
    x = random_sequence(4, 7, 3, random_mask=True)
    with torch.no_grad():
        want = _cell_loop(cell, x, state, lambda new: new)
        torch.testing.assert_close(layer.layer(x).mask_invalid().values, want)
        torch.testing.assert_close(sl.step_by_step(layer, x)[0].mask_invalid().values, want)


def test_custom_cell_initial_state_callable_is_used():
    torch.manual_seed(0)
    cell = LeakyCell(3, 5)
    spec = sl.ChannelSpec((3,), torch.float32)
    with_start = RNN(cell, initial_state=learned_start).eval()
    plain = RNN(cell).eval()
    x = random_sequence(2, 6, 3)
    start = with_start.get_initial_state(2, spec)
    torch.testing.assert_close(start[0], torch.full((2, 5), 0.25))
    with torch.no_grad():
        want = _cell_loop(cell, x, start, lambda new: new)
        torch.testing.assert_close(with_start.layer(x).mask_invalid().values, want)
        assert not torch.allclose(plain.layer(x).mask_invalid().values, want)


def test_custom_cell_contract_and_compiled_step():
    torch.manual_seed(0)
    layer = RNN(LeakyCell(3, 4))
    x = random_sequence(2, 8, 3, random_mask=True)
    verify_contract(layer, x, compile=True, compile_backend="eager", **tolerances(torch.float32))


def test_torch_cell_config_round_trip_keeps_the_dtype():
    layer = RNN(torch.nn.GRUCell(3, 4, dtype=torch.float64))
    config = layer.get_config()
    assert config["cell"] == {"cell": "GRUCell", "input_size": 3, "hidden_size": 4, "bias": True}
    rebuilt = sl.from_config(json.loads(json.dumps(config)))
    assert isinstance(rebuilt.cell, torch.nn.GRUCell) and rebuilt.cell.weight_hh.dtype == torch.float64
    rnn_cell = RNN({"cell": "RNNCell", "input_size": 2, "hidden_size": 3, "nonlinearity": "relu"})
    assert rnn_cell.cell.nonlinearity == "relu" and rnn_cell.get_config()["cell"]["nonlinearity"] == "relu"


def test_errors_name_the_layer_and_the_fix():
    with pytest.raises(TypeError, match=r"RNN wraps a recurrent cell .* got the SequenceLayer GRU"):
        RNN(GRU(3, 4))
    with pytest.raises(TypeError, match=r"RNN expects a torch.nn.Module cell"):
        RNN(lambda x, s: (x, s))
    with pytest.raises(ValueError, match=r"RNN: a cell description needs 'cell' set to one of"):
        RNN({"cell": "ConvCell", "input_size": 2})
    with pytest.raises(ValueError, match=r"RNN: unexpected keys \['nonlinearity'\] in the GRUCell description"):
        RNN({"cell": "GRUCell", "input_size": 2, "hidden_size": 3, "nonlinearity": "tanh"})
    with pytest.raises(TypeError, match=r"RNN\(LeakyCell\) has no config: .*custom cell is code"):
        RNN(LeakyCell(3, 4), initial_state=learned_start).get_config()
    with pytest.raises(TypeError, match=r"RNN\(GRUCell\) has no config: its initial_state callable is code"):
        RNN(torch.nn.GRUCell(3, 4), initial_state=lambda b, s: torch.zeros(b, 4)).get_config()

    class NeedsState(torch.nn.Module):
        def forward(self, x, state):
            return x, state * 2  # fails for state=None

    with pytest.raises(TypeError, match=r"RNN could not run the cell NeedsState .* pass initial_state otherwise"):
        RNN(NeedsState()).get_initial_state(2, sl.ChannelSpec((3,), torch.float32))

    class NoTuple(torch.nn.Module):
        def forward(self, x, state):
            return x

    with pytest.raises(TypeError, match=r"RNN expects the cell NoTuple to return \(output, new_state\)"):
        RNN(NoTuple()).get_output_spec(sl.ChannelSpec((3,), torch.float32))
    with pytest.raises(
        ValueError, match=r"RNN\(LSTMCell\) expected input channel shape \(input_size,\) = \(3,\); got \(4,\)"
    ):
        RNN(torch.nn.LSTMCell(3, 4)).layer(random_sequence(2, 3, 4))
    with pytest.raises(TypeError, match=r"RNN\(GRUCell\) expects floating-point input values"):
        RNN(torch.nn.GRUCell(3, 4)).layer(sl.Sequence.from_values(torch.zeros(2, 3, 3, dtype=torch.int64)))


def test_torch_cell_with_an_initial_state_in_torch_convention():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 4)
    h0, c0 = torch.randn(2, 4), torch.randn(2, 4)
    layer = RNN(cell, initial_state=lambda b, spec: (h0, c0)).eval()
    x = random_sequence(2, 5, 3, random_mask=True)
    with torch.no_grad():
        want = _cell_loop(cell, x, (h0, c0), lambda new: (new[0], new))
        torch.testing.assert_close(layer.layer(x).mask_invalid().values, want)
        torch.testing.assert_close(sl.step_by_step(layer, x)[0].mask_invalid().values, want)
    with pytest.raises(TypeError, match=r"RNN\(GRUCell\): initial_state must return h of shape \[2, 4\]"):
        RNN(torch.nn.GRUCell(3, 4), initial_state=lambda b, spec: torch.zeros(b, 5)).get_initial_state(
            2, sl.ChannelSpec((3,), torch.float32)
        )
