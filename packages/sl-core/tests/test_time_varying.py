"""SequenceEmbedding, SequenceDense, MaskedDense (reference: sequence_layers/jax/time_varying.py)."""

from __future__ import annotations

import math

import pytest
import torch

import sl
from sl.layers.time_varying import MaskedDense, SequenceDense, SequenceEmbedding
from sl.testing import random_sequence, tolerances, verify_contract

DTYPES = [torch.float32, torch.bfloat16]


def _bias_random(layer: torch.nn.Module) -> torch.nn.Module:
    if getattr(layer, "bias", None) is not None:
        with torch.no_grad():
            layer.bias.normal_()
    return layer


# -- SequenceEmbedding -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_step", [5, "varying"])
@pytest.mark.parametrize("shape", [(), (3,)])
@pytest.mark.parametrize("random_mask", [False, True])
def test_sequence_embedding_contract(dtype, per_step, shape, random_mask):
    num_steps = 20
    per = 5 if per_step == 5 else tuple(3 + (i % 4) for i in range(num_steps))
    layer = SequenceEmbedding(4, per, num_steps, round_num_embeddings_to_multiple_of=8).to(dtype)
    assert layer.get_output_dtype(torch.int32) == dtype
    for time in (0, 1, 13):
        x = random_sequence(3, time, *shape, dtype=torch.int32, high=3, random_mask=random_mask)
        # Out-of-range codes are errors, and the batching check inserts out-of-range garbage rows.
        y = verify_contract(layer, x, test_batching=False, **tolerances(dtype))
        assert y.channel_shape == (*shape, 4)


def test_sequence_embedding_numerics():
    dimension, per, num_steps = 6, (2, 4, 3, 5), 4
    layer = SequenceEmbedding(dimension, per, num_steps)
    assert layer.weight.shape == (14, dimension)
    codes = torch.tensor([[1, 3, 0, 4], [0, 0, 2, 1]], dtype=torch.int64)
    y = layer.layer(sl.Sequence.from_values(codes))
    offsets = [0, 2, 6, 9]
    for b in range(2):
        for t in range(4):
            torch.testing.assert_close(y.values[b, t], layer.weight[offsets[t] + codes[b, t]])
    # Steps in a block pick the table of their absolute time index.
    state = layer.get_initial_state(2, sl.ChannelSpec((), torch.int64))
    assert state.shape == () and state.dtype == torch.int32
    y0, state = layer.step(sl.Sequence.from_values(codes[:, :3]), state)
    y1, state = layer.step(sl.Sequence.from_values(codes[:, 3:]), state)
    torch.testing.assert_close(torch.cat([y0.values, y1.values], 1), y.values)
    assert int(state) == 4


def test_sequence_embedding_out_of_range_codes_raise_and_steps_past_num_steps_are_invalid():
    num_steps = 8
    layer = SequenceEmbedding(8, 5, num_steps)
    with pytest.raises(
        ValueError, match=r"SequenceEmbedding: codes on valid steps must lie in \[0, num_embeddings_per_step"
    ):
        layer.layer(sl.Sequence.from_values(torch.tensor([[-1, 5, 2]])))
    bad = sl.Sequence.from_lengths(torch.tensor([[1, 2, 99]]), [2])  # out of range on an invalid step: fine
    assert layer.layer(bad).mask.tolist() == [[True, True, False]]
    codes = torch.tensor([[1, 4, 2, 4, 0, 1, 2, 3, 1, 0]])  # the last two steps are past num_steps
    y = layer.layer(sl.Sequence.from_values(codes))
    assert y.mask.tolist() == [[True] * num_steps + [False, False]]
    assert not torch.isnan(y.values).any() and (y.values[0, num_steps:] == 0).all()
    y_step, _ = sl.step_by_step(layer, sl.Sequence.from_values(codes), blocks_per_step=3)
    sl.testing.assert_sequences_equal(y_step, y)


def test_sequence_embedding_init_and_compute_dtype():
    torch.manual_seed(0)
    layer = SequenceEmbedding(64, 100, 10, compute_dtype=torch.bfloat16)
    std = layer.weight.std().item()
    assert abs(std - 1 / math.sqrt(64)) < 0.01
    y = layer.layer(random_sequence(2, 5, dtype=torch.int64))
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32


def test_sequence_embedding_bad_inputs():
    with pytest.raises(ValueError, match=r"SequenceEmbedding num_embeddings_per_step must have length num_steps"):
        SequenceEmbedding(4, (1, 2), 3)
    with pytest.raises(ValueError, match=r"SequenceEmbedding num_embeddings_per_step must be positive"):
        SequenceEmbedding(4, 0, 3)
    with pytest.raises(ValueError, match=r"SequenceEmbedding requires integer"):
        SequenceEmbedding(4, 3, 3).layer(random_sequence(2, 3))


# -- SequenceDense -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs", [{}, {"bias": False}, {"activation": "relu"}, {"bias": False, "activation": torch.tanh}]
)
@pytest.mark.parametrize("random_mask", [False, True])
def test_sequence_dense_contract(dtype, kwargs, random_mask):
    layer = _bias_random(SequenceDense(3, 5, 20, **kwargs)).to(dtype)
    for time in (0, 1, 13):
        x = random_sequence(2, time, 3, dtype=dtype, random_mask=random_mask)
        y = verify_contract(layer, x, **tolerances(dtype))
        assert isinstance(y, sl.MaskedSequence)


def test_sequence_dense_outputs_are_masked():
    x = random_sequence(2, 6, 3)
    for layer in (SequenceDense(3, 4, 8, bias=False), SequenceDense(3, 4, 8), SequenceDense(3, 4, 4)):
        y = layer.layer(x)
        assert isinstance(y, sl.MaskedSequence) and (y.values[~y.mask] == 0).all()


def test_sequence_dense_numerics_and_shapes():
    layer = _bias_random(SequenceDense(3, 5, 8, activation="gelu"))
    assert layer.weight.shape == (8, 5, 3) and layer.bias.shape == (8, 5)
    x = random_sequence(2, 6, 3, random_lengths=False)
    y = layer.layer(x).values
    for t in range(6):
        expected = torch.nn.functional.gelu(torch.nn.functional.linear(x.values[:, t], layer.weight[t], layer.bias[t]))
        torch.testing.assert_close(y[:, t], expected)


@pytest.mark.parametrize("blocks_per_step", [1, 2, 3])
def test_sequence_dense_past_num_steps_is_invalid_never_nan(blocks_per_step):
    num_steps = 8
    layer = _bias_random(SequenceDense(1, 6, num_steps))
    x = sl.Sequence.from_values(torch.arange(1, num_steps + 3, dtype=torch.float32)[None, :, None])
    y = layer.layer(x)
    assert y.mask.tolist() == [[True] * num_steps + [False, False]]
    assert not torch.isnan(y.values).any()
    # Blocks straddling num_steps still use the kernel of each step's own time index.
    y_step, _ = sl.step_by_step(layer, x, blocks_per_step=blocks_per_step)
    sl.testing.assert_sequences_close(y_step, y)
    for t in range(num_steps):
        torch.testing.assert_close(y.values[0, t], layer.weight[t, :, 0] * (t + 1) + layer.bias[t])


def test_sequence_dense_dtypes():
    layer = SequenceDense(3, 4, 8, dtype=torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16
    assert layer.get_output_dtype(torch.float32) == torch.float32
    assert layer.get_output_dtype(torch.bfloat16) == torch.bfloat16
    assert SequenceDense(3, 4, 8, compute_dtype=torch.bfloat16).get_output_dtype(torch.float32) == torch.bfloat16
    y = layer.layer(random_sequence(2, 4, 3))
    assert y.dtype == torch.float32


def test_sequence_dense_init_variance():
    torch.manual_seed(0)
    layer = SequenceDense(16, 64, 4)
    # Reference lecun_normal over the [num_steps, in, out] kernel: fan_in = num_steps * in.
    assert abs(layer.weight.std().item() - 1 / math.sqrt(4 * 16)) < 0.01
    assert (layer.bias == 0).all()


def test_sequence_dense_compiles():
    verify_contract(SequenceDense(3, 4, 10), random_sequence(2, 6, 3), compile=True, compile_backend="eager")


def test_sequence_dense_bad_inputs():
    layer = SequenceDense(3, 4, 8)
    with pytest.raises(ValueError, match=r"SequenceDense expected input channel shape \(3,\).*got \(5,\)"):
        layer.layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match=r"SequenceDense expected input channel shape.*got \(2, 3\)"):
        layer.layer(random_sequence(2, 3, 2, 3))
    with pytest.raises(ValueError, match=r"SequenceDense expects num_steps >= 1"):
        SequenceDense(3, 4, 0)


# -- MaskedDense -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"activation": "tanh"}])
@pytest.mark.parametrize("random_mask", [False, True])
def test_masked_dense_contract(dtype, kwargs, random_mask):
    layer = _bias_random(MaskedDense(3, 4, 12, **kwargs)).to(dtype)
    assert layer.receptive_field == (-11, 0)
    for time in (0, 1, 7):
        x = random_sequence(2, time, 3, dtype=dtype, random_mask=random_mask)
        verify_contract(layer, x, **tolerances(dtype))


def test_masked_dense_receptive_field_is_whole_past():
    layer = MaskedDense(2, 3, 5)
    verify_contract(layer, random_sequence(2, 5, 2))  # measures (-4, 0) on 10 steps


def test_masked_dense_numerics():
    num_steps = 5
    layer = _bias_random(MaskedDense(3, 2, num_steps))
    assert layer.weight.shape == (num_steps, 2, num_steps, 3)
    x = random_sequence(2, 4, 3, random_mask=True)
    y = layer.layer(x).values
    xv = x.values
    for t in range(4):
        expected = layer.bias[t].clone().expand(2, 2)
        for s in range(t + 1):
            expected = expected + xv[:, s] @ layer.weight[t, :, s].T
        valid = x.mask[:, t]
        torch.testing.assert_close(y[valid, t], expected[valid])


def test_masked_dense_causality():
    layer = MaskedDense(2, 3, 4)
    x = torch.randn(2, 4, 2, requires_grad=True)
    y = layer.layer(sl.Sequence.from_values(x)).values
    for b in range(2):
        for t in range(4):
            (g,) = torch.autograd.grad(y[b, t].sum(), x, retain_graph=True)
            assert (g[b, t + 1 :] == 0).all() and (g[1 - b] == 0).all()
            assert (g[b, : t + 1] != 0).any()


@pytest.mark.parametrize("blocks_per_step", [1, 3])
def test_masked_dense_past_num_steps_is_invalid_never_nan(blocks_per_step):
    layer = _bias_random(MaskedDense(2, 3, 4))
    x = random_sequence(2, 7, 2, random_lengths=False)
    y = layer.layer(x)
    assert not y.mask[:, 4:].any() and y.mask[:, :4].all() and not torch.isnan(y.values).any()
    y_step, _ = sl.step_by_step(layer, x, blocks_per_step=blocks_per_step)
    sl.testing.assert_sequences_close(y_step, y, rtol=1e-5, atol=1e-5)


def test_masked_dense_state():
    layer = MaskedDense(3, 2, 6)
    t, buf = layer.get_initial_state(2, sl.ChannelSpec((3,), torch.float32))
    assert t.shape == () and buf.shape == (2, 6, 3)
    x = random_sequence(2, 2, 3, random_mask=True)
    _, (t, buf2) = layer.step(x, (t, buf))
    assert int(t) == 2
    torch.testing.assert_close(buf2[:, :2], x.values)
    assert (buf2[:, 2:] == 0).all()


def test_masked_dense_compiles():
    verify_contract(MaskedDense(3, 4, 10), random_sequence(2, 6, 3), compile=True, compile_backend="eager")


def test_masked_dense_bad_inputs():
    layer = MaskedDense(3, 4, 8)
    with pytest.raises(ValueError, match=r"MaskedDense expected input channel shape \(3,\).*got \(4,\)"):
        layer.layer(random_sequence(2, 3, 4))
    with pytest.raises(ValueError, match=r"MaskedDense expected input channel shape"):
        layer.get_initial_state(2, sl.ChannelSpec((3, 1), torch.float32))
    with pytest.raises(ValueError, match=r"MaskedDense expects num_steps >= 1"):
        MaskedDense(3, 4, 0)


# -- registry / examples ----------------------------------------------------------------------


def test_registry():
    for cls in (SequenceEmbedding, SequenceDense, MaskedDense):
        assert sl.registry.get(cls.__name__) is cls
    assert sl.SequenceDense is SequenceDense
