"""Tests for sl.merging: CombinationMode and the sequence_broadcast_* helpers."""

from __future__ import annotations

import pytest
import torch

from sl.merging import (
    CombinationMode,
    combine_mask,
    sequence_broadcast_add,
    sequence_broadcast_combine,
    sequence_broadcast_combine_output_channel_shape,
    sequence_broadcast_combine_output_dtype,
    sequence_broadcast_concat,
    sequence_broadcast_mean,
    sequence_broadcast_product,
    sequence_broadcast_stack,
)
from sl.testing import random_sequence
from sl.types import MaskedSequence, Sequence

ALL = list(CombinationMode)

# Reference CombinationMode docstring table: x=() y=(), x=() y=(2), x=(3) y=(3), x=(5) y=(3, 5).
SHAPE_CASES = [((), ()), ((), (2,)), ((3,), (3,)), ((5,), (3, 5))]
EXPECTED = {
    CombinationMode.STACK: [(2,), (2, 2), (2, 3), (2, 3, 5)],
    CombinationMode.CONCAT: [(2,), (3,), (6,), (3, 10)],
    CombinationMode.ADD: [(), (2,), (3,), (3, 5)],
    CombinationMode.MEAN: [(), (2,), (3,), (3, 5)],
    CombinationMode.PRODUCT: [(), (2,), (3,), (3, 5)],
}


@pytest.mark.parametrize("mode", ALL)
def test_output_channel_shape_matches_reference_table_and_values(mode):
    for (xs, ys), expected in zip(SHAPE_CASES, EXPECTED[mode]):
        assert sequence_broadcast_combine_output_channel_shape(mode, xs, ys) == expected
        x = random_sequence(2, 4, *xs)
        y = random_sequence(2, 4, *ys)
        assert sequence_broadcast_combine(mode, x, y).channel_shape == expected


def test_values_and_mask():
    x = random_sequence(2, 5, 3, random_mask=True)
    y = random_sequence(2, 5, 3, random_mask=True)
    mask = x.mask & y.mask
    torch.testing.assert_close(sequence_broadcast_add(x, y).values, x.values + y.values)
    torch.testing.assert_close(sequence_broadcast_mean(x, y).values, (x.values + y.values) / 2)
    torch.testing.assert_close(sequence_broadcast_product(x, y).values, x.values * y.values)
    torch.testing.assert_close(sequence_broadcast_stack(x, y).values, torch.stack([x.values, y.values], 2))
    torch.testing.assert_close(sequence_broadcast_concat(x, y).values, torch.cat([x.values, y.values], -1))
    for mode in ALL:
        assert torch.equal(sequence_broadcast_combine(mode, x, y).mask, mask)


def test_broadcasting_channels_batch_and_time():
    # Reference docstring: X 2x3x4x1x5, Y 1x3x2x1 -> add 2x3x4x2x5, stack 2x3x2x4x2x5, concat (Z 2x1x1x1) 2x3x4x2x7.
    x = Sequence(torch.randn(2, 3, 4, 1, 5), torch.ones(2, 3, dtype=torch.bool))
    y = Sequence(torch.randn(1, 3, 2, 1), torch.tensor([[True, False, True]]))
    z = Sequence(torch.randn(2, 1, 1, 1), torch.ones(2, 1, dtype=torch.bool))
    add = sequence_broadcast_add(x, y)
    assert add.shape == (2, 3, 4, 2, 5)
    torch.testing.assert_close(add.values, x.values + y.values[:, :, None])
    assert torch.equal(add.mask, torch.tensor([[True, False, True]] * 2))
    assert sequence_broadcast_stack(x, y, z).shape == (2, 3, 3, 4, 2, 5)
    assert sequence_broadcast_concat(x, y, z).shape == (2, 3, 4, 2, 7)


def test_masked_state_preserved_only_for_shared_mask():
    x = random_sequence(2, 6, 3)
    y = MaskedSequence(torch.where(x.expanded_mask(), torch.randn(2, 6, 3), 0.0), x.mask)
    for mode in ALL:
        out = sequence_broadcast_combine(mode, x, y)
        assert isinstance(out, MaskedSequence), mode
        assert bool((out.values[~out.mask] == 0).all())
    other = random_sequence(2, 6, 3, random_mask=True)
    for mode in ALL:
        assert not isinstance(sequence_broadcast_combine(mode, x, other), MaskedSequence)
        assert not isinstance(sequence_broadcast_combine(mode, x, x.unmask()), MaskedSequence)


def test_combine_mask():
    m = torch.tensor([[True, False, True]])
    assert combine_mask(m, m) is m
    assert torch.equal(combine_mask(m, torch.tensor([[True, True, False]])), torch.tensor([[True, False, False]]))


@pytest.mark.parametrize("mode", ALL)
def test_dtype_promotion(mode):
    x = random_sequence(2, 4, 3, dtype=torch.bfloat16)
    y = random_sequence(2, 4, 3, dtype=torch.float32)
    out = sequence_broadcast_combine(mode, x, y)
    assert out.dtype == torch.float32 == sequence_broadcast_combine_output_dtype(mode, torch.bfloat16, torch.float32)


def test_mean_of_integers_is_float():
    x = random_sequence(2, 4, 3, dtype=torch.int32)
    out = sequence_broadcast_mean(x, x)
    assert out.dtype == sequence_broadcast_combine_output_dtype("mean", torch.int32, torch.int32) == torch.float32
    assert sequence_broadcast_combine_output_dtype("add", torch.int32, torch.int64) == torch.int64


def test_coerce():
    assert CombinationMode.coerce("STACK") is CombinationMode.STACK
    assert CombinationMode.coerce("concat") is CombinationMode.CONCAT
    assert CombinationMode.coerce(3) is CombinationMode.ADD  # reference integer value
    assert CombinationMode.coerce(CombinationMode.MEAN) is CombinationMode.MEAN
    with pytest.raises(ValueError, match="CombinationMode expects"):
        CombinationMode.coerce("sum")
    with pytest.raises(ValueError, match="CombinationMode expects"):
        CombinationMode.coerce(7)


def test_bad_inputs():
    x = random_sequence(2, 4, 3)
    y = random_sequence(2, 4, 4)
    with pytest.raises(ValueError, match=r"sequence_broadcast_add.*do not broadcast"):
        sequence_broadcast_add(x, y)
    with pytest.raises(ValueError, match="do not broadcast"):
        sequence_broadcast_combine_output_channel_shape("stack", (3,), (4,))
    with pytest.raises(ValueError, match="do not broadcast"):
        sequence_broadcast_stack(x, random_sequence(2, 5, 3))
    with pytest.raises(ValueError, match="at least one"):
        sequence_broadcast_concat()
    with pytest.raises(TypeError, match=r"sl\.Sequence"):
        sequence_broadcast_add(x, x.values)
