import pytest
import torch
from support_layers import CausalFIR, Decimate

import sl
from sl.testing import random_sequence, verify_contract


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_serial_of_stateful_layers(dtype):
    layer = sl.Serial(CausalFIR(3), CausalFIR(2), Decimate(2), CausalFIR(2)).to(dtype)
    assert layer.block_size == 2
    assert layer.output_ratio == 0.5
    x = random_sequence(3, 14, 4, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    verify_contract(layer, x, rtol=tol, atol=tol, grad_rtol=tol * 10, grad_atol=tol * 10)


def test_serial_compiles_fullgraph():
    layer = sl.Serial(CausalFIR(3), CausalFIR(2))
    x = random_sequence(2, 6, 3)
    verify_contract(layer, x, compile=True)


def test_step_compiles_with_symbolic_lengths():
    # dynamic=True makes the time length a symbolic int: the contract checks in the
    # base class must not mix it with fractions.Fraction.
    layer = sl.Serial(CausalFIR(3), Decimate(2), CausalFIR(2))
    compiled = torch.compile(lambda xb, s: layer.step(xb, s, training=False), fullgraph=True, dynamic=True)
    x = random_sequence(2, 12, 3, random_lengths=False)
    state = eager_state = layer.get_initial_state(2, x.channel_spec)
    for start, stop in ((0, 2), (2, 6), (6, 12)):
        y, state = compiled(x[:, start:stop], state)
        y_eager, eager_state = layer.step(x[:, start:stop], eager_state)
        torch.testing.assert_close(y.values, y_eager.values)
        assert torch.equal(y.mask, y_eager.mask)


def test_autocast_layer_and_step_agree():
    model = sl.Serial(sl.Dense(4, 8, activation="gelu"), sl.Dense(8, 3), sl.Softmax())
    x = random_sequence(2, 6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model.layer(x)
        y_step, _ = sl.step_by_step(model, x)
    assert y.dtype == y_step.dtype == torch.bfloat16
    sl.testing.assert_sequences_close(y, y_step, rtol=1e-2, atol=1e-2)
