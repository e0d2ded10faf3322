"""Metadata against the reference's tables, bad-input errors (each names the layer, what it
expected and what arrived), configs with every window form, lazy constants, and property tests
over sampled configurations."""

from __future__ import annotations

import fractions
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sl
import sl_dsp
from sl.testing import random_sequence, verify_contract
from sl_dsp import (
    FFT,
    IFFT,
    IRFFT,
    RFFT,
    STFT,
    Frame,
    InverseSTFT,
    LinearToMelSpectrogram,
    OverlapAdd,
    Window,
    hann_window,
    inverse_stft_window,
    inverse_stft_window_fn,
)

STEPPABLE = {"causal_valid", "reverse_causal_valid", "causal", "reverse_causal", "semicausal"}

# -- metadata (the reference's dsp_test expectations) -------------------------------------------


@pytest.mark.parametrize("k,s", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (2, 3), (8, 3)])
@pytest.mark.parametrize(
    "padding",
    [
        "causal_valid",
        "semicausal",
        "reverse_causal_valid",
        "causal",
        "reverse_causal",
        "same",
        "valid",
        "explicit",
        "semicausal_full",
    ],
)
def test_frame_metadata(k, s, padding):
    explicit = (max(0, k - s), k - 1 - max(0, k - s))
    layer = Frame(k, s, padding=explicit if padding == "explicit" else padding)
    assert layer.supports_step == (padding in STEPPABLE or padding == "explicit")
    assert layer.block_size == s and layer.output_ratio == fractions.Fraction(1, s)
    expected = {
        "causal_valid": 0,
        "causal": 0,
        "semicausal": 0,
        "reverse_causal_valid": k - 1,
        "reverse_causal": k - 1,
        "explicit": (k - 1) - max(0, k - s),
        "semicausal_full": s - 1,
    }.get(padding, 0)
    assert layer.input_latency == expected
    assert layer.output_latency == (0 if padding == "semicausal_full" else expected // s)
    assert layer.get_output_shape((4, 5)) == (k, 4, 5)


@pytest.mark.parametrize("padding", ["causal", "valid", "semicausal_full"])
def test_overlap_add_and_inverse_stft_metadata(padding):
    ola = OverlapAdd(5, 2, padding=padding)
    istft = InverseSTFT(5, 2, 8, time_padding=padding)
    for layer in (ola, istft):
        assert layer.supports_step == (padding == "causal")
        assert layer.block_size == 1 and layer.output_ratio == 2
        assert layer.input_latency == 0 and layer.output_latency == 0
    assert ola.get_output_shape((5, 3)) == (3,)
    assert istft.get_output_shape((5, 3)) == (3,)
    assert istft.get_output_dtype(torch.complex64) == torch.float32


@pytest.mark.parametrize("padding", sorted(STEPPABLE | {"valid", "same", "semicausal_full"}))
def test_stft_metadata(padding):
    layer = STFT(4, 2, 3, time_padding=padding, output_magnitude=True)
    assert layer.supports_step == (padding in STEPPABLE)
    assert layer.block_size == 2 and 1 / layer.output_ratio == 2
    assert layer.get_output_shape(()) == (2,)
    assert layer.get_output_dtype(torch.float32) == torch.float32
    assert STFT(4, 2, 3, time_padding=padding).get_output_dtype(torch.float64) == torch.complex128
    assert STFT(4, 2, 3, time_padding=padding).get_output_dtype(torch.bfloat16) == torch.complex64


def test_fft_family_shapes_and_dtypes():
    assert FFT(8).get_output_shape((5,)) == (8,)
    assert FFT(axis=-2).get_output_shape((5, 3)) == (5, 3)
    assert FFT().get_output_dtype(torch.float32) == torch.complex64
    assert IFFT(frame_length=3, axis=2).get_output_shape((5, 4)) == (3, 4)
    assert RFFT(8).get_output_shape((5,)) == (5,)
    assert RFFT().get_output_dtype(torch.float64) == torch.complex128
    assert IRFFT(frame_length=6).get_output_shape((5,)) == (6,)
    assert IRFFT().get_output_shape((5,)) == (8,)
    for layer in (FFT(), IFFT(), RFFT(), IRFFT()):
        assert layer.block_size == 1 and layer.output_ratio == 1 and layer.receptive_field == (0, 0)
        assert dict(layer.named_parameters()) == {} and layer.state_dict() == {}


def test_delay_and_lookahead_are_core_layers_re_exported():
    assert sl_dsp.Delay is sl.Delay and sl_dsp.Lookahead is sl.Lookahead
    assert sl.registry.name_of(sl_dsp.Delay) == "Delay"
    names = {name for name, cls in sl.registry.plugin_layers("dsp").items()}
    assert "Delay" not in names and "Lookahead" not in names
    assert sl.dsp.STFT is STFT and sl.registry.get("dsp:InverseSTFT") is InverseSTFT
    assert sl.registry.get("ISTFT") is InverseSTFT


def test_layers_have_no_parameters_and_constants_stay_out_of_state_dicts():
    layer = sl.Serial(STFT(16, 4, 16, output_magnitude=True), LinearToMelSpectrogram(8, 16000, 0.0, 8000.0))
    layer.layer(random_sequence(2, 40))
    assert list(layer.parameters()) == [] and layer.state_dict() == {}


# -- errors -------------------------------------------------------------------------------------


def _raises(fn, *fragments):  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def test_bad_inputs_get_errors_naming_the_layer():
    c = torch.complex64
    _raises(lambda: OverlapAdd(4, 6), "OverlapAdd", "frame_step (6)", "frame_length (4)")
    _raises(lambda: InverseSTFT(4, 6, 8), "InverseSTFT", "frame_step (6)", "frame_length (4)")
    _raises(lambda: OverlapAdd(4, 2, padding="same"), "OverlapAdd", "'same'", "causal")
    _raises(lambda: InverseSTFT(8, 2, 8, time_padding="semicausal"), "InverseSTFT", "semicausal")
    _raises(lambda: STFT(8, 2, 8, time_padding="sideways"), "STFT", "sideways")
    _raises(lambda: STFT(8, 0, 8), "STFT", "frame_step")
    _raises(lambda: Frame(4, 2, padding=(1, 1)), "Frame", "(1, 1)", "frame_length - 1 = 3")
    _raises(lambda: Frame(0, 2), "Frame", "frame_length")
    _raises(lambda: IRFFT(8).layer(random_sequence(1, 3, 5)), "IRFFT", "complex", "float32")
    _raises(lambda: IRFFT(8).layer(random_sequence(1, 3, 4, dtype=c)), "IRFFT", "5 frequency bins", "got 4")
    _raises(lambda: IRFFT().layer(random_sequence(1, 3, 1, dtype=c)), "IRFFT", "at least 2 bins")
    _raises(lambda: InverseSTFT(8, 2, 8).layer(random_sequence(1, 3, 4, dtype=c)), "InverseSTFT", "5", "(4,)")
    _raises(lambda: InverseSTFT(8, 2, 8).layer(random_sequence(1, 3, 5)), "InverseSTFT", "complex", "float32")
    _raises(lambda: RFFT().layer(random_sequence(1, 3, 4, dtype=c)), "RFFT", "real", "complex64")
    _raises(lambda: STFT(4, 2, 4).layer(random_sequence(1, 8, dtype=c)), "STFT", "real", "complex64")
    _raises(lambda: LinearToMelSpectrogram(8, 16000, 0.0, 8001.0), "LinearToMelSpectrogram", "Nyquist", "8001")
    _raises(lambda: LinearToMelSpectrogram(8, 16000, 500.0, 400.0), "LinearToMelSpectrogram", "lower_edge_hertz")
    _raises(lambda: LinearToMelSpectrogram(0, 16000, 0.0, 400.0), "LinearToMelSpectrogram", "num_mel_bins")
    _raises(
        lambda: LinearToMelSpectrogram(8, 16000, 0.0, 400.0).layer(random_sequence(1, 3)),
        "LinearToMelSpectrogram",
        "()",
    )
    _raises(lambda: FFT(axis=1).layer(random_sequence(1, 3, 4, dtype=c)), "FFT", "batch or time", "axis=1")
    _raises(lambda: FFT(axis=3).layer(random_sequence(1, 3, 4, dtype=c)), "FFT", "out of range", "(4,)")
    _raises(lambda: FFT().layer(random_sequence(1, 3, dtype=c)), "FFT", "rank at least 3")
    _raises(lambda: FFT(padding="left"), "FFT", "'center' or 'right'", "'left'")
    _raises(lambda: FFT(fft_length=0), "FFT", "fft_length")
    _raises(lambda: Window(axis=0).layer(random_sequence(1, 3, 4)), "Window", "batch", "axis=0")
    _raises(lambda: Window(axis=-3).layer(random_sequence(1, 3, 4)), "Window", "axis=-3")
    _raises(lambda: Window(axis=3).layer(random_sequence(1, 3, 4)), "Window", "out of range")
    _raises(lambda: Window(axis=-1, window_fn="triangle-ish"), "Window", "triangle-ish")
    _raises(lambda: STFT(8, 2, 8, window_fn=("kaiser",)), "STFT", "kaiser", "beta")
    _raises(lambda: STFT(8, 2, 8, window_fn={"inverse": "hann"}), "STFT", "inverse_stft")
    _raises(
        lambda: OverlapAdd(4, 2, padding="causal").layer(random_sequence(1, 3, 5)),
        "OverlapAdd",
        "frame_length=4",
        "(5,)",
    )
    _raises(lambda: STFT(8, 2, 8, window_fn=torch.ones(7)).layer(random_sequence(1, 16)), "7", "8")
    with pytest.raises(ValueError, match="STFT does not support step"):
        STFT(8, 2, 8, time_padding="semicausal_full").step(random_sequence(1, 4), ())
    with pytest.raises(ValueError, match="Frame with padding='valid' cannot step"):
        Frame(3, 1, padding="valid").get_initial_state(1, ((), torch.float32))


def test_inputs_and_arguments_that_would_give_garbage_are_refused():
    """Each of these ran before and returned zeros, NaN or a truncated value without a word."""
    nan, inf = float("nan"), float("inf")
    ints = sl.Sequence.from_values(torch.full((1, 2, 257), 100))
    _raises(lambda: LinearToMelSpectrogram(80, 16000, 0, 8000).layer(ints), "LinearToMelSpectrogram", "int64")
    _raises(lambda: Window(-1).layer(sl.Sequence.from_values(torch.full((1, 1, 8), 100))), "Window", "int64")
    _raises(lambda: Window(-1).get_initial_state(1, ((8,), torch.bool)), "Window", "torch.bool")
    _raises(lambda: LinearToMelSpectrogram(80, 16000, nan, 8000), "LinearToMelSpectrogram", "lower_edge_hertz", "nan")
    _raises(lambda: LinearToMelSpectrogram(80, inf, 0, 8000), "LinearToMelSpectrogram", "sample_rate", "inf")
    _raises(lambda: LinearToMelSpectrogram(80, None, 0, 8000), "LinearToMelSpectrogram", "sample_rate", "NoneType")
    _raises(lambda: sl_dsp.linear_to_mel_weight_matrix(8, 129, 8000, 0.0, nan), "upper_edge_hertz", "nan")
    _raises(lambda: STFT(8, 2, 8, window_fn=("kaiser", nan)), "STFT", "not finite")
    _raises(lambda: STFT(8, 2, 8, window_fn=[nan] * 8), "STFT", "finite")
    _raises(lambda: STFT(8, 2, 8, window_fn=[1.0] * 7), "STFT", "7 points", "8 are needed")
    _raises(lambda: STFT(8, 2, 8, window_fn=lambda n, dtype=None: torch.full((n,), nan)), "STFT", "non-finite")
    _raises(
        lambda: STFT(8, 2, 8, window_fn=lambda n, dtype=None: torch.ones(n, dtype=torch.complex64)),
        "STFT",
        "must be real",
    )
    _raises(lambda: InverseSTFT(8, 2, 8, window_fn=lambda n: torch.ones(n)), "InverseSTFT", "(length, dtype=...)")
    _raises(lambda: InverseSTFT(8, 2, 8, window_fn=lambda n, dtype=None: torch.ones(n + 1)), "InverseSTFT", "(9,)")
    _raises(lambda: STFT(8, 2, 8, output_magnitude="false"), "STFT", "output_magnitude", "bool", "'false'")
    _raises(lambda: STFT(8, 2, 8, fft_padding="left"), "STFT", "fft_padding", "'left'")
    _raises(
        lambda: STFT(8, 2, 8, time_padding="same").get_initial_state(1, ((), torch.float32)),
        "STFT with time_padding='same' cannot step",
    )
    _raises(lambda: Frame(True, 1), "Frame", "frame_length", "bool")
    complex8 = sl.Sequence.from_values(torch.randn(1, 3, 8, dtype=torch.complex64))
    _raises(lambda: IFFT(fft_length=16).layer(complex8), "IFFT", "fft_length=16", "8 bins")
    assert IFFT(fft_length=8).layer(complex8).values.shape == (1, 3, 8)
    # torch.fft.ifft of a real input is a lazy conjugate view: resolved, so .numpy() works
    assert not IFFT().layer(random_sequence(1, 3, 4)).values.is_conj()
    # the signal functions
    _raises(lambda: sl_dsp.signal.frame(torch.randn(10), 4, 2, -1, (-5, 0)), "frame", "padding", "-5")
    _raises(lambda: sl_dsp.signal.frame(torch.randn(10), 4, 2, -1, "bogus"), "frame", "'bogus'")
    _raises(lambda: sl_dsp.signal.frame(torch.randn(10), 4.5, 2), "frame", "frame_length", "float")
    _raises(lambda: sl_dsp.signal.get_window("hann", 8.7), "get_window", "window_length", "8.7")
    _raises(lambda: hann_window(2.5), "hann_window", "window_length")
    _raises(lambda: hann_window(8, periodic="no"), "hann_window", "periodic")
    _raises(lambda: sl_dsp.signal.overlap_and_add(torch.randn(3, 4), True), "overlap_and_add", "frame_step")
    _raises(lambda: sl_dsp.signal.get_window(("hann", 1.0), 8), "'hann' window takes no parameters")
    _raises(lambda: sl_dsp.signal.get_window(("gaussian",), 8), "'gaussian'", "std")
    _raises(lambda: STFT(8, 2, 8, window_fn=("kaiser", "a")), "STFT", "beta must be a number", "'a'")
    _raises(lambda: sl_dsp.signal.get_window(("general_cosine", []), 8), "a list of numbers")


def test_flush_refuses_a_state_that_is_not_the_streams():
    """flush has no input to check the state against: it checks it against the stream the layer
    last started or stepped (before, another config's state flushed the wrong number of frames)."""
    small, big = STFT(8, 2, 8, time_padding="causal"), STFT(16, 4, 16, time_padding="causal")
    state = small.get_initial_state(1, ((), torch.float32))
    other = big.get_initial_state(1, ((), torch.float32))
    with pytest.raises(sl.StateMismatchError, match=r"STFT\.flush.*\[1, 15\].*\[1, 7\]"):
        small.flush(other)
    with pytest.raises(sl.StateMismatchError, match=r"STFT\.flush.*NoneType"):
        small.flush(None)
    assert small.flush(state).values.shape == (1, 4, 5)
    inverse = InverseSTFT(8, 2, 8)
    x = random_sequence(2, 3, 5, dtype=torch.complex64)
    _, stepped = inverse.step(x, inverse.get_initial_state(2, x.channel_spec))
    assert inverse.flush(stepped).values.shape == (2, 6)
    with pytest.raises(sl.StateMismatchError, match=r"InverseSTFT\.flush.*batch_size=2"):
        inverse.flush((torch.zeros(1, 6), torch.zeros(1, 6, dtype=torch.bool)))  # batch 1, the stream's is 2
    with pytest.raises(sl.StateMismatchError, match=r"InverseSTFT\.flush"):
        inverse.flush((1, 2))
    # inside a stack, the outermost flush checks and the children trust it
    chain = sl.Serial(STFT(8, 2, 8, time_padding="semicausal"), InverseSTFT(8, 2, 8))
    chain_state = chain.get_initial_state(1, ((), torch.float32))
    _, chain_state = chain.step(random_sequence(1, 6), chain_state)
    assert chain.flush(chain_state) is not None
    with pytest.raises(sl.StateMismatchError, match=r"Serial\.flush"):
        chain.flush((state, ()))


# -- configs ------------------------------------------------------------------------------------


def _round_trip(layer):  # type: ignore[no-untyped-def]
    config = layer.get_config()
    rebuilt = sl.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == config
    return config, rebuilt


def test_window_forms_round_trip_through_configs():
    x = random_sequence(2, 30)
    forms = [
        ("hann", "hann"),
        (hann_window, "hann"),
        (sl_dsp.hamming_window, "hamming"),
        (sl_dsp.get_window_fn("blackman"), "blackman"),
        (("kaiser", 6.0), ("kaiser", 6.0)),
        (9.0, ("kaiser", 9.0)),
        (None, None),
        (inverse_stft_window_fn(4, hann_window), {"inverse_stft": "hann", "frame_step": 4}),
        (inverse_stft_window(4, ("gaussian", 2.0)), {"inverse_stft": ("gaussian", 2.0), "frame_step": 4}),
    ]
    for form, canonical in forms:
        layer = STFT(16, 4, 16, window_fn=form, time_padding="causal")
        assert layer.window_fn == canonical
        _, rebuilt = _round_trip(layer)
        torch.testing.assert_close(rebuilt.layer(x).values, layer.layer(x).values)
    explicit = STFT(8, 4, 8, window_fn=torch.linspace(0.0, 1.0, 8))
    _, rebuilt = _round_trip(explicit)
    torch.testing.assert_close(rebuilt.layer(x).values, explicit.layer(x).values)
    custom = STFT(8, 4, 8, window_fn=lambda n, dtype=None: torch.ones(n, dtype=dtype))
    with pytest.raises(TypeError, match="window_fn"):
        custom.get_config()


def test_every_layer_round_trips_with_its_options():
    for layer in [
        Frame(5, 2, padding=(3, 1), explicit_padding_is_same_like=True),
        OverlapAdd(5, 2, padding="semicausal_full"),
        FFT(8, axis=-2, padding="center"),
        IFFT(4, frame_length=6),
        RFFT(9),
        IRFFT(8, frame_length=5, padding="center"),
        STFT(8, 2, 16, window_fn="hamming", time_padding="semicausal", fft_padding="center", output_magnitude=True),
        InverseSTFT(8, 2, 16, window_fn=inverse_stft_window(2), time_padding="valid"),
        LinearToMelSpectrogram(40, 16000, 20.0, 7600.0),
        Window(axis=2, window_fn=("general_cosine", [0.5, 0.5])),
    ]:
        config, _ = _round_trip(layer)
        assert config["type"] == type(layer).__name__
    assert Frame(4, 2, padding=sl.types.PaddingMode.CAUSAL).get_config()["padding"] == "causal"
    assert Frame(4, 2, padding=[2, 1]).get_config()["padding"] == {"__tuple__": [2, 1]}


# -- constants: cached per dtype/device, computed in float64 ------------------------------------


def test_constants_follow_the_input_dtype_without_rounding_through_another():
    layer = STFT(16, 4, 16, time_padding="causal")
    x = random_sequence(1, 40, dtype=torch.float64)
    y64 = layer.layer(x)
    assert y64.dtype == torch.complex128
    window = layer._window(torch.float64, torch.device("cpu"))
    torch.testing.assert_close(window, hann_window(16, dtype=torch.float64), rtol=0, atol=0)
    layer.to(torch.bfloat16)  # no buffers: nothing to round
    torch.testing.assert_close(layer.layer(x).values, y64.values, rtol=0, atol=0)


def test_compiled_layer_mode_matches_eager():
    layer = sl.Serial(
        STFT(32, 8, 32, time_padding="semicausal", output_magnitude=True),
        LinearToMelSpectrogram(10, 16000, 0.0, 8000.0),
    )
    x = sl.Sequence.from_values(torch.randn(2, 200))
    eager = layer.layer(x)
    compiled = torch.compile(lambda s: layer.layer(s), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x).values, eager.values)


# -- property tests -----------------------------------------------------------------------------

_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(
    k=st.integers(1, 9),
    s=st.integers(1, 5),
    padding=st.sampled_from(sorted(STEPPABLE)),
    time=st.integers(0, 25),
    channels=st.sampled_from([(), (2,)]),
    seed=st.integers(0, 2**16),
)
def test_frame_contract_and_flush(k, s, padding, time, channels, seed):
    layer = Frame(k, s, padding=padding)
    x = random_sequence(2, time, *channels, random_mask=seed % 2 == 0, generator=torch.Generator().manual_seed(seed))
    verify_contract(layer, x, test_gradients=False, test_receptive_field=False)
    if padding == "semicausal":
        xb = sl.Sequence.from_values(torch.randn(2, time, *channels)).pad_to_multiple(s)
        state = layer.get_initial_state(2, xb.channel_spec)
        y, state = layer.step(xb, state)
        tail = layer.flush(state)
        full = Frame(k, s, padding="semicausal_full").layer(xb)
        owed = full.values.shape[1] - y.values.shape[1]
        assert owed == (0 if tail is None else tail.values.shape[1])
        if tail is not None:
            torch.testing.assert_close(tail.values, full.values[:, -owed:])


@_SETTINGS
@given(
    s=st.integers(1, 6),
    overlap=st.integers(1, 4),
    extra_fft=st.integers(0, 6),
    window=st.sampled_from(["hann", "hamming", ("kaiser", 6.0), "blackman"]),
    analysis=st.sampled_from(["semicausal", "causal"]),
    time=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_streamed_reconstruction_for_sampled_configs(s, overlap, extra_fft, window, analysis, time, seed):
    k = s * overlap + (seed % s if overlap > 1 else 0)
    if window in ("hann", "blackman") and k <= s:
        return  # frames that do not overlap, zero at their first sample: no perfect reconstruction
    n = k + extra_fft
    chain = sl.Serial(
        STFT(k, s, n, window_fn=window, time_padding=analysis),
        InverseSTFT(k, s, n, window_fn=inverse_stft_window(s, window)),
    )
    gen = torch.Generator().manual_seed(seed)
    x = sl.Sequence.from_values(torch.randn(2, time, generator=gen))
    streamer = sl.Streamer(chain, 2, x.channel_spec)
    parts, t = [], 0
    while t < time:
        step = int(torch.randint(1, 2 * s + 2, (1,), generator=gen))
        parts.append(streamer.push(x[:, t : t + step]))
        t += step
    parts.append(streamer.flush())
    y = sl.Sequence.concatenate_sequences(parts)
    delay = k - s if analysis == "semicausal" else k - 1
    assert y.values.shape[1] >= delay + time
    torch.testing.assert_close(y.values[:, delay : delay + time], x.values, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(y.values.abs().max()))


@pytest.mark.parametrize("window", ["blackman", "hann", ("general_hamming", 0.4)])
def test_stft_receptive_field_ignores_taps_below_float32_resolution(window):
    """Blackman's end taps are -1.4e-17: zero, as the reference (window > 0) counts them; a
    genuinely negative tap (general Hamming 0.4 ends at -0.2) reads its sample and stays in."""
    rf = STFT(5, 1, 5, window_fn=window, time_padding="causal").receptive_field_per_step
    expected = (-4, 0) if isinstance(window, tuple) else (-3, -1)  # (odd-length Hann: zero at both ends)
    assert rf == {0: expected}
