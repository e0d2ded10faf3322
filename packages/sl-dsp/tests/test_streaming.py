"""End of stream: a streamed analysis-synthesis chain returns every sample (beyond the reference).

Streams go through ``sl.Streamer`` in random chunk sizes and end with ``flush()``; the
concatenated output must give back the input (float32, 1e-5) on every sample including the
last, equal layer mode with ``semicausal_full`` padding, and each layer's flush must return
exactly what its docstring promises.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import sl
import sl_dsp
from sl_dsp import STFT, Frame, InverseSTFT, OverlapAdd, Window, inverse_stft_window


def _stream(layer: sl.SequenceLayer, x: sl.Sequence, seed: int, max_chunk: int = 40) -> sl.Sequence:
    """Pushes ``x`` in random chunk sizes (0 included), then flushes; returns everything concatenated."""
    gen = torch.Generator().manual_seed(seed)
    streamer = sl.Streamer(layer, x.values.shape[0], x.channel_spec)
    parts = []
    t = 0
    total = x.values.shape[1]
    while t < total:
        n = int(torch.randint(0, max_chunk + 1, (1,), generator=gen))
        parts.append(streamer.push(x[:, t : t + n]))
        t += n
    parts.append(streamer.flush())
    return sl.Sequence.concatenate_sequences(parts)


def _peak(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _signal(batch: int, time: int, *channels: int, seed: int = 0) -> sl.Sequence:
    gen = torch.Generator().manual_seed(seed)
    return sl.Sequence.from_values(torch.randn((batch, time, *channels), generator=gen))


CONFIGS = [(32, 8, 32), (32, 16, 32), (32, 8, 64), (50, 15, 64), (8, 3, 8), (6, 2, 4), (7, 7, 8)]


def _stft_pair(k: int, s: int, n: int, window: str, fft_padding: str, analysis: str) -> sl.Serial:
    return sl.Serial(
        STFT(k, s, n, window_fn=window, time_padding=analysis, fft_padding=fft_padding),
        InverseSTFT(k, s, n, window_fn=inverse_stft_window(s, window), fft_padding=fft_padding),
    )


@pytest.mark.parametrize("k,s,n", CONFIGS)
@pytest.mark.parametrize("window", ["hann", "hamming"])
@pytest.mark.parametrize("fft_padding", ["right", "center"])
def test_streamed_stft_inverse_stft_returns_every_sample(k, s, n, window, fft_padding):
    if n < k:
        pytest.skip("an FFT shorter than the frame drops samples: no perfect reconstruction")
    if k == s and window == "hann":
        pytest.skip("Hann frames that do not overlap zero one sample each: no perfect reconstruction")
    chain = _stft_pair(k, s, n, window, fft_padding, "semicausal")
    time = 3 * k + 5
    x = _signal(2, time, seed=k + s)
    y = _stream(chain, x, seed=n)
    delay = k - s
    assert y.values.shape[1] >= delay + time
    got = y[:, delay : delay + time]
    assert bool(got.mask.all()), "every input sample comes back valid"
    torch.testing.assert_close(got.values, x.values, rtol=1e-5, atol=1e-5)
    # Before the signal and after it: silence.
    assert _peak(y.values[:, :delay]) < 1e-5
    assert _peak(y.values[:, delay + time :]) < 1e-5
    # Layer mode reaches those samples only with semicausal_full on both layers.
    full = sl.Serial(
        STFT(k, s, n, window_fn=window, time_padding="semicausal_full", fft_padding=fft_padding),
        InverseSTFT(
            k, s, n, window_fn=inverse_stft_window(s, window), time_padding="semicausal_full", fft_padding=fft_padding
        ),
    ).layer(x)
    m = full.values.shape[1]
    assert y.values.shape[1] - delay >= m, "the stream returns every sample layer mode gives with semicausal_full"
    torch.testing.assert_close(y.values[:, delay : delay + m], full.values, rtol=1e-5, atol=1e-5)
    # Without the flush the stream stops short of the last samples (the reference's behaviour).
    streamer = sl.Streamer(chain, 2, x.channel_spec)
    unflushed = streamer.push(x).values.shape[1]
    if k > s:
        assert unflushed < delay + time


@pytest.mark.parametrize("k,s,n", [(32, 8, 32), (50, 15, 64), (8, 3, 8)])
def test_lookahead_lines_the_stream_up_with_the_input(k, s, n):
    chain = sl.Serial(_stft_pair(k, s, n, "hann", "right", "semicausal"), sl.Lookahead(k - s))
    time = 4 * k + 1
    x = _signal(3, time, seed=1)
    y = _stream(chain, x, seed=2)
    assert y.values.shape[1] >= time
    assert bool(y.mask[:, :time].all())
    torch.testing.assert_close(y.values[:, :time], x.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s", [(8, 2), (9, 4), (12, 5), (5, 5)])
def test_causal_analysis_padding_flushes_too(k, s):
    """Frame(causal) owes ceil((frame_length - 1) / frame_step) frames; with them a causal stream
    reconstructs the input delayed by frame_length - 1, up to the last sample."""
    chain = _stft_pair(k, s, k, "hamming", "right", "causal")
    time = 5 * k + 2
    x = _signal(2, time, seed=3)
    y = _stream(chain, x, seed=4, max_chunk=3 * s)
    delay = k - 1
    assert y.values.shape[1] >= delay + time
    torch.testing.assert_close(y.values[:, delay : delay + time], x.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s", [(8, 2), (6, 3), (10, 4), (4, 4)])
def test_streamed_frame_window_overlap_add_returns_every_sample(k, s):
    chain = sl.Serial(
        Frame(k, s, padding="semicausal"),
        Window(axis=2, window_fn="hamming"),
        Window(axis=2, window_fn=inverse_stft_window(s, "hamming")),
        OverlapAdd(k, s, padding="causal"),
    )
    time = 6 * k + 3
    x = _signal(2, time, 3, seed=5)  # multichannel
    y = _stream(chain, x, seed=6)
    delay = k - s
    assert y.values.shape[1] >= delay + time
    assert bool(y.mask[:, delay : delay + time].all())
    torch.testing.assert_close(y.values[:, delay : delay + time], x.values, rtol=1e-5, atol=1e-5)
    full = sl.Serial(
        Frame(k, s, padding="semicausal_full"),
        Window(axis=2, window_fn="hamming"),
        Window(axis=2, window_fn=inverse_stft_window(s, "hamming")),
        OverlapAdd(k, s, padding="semicausal_full"),
    ).layer(x)
    torch.testing.assert_close(y.values[:, delay : delay + full.values.shape[1]], full.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s", [(4, 2), (5, 2), (7, 3), (3, 3)])
def test_overlap_add_stream_and_flush_is_the_full_overlap_add(k, s):
    """OverlapAdd(causal) streamed and flushed = OverlapAdd(valid) in layer mode, on values."""
    gen = torch.Generator().manual_seed(k * s)
    x = sl.Sequence.from_values(torch.randn(2, 9, k, 2, generator=gen))
    layer = OverlapAdd(k, s, padding="causal")
    y = _stream(layer, x, seed=7, max_chunk=4)
    full = OverlapAdd(k, s, padding="valid").layer(x)
    assert y.values.shape[1] == -(-full.values.shape[1] // s) * s
    torch.testing.assert_close(y.values[:, : full.values.shape[1]], full.values)
    assert bool(y.mask[:, : full.values.shape[1]].all())
    assert not bool(y.mask[:, full.values.shape[1] :].any())


def test_overlap_add_flush_marks_what_valid_frames_reached():
    layer = OverlapAdd(6, 2, padding="causal")
    x = sl.testing.random_sequence(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    x = sl.Sequence(x.values, mask).mask_invalid()
    state = layer.get_initial_state(3, x.channel_spec)
    _, state = layer.step(x, state)
    tail = layer.flush(state)
    assert tail is not None and tail.values.shape[1] == 4
    # Tail samples 10..13: frame 4 (samples 8..13) reaches all four, frame 3 (6..11) the first two.
    expected = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(tail.mask, expected)


@pytest.mark.parametrize("k,s", [(8, 2), (7, 3), (5, 5), (3, 4), (9, 2)])
def test_frame_semicausal_flush_is_what_semicausal_full_adds(k, s):
    gen = torch.Generator().manual_seed(11)
    for time in range(3 * k, 3 * k + s + 1):
        x = sl.Sequence.from_values(torch.randn(2, time, 2, generator=gen))
        layer = Frame(k, s, padding="semicausal")
        x_blocks = x.pad_to_multiple(s)
        state = layer.get_initial_state(2, x.channel_spec)
        y, state = layer.step(x_blocks, state)
        tail = layer.flush(state)
        full = Frame(k, s, padding="semicausal_full").layer(x_blocks)
        extra = full.values.shape[1] - y.values.shape[1]
        assert extra == -(-max(k - s, 0) // s)
        if not extra:
            assert tail is None
            continue
        assert tail is not None and tail.values.shape[1] == extra
        torch.testing.assert_close(torch.cat([y.values, tail.values], 1), full.values)
        assert torch.equal(tail.mask, full.mask[:, -extra:])


def test_frame_flush_counts_and_none_cases():
    x = sl.Sequence.from_values(torch.randn(1, 12))
    for padding, owed in [("causal", 3), ("causal_valid", 3), ("semicausal", 3), ((2, 4), 3)]:
        layer = Frame(7, 2, padding=padding)
        state = layer.get_initial_state(1, x.channel_spec)
        _, state = layer.step(x, state)
        tail = layer.flush(state)
        assert tail is not None and tail.values.shape[1] == owed, padding
        assert bool(tail.mask.all()), padding
    for padding in ["reverse_causal", "reverse_causal_valid", (0, 6)]:
        layer = Frame(7, 2, padding=padding)
        state = layer.get_initial_state(1, x.channel_spec)
        assert layer.flush(state) is None
    assert Frame(2, 3, padding="semicausal").flush(()) is None


def test_flush_of_a_fresh_stream_owes_nothing_valid():
    chain = _stft_pair(8, 2, 8, "hann", "right", "semicausal")
    streamer = sl.Streamer(chain, 2, ((), torch.float32))
    y = streamer.flush()
    assert not bool(y.mask.any())
    assert _peak(y.values) == 0.0


def test_ragged_batch_rows_end_with_their_own_lengths():
    """Rows shorter than the stream: every sample up to each row's length comes back (the row's
    frames past its end are invalid, so what they overlapped is not reconstructed past it)."""
    k, s = 16, 4
    chain = sl.Serial(_stft_pair(k, s, k, "hann", "right", "semicausal"), sl.Lookahead(k - s))
    time = 70
    x = _signal(3, time, seed=9)
    lengths = torch.tensor([70, 61, 33])
    x = sl.Sequence(x.values, torch.arange(time)[None] < lengths[:, None]).mask_invalid()
    y = _stream(chain, x, seed=10)
    for b, n in enumerate(lengths.tolist()):
        # Samples whose every frame started inside the row are reconstructed.
        good = n - (n % s) - (k - s) if n < time else n
        torch.testing.assert_close(y.values[b, :good], x.values[b, :good], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,n", [(32, 8, 32), (50, 15, 64)])
def test_replayed_stream_equals_the_eager_stream(k, s, n):
    # Streamer(replay=True) captures each block layout's step once and replays its torch calls:
    # an analysis-synthesis chain and a log-mel front end stream exactly as eagerly, flush included.
    x = _signal(2, 5 * k + 3, seed=k)
    front = sl.Serial(
        STFT(k, s, n, window_fn="hann", time_padding="causal", output_magnitude=True),
        sl_dsp.LinearToMelSpectrogram(8, 16000, 0.0, 8000.0),
        sl.Maximum(1e-6),
        sl.Log(),
    )
    for chain in (_stft_pair(k, s, n, "hann", "right", "semicausal").eval(), front.eval()):
        outs = []
        for replay in (False, True):
            streamer = sl.Streamer(chain, 2, x.channel_spec, replay=replay)
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # every step is captured, none falls back
                parts = [streamer.push(x[:, t : t + 37]) for t in range(0, x.values.shape[1], 37)]
            outs.append(sl.Sequence.concatenate_sequences([*parts, streamer.flush()]))
        torch.testing.assert_close(outs[1].values, outs[0].values, rtol=1e-6, atol=1e-6)
        assert torch.equal(outs[1].mask, outs[0].mask)
