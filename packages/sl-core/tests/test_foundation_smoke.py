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
