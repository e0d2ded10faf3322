"""DSP speed: a log-mel front end from sl-dsp layers against torch.stft + a mel matrix, as ratios from one run.

Workload ``dsp`` (issue 11): STFT (n_fft 512, hop 128, periodic Hann, causal framing) ->
magnitude -> mel (80 bands, 0-8 kHz) -> log(max(x, 1e-6)) on 60 s of 16 kHz audio, batch 4
(``--quick``: 4 s). Baselines, written the way one writes them in plain torch:

* layer-wise: ``torch.stft(center=False)`` of the causally padded signal, ``.abs()``, ``@ mel``
  (the same HTK matrix), clamp, log; eager and both sides under ``torch.compile(fullgraph=True)``;
* streamed in 10 ms blocks (160 samples, not a multiple of the hop; the first 20 s of the batch,
  so a round takes seconds, not minutes): ``sl.Streamer`` against a
  hand-written loop that keeps the unconsumed samples, runs ``torch.stft`` on the whole hops
  available and keeps the last ``n_fft - 1`` samples for the next frames. Replayed:
  ``sl.Streamer(replay=True)`` (``sl.replay_step``) against the same eager loop. Compiled:
  ``sl.Streamer(compile=True)`` (``sl.compile_step(frozen=True)``) against the same loop with
  its step under ``torch.compile(fullgraph=True)`` and the same guard filter (tensor guards only).

Every case runs single-threaded (as bench_conv: a stream per core; the shared CI box makes
multi-threaded timings noise). Target (issue 11): ratio <= 1.2.

    python benchmarks/bench_dsp.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, median_time, result

import sl
import sl_dsp
from sl.deploy import _frozen_guard_filter

RATE, N_FFT, HOP, MELS, BLOCK = 16000, 512, 128, 80, 160


def _front_end() -> sl.SequenceLayer:
    return sl.Serial(
        sl_dsp.STFT(N_FFT, HOP, N_FFT, window_fn="hann", time_padding="causal", output_magnitude=True),
        sl_dsp.LinearToMelSpectrogram(MELS, RATE, 0.0, RATE / 2),
        sl.Maximum(1e-6),
        sl.Log(),
    ).eval()


class _TorchFrontEnd:
    """torch.stft + mel matrix + log, layer-wise and as a hand-written streaming loop."""

    def __init__(self) -> None:
        self.window = torch.hann_window(N_FFT, periodic=True)
        self.mel = sl_dsp.linear_to_mel_weight_matrix(MELS, N_FFT // 2 + 1, RATE, 0.0, RATE / 2)

    def spectrogram(self, padded: torch.Tensor) -> torch.Tensor:
        """Log-mel frames of an already padded signal ``[B, T]`` -> ``[B, frames, mels]``."""
        spec = torch.stft(padded, N_FFT, HOP, window=self.window, center=False, return_complex=True)
        return torch.log(torch.clamp_min(spec.abs().transpose(1, 2) @ self.mel, 1e-6))

    def layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrogram(F.pad(x, (N_FFT - 1, 0)))

    def initial_buffer(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, N_FFT - 1)

    def step(self, block: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole hops ``block [B, n * HOP]`` after ``buffer [B, N_FFT - 1]`` -> n frames, new buffer."""
        window = torch.cat([buffer, block], 1)
        return self.spectrogram(window), window[:, block.shape[1] :]


def _stream_torch(fe: _TorchFrontEnd, step: Callable[..., Any], x: torch.Tensor) -> list[torch.Tensor]:
    buffer = fe.initial_buffer(x.shape[0])
    pending = x[:, :0]
    out = []
    for start in range(0, x.shape[1], BLOCK):
        pending = torch.cat([pending, x[:, start : start + BLOCK]], 1)
        usable = pending.shape[1] - pending.shape[1] % HOP
        if usable:
            y, buffer = step(pending[:, :usable], buffer)
            out.append(y)
            pending = pending[:, usable:]
    return out


def _stream_sl(streamer: sl.Streamer, x: sl.Sequence) -> list[sl.Sequence]:
    streamer.reset()
    return [streamer.push(x[:, start : start + BLOCK]) for start in range(0, x.values.shape[1], BLOCK)]


def _paired(sl_fn: Callable[[], object], nn_fn: Callable[[], object], repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternating rounds (the machine's load drifts)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(median_time(sl_fn, repeats=1, inner=inner, warmup=1))
        b.append(median_time(nn_fn, repeats=1, inner=inner, warmup=1))
    return statistics.median(a), statistics.median(b)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(quick: bool = False) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    seconds = 4 if quick else 60
    batch = 4
    repeats, inner = (3, 1) if quick else (5, 2)
    x = torch.randn(batch, seconds * RATE)
    seq = sl.Sequence.from_values(x)
    model, twin = _front_end(), _TorchFrontEnd()
    shape = {"batch": batch, "seconds": seconds, "sample_rate": RATE, "n_fft": N_FFT, "hop": HOP, "mels": MELS}
    shape["bench_threads"] = 1
    out = []
    with _threads(1), torch.inference_mode():
        expected = twin.layer(x)
        torch.testing.assert_close(model.layer(seq).values, expected, rtol=1e-3, atol=1e-3)

        t_sl, t_nn = _paired(lambda: model.layer(seq), lambda: twin.layer(x), repeats, inner)
        out.append(result("dsp", "layer_eager", t_sl, "torch.stft + mel matrix", t_nn, **shape))

        c_model = torch.compile(lambda s: model.layer(s), fullgraph=True)
        c_twin = torch.compile(twin.layer, fullgraph=True)
        torch.testing.assert_close(c_model(seq).values, c_twin(x), rtol=1e-3, atol=1e-3)
        t_sl, t_nn = _paired(lambda: c_model(seq), lambda: c_twin(x), repeats, inner)
        out.append(result("dsp", "layer_compiled", t_sl, "torch.compile(torch.stft + mel matrix)", t_nn, **shape))

        stream_s = min(seconds, 4 if quick else 20)  # streamed cases: the first 20 s (6 s per round otherwise)
        xs, ss = x[:, : stream_s * RATE], seq[:, : stream_s * RATE]
        streamer = sl.Streamer(model, batch, ss.channel_spec)
        got = torch.cat([y.values for y in _stream_sl(streamer, ss)], 1)
        ref = torch.cat(_stream_torch(twin, twin.step, xs), 1)
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
        stream_shape = {**shape, "seconds": stream_s, "block": BLOCK}
        s_rep, s_inner = (3, 1) if quick else (7, 1)  # alternating rounds: single streams drift by 30 % here
        t_sl, t_nn = _paired(
            lambda: _stream_sl(streamer, ss), lambda: _stream_torch(twin, twin.step, xs), s_rep, s_inner
        )
        out.append(result("dsp", "stream_10ms_eager", t_sl, "torch.stft streaming loop", t_nn, **stream_shape))

        # sl.replay_step: each block layout's step captured once, replayed as its torch calls.
        r_streamer = sl.Streamer(model, batch, ss.channel_spec, replay=True)
        got = torch.cat([y.values for y in _stream_sl(r_streamer, ss)], 1)
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
        t_sl, t_nn = _paired(
            lambda: _stream_sl(r_streamer, ss), lambda: _stream_torch(twin, twin.step, xs), s_rep, s_inner
        )
        out.append(result("dsp", "stream_10ms_replay", t_sl, "torch.stft streaming loop", t_nn, **stream_shape))

        # Both sides drop torch.compile's guards on Python objects (sl: compile_step(frozen=True)).
        c_tstep = torch.compile(twin.step, fullgraph=True, options={"guard_filter_fn": _frozen_guard_filter})
        c_streamer = sl.Streamer(model, batch, ss.channel_spec, compile=True)
        got = torch.cat([y.values for y in _stream_sl(c_streamer, ss)], 1)
        ref = torch.cat(_stream_torch(twin, c_tstep, xs), 1)
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
        t_sl, t_nn = _paired(
            lambda: _stream_sl(c_streamer, ss), lambda: _stream_torch(twin, c_tstep, xs), s_rep, s_inner
        )
        out.append(
            result(
                "dsp", "stream_10ms_compiled", t_sl, "torch.compile(torch.stft streaming loop)", t_nn, **stream_shape
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    emit(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
