"""A streaming speech-enhancement model: STFT -> conv -> LSTM -> spectral mask -> inverse STFT.

16 kHz audio in 10 ms blocks (160 samples). The model estimates a real mask per
frequency bin from log-magnitudes (a causal convolution over 3 frames, an LSTM) and
multiplies the complex spectrum by it; the inverse STFT (with the perfect-reconstruction
synthesis window) and a ``Lookahead`` line the enhanced signal up with the input.
Layer-wise it trains on whole utterances; step-wise ``sl.Streamer`` runs it live, and
``Streamer.flush()`` returns the last samples too, so the stream equals layer mode on
every output sample.

    python examples/speech_enhancement.py     # trains for a few seconds, then streams
"""

from __future__ import annotations

import math

import torch

import sl
from sl_dsp import inverse_stft_window

SAMPLE_RATE = 16000
FRAME, HOP = 320, 160  # 20 ms frames every 10 ms


def build_model(channels: int = 64, hidden: int = 64, frame: int = FRAME, hop: int = HOP) -> sl.SequenceLayer:
    bins = frame // 2 + 1
    mask = sl.Serial(
        sl.Abs(),  # |X| per bin
        sl.Add(1e-4),
        sl.Log(),  # log-magnitude features
        sl.Conv1D(bins, channels, kernel_size=3, padding="causal"),
        sl.ReLU(),
        sl.LSTM(input_size=channels, hidden_size=hidden),
        sl.Dense(hidden, bins, activation="sigmoid"),  # a mask in (0, 1) per bin
    )
    return sl.Serial(
        sl.STFT(frame, hop, frame, time_padding="semicausal"),
        sl.Parallel(sl.Identity(), mask, combination="product"),  # the masked (complex) spectrum
        sl.InverseSTFT(frame, hop, frame, window_fn=inverse_stft_window(hop)),
        sl.Lookahead(frame - hop),  # line the output up with the input
    )


def synthesize(batch: int, seconds: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Speech-like clean signals (harmonic stacks with a wandering pitch, syllable envelopes) and
    the same plus noise (white and a low hum). Returns ``(noisy, clean)`` ``[batch, samples]``."""
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    clean = torch.zeros(batch, n)
    for b in range(batch):
        f0 = 110 + 120 * torch.rand((), generator=generator)
        vibrato = 1 + 0.05 * torch.sin(2 * math.pi * (0.5 + torch.rand((), generator=generator)) * t)
        phase = 2 * math.pi * torch.cumsum(f0 * vibrato, 0) / SAMPLE_RATE
        harmonics = sum(torch.sin(k * phase) / k for k in range(1, 12))
        rate = 3 + 2 * torch.rand((), generator=generator)
        envelope = torch.sin(math.pi * rate * t + 6.28 * torch.rand((), generator=generator)).clamp(min=0) ** 2
        clean[b] = 0.3 * harmonics * envelope
    noise = 0.15 * torch.randn(batch, n, generator=generator)
    hum = 0.05 * torch.sin(2 * math.pi * 50 * t + 6.28 * torch.rand(batch, 1, generator=generator))
    return clean + noise + hum, clean


def snr_db(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    error = (estimate - clean).pow(2).sum()
    return float(10 * torch.log10(clean.pow(2).sum() / error.clamp(min=1e-12)))


def train(model: sl.SequenceLayer, steps: int = 60, seconds: float = 1.0, seed: int = 0) -> list[float]:
    """Layer-wise training on whole utterances; the loss is the waveform MSE on valid samples."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        noisy, clean = synthesize(8, seconds, gen)
        y = model(sl.Sequence.from_values(noisy))
        target = clean[:, : y.values.shape[1]]
        loss = (y.values - target).pow(2)[y.mask].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def stream(model: sl.SequenceLayer, audio: torch.Tensor, block: int = HOP, progress: object = None) -> sl.Sequence:
    """Feeds ``audio`` ``[batch, samples]`` in blocks of ``block`` samples to a live stream and
    returns everything it outputs, the flushed tail included."""
    streamer = sl.Streamer(model, audio.shape[0], ((), audio.dtype))
    outputs = []
    with torch.inference_mode():
        for start in range(0, audio.shape[1], block):
            outputs.append(streamer.push(sl.Sequence.from_values(audio[:, start : start + block])))
            if progress is not None:
                progress.update(1)  # type: ignore[attr-defined]
        outputs.append(streamer.flush())
    return sl.Sequence.concatenate_sequences(outputs)


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    print(f"block_size={model.block_size} samples, latency {model.output_latency / SAMPLE_RATE * 1000:.0f} ms")
    losses = train(model)
    noisy, clean = synthesize(1, 3.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline = model.layer(sl.Sequence.from_values(noisy))
    live = stream(model, noisy)
    sl.testing.assert_sequences_close(offline, live[:, : offline.values.shape[1]], rtol=1e-4, atol=1e-5)
    n = offline.values.shape[1]
    print(
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; SNR {snr_db(noisy[:, :n], clean[:, :n]):.1f} dB -> "
        f"{snr_db(offline.values, clean[:, :n]):.1f} dB; live stream == offline"
    )


if __name__ == "__main__":
    main()
