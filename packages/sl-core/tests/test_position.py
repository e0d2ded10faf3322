"""AddTimingSignal and ApplyRotaryPositionalEncoding (reference: sequence_layers/jax/position.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sl
from sl.layers.position import AddTimingSignal, ApplyRotaryPositionalEncoding
from sl.testing import random_sequence, tolerances, verify_contract

DTYPES = [torch.float32, torch.bfloat16]


def _np_timing_signal(pos: np.ndarray, channels: int, min_ts: float, max_ts: float) -> np.ndarray:
    """tensor2tensor's get_timing_signal_1d_pos, written out in numpy."""
    n = channels // 2
    inc = math.log(max_ts / min_ts) / max(n - 1, 1)
    inv = min_ts * np.exp(np.arange(n) * -inc)
    t = pos[:, :, None].astype(np.float64) * inv
    sig = np.concatenate([np.sin(t), np.cos(t)], 2)
    return np.pad(sig, [(0, 0), (0, 0), (0, channels % 2)])


def _np_valid_positions(mask: np.ndarray) -> np.ndarray:
    return np.maximum(np.cumsum(mask, 1) - 1, 0)


def _np_rope(x: np.ndarray, pos: np.ndarray, max_wavelength: float, axis: int) -> np.ndarray:
    axis = axis % x.ndim
    d = x.shape[axis]
    ts = max_wavelength ** (2.0 * np.arange(d // 2) / d)
    shape = [1] * x.ndim
    shape[axis] = d // 2
    rad = pos.reshape(pos.shape + (1,) * (x.ndim - 2)) / ts.reshape(shape)
    x1, x2 = np.split(x.astype(np.float64), 2, axis=axis)
    return np.concatenate([x1 * np.cos(rad) - x2 * np.sin(rad), x2 * np.cos(rad) + x1 * np.sin(rad)], axis)


# -- AddTimingSignal -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"trainable_scale": True}, (3,)),
        ({"min_timescale": 10.0, "max_timescale": 1e5, "axes": 0}, (3,)),
        ({"trainable_scale": True, "axes": (1,)}, (5, 4)),
        ({"trainable_scale": True, "axes": [1, 2]}, (2, 3, 3)),
        ({"trainable_scale": True, "axes": (1,), "only_advance_position_for_valid_timesteps": False}, (5, 4)),
        ({"only_advance_position_for_valid_timesteps": False}, (3,)),
    ],
)
@pytest.mark.parametrize("random_mask", [False, True])
def test_add_timing_signal_contract(dtype, kwargs, shape, random_mask):
    layer = AddTimingSignal(**kwargs).to(dtype)
    assert layer.block_size == 1 and layer.output_ratio == 1
    valid_only = kwargs.get("only_advance_position_for_valid_timesteps", True)
    assert layer.receptive_field == ((-math.inf, 0) if valid_only else (0, 0))
    for time in (0, 1, 13):
        x = random_sequence(3, time, *shape, dtype=dtype, random_mask=random_mask)
        verify_contract(layer, x, **tolerances(dtype))


def test_add_timing_signal_params():
    assert list(AddTimingSignal().parameters()) == []
    layer = AddTimingSignal(trainable_scale=True, dtype=torch.bfloat16)
    (scale,) = layer.parameters()
    assert scale.shape == () and scale.dtype == torch.bfloat16 and scale.item() == 1.0


@pytest.mark.parametrize("valid_only", [True, False])
@pytest.mark.parametrize("channels", [6, 7])
def test_add_timing_signal_numerics(valid_only, channels):
    x = random_sequence(2, 11, channels, random_mask=True)
    layer = AddTimingSignal(
        min_timescale=2.0, max_timescale=500.0, only_advance_position_for_valid_timesteps=valid_only
    )
    layer.scale = None
    y = layer.layer(x)
    mask = x.mask.numpy()
    pos = _np_valid_positions(mask) if valid_only else np.broadcast_to(np.arange(11)[None], (2, 11))
    expected = x.values.numpy() + _np_timing_signal(pos, channels, 2.0, 500.0)
    np.testing.assert_allclose(y.values.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(y.mask, x.mask)
    # Odd channel counts get a zero last channel.
    if channels % 2:
        assert torch.equal(y.values[..., -1], x.values[..., -1])


def test_add_timing_signal_trainable_scale_scales_signal():
    x = sl.Sequence.from_values(torch.zeros(2, 5, 4))
    layer = AddTimingSignal(trainable_scale=True)
    base = layer.layer(x).values
    with torch.no_grad():
        layer.scale.fill_(3.0)
    np.testing.assert_allclose(layer.layer(x).values.detach().numpy(), 3 * base.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape,axes,varying", [((2, 3), -1, (1,)), ((2, 3, 5), [0, 2], (0, 2))])
def test_add_timing_signal_axes_broadcast(shape, axes, varying):
    x = sl.Sequence.from_values(torch.zeros(2, 3, *shape))
    out = AddTimingSignal(axes=axes).layer(x).values[0, -1].numpy()
    for axis in range(len(shape)):
        sl0 = tuple(0 if a == axis else slice(None) for a in range(len(shape)))
        sl1 = tuple(1 if a == axis else slice(None) for a in range(len(shape)))
        if axis not in varying:
            np.testing.assert_array_equal(out[sl0], out[sl1])
        else:
            assert not np.array_equal(out[sl0], out[sl1])


def test_add_timing_signal_state_counts_valid_steps():
    layer = AddTimingSignal()
    x = sl.Sequence(torch.zeros(1, 4, 2), torch.tensor([[False, True, False, True]]))
    state = layer.get_initial_state(1, x.channel_spec)
    assert state.shape == (1, 1) and state.dtype == torch.int32 and state.item() == -1
    _, state = layer.step(x, state)
    assert state.item() == 1
    phys = AddTimingSignal(only_advance_position_for_valid_timesteps=False)
    s = phys.get_initial_state(1, x.channel_spec)
    _, s = phys.step(x, s)
    assert s.item() == 4


def test_add_timing_signal_compiles():
    x = random_sequence(2, 6, 4, random_mask=True)
    verify_contract(AddTimingSignal(trainable_scale=True), x, compile=True, compile_backend="eager")


def test_add_timing_signal_bad_inputs():
    with pytest.raises(ValueError, match=r"AddTimingSignal.*floating"):
        AddTimingSignal().layer(random_sequence(2, 3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"AddTimingSignal.*floating"):
        AddTimingSignal().get_initial_state(2, sl.ChannelSpec((4,), torch.int64))
    with pytest.raises(ValueError, match=r"AddTimingSignal axes"):
        AddTimingSignal(axes=(2,)).layer(random_sequence(2, 3, 4, 5))


# -- ApplyRotaryPositionalEncoding -----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((4,), -1), ((3, 6), -1), ((4, 3), 2)])
@pytest.mark.parametrize("valid_only", [False, True])
@pytest.mark.parametrize("fp32", [True, False])
def test_rope_contract(dtype, shape, axis, valid_only, fp32):
    layer = ApplyRotaryPositionalEncoding(
        1.0e4, axis=axis, only_advance_position_for_valid_timesteps=valid_only, positions_in_at_least_fp32=fp32
    )
    assert layer.receptive_field == ((-math.inf, 0) if valid_only else (0, 0))
    for time in (0, 1, 13):
        x = random_sequence(2, time, *shape, dtype=dtype, random_mask=valid_only)
        verify_contract(layer, x, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_positions_from_constants(dtype):
    layer = ApplyRotaryPositionalEncoding(1.0e3, only_advance_position_for_valid_timesteps=False, positions_name="pos")
    assert layer.get_initial_state(2, sl.ChannelSpec((4,), dtype), constants={}) == ()
    x = random_sequence(2, 9, 4, dtype=dtype, random_mask=True)
    pos = sl.Sequence.from_values(torch.randint(0, 50, (2, 9), dtype=torch.int32))
    y = verify_contract(layer, x, constants={"pos": pos}, stream_constants=True, **tolerances(dtype))
    expected = _np_rope(x.values.float().numpy(), pos.values.numpy(), 1.0e3, -1)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    np.testing.assert_allclose(y.values.float().numpy(), expected, rtol=tol, atol=tol)
    # A plain [batch, time] tensor (or a broadcastable [1, time]) works layer-wise.
    y2 = layer.layer(x, constants={"pos": pos.values[:1]})
    np.testing.assert_allclose(
        y2.values.float().numpy(),
        _np_rope(x.values.float().numpy(), pos.values[:1].numpy(), 1.0e3, -1),
        rtol=tol,
        atol=tol,
    )


@pytest.mark.parametrize("valid_only", [True, False])
def test_rope_numerics(valid_only):
    x = random_sequence(2, 10, 3, 6, random_mask=True)
    layer = ApplyRotaryPositionalEncoding(1.0e4, axis=-2, only_advance_position_for_valid_timesteps=valid_only)
    x = random_sequence(2, 10, 6, 3, random_mask=True)
    pos = _np_valid_positions(x.mask.numpy()) if valid_only else np.broadcast_to(np.arange(10)[None], (2, 10))
    y = layer.layer(x)
    np.testing.assert_allclose(y.values.numpy(), _np_rope(x.values.numpy(), pos, 1.0e4, -2), rtol=1e-5, atol=1e-5)


def test_rope_bf16_promotion_matches_reference_weak_typing():
    """positions_in_at_least_fp32 rotates in float32; otherwise the product runs in bfloat16."""
    x = random_sequence(1, 16, 8, random_lengths=False).apply_values(lambda v: 30 * v).to(torch.bfloat16)
    y32 = ApplyRotaryPositionalEncoding(1.0e4).layer(x).values
    y16 = ApplyRotaryPositionalEncoding(1.0e4, positions_in_at_least_fp32=False).layer(x).values
    pos = np.arange(16)[None]
    exact = _np_rope(x.values.float().numpy(), pos, 1.0e4, -1)
    expected32 = torch.from_numpy(exact).float().to(torch.bfloat16)
    # fp32 product then one rounding: within 1 bf16 ulp of the exact value.
    assert torch.allclose(y32.float(), expected32.float(), rtol=8e-3, atol=1e-2)
    assert y32.dtype == y16.dtype == torch.bfloat16
    assert not torch.equal(y32, y16)


def test_rope_compiles():
    x = random_sequence(2, 6, 4, random_mask=True)
    verify_contract(ApplyRotaryPositionalEncoding(1.0e4), x, compile=True, compile_backend="eager")


def test_rope_bad_inputs():
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding.*incompatible"):
        ApplyRotaryPositionalEncoding(1.0e4, positions_name="pos")
    layer = ApplyRotaryPositionalEncoding(1.0e4)
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding.*even"):
        layer.layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding.*floating"):
        layer.layer(random_sequence(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding axis"):
        ApplyRotaryPositionalEncoding(1.0e4, axis=1).layer(random_sequence(2, 3, 4))
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding axis"):
        ApplyRotaryPositionalEncoding(1.0e4, axis=-3).get_initial_state(2, sl.ChannelSpec((4,), torch.float32))
    named = ApplyRotaryPositionalEncoding(1.0e4, only_advance_position_for_valid_timesteps=False, positions_name="pos")
    x = random_sequence(2, 3, 4)
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding requires the constant 'pos'"):
        named.layer(x)
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding expected constant 'pos'.*broadcastable"):
        named.layer(x, constants={"pos": torch.zeros(2, 4, dtype=torch.int32)})
    with pytest.raises(ValueError, match=r"ApplyRotaryPositionalEncoding expected constant 'pos'"):
        named.layer(x, constants={"pos": 3})


# -- registry / examples ----------------------------------------------------------------------


def test_registry():
    assert sl.registry.get("AddTimingSignal") is AddTimingSignal
    assert sl.registry.get("ApplyRotaryPositionalEncoding") is ApplyRotaryPositionalEncoding
    assert sl.registry.get("RoPE") is ApplyRotaryPositionalEncoding
    assert sl.AddTimingSignal is AddTimingSignal
