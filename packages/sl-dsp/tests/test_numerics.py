"""Numerics against independent implementations: torch.stft / torch.istft, numpy.fft, a mel
filterbank written here from the HTK formula, explicit loops for framing and overlap-add, and
the windows' closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sl
from sl.padding import explicit_padding
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
    get_window,
    hamming_window,
    hann_window,
    inverse_stft_window_fn,
    linear_to_mel_weight_matrix,
)
from sl_dsp import signal as S

# -- helpers written independently of sl_dsp -------------------------------------------------


def _np_pad_or_truncate(values: np.ndarray, axis: int, length: int, padding: str) -> np.ndarray:
    size = values.shape[axis]
    if size < length:
        amount = length - size
        left = amount // 2 if padding == "center" else 0
        widths = [(0, 0)] * values.ndim
        widths[axis] = (left, amount - left)
        return np.pad(values, widths)
    start = (size - length) // 2 if padding == "center" else 0
    return np.take(values, np.arange(start, start + length), axis=axis)


def _htk_mel_matrix(num_mel: int, num_bins: int, sample_rate: float, lo_hz: float, hi_hz: float) -> np.ndarray:
    """The HTK triangular filterbank, one weight at a time (float64)."""

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(lo_hz), mel(hi_hz)
    edges = [lo + (hi - lo) * i / (num_mel + 1) for i in range(num_mel + 2)]
    out = np.zeros((num_bins, num_mel))
    for b in range(1, num_bins):  # the DC bin stays zero
        m = mel(b * (sample_rate / 2) / (num_bins - 1))
        for j in range(num_mel):
            left, centre, right = edges[j], edges[j + 1], edges[j + 2]
            up = (m - left) / (centre - left)
            down = (right - m) / (right - centre)
            out[b, j] = max(0.0, min(up, down))
    return out


def _seq(batch: int, time: int, *channels: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> sl.Sequence:
    return sl.testing.random_sequence(
        batch, time, *channels, dtype=dtype, generator=torch.Generator().manual_seed(seed), low_length=1
    )


def _valid(y: sl.Sequence) -> torch.Tensor:
    return y.mask_invalid().values


# -- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 7, 64, 65])
@pytest.mark.parametrize("periodic", [True, False])
def test_raised_cosine_windows_match_their_closed_form(length, periodic):
    n = length + (1 if periodic and length % 2 == 0 else 0) - 1
    i = np.arange(length)
    hann = np.ones(1) if length == 1 else 0.5 - 0.5 * np.cos(2 * np.pi * i / n)
    hamming = np.ones(1) if length == 1 else 0.54 - 0.46 * np.cos(2 * np.pi * i / n)
    np.testing.assert_allclose(hann_window(length, periodic, dtype=torch.float64).numpy(), hann, atol=1e-12)
    np.testing.assert_allclose(hamming_window(length, periodic, dtype=torch.float64).numpy(), hamming, atol=1e-12)
    if length > 1 and (length % 2 == 0 or not periodic):
        torch.testing.assert_close(
            hann_window(length, periodic), torch.hann_window(length, periodic=periodic and length % 2 == 0)
        )


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", ("kaiser", 8.0), ("gaussian", 3.0), 14.0])
@pytest.mark.parametrize("length", [16, 17])
def test_get_window_follows_scipy_fftbins(name, length):
    """Periodic (scipy's fftbins) for even lengths, symmetric for odd ones, as the reference."""
    sym = length % 2 == 1
    base, params = (
        (name, ())
        if isinstance(name, str)
        else (("kaiser", (name,)) if isinstance(name, float) else (name[0], name[1:]))
    )
    kw = {"kaiser": "beta", "gaussian": "std"}
    extra = {kw[base]: params[0]} if params else {}
    expected = getattr(torch.signal.windows, base)(length, sym=sym, dtype=torch.float64, **extra)
    torch.testing.assert_close(get_window(name, length, dtype=torch.float64), expected)


@pytest.mark.parametrize("frame_length,frame_step", [(128, 64), (128, 32), (64, 64), (64, 128), (50, 15)])
@pytest.mark.parametrize("forward", ["hann", "hamming"])
def test_inverse_stft_window_has_unit_gain_at_every_phase(frame_length, frame_step, forward):
    analysis = S.make_window(forward, frame_length, torch.float64)
    synthesis = inverse_stft_window_fn(frame_step, forward)(frame_length, dtype=torch.float64)
    product = (analysis * synthesis).numpy()
    if frame_step > frame_length:
        gains = [product[p] for p in range(frame_length) if analysis[p] != 0]
        np.testing.assert_allclose(gains, 1.0, atol=1e-12)
        return
    for phase in range(frame_step):
        total = product[phase::frame_step].sum()
        if np.abs(analysis.numpy()[phase::frame_step]).sum() > 0:
            np.testing.assert_allclose(total, 1.0, atol=1e-12)


# -- framing and overlap-add --------------------------------------------------------------------


def test_frame_matches_the_reference_examples():
    """``signal.frame`` on ``[1..5]``: the reference's own test table."""
    x = torch.arange(1, 6)
    table = {
        (2, 1, "causal_valid"): [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]],
        (2, 2, "causal"): [[0, 1], [2, 3], [4, 5]],
        (2, 3, "causal"): [[0, 1], [3, 4]],
        (2, 2, "semicausal"): [[1, 2], [3, 4], [5, 0]],
        (2, 3, "semicausal"): [[1, 2], [4, 5]],
        (2, 1, "reverse_causal_valid"): [[1, 2], [2, 3], [3, 4], [4, 5], [5, 0]],
        (2, 3, "reverse_causal"): [[1, 2], [4, 5]],
        (2, 1, "valid"): [[1, 2], [2, 3], [3, 4], [4, 5]],
        (2, 2, "valid"): [[1, 2], [3, 4]],
        (2, 2, "same"): [[1, 2], [3, 4], [5, 0]],
        (2, 3, "same"): [[1, 2], [4, 5]],
    }
    for (k, s, mode), expected in table.items():
        assert S.frame(x, k, s, pad_mode=mode).tolist() == expected, (k, s, mode)


def test_overlap_and_add_matches_the_reference_examples():
    x = torch.arange(1, 6)
    cases = [
        (2, "reverse_causal_valid", [1, 2, 0, 4, 5]),
        (3, "reverse_causal_valid", [1, 2, 3, 4, 5, 0]),
        (4, "reverse_causal_valid", [1, 2, 3, 8, 5, 0, 0]),
        (2, "semicausal_full", [1, 2, 0, 4, 5]),
        (3, "semicausal_full", [1, 2, 3, 4, 5, 0]),
        (4, "semicausal_full", [0, 1, 2, 6, 4, 5, 0]),
    ]
    for k, mode, expected in cases:
        frames = S.frame(x, k, 3, pad_mode=mode)
        assert S.overlap_and_add(frames, 3).tolist() == expected, (k, mode)


@pytest.mark.parametrize("k,s", [(7, 11), (11, 7), (7, 7), (21, 33), (33, 21), (4, 2)])
@pytest.mark.parametrize("mode", ["valid", "same", "reverse_causal_valid", "causal_valid", "causal", "semicausal"])
def test_frame_equals_explicit_slices(k, s, mode):
    gen = torch.Generator().manual_seed(k * s)
    for time in (0, 1, k - 1, k, 2 * k + s):
        x = torch.randn(2, time, 3, generator=gen)
        before, after = explicit_padding(mode, k, s, 1)
        padded = F.pad(x, (0, 0, before, after))
        count = max(0, -(-(padded.shape[1] - k + 1) // s))
        expected = torch.stack([padded[:, j * s : j * s + k] for j in range(count)], 1) if count else None
        got = S.frame(x, k, s, axis=1, pad_mode=mode)
        assert got.shape == (2, count, k, 3)
        if count:
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("k,s", [(4, 2), (5, 2), (7, 3), (3, 3), (8, 1)])
def test_overlap_and_add_equals_a_loop_over_frames(k, s):
    frames = torch.randn(2, 6, k, 3, dtype=torch.float64)
    expected = torch.zeros(2, 5 * s + k, 3, dtype=torch.float64)
    for j in range(6):
        expected[:, j * s : j * s + k] += frames[:, j]
    torch.testing.assert_close(S.overlap_and_add(frames, s, axis=1), expected)
    complex_frames = torch.complex(frames, -frames)
    torch.testing.assert_close(S.overlap_and_add(complex_frames, s, axis=1), torch.complex(expected, -expected))


def test_frame_layer_masks_follow_the_padding_rules():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    x = sl.Sequence(torch.randn(2, 8), mask)
    # Keep-mask modes: the mask of the step each frame lines up with.
    assert torch.equal(Frame(3, 2, padding="causal").layer(x).mask, mask[:, ::2])
    # *_valid: AND over the window (padding valid for causal_valid).
    y = Frame(3, 2, padding="causal_valid").layer(x).mask
    padded = F.pad(mask, (2, 0), value=True)
    assert torch.equal(y, torch.stack([padded[:, j : j + 3].all(1) for j in range(0, 8, 2)], 1))
    # semicausal_full: OR over the window.
    y = Frame(3, 2, padding="semicausal_full").layer(x).mask
    padded = F.pad(mask, (1, 2), value=False)
    expected = torch.stack([padded[:, j : j + 3].any(1) for j in range(0, padded.shape[1] - 2, 2)], 1)
    assert torch.equal(y, expected)


# -- FFTs against numpy.fft ---------------------------------------------------------------------

SHAPES_AXES = [((2, 3, 32), -1), ((2, 3, 5, 32), -1), ((2, 3, 5, 32), -2), ((2, 3, 32, 5), 2)]


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("n", [31, 32, 33])
@pytest.mark.parametrize("padding", ["center", "right"])
def test_fft_and_rfft_match_numpy(shape, axis, n, padding):
    xc = _seq(*shape, dtype=torch.complex64)
    y = FFT(n, axis=axis, padding=padding).layer(xc)
    expected = np.fft.fft(_np_pad_or_truncate(xc.values.numpy().astype(np.complex128), axis, n, padding), axis=axis)
    np.testing.assert_allclose(_valid(y).numpy(), expected, atol=1e-4, rtol=1e-5)
    assert y.values.shape[axis] == n and y.dtype == torch.complex64

    xr = _seq(*shape)
    y = RFFT(n, axis=axis, padding=padding).layer(xr)
    expected = np.fft.rfft(_np_pad_or_truncate(xr.values.numpy().astype(np.float64), axis, n, padding), n=n, axis=axis)
    np.testing.assert_allclose(_valid(y).numpy(), expected, atol=1e-4, rtol=1e-5)
    assert y.values.shape[axis] == n // 2 + 1


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("frame_length", [31, 32, 33, None])
@pytest.mark.parametrize("padding", ["center", "right"])
def test_ifft_matches_numpy(shape, axis, frame_length, padding):
    x = _seq(*shape, dtype=torch.complex64)
    y = IFFT(shape[axis], frame_length=frame_length, axis=axis, padding=padding).layer(x)
    expected = np.fft.ifft(x.values.numpy().astype(np.complex128), axis=axis)
    expected = _np_pad_or_truncate(expected, axis, frame_length or shape[axis], padding)
    np.testing.assert_allclose(_valid(y).numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((2, 3, 17), -1), ((2, 3, 5, 17), -1), ((2, 3, 17, 5), -2)])
@pytest.mark.parametrize("frame_length", [31, 32, 33, None])
@pytest.mark.parametrize("fft_length", [32, None])
@pytest.mark.parametrize("padding", ["center", "right"])
def test_irfft_matches_numpy(shape, axis, frame_length, fft_length, padding):
    x = _seq(*shape, dtype=torch.complex128)
    y = IRFFT(fft_length, frame_length=frame_length, axis=axis, padding=padding).layer(x)
    n = fft_length or 2 * (shape[axis] - 1)
    expected = np.fft.irfft(x.values.numpy(), n=n, axis=axis)
    expected = _np_pad_or_truncate(expected, axis, frame_length or n, padding)
    np.testing.assert_allclose(_valid(y).numpy(), expected, atol=1e-10)
    assert y.dtype == torch.float64


@pytest.mark.parametrize("padding", ["center", "right"])
def test_fft_inverse_pairs_are_pseudo_inverses(padding):
    """A B A = A and B A B = B (the reference's test)."""
    for forward, backward, dtype in ((RFFT, IRFFT, torch.float32), (FFT, IFFT, torch.complex64)):
        for n in (31, 32, 33):
            x = _seq(2, 3, 32, dtype=dtype)
            a = forward(n, padding=padding)
            b = backward(n, frame_length=32, padding=padding)
            ya = a.layer(x)
            yba = b.layer(ya)
            sl.testing.assert_sequences_close(a.layer(yba), ya, rtol=1e-3, atol=1e-4)
            sl.testing.assert_sequences_close(b.layer(a.layer(yba)), yba, rtol=1e-3, atol=1e-4)


def test_rfft_bfloat16_computes_in_float32():
    x = _seq(2, 3, 32)
    y16 = RFFT(31, padding="center").layer(x.to(torch.bfloat16))
    assert y16.dtype == torch.complex64
    y32 = RFFT(31, padding="center").layer(x.to(torch.bfloat16).to(torch.float32))
    torch.testing.assert_close(y16.values, y32.values)


# -- STFT / inverse STFT against torch.stft / torch.istft ---------------------------------------


@pytest.mark.parametrize("k,s,n", [(16, 4, 16), (25, 10, 25), (16, 4, 32), (15, 6, 20)])
@pytest.mark.parametrize("mode", ["causal", "semicausal", "reverse_causal", "valid", "same", "semicausal_full"])
@pytest.mark.parametrize("magnitude", [False, True])
def test_stft_matches_torch_stft(k, s, n, mode, magnitude):
    x = sl.Sequence.from_values(torch.randn(2, 97, dtype=torch.float64))
    layer = STFT(k, s, n, time_padding=mode, fft_padding="center", output_magnitude=magnitude)
    y = layer.layer(x)
    before, after = explicit_padding(mode, k, s, 1)
    # torch.stft centres a win_length window in n_fft samples: shift the signal to match.
    left = (n - k) // 2
    padded = F.pad(x.values, (before + left, after + n - k - left))
    frames = y.values.shape[1]
    # tf.signal's "periodic" window is symmetric for odd lengths.
    window = torch.hann_window(k, periodic=k % 2 == 0, dtype=torch.float64)
    expected = torch.stft(padded, n, hop_length=s, win_length=k, window=window, center=False, return_complex=True)
    expected = expected.transpose(1, 2)[:, :frames]
    if magnitude:
        expected = expected.abs()
    assert expected.shape == y.values.shape
    torch.testing.assert_close(y.values, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k,s,n", [(16, 4, 16), (16, 4, 32), (20, 5, 20)])
def test_stft_right_fft_padding_is_rfft_of_the_windowed_frame(k, s, n):
    x = sl.Sequence.from_values(torch.randn(2, 60))
    y = STFT(k, s, n, window_fn="hamming", time_padding="causal").layer(x)
    padded = F.pad(x.values, (k - 1, 0))
    w = torch.signal.windows.hamming(k, sym=False)
    frames = torch.stack([padded[:, j * s : j * s + k] * w for j in range(y.values.shape[1])], 1)
    torch.testing.assert_close(y.values, torch.fft.rfft(frames, n=n), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s", [(16, 4), (32, 8), (24, 8)])
def test_inverse_stft_matches_torch_istft_inside_the_signal(k, s):
    """With the inverse-STFT synthesis window, InverseSTFT(valid) equals torch.istft away from the
    edges (torch.istft divides by the local window envelope, which is only periodic inside)."""
    x = torch.randn(2, 40 * s, dtype=torch.float64)
    window = torch.signal.windows.hamming(k, sym=False, dtype=torch.float64)
    spectrum = torch.stft(x, k, hop_length=s, window=window, center=False, return_complex=True)
    expected = torch.istft(spectrum, k, hop_length=s, window=window, center=False)
    layer = InverseSTFT(k, s, k, window_fn=inverse_stft_window_fn(s, "hamming"), time_padding="valid")
    y = layer.layer(sl.Sequence.from_values(spectrum.transpose(1, 2)))
    inner = slice(k, expected.shape[1] - k)
    torch.testing.assert_close(y.values[:, inner], expected[:, inner], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y.values[:, inner], x[:, inner], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k,s,n", [(8, 2, 8), (6, 3, 4), (5, 2, 9)])
@pytest.mark.parametrize("padding", ["right", "center"])
def test_inverse_stft_is_irfft_window_overlap_add(k, s, n, padding):
    x = _seq(2, 7, n // 2 + 1, dtype=torch.complex128)
    y = InverseSTFT(k, s, n, window_fn="hann", time_padding="valid", fft_padding=padding).layer(x)
    frames = np.fft.irfft(x.values.numpy(), n=n, axis=2)
    frames = _np_pad_or_truncate(frames, 2, k, padding) * hann_window(k, dtype=torch.float64).numpy()
    expected = np.zeros((2, 6 * s + k))
    for j in range(7):
        expected[:, j * s : j * s + k] += frames[:, j]
    np.testing.assert_allclose(y.values.numpy(), expected, atol=1e-12)


def test_multichannel_stft_is_per_channel():
    x = _seq(2, 20, 2, 3)
    layer = STFT(8, 3, 8, time_padding="causal", output_magnitude=True)
    y = layer.layer(x)
    for i in range(2):
        for j in range(3):
            yi = layer.layer(sl.Sequence(x.values[:, :, i, j], x.mask))
            torch.testing.assert_close(_valid(y)[:, :, :, i, j], _valid(yi))


# -- mel ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_mel,num_bins,rate,lo,hi",
    [(80, 257, 16000, 0.0, 8000.0), (20, 129, 8000, 125.0, 3800.0), (8, 5, 400, 1.0, 200.0)],
)
def test_mel_matrix_matches_the_htk_formula(num_mel, num_bins, rate, lo, hi):
    ours = linear_to_mel_weight_matrix(num_mel, num_bins, rate, lo, hi, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, _htk_mel_matrix(num_mel, num_bins, rate, lo, hi), atol=1e-12)


def test_mel_layer_multiplies_by_the_matrix():
    x = _seq(2, 5, 3, 129)
    y = LinearToMelSpectrogram(20, 8000, 125.0, 3800.0).layer(x)
    matrix = torch.from_numpy(_htk_mel_matrix(20, 129, 8000, 125.0, 3800.0)).float()
    torch.testing.assert_close(_valid(y), x.values @ matrix, rtol=1e-5, atol=1e-5)
    assert isinstance(y, sl.MaskedSequence)


def test_window_layer_multiplies_the_axis():
    x = _seq(2, 4, 6, 5)
    y = Window(axis=2, window_fn="hamming").layer(x)
    torch.testing.assert_close(y.values, x.values * hamming_window(6)[:, None])
    y = Window(axis=-1, window_fn=("kaiser", 5.0)).layer(x)
    torch.testing.assert_close(y.values, x.values * torch.signal.windows.kaiser(5, beta=5.0, sym=True))


def test_overlap_add_layer_modes_trim_the_full_overlap_add():
    x = sl.Sequence.from_values(torch.randn(2, 6, 5))
    full = S.overlap_and_add(x.values, 2, axis=1)
    torch.testing.assert_close(OverlapAdd(5, 2, padding="valid").layer(x).values, full)
    torch.testing.assert_close(OverlapAdd(5, 2, padding="causal").layer(x).values, full[:, :12])
    scf = OverlapAdd(5, 2, padding="semicausal_full").layer(x)
    assert scf.values.shape[1] == 6 * 2 - 2 + 1  # the reference's mask-limited length
    torch.testing.assert_close(scf.values, full[:, 3 : 3 + scf.values.shape[1]])
