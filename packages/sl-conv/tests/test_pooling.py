"""Pooling: numerics against an independent window implementation, invalid steps never winning
a max or counting in an average, every padding mode's streaming contract, dtypes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sl
from sl.testing import random_sequence, verify_contract
from sl_conv import (
    AveragePooling1D,
    AveragePooling2D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    MinPooling1D,
    MinPooling3D,
)

MODES = (
    "valid",
    "same",
    "causal_valid",
    "reverse_causal_valid",
    "causal",
    "reverse_causal",
    "semicausal",
    "semicausal_full",
)
STEPPABLE = {"reverse_causal_valid", "causal", "reverse_causal", "semicausal"}
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pads(mode: str, ek: int, s: int) -> tuple[int, int]:
    return {
        "valid": (0, 0),
        "same": ((ek - 1) // 2, ek - 1 - (ek - 1) // 2),
        "causal_valid": (ek - 1, 0),
        "causal": (ek - 1, 0),
        "reverse_causal_valid": (0, ek - 1),
        "reverse_causal": (0, ek - 1),
        "semicausal": (max(ek - s, 0), ek - 1 - max(ek - s, 0)),
        "semicausal_full": (max(ek - s, 0), ek - 1),
    }[mode]


def oracle_pool1d(x: sl.Sequence, kind: str, k: int, s: int, d: int, mode: str, masked: bool = False):
    v = x.values.double().numpy()
    m = x.mask.numpy()
    ek = (k - 1) * d + 1
    before, after = _pads(mode, ek, s)
    fill = {"max": -np.inf, "min": np.inf, "avg": 0.0}[kind]
    vv = np.where(m[..., None], v, fill)
    vp = np.pad(vv, ((0, 0), (before, after), (0, 0)), constant_values=fill)
    mp = np.pad(m, ((0, 0), (before, after)), constant_values=mode == "causal_valid")
    mc = np.pad(m, ((0, 0), (before, after)), constant_values=False)
    n = max(0, -(-(vp.shape[1] - ek + 1) // s))
    idx = (np.arange(n) * s)[:, None] + (np.arange(k) * d)[None, :]
    w = vp[:, idx, :]  # [B, n, k, C]
    if kind == "max":
        y = w.max(2)
    elif kind == "min":
        y = w.min(2)
    elif masked:
        count = mc[:, idx].sum(-1)[..., None]
        y = np.where(count > 0, w.sum(2) / np.maximum(count, 1), 0.0)
    else:
        y = w.sum(2) / k
    mw = mp[:, idx]
    if mode in ("valid", "causal_valid", "reverse_causal_valid"):
        mask = mw.all(-1)
    elif mode == "semicausal_full":
        mask = mw.any(-1)
    else:
        mask = m[:, ::s][:, :n]
    return y, mask


@SETTINGS
@given(
    st.sampled_from(["max", "min", "avg", "masked"]),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 2),
    st.sampled_from(MODES),
    st.integers(0, 13),
)
def test_pool1d_matches_oracle(kind, k, s, d, mode, t):
    cls = {"max": MaxPooling1D, "min": MinPooling1D, "avg": AveragePooling1D, "masked": AveragePooling1D}[kind]
    kw = {"masked_average": True} if kind == "masked" else {}
    layer = cls(k, stride=s, padding=mode, dilation=d, **kw)
    x = random_sequence(2, t, 3, random_mask=True)
    ek = (k - 1) * d + 1
    if mode == "valid" and 0 < t < ek:
        with pytest.raises(ValueError, match="needs at least"):
            layer.layer(x, training=False)
        return
    y = layer.layer(x, training=False)
    values, mask = oracle_pool1d(x, "avg" if kind == "masked" else kind, k, s, d, mode, masked=kind == "masked")
    np.testing.assert_array_equal(y.mask.numpy(), mask)
    got = np.where(mask[..., None], y.values.double().numpy(), 0.0)
    np.testing.assert_allclose(got, np.where(mask[..., None], values, 0.0), rtol=1e-6, atol=1e-6)
    assert layer.supports_step == (mode in STEPPABLE)
    if mode in STEPPABLE and t and (k + s + t) % 3 == 0:  # a third of the sampled streaming configs
        verify_contract(layer, x, rtol=1e-6, atol=1e-6, test_receptive_field=False, test_2x_step=False)


def test_invalid_steps_never_win_or_count():
    """Huge invalid values never win a max, tiny ones never a min; averages ignore them when masked."""
    values = torch.tensor([[[1.0], [1e9], [2.0], [-1e9], [3.0]]])
    mask = torch.tensor([[True, False, True, False, True]])
    x = sl.Sequence(values, mask)
    mx = MaxPooling1D(3, padding="causal").layer(x, training=False)
    assert mx.values[0, :, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]
    mn = MinPooling1D(2, padding="causal").layer(x, training=False)
    assert mn.values[0, ::2, 0].tolist() == [1.0, 2.0, 3.0]
    avg = AveragePooling1D(3, padding="causal", masked_average=True).layer(x, training=False)
    torch.testing.assert_close(avg.values[0, :, 0], torch.tensor([1.0, 1.0, 1.5, 2.0, 2.5]))
    plain = AveragePooling1D(3, padding="causal").layer(x, training=False)
    torch.testing.assert_close(plain.values[0, :, 0], torch.tensor([1 / 3, 1 / 3, 1.0, 2 / 3, 5 / 3]))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_and_bool_inputs(dtype):
    x = random_sequence(2, 9, 3, dtype=dtype, random_mask=True)
    for layer in (MaxPooling1D(3, padding="causal"), MinPooling1D(2, stride=2, padding="reverse_causal")):
        y = layer.layer(x, training=False)
        assert y.dtype == dtype
        verify_contract(layer, x, test_receptive_field=False)
    if dtype != torch.bool:
        avg = AveragePooling1D(2, padding="causal", masked_average=True)
        y = avg.layer(x, training=False)
        assert y.dtype == dtype
        verify_contract(avg, x, test_receptive_field=False)


def test_spatial_axes_and_extra_channels():
    x = random_sequence(2, 6, 5, 3, 2, random_mask=True)
    layer = MaxPooling2D((2, 3), stride=(1, 2), time_padding="causal", spatial_padding="same")
    y = layer.layer(x, training=False)
    assert y.channel_shape == (3, 3, 2) == layer.get_output_shape((5, 3, 2))
    xv = x.mask_invalid(-float("inf")).values  # [B, T, H, W, C]: pool T and H, W is carried
    pooled = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(xv.permute(0, 3, 4, 1, 2).reshape(2, 6, 6, 5), (1, 1, 1, 0), value=-float("inf")),
        (2, 3),
        (1, 2),
    )
    want = pooled.reshape(2, 3, 2, 6, 3).permute(0, 3, 4, 1, 2)
    valid = y.mask[..., None, None, None]
    torch.testing.assert_close(torch.where(valid, y.values, 0.0), torch.where(valid, want, 0.0))
    avg = AveragePooling2D((2, 2), time_padding="causal", spatial_padding="valid", masked_average=True)
    verify_contract(avg, random_sequence(2, 7, 3, 2, random_mask=True), test_receptive_field=False)
    verify_contract(MaxPooling3D(2, time_padding="reverse_causal"), random_sequence(2, 6, 3, 3, 2), rtol=1e-6)
    verify_contract(MinPooling3D((2, 1, 2), stride=(2, 1, 1), time_padding="semicausal"), random_sequence(2, 6, 2, 3))


def test_pooling_bad_input():
    with pytest.raises(ValueError, match=r"MaxPooling1D with padding='causal_valid' cannot step; steppable paddings"):
        MaxPooling1D(2, padding="causal_valid").get_initial_state(1, ((3,), torch.float32))
    with pytest.raises(
        ValueError, match=r"MaxPooling2D pools time and 1 channel axes.*rank at least 3.*got channel shape \(\)"
    ):
        MaxPooling2D(2).layer(sl.Sequence.from_values(torch.randn(1, 4)))
    with pytest.raises(
        ValueError, match=r"AveragePooling1D: padding='valid' needs at least 3 timesteps.*got an input of 2"
    ):
        AveragePooling1D(3).layer(sl.Sequence.from_values(torch.randn(1, 2, 2)))
    with pytest.raises(ValueError, match=r"MaxPooling3D expects spatial_padding to be a padding mode or 2 entries"):
        MaxPooling3D(2, spatial_padding=("same",))
    with pytest.raises(ValueError, match=r"min/max pooling is not defined for complex"):
        MaxPooling1D(2, padding="causal").layer(sl.Sequence.from_values(torch.randn(1, 3, 2, dtype=torch.complex64)))
    with pytest.raises(TypeError, match=r"MaxPooling2D expects spatial_padding as a \(before, after\) pair of ints"):
        MaxPooling2D(2, spatial_padding=(True, 0))
