"""Dropout and AddNoise (reference simple.py)."""

from __future__ import annotations

import pytest
import torch

import sl
from sl.layers import stochastic
from sl.testing import random_sequence, tolerances, verify_contract
from sl.testing.sequences import assert_sequences_equal

DTYPES = [torch.float32, torch.bfloat16]


# -- Dropout --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*DTYPES, torch.int32, torch.bool])
@pytest.mark.parametrize("random_mask", [False, True])
def test_dropout_contract_eval(dtype, random_mask):
    layer = stochastic.Dropout(0.3)
    x = random_sequence(2, 7, 5, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert_sequences_equal(y, x)
    assert layer.get_output_dtype(dtype) == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_training_scaling(dtype):
    layer = stochastic.Dropout(0.25)
    x = sl.Sequence.from_values(torch.ones(4, 50, 40, dtype=dtype))
    torch.manual_seed(0)
    y = layer.layer(x, training=True)
    assert isinstance(y, sl.MaskedSequence) and y.dtype == dtype
    kept = y.values != 0
    # Kept entries are scaled by 1 / (1 - rate); about a quarter are dropped.
    assert torch.equal(y.values[kept], torch.full_like(y.values[kept], 1 / 0.75))
    assert 0.2 < 1 - kept.float().mean().item() < 0.3
    # Same seed, same mask (torch's global RNG controls it).
    torch.manual_seed(0)
    assert torch.equal(layer.layer(x, training=True).values, y.values)
    # Module training mode is honoured through forward().
    layer.eval()
    assert torch.equal(layer(x).values, x.values)
    layer.train()
    assert not torch.equal(layer(x).values, x.values)


def test_dropout_training_layer_keeps_masked_and_invalid():
    layer = stochastic.Dropout(0.5)
    x = random_sequence(3, 8, 4, random_mask=True)
    y = layer.layer(x, training=True)
    assert isinstance(y, sl.MaskedSequence)
    assert torch.equal(y.mask, x.mask)
    assert (y.values[~x.mask] == 0).all()
    # NaN at invalid steps stays there.
    nan_x = sl.Sequence(torch.where(x.expanded_mask(), x.values, torch.nan), x.mask)
    y_nan = layer.layer(nan_x, training=True)
    assert torch.isfinite(y_nan.values[x.mask]).all()


def test_dropout_broadcast_dims():
    layer = stochastic.Dropout(0.5, broadcast_dims=(0, 1))
    x = sl.Sequence.from_values(torch.ones(3, 13, 6))
    y = layer.layer(x, training=True)
    assert torch.equal(y.values.var(dim=(0, 1)), torch.zeros(6))
    y = stochastic.Dropout(0.5, broadcast_dims=(-1,)).layer(x, training=True)
    assert torch.equal(y.values.var(dim=-1), torch.zeros(3, 13))


def test_dropout_edge_rates_and_integers():
    x = random_sequence(2, 6, 3, random_mask=True)
    assert_sequences_equal(stochastic.Dropout(0.0).layer(x, training=True), x)
    assert torch.equal(stochastic.Dropout(1.0).layer(x, training=True).values, torch.zeros_like(x.values))
    xi = sl.Sequence.from_values(torch.ones(4, 30, 5, dtype=torch.int32))
    yi = stochastic.Dropout(0.5).layer(xi, training=True)
    assert yi.dtype == torch.int32 and set(yi.values.unique().tolist()) == {0, 1}  # not scaled
    xb = sl.Sequence.from_values(torch.ones(4, 30, 5, dtype=torch.bool))
    yb = stochastic.Dropout(0.5).layer(xb, training=True)
    assert yb.dtype == torch.bool and yb.values.any() and not yb.values.all()


def test_dropout_gradient():
    layer = stochastic.Dropout(0.5)
    v = torch.randn(2, 6, 4, requires_grad=True)
    torch.manual_seed(3)
    y = layer.layer(sl.Sequence.from_values(v), training=True)
    y.values.sum().backward()
    assert torch.equal(v.grad, y.values.detach() / v.detach())


def test_dropout_step_training_raises():
    layer = stochastic.Dropout(0.1)
    x = random_sequence(2, 1, 3)
    with pytest.raises(ValueError, match=r"Dropout\.step does not support training=True"):
        layer.step(x, (), training=True)
    layer.train()
    with pytest.raises(ValueError, match=r"Dropout\.step"):
        layer.step(x, ())
    # Eval-mode step is the identity.
    y, _ = layer.step(x, (), training=False)
    assert_sequences_equal(y, x)


def test_dropout_bad_inputs():
    for rate in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="Dropout expected a rate in"):
            stochastic.Dropout(rate)
    with pytest.raises(TypeError, match="Dropout expected integer broadcast_dims"):
        stochastic.Dropout(0.1, broadcast_dims=(0.5,))
    with pytest.raises(ValueError, match="Dropout broadcast_dims"):
        stochastic.Dropout(0.1, broadcast_dims=(3,)).layer(random_sequence(2, 3, 4), training=True)


# -- AddNoise -------------------------------------------------------------------------

SAMPLERS = [
    ("uniform", {"minval": -1.0, "maxval": 1.0}),
    ("normal", {"mean": 0.0, "stddev": 1.0}),
    ("truncated_normal", {"mean": 0.0, "stddev": 1.0}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampler,params", SAMPLERS)
@pytest.mark.parametrize("channels", [(), (5,), (5, 3)])
def test_add_noise_contract_eval(dtype, sampler, params, channels):
    layer = stochastic.AddNoise(sampler, training_only=True, **params)
    x = random_sequence(2, 5, *channels, dtype=dtype, random_mask=True)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert_sequences_equal(y, x)
    # Training adds noise; the same seed gives the same noise.
    torch.manual_seed(5)
    y1 = layer.layer(x, training=True)
    torch.manual_seed(5)
    y2 = layer.layer(x, training=True)
    assert torch.equal(y1.values, y2.values) and y1.dtype == dtype
    assert not torch.equal(y1.values, x.values)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [False, True])
def test_add_noise_deterministic_contract(dtype, training):
    # Zero stddev adds the mean, so layer and step agree with noise applied.
    layer = stochastic.AddNoise("normal", training_only=False, mean=1.0, stddev=0.0)
    x = random_sequence(2, 6, 3, dtype=dtype, random_mask=True)
    y = verify_contract(layer, x, training=training, **tolerances(dtype))
    assert torch.equal(y.values[x.mask], (x.values + 1)[x.mask])
    assert type(layer.layer(x)) is sl.Sequence  # noise also lands on invalid steps


def test_add_noise_training_only():
    x = random_sequence(2, 3, 5)
    layer = stochastic.AddNoise("normal", training_only=True, mean=1.0, stddev=0.0)
    assert torch.equal(layer.layer(x, training=True).values, x.values + 1)
    assert_sequences_equal(layer.layer(x, training=False), x)
    always = stochastic.AddNoise("normal", training_only=False, mean=1.0, stddev=0.0)
    assert torch.equal(always.layer(x, training=False).values, x.values + 1)


def test_add_noise_distributions():
    x = sl.Sequence.from_values(torch.zeros(8, 500, 10))
    u = stochastic.AddNoise("uniform", True, minval=2.0, maxval=3.0).layer(x, training=True).values
    assert u.min().item() >= 2.0 and u.max().item() < 3.0 and abs(u.mean().item() - 2.5) < 0.02
    n = stochastic.AddNoise("normal", True, mean=1.0, stddev=2.0).layer(x, training=True).values
    assert abs(n.mean().item() - 1.0) < 0.05 and abs(n.std().item() - 2.0) < 0.05
    t = stochastic.AddNoise("truncated_normal", True, mean=-1.0, stddev=0.5).layer(x, training=True).values
    assert t.min().item() >= -2.0 - 1e-6 and t.max().item() <= 1e-6 and abs(t.mean().item() + 1.0) < 0.02


def test_add_noise_step_draws_fresh_noise():
    layer = stochastic.AddNoise("normal", training_only=True)
    x = random_sequence(2, 4, 3, random_lengths=False)
    y1, state = layer.step(x, (), training=True)
    y2, _ = layer.step(x, state, training=True)
    assert y1.values.shape == x.values.shape and not torch.equal(y1.values, y2.values)


def test_add_noise_bad_inputs():
    with pytest.raises(ValueError, match="AddNoise expected sampler in"):
        stochastic.AddNoise("laplace", True)
    with pytest.raises(ValueError, match="AddNoise sampler 'uniform' takes parameters"):
        stochastic.AddNoise("uniform", True, mean=1.0)
    with pytest.raises(ValueError, match="AddNoise expected minval <= maxval"):
        stochastic.AddNoise("uniform", True, minval=1.0, maxval=0.0)
    with pytest.raises(ValueError, match="AddNoise expected a non-negative stddev"):
        stochastic.AddNoise("normal", True, stddev=-1.0)
    with pytest.raises(TypeError, match="AddNoise expected a floating-point input"):
        stochastic.AddNoise("normal", True).layer(random_sequence(2, 3, dtype=torch.int64), training=True)


def test_registry():
    for cls in (stochastic.Dropout, stochastic.AddNoise):
        assert sl.registry.get(cls.__name__) is cls
        assert getattr(sl, cls.__name__) is cls


def test_add_noise_config_round_trip():
    layer = stochastic.AddNoise("uniform", training_only=False, minval=-0.5, maxval=0.5)
    rebuilt = sl.from_config(layer.get_config())
    assert rebuilt.sampler == "uniform" and rebuilt.params == {"minval": -0.5, "maxval": 0.5}
    assert not rebuilt.training_only
