"""Normalizations: numerics against torch.nn and independent implementations written here, batch
statistics over valid steps only, running statistics, eval stepping, group norm's cumulative
stream over random chunkings, zero-variance gradients, axes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sl
from sl.testing import random_sequence, sequences_close, verify_contract
from sl_conv import BatchNormalization, GroupNormalization, L2Normalize, LayerNormalization, RMSNormalization


def _randomize(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return layer


def test_aliases_and_torch_checkpoints():
    assert sl.LayerNorm is LayerNormalization and sl.RMSNorm is RMSNormalization
    assert sl.BatchNorm is BatchNormalization and sl.GroupNorm is GroupNormalization
    x = random_sequence(2, 5, 8)
    ln, ref = LayerNormalization(8), torch.nn.LayerNorm(8, eps=1e-6)
    _randomize(ref)
    ln.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ln.layer(x, training=False).values, ref(x.values))
    rms, ref_rms = RMSNormalization(8), torch.nn.RMSNorm(8, eps=1e-6)
    _randomize(ref_rms)
    rms.load_state_dict(ref_rms.state_dict())
    torch.testing.assert_close(rms.layer(x, training=False).values, ref_rms(x.values))
    bn, ref_bn = BatchNormalization(8), torch.nn.BatchNorm1d(8, eps=1e-3)
    ref_bn.running_mean.normal_()
    ref_bn.running_var.uniform_(0.5, 2.0)
    _randomize(ref_bn)
    bn.load_state_dict(ref_bn.state_dict())
    want = ref_bn.eval()(x.values.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(bn.layer(x, training=False).values, want)
    gn, ref_gn = GroupNormalization(2, 8), torch.nn.GroupNorm(2, 8)
    gn.load_state_dict(ref_gn.state_dict())


@pytest.mark.parametrize("axis, shape", [(2, (3, 4)), ((2, 3), (3, 4)), (-2, (3, 4)), ((2, 4), (2, 3, 4))])
def test_layer_and_rms_norm_over_chosen_axes(axis, shape):
    x = random_sequence(2, 6, *shape)
    axes = (axis,) if isinstance(axis, int) else axis
    axes = tuple(sorted(a % (len(shape) + 2) for a in axes))
    sizes = tuple(x.values.shape[a] for a in axes)
    v = x.values.double()
    mean = v.mean(axes, keepdim=True)
    var = v.var(axes, correction=0, keepdim=True)
    ln = _randomize(LayerNormalization(sizes, axis=axis))
    w_shape = [x.values.shape[a] if a in axes else 1 for a in range(v.dim())]
    want = (v - mean) / torch.sqrt(var + 1e-6) * ln.weight.double().reshape(w_shape) + ln.bias.double().reshape(w_shape)
    torch.testing.assert_close(ln.layer(x, training=False).values.double(), want, rtol=1e-5, atol=1e-5)
    rms = _randomize(RMSNormalization(sizes, axis=axis))
    want = v / torch.sqrt(v.square().mean(axes, keepdim=True) + 1e-6) * rms.weight.double().reshape(w_shape)
    torch.testing.assert_close(rms.layer(x, training=False).values.double(), want, rtol=1e-5, atol=1e-5)
    l2 = L2Normalize(axis=axis)
    want = v / torch.sqrt(v.square().sum(axes, keepdim=True) + 1e-12)
    torch.testing.assert_close(l2.layer(x, training=False).values.double(), want, rtol=1e-5, atol=1e-5)


def test_low_precision_reductions_and_dtype():
    x = random_sequence(2, 5, 16, dtype=torch.bfloat16)
    ln = LayerNormalization(16)
    y = ln.layer(x, training=False)
    assert y.dtype == torch.bfloat16
    want = torch.nn.functional.layer_norm(x.values.float(), (16,), eps=1e-6).to(torch.bfloat16)
    torch.testing.assert_close(y.values, want)
    assert RMSNormalization(16, reductions_in_at_least_fp32=False).layer(x, training=False).dtype == torch.bfloat16


def test_zero_variance_rows_get_zero_gradient():
    """The reference's guard: inputs whose variance (mean square, norm) is exactly zero get no gradient."""
    values = torch.randn(1, 3, 4)
    values[0, 1] = 2.5  # constant step: zero variance
    values[0, 2] = 0.0  # zero step: zero mean square and norm
    for layer, rows in ((LayerNormalization(4), (1, 2)), (RMSNormalization(4), (2,)), (L2Normalize(), (2,))):
        v = values.clone().requires_grad_(True)
        y = layer.layer(sl.Sequence.from_values(v), training=False)
        (y.values * torch.linspace(-1.0, 2.0, 12).reshape(1, 3, 4)).sum().backward()
        for r in rows:
            assert torch.all(v.grad[0, r] == 0), type(layer).__name__
        assert torch.any(v.grad[0, 0] != 0)


# ----------------------------------------------------------------------------- batch norm
def test_batch_norm_training_statistics_use_valid_steps_only():
    torch.manual_seed(0)
    bn = BatchNormalization(3, momentum=0.25)
    x = random_sequence(4, 9, 3, random_mask=True)
    y = bn.layer(x, training=True)
    valid = x.values[x.mask].double()
    mean, var = valid.mean(0), valid.var(0, correction=0)
    want = (x.values.double() - mean) / torch.sqrt(var + 1e-3)
    valid_out = x.mask[..., None]
    torch.testing.assert_close(torch.where(valid_out, y.values.double(), 0.0), torch.where(valid_out, want, 0.0))
    torch.testing.assert_close(bn.running_mean.double(), 0.25 * mean)
    torch.testing.assert_close(bn.running_var.double(), 0.75 + 0.25 * var)
    assert bn.num_batches_tracked.item() == 1
    # Padding (NaN, huge, extra steps) never changes the statistics.
    bn2 = BatchNormalization(3, momentum=0.25)
    garbage = torch.where(x.mask[..., None], x.values, torch.full_like(x.values, float("nan")))
    padded = sl.Sequence(garbage, x.mask).pad_time(0, 5, valid=False, pad_value=1e9)
    y2 = bn2.layer(padded, training=True)
    assert sequences_close(y, y2[:, :9], rtol=1e-6, atol=1e-6)[0]
    torch.testing.assert_close(bn2.running_mean, bn.running_mean)
    torch.testing.assert_close(bn2.running_var, bn.running_var)
    # A batch with no valid step leaves the running statistics alone.
    empty = sl.Sequence(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool))
    bn2.layer(empty, training=True)
    torch.testing.assert_close(bn2.running_mean, bn.running_mean)
    assert bn2.num_batches_tracked.item() == 1


def test_batch_norm_training_gradients_and_slow_variance():
    x = random_sequence(3, 7, 2, 3, random_mask=True)
    fast, slow = BatchNormalization(3), BatchNormalization(3, use_fast_variance=False)
    torch.testing.assert_close(
        fast.layer(x, training=True).values, slow.layer(x, training=True).values, rtol=1e-4, atol=1e-4
    )
    verify_contract(BatchNormalization(2, axis=2), random_sequence(2, 6, 2, 3), training=False, rtol=1e-5, atol=1e-5)


def test_batch_norm_steps_in_eval_only():
    bn = BatchNormalization(3)
    x = random_sequence(2, 4, 3)
    y, state = bn.step(x, (), training=False)
    assert state == ()
    torch.testing.assert_close(y.values, bn.layer(x, training=False).values)
    with pytest.raises(ValueError, match="BatchNormalization cannot step in training mode"):
        bn.step(x, (), training=True)


# ----------------------------------------------------------------------------- group norm
def oracle_group_norm(x: sl.Sequence, groups: int, cumulative: bool, eps: float = 1e-6) -> np.ndarray:
    """The reference's masked (and, cumulatively, Lingvo-streaming) group moments, by loops."""
    v = np.where(x.mask.numpy()[..., None], x.values.double().numpy(), 0.0)
    m = x.mask.numpy()
    b, t, c = v.shape
    gs = c // groups
    out = np.zeros_like(v)
    for bi in range(b):
        for g in range(groups):
            cols = slice(g * gs, (g + 1) * gs)
            if not cumulative:
                vals = v[bi, m[bi], cols]
                count = max(vals.size, 1)
                mean = vals.sum() / count
                var = ((vals - mean) ** 2).sum() / count
                out[bi, :, cols] = (v[bi, :, cols] - mean) / np.sqrt(var + eps)
                continue
            total = count = sq = 0.0
            for ti in range(t):
                if m[bi, ti]:
                    total += v[bi, ti, cols].sum()
                    count += gs
                denom = max(count, 1.0)
                mean = total / denom
                if m[bi, ti]:
                    sq += ((v[bi, ti, cols] - mean) ** 2).sum()
                out[bi, ti, cols] = (v[bi, ti, cols] - mean) / np.sqrt(sq / denom + eps)
    return out


@pytest.mark.parametrize("cumulative", [False, True])
def test_group_norm_matches_oracle(cumulative):
    x = random_sequence(3, 8, 6, random_mask=True)
    gn = GroupNormalization(3, 6, cumulative=cumulative)
    y = gn.layer(x, training=False)
    want = oracle_group_norm(x, 3, cumulative)
    valid = x.mask.numpy()[..., None]
    np.testing.assert_allclose(
        np.where(valid, y.values.detach().double().numpy(), 0), np.where(valid, want, 0), atol=1e-5
    )
    assert gn.supports_step == cumulative
    assert gn.receptive_field == ((-np.inf, 0) if cumulative else (-np.inf, np.inf))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 6), max_size=5), st.integers(1, 16))
def test_cumulative_group_norm_streams_over_any_chunking(chunks, t):
    gn = _randomize(GroupNormalization(2, 4, cumulative=True))
    x = random_sequence(2, t, 4, random_mask=True)
    with torch.no_grad():
        want = gn.layer(x, training=False)
    streamer = sl.Streamer(gn, 2, x.channel_spec)
    outs, start = [], 0
    for n in chunks:
        outs.append(streamer.push(x[:, start : start + n]))
        start += n
    outs += [streamer.push(x[:, start:]), streamer.flush()]
    ok, why = sequences_close(want, sl.Sequence.concatenate_sequences(outs), rtol=1e-5, atol=1e-5)
    assert ok, why


def test_group_norm_state_layout():
    gn = GroupNormalization(3, 6, axis=2, cumulative=True)
    state = gn.get_initial_state(2, ((6, 5), torch.bfloat16))
    assert [tuple(s.shape) for s in state] == [(2, 1, 3, 1, 1)] * 3
    assert all(s.dtype == torch.float32 for s in state)
    with pytest.raises(ValueError, match="GroupNormalization cannot step with cumulative=False"):
        GroupNormalization(2, 4).get_initial_state(1, ((4,), torch.float32))


def test_normalization_bad_input():
    with pytest.raises(
        ValueError, match=r"LayerNormalization expected sizes \(8,\) on channel axes \(2,\).*got channel shape \(6,\)"
    ):
        LayerNormalization(8).layer(sl.Sequence.from_values(torch.randn(1, 2, 6)))
    with pytest.raises(
        ValueError, match=r"LayerNormalization normalizes over channel axes only; axis 1 is the time axis"
    ):
        LayerNormalization(2, axis=1).layer(sl.Sequence.from_values(torch.randn(1, 2, 6)))
    with pytest.raises(
        ValueError, match=r"RMSNormalization: normalized_shape \(4,\) must give one size per normalized axis"
    ):
        RMSNormalization(4, axis=(-2, -1))
    with pytest.raises(
        ValueError, match=r"BatchNormalization expected 3 features on channel axis 2.*got channel shape \(4,\)"
    ):
        BatchNormalization(3).layer(sl.Sequence.from_values(torch.randn(1, 2, 4)))
    with pytest.raises(ValueError, match=r"GroupNormalization: num_channels=6 must be divisible by num_groups=4"):
        GroupNormalization(4, 6)
    with pytest.raises(ValueError, match=r"GroupNormalization expected 6 channels on axis 2.*got channel shape \(4,\)"):
        GroupNormalization(2, 6).layer(sl.Sequence.from_values(torch.randn(1, 2, 4)))
    with pytest.raises(ValueError, match=r"BatchNormalization expects momentum in \[0, 1\]"):
        BatchNormalization(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"L2Normalize: axis 3 is out of range for an input of rank 3"):
        L2Normalize(axis=3).layer(sl.Sequence.from_values(torch.randn(1, 2, 4)))


@pytest.mark.parametrize(
    "layer",
    [
        L2Normalize(),
        LayerNormalization(3),
        RMSNormalization(3),
        BatchNormalization(3),
        GroupNormalization(1, 3),
        GroupNormalization(1, 3, cumulative=True),
    ],
    ids=lambda layer: type(layer).__name__ + ("(cumulative)" if getattr(layer, "cumulative", False) else ""),
)
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_normalizations_refuse_integer_inputs_rather_than_round_them(layer, dtype):
    """The output keeps the input dtype: normalized integers would silently round to 0 and +-1."""
    x = sl.Sequence.from_values(torch.ones(2, 4, 3, dtype=dtype))
    name = type(layer).__name__
    with pytest.raises(TypeError, match=rf"{name} expects floating-point input values.*got {dtype}"):
        layer.layer(x, training=False)
    if layer.supports_step:
        with pytest.raises(TypeError, match=rf"{name} expects floating-point input values.*got {dtype}"):
            layer.step(x, layer.get_initial_state(2, x.channel_spec, training=False), training=False)


def test_normalization_eps_and_momentum_are_checked():
    for make in (
        L2Normalize,
        lambda eps: LayerNormalization(3, eps=eps),
        lambda eps: GroupNormalization(1, 3, eps=eps),
    ):
        with pytest.raises(
            TypeError, match=r"(L2Normalize|LayerNormalization|GroupNormalization) expects eps to be a number; got str"
        ):
            make(eps="1e-6")
        with pytest.raises(ValueError, match=r"expects a finite eps >= 0; got -1"):
            make(eps=-1)
    with pytest.raises(TypeError, match=r"RMSNormalization expects eps to be a number; got NoneType"):
        RMSNormalization(3, eps=None)
    with pytest.raises(TypeError, match=r"BatchNormalization expects momentum to be a number; got str"):
        BatchNormalization(3, momentum="0.1")
    assert LayerNormalization(3, eps=np.float32(1e-3)).eps == pytest.approx(1e-3)
