"""Convolutions: numerics against an independent implementation written here, the contract over
sampled grids of kernel/stride/dilation/groups/padding, stream-chunking independence, the
transposed convolutions' flushed tail, torch checkpoints, weight normalisation and bad input."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sl
from sl.testing import random_sequence, sequences_close, verify_contract
from sl_conv import (
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    DepthwiseConv1D,
    DepthwiseConv2D,
    L2WeightNormalization,
    SpectralWeightNormalization,
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
STEPPABLE = {"causal_valid", "reverse_causal_valid", "causal", "reverse_causal", "semicausal"}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- the oracle
def _pads(mode: str, ek: int, s: int) -> tuple[int, int]:
    """The reference's padding table (utils.convolution_explicit_padding), restated."""
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


def oracle_conv1d(x: sl.Sequence, w: np.ndarray, b: np.ndarray | None, s: int, d: int, groups: int, mode: str):
    """Values ``[B, T', O]`` and mask ``[B, T']`` of a 1-D convolution layer, by explicit windows."""
    v = np.where(x.mask.numpy()[..., None], x.values.numpy(), 0.0).astype(np.float64)
    m = x.mask.numpy()
    out_c, in_g, k = w.shape
    ek = (k - 1) * d + 1
    before, after = _pads(mode, ek, s)
    vp = np.pad(v, ((0, 0), (before, after), (0, 0)))
    fill = mode == "causal_valid"
    mp = np.pad(m, ((0, 0), (before, after)), constant_values=fill)
    n = max(0, -(-(vp.shape[1] - ek + 1) // s))
    taps = np.arange(k) * d
    starts = np.arange(n) * s
    windows = vp[:, starts[:, None] + taps[None, :], :]  # [B, n, k, C]
    out_g = out_c // groups
    y = np.zeros((v.shape[0], n, out_c))
    for g in range(groups):
        xg = windows[..., g * in_g : (g + 1) * in_g]  # [B, n, k, in_g]
        wg = w[g * out_g : (g + 1) * out_g]  # [out_g, in_g, k]
        y[..., g * out_g : (g + 1) * out_g] = np.einsum("bnkc,ock->bno", xg, wg)
    if b is not None:
        y = y + b
    mw = mp[:, starts[:, None] + taps[None, :]] if n else np.zeros((v.shape[0], 0, k), bool)
    if mode in ("valid", "causal_valid", "reverse_causal_valid"):
        mask = mw.all(-1)
    elif mode == "semicausal_full":
        mask = mw.any(-1)
    else:
        mask = m[:, ::s][:, :n]
    return y, mask


def _assert_matches(y: sl.Sequence, values: np.ndarray, mask: np.ndarray, atol: float = 1e-5) -> None:
    assert tuple(y.mask.shape) == mask.shape, (tuple(y.mask.shape), mask.shape)
    np.testing.assert_array_equal(y.mask.numpy(), mask)
    got = np.where(mask[..., None], y.values.detach().double().numpy(), 0.0)
    want = np.where(mask[..., None], values, 0.0)
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)


def _randomize_bias(layer: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        if getattr(layer, "bias", None) is not None:
            layer.bias.normal_()
    return layer


conv_config = st.fixed_dictionaries(
    {
        "k": st.integers(1, 5),
        "s": st.integers(1, 3),
        "d": st.integers(1, 3),
        "groups": st.sampled_from([1, 2]),
        "mode": st.sampled_from(MODES),
        "t": st.integers(0, 14),
        "random_mask": st.booleans(),
        "bias": st.booleans(),
    }
)


@SETTINGS
@given(conv_config)
def test_conv1d_matches_oracle(cfg):
    k, s, d, groups, mode, t = cfg["k"], cfg["s"], cfg["d"], cfg["groups"], cfg["mode"], cfg["t"]
    ek = (k - 1) * d + 1
    layer = _randomize_bias(Conv1D(4, 6, k, stride=s, padding=mode, dilation=d, groups=groups, bias=cfg["bias"]))
    x = random_sequence(2, t, 4, random_mask=cfg["random_mask"])
    if mode == "valid" and 0 < t < ek:
        with pytest.raises(ValueError, match=r"Conv1D: padding='valid' needs at least"):
            layer.layer(x, training=False)
        return
    y = layer.layer(x, training=False)
    values, mask = oracle_conv1d(
        x,
        layer.weight.detach().double().numpy(),
        None if layer.bias is None else layer.bias.detach().double().numpy(),
        s,
        d,
        groups,
        mode,
    )
    _assert_matches(y, values, mask)
    # The declared latencies and receptive field are the reference's table.
    assert layer.block_size == s and layer.output_ratio == fractions.Fraction(1, s)
    assert layer.supports_step == (mode in STEPPABLE)
    latency = ek - 1 if mode in ("reverse_causal_valid", "reverse_causal", "semicausal_full") else 0
    assert layer.input_latency == latency
    assert layer.output_latency == (0 if mode == "semicausal_full" else latency // s)
    before = _pads(mode, ek, s)[0]
    assert layer.receptive_field == (-before, -before + ek - 1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conv_config.filter(lambda c: c["mode"] in STEPPABLE))
def test_conv1d_contract_grid(cfg):
    layer = _randomize_bias(
        Conv1D(4, 2, cfg["k"], stride=cfg["s"], padding=cfg["mode"], dilation=cfg["d"], groups=cfg["groups"])
    )
    x = random_sequence(2, max(cfg["t"], 1), 4, random_mask=cfg["random_mask"])
    verify_contract(layer, x, rtol=1e-5, atol=1e-5, test_receptive_field=cfg["t"] % 3 == 0)


@settings(max_examples=6, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["causal", "reverse_causal", "semicausal", "causal_valid", "reverse_causal_valid"]),
    st.sampled_from(["same", "valid", "causal", (1, 2)]),
    st.booleans(),
)
def test_conv2d_contract_grid(k, s, time_padding, spatial_padding, random_mask):
    layer = _randomize_bias(
        Conv2D(2, 3, (k, 2), stride=(s, 1), time_padding=time_padding, spatial_padding=spatial_padding)
    )
    x = random_sequence(2, 9, 4, 2, random_mask=random_mask)
    verify_contract(layer, x, rtol=1e-5, atol=1e-5, test_receptive_field=False)


def test_conv2d_and_conv3d_match_torch():
    """Time is axis 1 and the others are torch's next spatial axes, with their own padding."""
    x = random_sequence(2, 7, 5, 3, random_mask=True)
    layer = _randomize_bias(Conv2D(3, 4, (3, 2), stride=(2, 1), time_padding="causal", spatial_padding=(1, 0)))
    y = layer.layer(x, training=False)
    xv = x.mask_invalid().values.permute(0, 3, 1, 2)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(xv, (1, 0, 2, 0)), layer.weight, layer.bias, (2, 1))
    torch.testing.assert_close(y.values, want.permute(0, 2, 3, 1))
    assert torch.equal(y.mask, x.mask[:, ::2])

    x3 = random_sequence(1, 5, 4, 3, 2)
    layer3 = _randomize_bias(Conv3D(2, 3, (2, 3, 2), time_padding="reverse_causal", spatial_padding=("same", "valid")))
    y3 = layer3.layer(x3, training=False)
    v3 = x3.mask_invalid().values.permute(0, 4, 1, 2, 3)
    want3 = torch.nn.functional.conv3d(torch.nn.functional.pad(v3, (0, 0, 1, 1, 0, 1)), layer3.weight, layer3.bias)
    torch.testing.assert_close(y3.values, want3.permute(0, 2, 3, 4, 1))


@pytest.mark.parametrize("long", [False, True])
def test_one_input_channel_with_a_strided_last_axis_matches_torch(long):
    """One input channel: torch's CPU convolution miscomputes the channels-first view of ``[B, T, *S, 1]``
    (ambiguous strides) when the last axis is strided down to one output position; found by fuzzing
    Conv3D against the reference."""
    t = 100 if long else 6  # both sides of the channels-last threshold

    def fresh(v: torch.Tensor) -> torch.Tensor:  # standard contiguous strides, not ambiguous ones
        return torch.empty(v.shape, dtype=v.dtype).copy_(v)

    x3 = random_sequence(3, t, 4, 1, 1)
    layer3 = _randomize_bias(Conv3D(1, 3, (1, 1, 5), stride=(1, 1, 2), spatial_padding=("same", "reverse_causal")))
    v3 = fresh(torch.nn.functional.pad(x3.values.permute(0, 4, 1, 2, 3), (0, 4)))
    want3 = torch.nn.functional.conv3d(v3, layer3.weight, layer3.bias, (1, 1, 2)).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(layer3.layer(x3, training=False).values, want3, rtol=1e-5, atol=1e-5)
    x2 = random_sequence(2, t, 5, 1)
    layer2 = _randomize_bias(Conv2D(1, 2, (3, 3), stride=(1, 3), time_padding="causal", spatial_padding="valid"))
    v2 = fresh(torch.nn.functional.pad(x2.mask_invalid().values.permute(0, 3, 1, 2), (0, 0, 2, 0)))
    want2 = torch.nn.functional.conv2d(v2, layer2.weight, layer2.bias, (1, 3)).permute(0, 2, 3, 1)
    torch.testing.assert_close(layer2.layer(x2, training=False).values, want2, rtol=1e-5, atol=1e-5)


def test_depthwise_is_grouped_conv():
    x = random_sequence(2, 8, 3)
    dw = _randomize_bias(DepthwiseConv1D(3, 3, padding="causal", depth_multiplier=2))
    ref = Conv1D(3, 6, 3, padding="causal", groups=3)
    ref.load_state_dict(dw.state_dict())
    torch.testing.assert_close(dw.layer(x, training=False).values, ref.layer(x, training=False).values)
    dw2 = DepthwiseConv2D(2, (2, 3), time_padding="causal", depth_multiplier=3)
    assert dw2.weight.shape == (6, 1, 2, 3) and dw2.groups == 2
    assert dw2.get_output_shape((5, 2)) == (5, 6)


# ----------------------------------------------------------------------------- streaming
def _stream(layer: sl.SequenceLayer, x: sl.Sequence, chunks: list[int]) -> sl.Sequence:
    streamer = sl.Streamer(layer, x.values.shape[0], x.channel_spec)
    outs, start = [], 0
    for n in chunks:
        outs.append(streamer.push(x[:, start : start + n]))
        start += n
    outs.append(streamer.push(x[:, start:]))
    outs.append(streamer.flush())
    return sl.Sequence.concatenate_sequences(outs)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(
        [
            ("Conv1D", 3, 2, 1, "causal"),
            ("Conv1D", 4, 2, 1, "reverse_causal"),
            ("Conv1D", 3, 3, 2, "semicausal"),
            ("Conv1D", 5, 2, 1, "reverse_causal_valid"),
            ("Conv1D", 2, 3, 1, "causal_valid"),
            ("stack", 0, 0, 0, ""),
        ]
    ),
    st.lists(st.integers(0, 7), max_size=6),
    st.integers(5, 20),
)
def test_strided_stream_does_not_depend_on_chunking(spec, chunks, t):
    name, k, s, d, mode = spec
    torch.manual_seed(0)
    if name == "stack":
        layer = sl.Serial(
            Conv1D(3, 4, 3, stride=2, padding="causal"),
            sl.Relu(),
            Conv1D(4, 4, 3, stride=1, padding="reverse_causal"),
            Conv1D(4, 2, 2, stride=2, padding="semicausal"),
        )
    else:
        layer = _randomize_bias(Conv1D(3, 2, k, stride=s, padding=mode, dilation=d))
    x = random_sequence(2, t, 3, random_mask=True)
    with torch.no_grad():
        want = layer.layer(x, training=False)
    got = _stream(layer, x, chunks)
    ok, why = sequences_close(want, got, rtol=1e-5, atol=1e-5)
    assert ok, why


@settings(max_examples=15, deadline=None)
@given(
    st.sampled_from([(4, 2, 1), (5, 2, 1), (3, 1, 1), (3, 2, 2), (7, 3, 1), (2, 3, 1)]),
    st.lists(st.integers(0, 5), max_size=4),
)
def test_transpose_stream_then_flush_is_the_full_transposed_convolution(kds, chunks):
    k, s, d = kds
    causal = _randomize_bias(Conv1DTranspose(3, 2, k, stride=s, padding="causal", dilation=d))
    full = Conv1DTranspose(3, 2, k, stride=s, padding="valid", dilation=d)
    full.load_state_dict(causal.state_dict())
    x = random_sequence(2, 6, 3, random_lengths=False)
    got = _stream(causal, x, chunks)
    with torch.no_grad():
        want = full.layer(x, training=False)
    ek = (k - 1) * d + 1
    tail = max(ek - s, 0)
    assert got.values.shape[1] == 6 * s + -(-tail // s) * s
    n = want.values.shape[1]
    torch.testing.assert_close(got.values[:, :n], want.values, rtol=1e-5, atol=1e-5)
    assert got.mask[:, :n].all() and not got.mask[:, n:].any()


def test_transpose_flush_tail_mask_follows_the_inputs_reaching_it():
    layer = Conv1DTranspose(1, 1, 5, stride=2, padding="causal")
    x = sl.Sequence(torch.ones(1, 3, 1), torch.tensor([[True, True, False]]))
    state = layer.get_initial_state(1, x.channel_spec)
    _, state = layer.step(x, state, training=False)
    tail = layer.flush(state, training=False)
    # Tail steps 6, 7, 8 are reached by input 2 (invalid); step 6 also by input 1.
    assert tail.values.shape[1] == 4 and tail.mask.tolist() == [[False, False, False, False]]
    x2 = sl.Sequence(torch.ones(1, 3, 1), torch.ones(1, 3, dtype=torch.bool))
    _, state2 = layer.step(x2, layer.get_initial_state(1, x2.channel_spec), training=False)
    assert layer.flush(state2, training=False).mask.tolist() == [[True, True, True, False]]
    assert Conv1DTranspose(1, 1, 2, stride=2, padding="causal").flush((), training=False) is None


@settings(max_examples=10, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 2),
    st.sampled_from(["causal", "valid", "same", "semicausal_full"]),
    st.booleans(),
)
def test_conv1d_transpose_matches_torch_and_contract(k, s, d, mode, random_mask):
    ek = (k - 1) * d + 1
    if mode == "semicausal_full" and ek <= s and (ek, s) != (1, 1):
        with pytest.raises(ValueError, match="semicausal_full"):
            Conv1DTranspose(2, 3, k, stride=s, padding=mode, dilation=d)
        return
    layer = _randomize_bias(Conv1DTranspose(2, 3, k, stride=s, padding=mode, dilation=d))
    x = random_sequence(2, 7, 2, random_mask=random_mask)
    y = layer.layer(x, training=False)
    full = torch.nn.functional.conv_transpose1d(
        x.mask_invalid().values.transpose(1, 2), layer.weight, layer.bias, s, 0, 0, 1, d
    ).transpose(1, 2)
    t = 7
    if mode == "causal":
        n, start = t * s, 0
    elif mode == "valid":
        n, start = t * s + max(ek - s, 0), 0
    elif mode == "semicausal_full":
        n, start = t * s + ek + 1 - 2 * s, s - 1
    else:
        amount = ek + s - 2
        left = ek - 1 if s > ek - 1 else math.ceil(amount / 2)
        n, start = t * s, ek - 1 - left
    want = torch.nn.functional.pad(full, (0, 0, 0, max(0, start + n - full.shape[1])))[:, start : start + n]
    want = (
        want + torch.where(torch.arange(want.shape[1]) + start >= full.shape[1], 1.0, 0.0)[None, :, None] * layer.bias
    )
    torch.testing.assert_close(y.values, want, rtol=1e-5, atol=1e-5)
    assert layer.output_ratio == s and layer.supports_step == (mode == "causal")
    contract = {"test_output_length": mode in ("causal", "same") or ek <= s}
    if mode == "valid":
        contract["test_padding_invariance"] = ek <= s  # the reference's AND mask (see examples.py)
    verify_contract(layer, x, rtol=1e-5, atol=1e-5, test_receptive_field=k % 2 == 1, **contract)


def test_conv2d_transpose_time_axis_streams():
    layer = _randomize_bias(
        Conv2DTranspose(2, 3, (4, 3), stride=(2, 2), time_padding="causal", spatial_padding="valid")
    )
    x = random_sequence(2, 6, 3, 2, random_mask=True)
    assert layer.get_output_shape((3, 2)) == (7, 3)
    verify_contract(layer, x, rtol=1e-5, atol=1e-5, test_receptive_field=False)
    state = layer.get_initial_state(2, x.channel_spec)
    assert state[0].shape == (2, 2, 7, 3) and state[1].shape == (2, 2)


# ----------------------------------------------------------------------------- as written
def test_constructors_as_written_resolve_through_the_registry():
    assert sl.Conv1D is Conv1D and sl.conv.Conv1D is Conv1D
    a = sl.Conv1D(in_channels=128, out_channels=64, kernel_size=3, padding="causal")
    b = sl.Conv1D(128, 256, kernel_size=3, padding="same")
    ln = sl.LayerNorm(256)
    x = sl.Sequence.from_values(torch.randn(2, 5, 128))
    assert a.layer(x).channel_shape == (64,)
    y = b.layer(x)
    assert ln.layer(y).channel_shape == (256,)
    assert type(sl.from_config(a.get_config())) is Conv1D


@pytest.mark.parametrize("groups, padding", [(1, "causal"), (4, "same"), (2, "valid")])
def test_torch_conv1d_state_dict_loads(groups, padding):
    ref = torch.nn.Conv1d(8, 12, 3, stride=2, dilation=2, groups=groups, padding=0)
    layer = Conv1D(8, 12, 3, stride=2, dilation=2, groups=groups, padding=padding)
    layer.load_state_dict(ref.state_dict())
    x = sl.Sequence.from_values(torch.randn(2, 11, 8))
    ek = 5
    pads = {"causal": (ek - 1, 0), "same": (2, 2), "valid": (0, 0)}[padding]
    want = ref(torch.nn.functional.pad(x.values.transpose(1, 2), pads)).transpose(1, 2)
    torch.testing.assert_close(layer.layer(x, training=False).values, want)


def test_torch_transposed_and_2d_state_dicts_load():
    ref = torch.nn.ConvTranspose1d(4, 6, 4, stride=2, groups=2)
    layer = Conv1DTranspose(4, 6, 4, stride=2, groups=2, padding="valid")
    layer.load_state_dict(ref.state_dict())
    x = sl.Sequence.from_values(torch.randn(2, 5, 4))
    torch.testing.assert_close(layer.layer(x, training=False).values, ref(x.values.transpose(1, 2)).transpose(1, 2))
    Conv2D(3, 5, (3, 2), groups=1).load_state_dict(torch.nn.Conv2d(3, 5, (3, 2)).state_dict())
    Conv2DTranspose(3, 5, 2).load_state_dict(torch.nn.ConvTranspose2d(3, 5, 2).state_dict())


# ----------------------------------------------------------------------------- weight norms
def test_weight_norm_keeps_the_initial_kernel_and_normalizes_filters():
    layer = Conv1D(3, 4, 3, padding="causal", use_weight_norm=True)
    torch.testing.assert_close(layer._kernel(False), layer.weight)
    with torch.no_grad():
        layer.weight.mul_(7.0)
    torch.testing.assert_close(layer._kernel(False).flatten(1).norm(dim=1), layer.weight_scale)
    t = Conv1DTranspose(4, 6, 3, stride=2, groups=2, padding="causal", use_weight_norm=True)
    torch.testing.assert_close(t._kernel(False), t.weight)
    with pytest.raises(ValueError, match="use_weight_norm and kernel_constraint"):
        Conv1D(3, 4, 3, use_weight_norm=True, kernel_constraint="l2")


def test_l2_and_spectral_constraints():
    layer = Conv1D(3, 5, 3, padding="causal", kernel_constraint=L2WeightNormalization())
    with torch.no_grad():
        layer.kernel_constraint.scale.copy_(torch.arange(1.0, 6.0))
    torch.testing.assert_close(layer._kernel(False).flatten(1).norm(dim=1), torch.arange(1.0, 6.0))
    spec = Conv1D(3, 5, 3, padding="causal", kernel_constraint=SpectralWeightNormalization(n_power_iteration=50))
    k = spec._kernel(False)
    assert abs(torch.linalg.matrix_norm(k.flatten(1), ord=2).item() - 1.0) < 1e-3
    u0 = spec.kernel_constraint.u.clone()
    spec._kernel(False)
    assert torch.equal(spec.kernel_constraint.u, u0)  # eval leaves u alone
    spec._kernel(True)
    assert not torch.equal(spec.kernel_constraint.u, u0)  # training stores the new estimate
    config = spec.get_config()
    assert config["kernel_constraint"] == {
        "kind": "spectral",
        "n_power_iteration": 50,
        "eps": 1e-12,
        "reductions_in_at_least_fp32": False,
        "error_on_non_matrix": False,
    }
    assert sl.from_config(config).kernel_constraint.n_power_iteration == 50
    with pytest.raises(ValueError, match="kernel_constraint"):
        Conv1D(3, 5, 3, kernel_constraint="frobenius")


def test_dtypes_follow_the_reference_promotion():
    x = random_sequence(2, 6, 3, dtype=torch.bfloat16)
    layer = Conv1D(3, 4, 3, padding="causal")
    assert layer.layer(x, training=False).dtype == torch.float32
    assert (
        Conv1D(3, 4, 3, padding="causal", compute_dtype=torch.bfloat16).layer(x, training=False).dtype == torch.bfloat16
    )
    assert layer.get_initial_state(2, x.channel_spec).values.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- bad input
def test_errors_name_the_layer_the_expectation_and_what_arrived():
    layer = Conv1D(in_channels=128, out_channels=64, kernel_size=3, padding="causal")
    with pytest.raises(ValueError, match=r"Conv1D expected 128 input channels.*got channel shape \(64,\)"):
        layer.layer(sl.Sequence.from_values(torch.randn(1, 4, 64)))
    with pytest.raises(ValueError, match=r"Conv2D expected an input of rank 4.*got channel shape \(3,\)"):
        Conv2D(3, 4, 3).layer(sl.Sequence.from_values(torch.randn(1, 4, 3)))
    with pytest.raises(ValueError, match=r"Conv1D: padding='valid' needs at least 5 timesteps.*got an input of 3"):
        Conv1D(2, 2, 3, dilation=2).layer(sl.Sequence.from_values(torch.randn(1, 3, 2)))
    with pytest.raises(ValueError, match=r"Conv1D: groups=3 must divide in_channels=4 and out_channels=6"):
        Conv1D(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"Conv1D with padding='same' cannot step; steppable paddings are"):
        Conv1D(2, 2, 3, padding="same").get_initial_state(1, ((2,), torch.float32))
    with pytest.raises(ValueError, match=r"Conv1D does not support step\(\)"):
        Conv1D(2, 2, 3, padding="same").step(sl.Sequence.from_values(torch.randn(1, 1, 2)), ())
    with pytest.raises(ValueError, match=r"Conv1DTranspose .*padding.*'reverse_causal'.*expected one of"):
        Conv1DTranspose(2, 2, 3, padding="reverse_causal")
    with pytest.raises(ValueError, match=r"Conv1DTranspose with padding='same' cannot step; only 'causal'"):
        Conv1DTranspose(2, 2, 3, padding="same").get_initial_state(1, ((2,), torch.float32))
    with pytest.raises(
        ValueError, match=r"Conv2D: input axis 2 .* has size 2, 2 after padding \(0, 0\).*kernel size 3"
    ):
        Conv2D(1, 1, 3, spatial_padding="valid").layer(sl.Sequence.from_values(torch.randn(1, 4, 2, 1)))
    with pytest.raises(ValueError, match=r"Conv1D \(padding\) does not support padding='circular'"):
        Conv1D(2, 2, 3, padding="circular")
    with pytest.raises(ValueError, match=r"Conv1D.*padding.*explicit"):
        Conv1D(2, 2, 3, padding=(1, 1))
    with pytest.raises(ValueError, match=r"Conv1D expects kernel_size >= 1; got 0"):
        Conv1D(2, 2, 0)
    with pytest.raises(TypeError, match=r"'filters'.*sl calls it 'out_channels'"):
        Conv1D(2, filters=3, kernel_size=2)
    with pytest.raises(
        ValueError, match=r"Conv1D.step received 3 timesteps, which is not a multiple of its block_size=2"
    ):
        strided = Conv1D(2, 2, 3, stride=2, padding="causal")
        strided.step(sl.Sequence.from_values(torch.randn(1, 3, 2)), strided.get_initial_state(1, ((2,), torch.float32)))
    with pytest.raises(TypeError, match=r"Conv1D expects compute_dtype to be None or a torch.dtype.*got str"):
        Conv1D(2, 2, 3, compute_dtype="float32")
    with pytest.raises(ValueError, match=r"Conv1DTranspose expects compute_dtype to be a floating or complex dtype"):
        Conv1DTranspose(2, 2, 3, compute_dtype=torch.int32)
    with pytest.raises(ValueError, match=r"Conv1D \(activation\): Unknown activation 'gelu_fast'"):
        Conv1D(2, 2, 3, activation="gelu_fast")
    with pytest.raises(TypeError, match=r"Conv2D expects spatial_padding as a \(before, after\) pair of ints.*True"):
        Conv2D(2, 2, 3, spatial_padding=(True, 1))


@pytest.mark.parametrize("transposed", [False, True])
def test_long_inputs_take_the_channels_last_path_with_the_same_numbers(transposed):
    """Inputs of >= 256 rows run in place as channels-last memory; the result equals torch's."""
    x = random_sequence(2, 200, 6, random_mask=True)
    xv = x.mask_invalid().values.transpose(1, 2)
    if transposed:
        layer = _randomize_bias(Conv1DTranspose(6, 4, 4, stride=2, padding="valid", groups=2, dilation=2))
        want = torch.nn.functional.conv_transpose1d(xv, layer.weight, layer.bias, 2, 0, 0, 2, 2)
    else:
        layer = _randomize_bias(Conv1D(6, 4, 3, stride=2, padding="causal", groups=2, dilation=2))
        want = torch.nn.functional.conv1d(torch.nn.functional.pad(xv, (4, 0)), layer.weight, layer.bias, 2, 0, 2, 2)
    torch.testing.assert_close(layer.layer(x, training=False).values, want.transpose(1, 2), rtol=1e-5, atol=1e-5)
    x2 = random_sequence(2, 70, 3, 4)
    conv2 = _randomize_bias(Conv2D(4, 5, (3, 2), time_padding="causal", spatial_padding="valid"))
    v2 = torch.nn.functional.pad(x2.mask_invalid().values.permute(0, 3, 1, 2), (0, 0, 2, 0))
    want2 = torch.nn.functional.conv2d(v2, conv2.weight, conv2.bias).permute(0, 2, 3, 1)
    torch.testing.assert_close(conv2.layer(x2, training=False).values, want2, rtol=1e-5, atol=1e-5)
    # Gradients through the channels-last path equal torch's.
    xg = xv.detach().clone().requires_grad_(True)
    seq = sl.Sequence(xg.transpose(1, 2), x.mask)
    (layer.layer(seq, training=False).values * 0.5).sum().backward()
    g_sl, layer.weight.grad = xg.grad.clone(), None
    xg.grad = None
    if transposed:
        ref = torch.nn.functional.conv_transpose1d(xg, layer.weight, layer.bias, 2, 0, 0, 2, 2)
    else:
        ref = torch.nn.functional.conv1d(torch.nn.functional.pad(xg, (4, 0)), layer.weight, layer.bias, 2, 0, 2, 2)
    (ref * 0.5).sum().backward()
    torch.testing.assert_close(g_sl * x.mask[:, None], xg.grad * x.mask[:, None], rtol=1e-5, atol=1e-5)
