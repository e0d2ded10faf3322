"""RGLRU: numerics against a float64 (complex128) oracle of the reference's equations on any mask
(state held through invalid steps), the three scans against each other, the Flax and
RecurrentGemma layouts, latency shifts, lazy units, dtypes and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sl
from sl.interop import load_flax_params
from sl.testing import random_sequence, verify_contract
from sl.testing.dtypes import tolerances
from sl_recurrent import RGLRU
from sl_recurrent.rglru import _sqrt_bound_derivative, associative_scan, chunked_scan, linear_scan


def _softplus(v):
    return np.log1p(np.exp(v))


def _oracle(layer: RGLRU, x: sl.Sequence) -> np.ndarray:
    """The reference cell in float64 numpy, one row and step at a time; invalid steps keep the state
    and never reset; the reset is at time index 0."""
    p = {k: v.detach().double().numpy() for k, v in layer.state_dict().items()}
    heads, units = layer.num_heads, layer.units
    complex_ = not layer.only_real
    values = x.values.double().numpy()
    mask = x.mask.numpy()
    batch, time = mask.shape
    out = np.zeros((batch, time, units))
    for b in range(batch):
        h = np.zeros(units // 2, complex) if complex_ else np.zeros(units)
        for t in range(time):
            if not mask[b, t]:
                continue
            xt = values[b, t]
            xh = xt.reshape(heads, -1)
            gx = 1 / (1 + np.exp(-(np.einsum("hi,hij->hj", xh, p["input_gate.w"]) + p["input_gate.b"]).reshape(-1)))
            ga = 1 / (1 + np.exp(-(np.einsum("hi,hij->hj", xh, p["a_gate.w"]) + p["a_gate.b"]).reshape(-1)))
            log_a = -8.0 * ga * _softplus(p["a_param"])
            if complex_:
                a = np.exp(log_a + 1j * p["a_imag_param"] * ga)
                xt = xt[: units // 2] + 1j * xt[units // 2 :]
            else:
                a = np.exp(log_a)
            mult = np.sqrt(1 - np.exp(2 * log_a))
            if t == 0:
                a, mult = 0 * a, np.ones_like(mult)
            h = a * h + xt * gx * mult
            out[b, t] = np.concatenate([h.real, h.imag]) if complex_ else h
    return out


def _randomized(layer: RGLRU, seed: int = 0) -> RGLRU:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in (layer.input_gate, layer.a_gate):
            gate.b.normal_(0.0, 0.5, generator=gen)
    return layer.eval()


CONFIGS = [
    {"units": 8, "num_heads": 2},
    {"units": 6, "num_heads": 3, "min_rad": 0.5},
    {"units": 8, "num_heads": 2, "only_real": False},
    {"units": 12, "num_heads": 3, "only_real": False, "scan_type": "associative"},
    {"units": 8, "num_heads": 1, "scan_type": "linear"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("random_mask", [False, True])
def test_matches_the_float64_oracle_on_any_mask(config, random_mask):
    torch.manual_seed(0)
    layer = _randomized(RGLRU(**config))
    x = random_sequence(3, 21, config["units"], random_mask=random_mask, generator=torch.Generator().manual_seed(4))
    want = _oracle(layer, x)
    with torch.no_grad():
        for y in (layer.layer(x), sl.step_by_step(layer, x)[0], sl.step_by_step(layer, x, blocks_per_step=4)[0]):
            np.testing.assert_allclose(y.mask_invalid().values.numpy(), want, rtol=2e-5, atol=2e-6)


def _random_coefficients(shape, complex_: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    a = [torch.rand(shape, generator=gen)]
    b = [torch.randn(shape, generator=gen)]
    if complex_:
        phase = torch.rand(shape, generator=gen) * 3
        a = [a[0] * torch.cos(phase), a[0] * torch.sin(phase)]
        b.append(torch.randn(shape, generator=gen))
    return a, b


@pytest.mark.parametrize("time", [0, 1, 2, 7, 8, 9, 63, 64, 65, 200])
@pytest.mark.parametrize("complex_", [False, True])
def test_scans_agree(time, complex_):
    a, b = _random_coefficients((2, time, 3), complex_, time)
    h0 = [torch.zeros(2, 3) for _ in b]
    want, _ = linear_scan(a, b, h0)
    for got in (associative_scan(a, b), chunked_scan(a, b), chunked_scan(a, b, chunk=5)):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_scan_gradients_agree():
    a, b = _random_coefficients((2, 40, 3), True, 0)
    grads = []
    for scan in (lambda a, b: associative_scan(a, b), lambda a, b: chunked_scan(a, b, chunk=6)):
        leaves = [t.clone().requires_grad_(True) for t in a + b]
        out = scan(leaves[:2], leaves[2:])
        grads.append(torch.autograd.grad(sum((o * o).sum() for o in out), leaves))
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_state_held_through_holes_equals_the_compacted_row():
    """Inserting invalid steps after the first one changes no valid output (the reset stays at t=0)."""
    torch.manual_seed(0)
    layer = _randomized(RGLRU(8, 2, only_real=False))
    dense = torch.randn(1, 6, 8)
    holes = torch.zeros(1, 11, 8)
    where = [0, 2, 3, 6, 9, 10]
    holes[:, where] = dense
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[:, where] = True
    with torch.no_grad():
        a = layer.layer(sl.Sequence.from_values(dense)).values
        b = layer.layer(sl.Sequence(holes, mask)).values[:, where]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_latency_shift_moves_the_reset():
    """Behind upstream output latency, step counts time from -latency so the reset lines up."""
    torch.manual_seed(0)
    model = sl.Serial(sl.Delay(2, delay_layer_output=False), _randomized(RGLRU(4, 2)))
    x = random_sequence(2, 9, 4, random_mask=True)
    verify_contract(model, x, **tolerances(torch.float32))
    state = model.get_initial_state(2, x.channel_spec)
    assert state[1]["time"].tolist() == [-2, -2]


def test_time_counter_saturates():
    layer = RGLRU(4, 1).eval()
    x = random_sequence(2, 3, 4)
    state = layer.get_initial_state(2, x.channel_spec)
    for _ in range(5):
        _, state = layer.step(x, state)
    assert state["time"].tolist() == [1, 1] and state["time"].dtype == torch.int32
    assert state["h"].dtype == torch.float32


def test_bfloat16_keeps_a_float32_state():
    layer = RGLRU(8, 2).to(torch.bfloat16).eval()
    x = random_sequence(2, 5, 8, dtype=torch.bfloat16)
    y, state = layer.step(x, layer.get_initial_state(2, x.channel_spec))
    assert y.dtype == torch.bfloat16 and state["h"].dtype == torch.float32


def test_flax_layout_and_recurrentgemma_names():
    rng = np.random.default_rng(0)
    params = {
        "a_param": rng.standard_normal(4).astype(np.float32),
        "a_imag_param": rng.standard_normal(4).astype(np.float32),
        "input_gate": {"kernel": rng.standard_normal((2, 4, 2)), "bias": rng.standard_normal((2, 2))},
        "a_gate": {"kernel": rng.standard_normal((2, 4, 2)), "bias": rng.standard_normal((2, 2))},
    }
    layer = load_flax_params(RGLRU(8, 2, only_real=False), {"params": params})
    np.testing.assert_allclose(layer.input_gate.w.detach().numpy(), params["input_gate"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(layer.a_gate.b.detach().numpy(), params["a_gate"]["bias"], rtol=1e-6)
    assert set(RGLRU(8, 2).state_dict()) == {"a_param", "input_gate.w", "input_gate.b", "a_gate.w", "a_gate.b"}


def test_reference_initialisers():
    torch.manual_seed(0)
    layer = RGLRU(256, 4, min_rad=0.9, only_real=False)
    radius = torch.exp(-torch.nn.functional.softplus(layer.a_param.detach()))
    assert radius.min() >= 0.9 - 1e-4 and radius.max() <= 0.999 + 1e-4
    assert layer.a_imag_param.min() >= 0 and layer.a_imag_param.max() <= 0.1 * math.pi
    w = layer.input_gate.w.detach()
    assert abs(w.var().item() - 1 / 256) < 0.2 / 256  # variance scale / fan_in (heads * in per head)
    assert torch.count_nonzero(layer.a_gate.b) == 0


def test_infers_units_at_the_first_call_and_from_a_checkpoint():
    layer = RGLRU(num_heads=2)
    x = random_sequence(2, 5, 8)
    verify_contract(layer, x, **tolerances(torch.float32))
    assert layer.units == 8 and layer.get_config()["units"] == 8
    rebuilt = sl.from_config(json.loads(json.dumps(layer.get_config())))
    assert rebuilt.input_gate.w.shape == (2, 4, 4)
    eager = RGLRU(8, 2, only_real=False)
    lazy = RGLRU(num_heads=2, only_real=False)
    lazy.load_state_dict(eager.state_dict())  # a_param has units // 2 entries
    assert lazy.units == 8
    torch.testing.assert_close(lazy.layer(x).values, eager.layer(x).values)


def test_sqrt_gradient_is_bounded():
    x = torch.tensor([0.0, 1e-12, 0.25], requires_grad=True)
    y = _sqrt_bound_derivative(x, 1000.0)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y.detach(), torch.sqrt(x.detach()))
    assert torch.isfinite(g).all() and g[0] == pytest.approx(1000.0) and g[2] == pytest.approx(1.0)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"RGLRU: num_heads=3 must divide units = 8"):
        RGLRU(8, 3)
    with pytest.raises(ValueError, match=r"RGLRU: with only_real=False, units must be even; got units=7"):
        RGLRU(7, 1, only_real=False)
    with pytest.raises(ValueError, match=r"min_rad must be less than 0.999"):
        RGLRU(8, 1, only_real=False, min_rad=0.9995)
    with pytest.raises(ValueError, match=r"RGLRU expects scan_type to be one of"):
        RGLRU(8, 1, scan_type="pallas")
    with pytest.raises(ValueError, match=r"RGLRU expected input channel shape \(units,\) = \(8,\) .*got \(6,\)"):
        RGLRU(8, 2).layer(random_sequence(2, 3, 6))
    with pytest.raises(TypeError, match=r"RGLRU expects floating-point input values"):
        RGLRU(8, 2).layer(sl.Sequence.from_values(torch.zeros(1, 2, 8, dtype=torch.int32)))
    with pytest.raises(TypeError, match=r"RGLRU expects compute_dtype to be None or a torch.dtype.*got str"):
        RGLRU(8, 2, compute_dtype="bfloat16")
    with pytest.raises(TypeError, match=r"RGLRU expects min_rad to be a number; got str"):
        RGLRU(8, 2, min_rad="0.9")
    with pytest.raises(TypeError, match=r"RGLRU expects min_rad to be a number; got bool"):
        RGLRU(8, 2, min_rad=False)
    lazy = RGLRU(num_heads=3)
    with pytest.raises(ValueError, match=r"num_heads=3 must divide units = 8"):
        lazy.layer(random_sequence(1, 2, 8))
    assert lazy.units is None  # still unbuilt: a later input of the right width builds it
    assert lazy.layer(random_sequence(1, 2, 6)).channel_shape == (6,)


@settings(max_examples=10, deadline=None)
@given(
    time=st.integers(0, 40),
    heads=st.sampled_from([1, 2]),
    only_real=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_layer_and_step_match_the_oracle(time, heads, only_real, seed):
    torch.manual_seed(seed)
    layer = _randomized(RGLRU(4, heads, only_real=only_real), seed)
    x = random_sequence(2, time, 4, random_mask=True, generator=torch.Generator().manual_seed(seed))
    want = _oracle(layer, x)
    with torch.no_grad():
        np.testing.assert_allclose(layer.layer(x).mask_invalid().values.numpy(), want, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(
            sl.step_by_step(layer, x)[0].mask_invalid().values.numpy(), want, rtol=2e-5, atol=2e-6
        )


@pytest.mark.parametrize("scan_type", ["auto", "linear", "associative", "chunked"])
@pytest.mark.parametrize("only_real", [True, False])
def test_empty_input_gives_an_empty_output_with_every_scan(scan_type, only_real):
    """A 0-step input is an empty output for every scan (the linear scan once indexed step 0; found by fuzzing)."""
    layer = RGLRU(4, 2, only_real=only_real, scan_type=scan_type)
    x = sl.Sequence(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    with torch.no_grad():
        y = layer.layer(x, training=False)
    assert y.values.shape == (2, 0, 4) and y.mask.shape == (2, 0)
