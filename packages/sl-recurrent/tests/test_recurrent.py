"""LSTM, GRU and VanillaRNN: numerics against torch.nn with the same weights (all-valid input, and
each row's valid steps for masks with holes), the reference LSTM's equations and initialisers,
the Flax layout, lazy input sizes, bidirectional use, dtypes and bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sl
from sl.errors import StateMismatchError
from sl.interop import load_flax_params
from sl.testing import random_sequence, verify_contract
from sl.testing.dtypes import tolerances
from sl_recurrent import GRU, LSTM, VanillaRNN, _kernels

TORCH_TWINS = {
    "LSTM": (lambda i, h, **kw: LSTM(i, h, **kw), torch.nn.LSTM),
    "GRU": (lambda i, h, **kw: GRU(i, h, **kw), torch.nn.GRU),
    "VanillaRNN": (lambda i, h, **kw: VanillaRNN(i, h, **kw), torch.nn.RNN),
    "VanillaRNN-relu": (lambda i, h, **kw: VanillaRNN(i, h, nonlinearity="relu", **kw), torch.nn.RNN),
}


def _pair(name: str, input_size: int = 5, hidden: int = 7, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ours_fn, torch_cls = TORCH_TWINS[name]
    kwargs = {"nonlinearity": "relu"} if name == "VanillaRNN-relu" else {}
    twin = torch_cls(input_size, hidden, bias=bias, batch_first=True, **kwargs)
    ours = ours_fn(input_size, hidden, bias=bias)
    ours.load_state_dict(twin.state_dict())  # torch.nn's state dict loads as is
    return ours.eval(), twin.eval()


def _compact_reference(twin: torch.nn.Module, x: sl.Sequence) -> torch.Tensor:
    """torch.nn run on each row's valid steps alone, scattered back (zeros at invalid steps)."""
    out = torch.zeros(*x.values.shape[:2], twin.hidden_size)
    for b in range(x.values.shape[0]):
        idx = x.mask[b].nonzero().flatten()
        if idx.numel():
            y, _ = twin(x.values[b : b + 1, idx])
            out[b, idx] = y[0]
    return out


@pytest.mark.parametrize("name", sorted(TORCH_TWINS))
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_nn_on_all_valid_input(name, bias):
    ours, twin = _pair(name, bias=bias)
    x = torch.randn(3, 11, 5)
    seq = sl.Sequence.from_values(x)
    with torch.no_grad():
        want, _ = twin(x)
        torch.testing.assert_close(ours.layer(seq).values, want, rtol=1e-5, atol=1e-6)
        y, _ = sl.step_by_step(ours, seq)
        torch.testing.assert_close(y.values, want, rtol=1e-5, atol=1e-6)
    # and back: torch.nn loads our state dict
    back = type(twin)(5, 7, bias=bias, batch_first=True, **({"nonlinearity": "relu"} if "relu" in name else {}))
    back.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("name", sorted(TORCH_TWINS))
@pytest.mark.parametrize("random_mask", [False, True])
def test_masked_steps_hold_the_state(name, random_mask):
    """Valid outputs equal torch.nn on the row's valid steps alone, for prefix masks and masks with holes."""
    ours, twin = _pair(name, seed=3)
    x = random_sequence(4, 13, 5, random_mask=random_mask, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _compact_reference(twin, x)
        for y in (ours.layer(x), sl.step_by_step(ours, x)[0], sl.step_by_step(ours, x, blocks_per_step=3)[0]):
            got = y.mask_invalid().values
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fused_path_equals_the_loop_path_on_any_mask():
    torch.manual_seed(0)
    lstm = LSTM(4, 6).eval()
    for random_mask in (False, True):
        x = random_sequence(3, 17, 4, random_mask=random_mask, generator=torch.Generator().manual_seed(2))
        values = _kernels.mask_values(x.values, x.mask)
        weights = lstm._weights(torch.float32)
        with torch.no_grad():
            fused = _kernels.fused_layer("lstm", values, x.mask, weights, True, False)
            state = lstm.get_initial_state(3, x.channel_spec)
            looped, _ = _kernels.cell_steps("lstm", values, x.mask, state, weights)
        keep = x.mask.unsqueeze(-1)
        torch.testing.assert_close(fused * keep, looped * keep, rtol=1e-5, atol=1e-6)


def _reference_lstm(x: np.ndarray, mask: np.ndarray, kernel, recurrent, bias, act, rec_act) -> np.ndarray:
    """The reference's LSTM cell in float64 numpy: kernel [in, 4u], recurrent [u, 4u], one bias."""
    units = recurrent.shape[0]
    c = np.zeros((x.shape[0], units))
    h = np.zeros((x.shape[0], units))
    out = np.zeros((*x.shape[:2], units))
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = rec_act(f) * c + rec_act(i) * act(g)
        h_new = rec_act(o) * act(c_new)
        keep = mask[:, t, None]
        c = np.where(keep, c_new, c)
        h = np.where(keep, h_new, h)
        out[:, t] = h_new
    return out * mask[..., None]


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize(
    ("activation", "np_act"), [("tanh", np.tanh), ("softsign", lambda v: v / (1 + np.abs(v)))], ids=["tanh", "softsign"]
)
def test_lstm_loads_the_reference_flax_layout(activation, np_act):
    """The converter's layout (kernel^T, recurrent_kernel^T, bias in bias_ih) gives the reference's cell."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((4, 20)).astype(np.float32)
    recurrent = rng.standard_normal((5, 20)).astype(np.float32) * 0.5
    bias = rng.standard_normal(20).astype(np.float32)
    variables = {"params": {"kernel": {"kernel": kernel}, "recurrent_kernel": {"kernel": recurrent}, "bias": bias}}
    layer = load_flax_params(LSTM(4, 5, activation=activation), variables).eval()
    assert torch.count_nonzero(layer.bias_hh_l0) == 0
    x = random_sequence(2, 9, 4, random_mask=True, generator=torch.Generator().manual_seed(0))
    want = _reference_lstm(x.values.double().numpy(), x.mask.numpy(), kernel, recurrent, bias, np_act, _sigmoid)
    with torch.no_grad():
        got = layer.layer(x).mask_invalid().values
        stepped = sl.step_by_step(layer, x)[0].mask_invalid().values
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stepped.numpy(), want, rtol=1e-5, atol=1e-5)


def test_lstm_reference_initialisers():
    torch.manual_seed(0)
    layer = LSTM(64, 32)
    w_hh = layer.weight_hh_l0.detach()  # [4u, u]: the transpose of flax's orthogonal [u, 4u] kernel
    torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(32), rtol=1e-4, atol=1e-4)
    expected = torch.zeros(128)
    expected[32:64] = 1.0  # unit forget bias
    torch.testing.assert_close(layer.bias_ih_l0.detach(), expected)
    assert torch.count_nonzero(layer.bias_hh_l0) == 0
    w_ih = layer.weight_ih_l0.detach()
    assert abs(w_ih.var().item() - 1 / 64) < 0.2 / 64  # lecun_normal: variance 1 / fan_in
    assert w_ih.abs().max().item() <= 2 / 0.8796 / 8 + 1e-6  # truncated at 2 standard deviations


def test_gru_and_rnn_use_torch_default_initialisation():
    torch.manual_seed(0)
    for layer in (GRU(6, 16), VanillaRNN(6, 16)):
        for p in layer.parameters():
            assert p.abs().max().item() <= 0.25 + 1e-6 and p.std().item() > 0.1


@pytest.mark.parametrize("cls", [LSTM, GRU, VanillaRNN])
def test_infers_its_input_size_at_the_first_call(cls):
    layer = cls(hidden_size=6)
    assert layer.input_size is None and sl.lazy.has_uninitialized_parameters(layer)
    x = random_sequence(2, 5, 3)
    y = verify_contract(layer, x, **tolerances(torch.float32))
    assert y.channel_shape == (6,) and layer.input_size == 3 and layer.weight_ih_l0.shape[1] == 3
    assert layer.get_config()["input_size"] == 3
    rebuilt = sl.from_config(json.loads(json.dumps(layer.get_config())))
    assert rebuilt.weight_ih_l0.shape == layer.weight_ih_l0.shape
    lazy = cls(hidden_size=6)
    lazy.load_state_dict(layer.state_dict())  # the size comes from the checkpoint
    torch.testing.assert_close(lazy.layer(x).values, layer.layer(x).values)
    with pytest.raises(
        ValueError, match=rf"{cls.__name__} expected input channel shape \(input_size,\) = \(3,\); got \(4,\)"
    ):
        layer.layer(random_sequence(2, 5, 4))


def test_registry_names_and_eager_construction():
    assert sl.LSTM is LSTM and sl.recurrent.GRU is GRU and sl.SimpleRNN is VanillaRNN
    layer = sl.LSTM(input_size=128, hidden_size=64)
    assert layer.weight_ih_l0.shape == (256, 128) and layer.get_output_spec(((128,), torch.float32)).shape == (64,)
    assert layer.receptive_field == (-float("inf"), 0) and layer.block_size == 1


def test_bidirectional_matches_torch_bidirectional_lstm():
    torch.manual_seed(0)
    twin = torch.nn.LSTM(4, 5, batch_first=True, bidirectional=True).eval()
    forward, backward = LSTM(4, 5), LSTM(4, 5)
    sd = twin.state_dict()
    forward.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_reverse")})
    backward.load_state_dict({k.removesuffix("_reverse"): v for k, v in sd.items() if k.endswith("_reverse")})
    layer = sl.Bidirectional(forward, backward, combination="concat").eval()
    lengths = torch.tensor([9, 6, 0, 3])
    x = torch.randn(4, 9, 4)
    seq = sl.Sequence.from_lengths(x, lengths, is_masked=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        want, _ = torch.nn.utils.rnn.pad_packed_sequence(twin(packed)[0], batch_first=True, total_length=9)
        got = layer.layer(seq).mask_invalid().values
    want = want * seq.mask.unsqueeze(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    torch.manual_seed(0)
    layer = LSTM(3, 4).to(dtype).eval()
    x = random_sequence(2, 6, 3, dtype=dtype, random_mask=True)
    y = layer.layer(x)
    assert y.dtype == dtype and layer.get_initial_state(2, x.channel_spec)["h"].dtype == dtype
    # float32 input, bfloat16 compute
    mixed = LSTM(3, 4, compute_dtype=torch.bfloat16)
    assert mixed.layer(random_sequence(2, 6, 3)).dtype == torch.bfloat16


def test_bad_input_errors_name_the_layer():
    layer = LSTM(3, 4)
    with pytest.raises(ValueError, match=r"LSTM expected input channel shape \(input_size,\) = \(3,\); got \(5,\)"):
        layer.layer(random_sequence(2, 4, 5))
    with pytest.raises(ValueError, match=r"LSTM expected input channel shape .* got \(3, 2\)"):
        layer.layer(random_sequence(2, 4, 3, 2))
    with pytest.raises(TypeError, match=r"GRU expects floating-point input values; got torch.int64"):
        GRU(3, 4).layer(sl.Sequence.from_values(torch.zeros(2, 4, 3, dtype=torch.int64)))
    x = random_sequence(2, 1, 3)
    with pytest.raises(StateMismatchError, match=r"LSTM.step: the state does not match .* structure"):
        layer.step(x, {"h": torch.zeros(2, 4)})
    with pytest.raises(StateMismatchError, match=r"LSTM.step: .*shape \[3, 4\].*shape \[2, 4\]"):
        layer.step(x, {"h": torch.zeros(3, 4), "c": torch.zeros(3, 4)})
    with pytest.raises(TypeError, match=r"LSTM needs hidden_size"):
        LSTM(3)
    with pytest.raises(ValueError, match=r"VanillaRNN expects nonlinearity 'tanh' or 'relu'"):
        VanillaRNN(3, 4, nonlinearity="gelu")
    with pytest.raises(TypeError, match=r"LSTM expects activation to be an activation name"):
        LSTM(3, 4, activation=lambda v: v)
    with pytest.raises(TypeError, match=r"LSTM\(\) got an unexpected keyword argument 'units'"):
        LSTM(3, units=4)
    with pytest.raises(TypeError, match=r"GRU expects compute_dtype to be None or a torch.dtype.*got str"):
        GRU(3, 4, compute_dtype="float32")
    with pytest.raises(ValueError, match=r"LSTM expects compute_dtype to be a floating dtype; got torch.int32"):
        LSTM(3, 4, compute_dtype=torch.int32)
    with pytest.raises(ValueError, match=r"LSTM \(recurrent_activation\): Unknown activation 'hard_sigmoid'"):
        LSTM(3, 4, recurrent_activation="hard_sigmoid")


def test_state_dict_mid_stream_resumes():
    torch.manual_seed(0)
    layer = GRU(3, 4).eval()
    x = random_sequence(2, 10, 3, random_mask=True)
    with torch.no_grad():
        full, _ = sl.step_by_step(layer, x)
        state = layer.get_initial_state(2, x.channel_spec)
        first, state = layer.step(x[:, :6], state)
        saved = {k: v.clone() for k, v in state.items()}
        second, _ = layer.step(x[:, 6:], saved)
    torch.testing.assert_close(
        sl.Sequence.concatenate_sequences([first, second]).mask_invalid().values, full.mask_invalid().values
    )


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(sorted(TORCH_TWINS)),
    batch=st.integers(1, 3),
    time=st.integers(0, 9),
    seed=st.integers(0, 2**16),
)
def test_property_layer_step_and_torch_agree_on_random_masks(name, batch, time, seed):
    ours, twin = _pair(name, input_size=3, hidden=4, seed=seed % 7)
    x = random_sequence(batch, time, 3, random_mask=True, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = _compact_reference(twin, x)
        torch.testing.assert_close(ours.layer(x).mask_invalid().values, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sl.step_by_step(ours, x)[0].mask_invalid().values, want, rtol=1e-5, atol=1e-5)
