"""Downsample1D, Upsample1D, Upsample2D (reference simple.py)."""

from __future__ import annotations

import fractions

import pytest
import torch

import sl
from sl.layers import resampling
from sl.testing import random_sequence, tolerances, verify_contract
from sl.testing.sequences import assert_sequences_equal

DTYPES = [torch.float32, torch.bfloat16]


def _hand_made() -> sl.Sequence:
    values = torch.arange(1, 13, dtype=torch.float32).reshape(2, 6, 1)
    return sl.Sequence.from_lengths(values, [3, 6]).mask_invalid()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [1, 2, 3])
@pytest.mark.parametrize("random_mask", [False, True])
def test_downsample1d_contract(dtype, rate, random_mask):
    layer = resampling.Downsample1D(rate).to(dtype)
    assert layer.block_size == rate
    assert layer.output_ratio == fractions.Fraction(1, rate)
    assert layer.input_latency == rate - 1 and layer.output_latency == 0
    assert layer.receptive_field_per_step == {0: (0, 0)}
    x = random_sequence(3, 4 * rate, 2, 2, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert isinstance(y, sl.MaskedSequence) and y.values.shape == (3, 4, 2, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [1, 2, 3])
@pytest.mark.parametrize("random_mask", [False, True])
def test_upsample1d_contract(dtype, rate, random_mask):
    layer = resampling.Upsample1D(rate).to(dtype)
    assert layer.block_size == 1 and layer.output_ratio == rate
    assert layer.input_latency == 0 and layer.output_latency == 0
    assert layer.receptive_field_per_step == dict.fromkeys(range(rate), (0, 0))
    x = random_sequence(3, 5, 2, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert y.values.shape == (3, 5 * rate, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [2, (1, 3), (3, 2)])
@pytest.mark.parametrize("random_mask", [False, True])
def test_upsample2d_contract(dtype, rate, random_mask):
    layer = resampling.Upsample2D(rate).to(dtype)
    rt, rf = (rate, rate) if isinstance(rate, int) else rate
    assert layer.output_ratio == rt
    assert layer.receptive_field_per_step == dict.fromkeys(range(rt), (0, 0))
    assert layer.get_output_shape((4, 3)) == (4 * rf, 3)
    x = random_sequence(2, 5, 4, 3, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert y.values.shape == (2, 5 * rt, 4 * rf, 3)


@pytest.mark.parametrize(
    "layer", [resampling.Downsample1D(4), resampling.Upsample1D(2), resampling.Upsample2D((2, 2))], ids=str
)
def test_short_and_empty_lengths(layer):
    shape = (2, 2) if isinstance(layer, resampling.Upsample2D) else (2,)
    # Every length in [0, 3] is shorter than Downsample1D(4)'s block.
    x = random_sequence(4, 8, *shape, high_length=3)
    verify_contract(layer, x)
    empty = random_sequence(2, 4, *shape, high_length=0)
    assert not layer.layer(empty).mask.any()


def test_downsample1d_reference_values():
    x = _hand_made()
    y = resampling.Downsample1D(2).layer(x)
    assert isinstance(y, sl.MaskedSequence)
    assert y.values[:, :, 0].tolist() == [[1, 3, 0], [7, 9, 11]]
    assert y.mask.tolist() == [[True, True, False], [True, True, True]]
    y3 = resampling.Downsample1D(3).layer(x)
    assert y3.values[:, :, 0].tolist() == [[1, 0], [7, 10]]
    assert y3.mask.tolist() == [[True, False], [True, True]]
    # Unmasked input stays unmasked; the mask is decimated like the values.
    y_plain = resampling.Downsample1D(2).layer(x.unmask())
    assert type(y_plain) is sl.Sequence
    # A length that is not a multiple of the rate keeps ceil(T / rate) steps (reference slicing).
    assert resampling.Downsample1D(4).layer(x).values.shape[1] == 2
    # Step-wise: block by block, flushed by input_latency.
    ys, _ = sl.step_by_step(resampling.Downsample1D(2), x.pad_time(0, 1, valid=False), align_latency=False)
    assert_sequences_equal(ys, y)


def test_upsample1d_reference_values():
    x = _hand_made()[:, :3]
    y = resampling.Upsample1D(2).layer(x)
    assert isinstance(y, sl.MaskedSequence)
    assert y.values[:, :, 0].tolist() == [[1, 1, 2, 2, 3, 3], [7, 7, 8, 8, 9, 9]]
    assert y.mask.tolist() == [[True] * 6, [True] * 6]
    x = _hand_made()
    y = resampling.Upsample1D(3).layer(x)
    assert y.mask[0].tolist() == [True] * 9 + [False] * 9
    ys, _ = sl.step_by_step(resampling.Upsample1D(3), x)
    assert_sequences_equal(ys, y)


def test_upsample2d_reference_values():
    values = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)
    x = sl.Sequence(values, torch.tensor([[True, False]]))
    y = resampling.Upsample2D((2, 3)).layer(x)
    assert y.values.shape == (1, 4, 6, 2)
    expected = values.repeat_interleave(2, 1).repeat_interleave(3, 2)
    assert torch.equal(y.values, expected)
    assert y.mask.tolist() == [[True, True, False, False]]
    assert y.values[0, 0, :, 0].tolist() == [0, 0, 0, 2, 2, 2]


def test_upsample_then_downsample_roundtrip():
    layer = sl.Serial(resampling.Upsample1D(3), resampling.Downsample1D(3))
    assert layer.output_ratio == 1
    x = random_sequence(2, 6, 3, random_mask=True)
    y = verify_contract(layer, x)
    assert_sequences_equal(y, x)


def test_bad_inputs():
    for cls in (resampling.Downsample1D, resampling.Upsample1D, resampling.Upsample2D):
        with pytest.raises(ValueError, match=cls.__name__):
            cls(0)
        with pytest.raises(ValueError, match=cls.__name__):
            cls(-2)
        with pytest.raises(TypeError, match=cls.__name__):
            cls(1.5)
    with pytest.raises(ValueError, match="Upsample2D"):
        resampling.Upsample2D((2, 2, 2))
    with pytest.raises(ValueError, match="Upsample2D"):
        resampling.Upsample2D((2, 0))
    with pytest.raises(ValueError, match="Upsample2D"):
        resampling.Upsample2D(2).layer(random_sequence(2, 4, 3))
    with pytest.raises(ValueError, match=r"Downsample1D\.step received 3 timesteps"):
        layer = resampling.Downsample1D(2)
        layer.step(random_sequence(2, 3, 1), ())


def test_registry():
    for cls in (resampling.Downsample1D, resampling.Upsample1D, resampling.Upsample2D):
        assert sl.registry.get(cls.__name__) is cls
        assert getattr(sl, cls.__name__) is cls


def test_upsample2d_config_round_trip():
    layer = resampling.Upsample2D((2, 3))
    rebuilt = sl.from_config(layer.get_config())
    assert rebuilt.rate == (2, 3)
    assert sl.from_config(resampling.Upsample2D(4).get_config()).rate == (4, 4)


@pytest.mark.parametrize("time", [5, 7])
def test_downsample1d_partial_last_block(time):
    # The layer keeps ceil(T / rate) steps; step-wise, input_latency flushes the partial block.
    layer = resampling.Downsample1D(3)
    x = random_sequence(3, time, 2, random_mask=True)
    y = verify_contract(layer, x)
    assert y.values.shape[1] == -(-time // 3)
