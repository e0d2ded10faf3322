"""The sl demo: train a streaming speech enhancer for a few seconds, then run it live.

``nox -s demo`` (or ``python examples/demo.py`` with all sl packages installed) trains the
model of ``speech_enhancement.py`` on audio it generates (speech-like harmonics plus
noise; nothing is downloaded), streams a 10 s signal through it in 10 ms blocks, and
reports how the live stream compares with the whole-signal (layer-wise) run: the largest
difference, the algorithmic latency from the declared latencies, real-time factors and
the SNR before and after. It writes a figure (spectrograms and the layer - step
difference over time) and prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import speech_enhancement as se

import sl


def _progress(total: int, desc: str) -> object:
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="block", leave=True)
    except ImportError:  # the demo extra is not installed: no bar
        return None


def stream_compiled(model: sl.SequenceLayer, audio: torch.Tensor, block: int) -> tuple[torch.Tensor, float]:
    """The same live loop with ``sl.compile_step`` (one compiled step per 10 ms block)."""
    step = sl.compile_step(model)
    state = model.get_initial_state(audio.shape[0], ((), audio.dtype))
    x = sl.Sequence.from_values(audio)
    step(x[:, :block], state)  # compile once, outside the timing
    outputs = []
    start = time.perf_counter()
    for t in range(0, audio.shape[1] - audio.shape[1] % block, block):
        y, state = step(x[:, t : t + block], state)
        outputs.append(y.values)
    return torch.cat(outputs, 1), time.perf_counter() - start


def spectrogram(signal: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(512)
    spec = torch.stft(signal, 512, 128, window=window, return_complex=True).abs()
    return 20 * torch.log10(spec + 1e-4)


def plot(
    path: Path, noisy: torch.Tensor, enhanced: torch.Tensor, clean: torch.Tensor, difference: torch.Tensor
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), constrained_layout=True)
    seconds = noisy.shape[-1] / se.SAMPLE_RATE
    for ax, title, signal in zip(
        axes[:3], ("input (noisy)", "enhanced (live stream)", "clean"), (noisy, enhanced, clean)
    ):
        image = ax.imshow(
            spectrogram(signal),
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, se.SAMPLE_RATE / 2000),
            vmin=-60,
            vmax=20,
            cmap="magma",
        )
        ax.set_title(title)
        ax.set_ylabel("kHz")
    fig.colorbar(image, ax=list(axes[:3]), label="dB", fraction=0.02)
    t = torch.arange(difference.shape[-1]) / se.SAMPLE_RATE
    axes[3].plot(t, difference, lw=0.5)
    axes[3].set_title("|layer - step| per sample (whole-signal run vs the live 10 ms stream)")
    axes[3].set_xlabel("seconds")
    axes[3].set_ylabel("abs difference")
    axes[3].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the streamed signal")
    parser.add_argument("--output", default="demo_enhancement.png")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    model = se.build_model()
    print(f"sl speech-enhancement demo: {sum(p.numel() for p in model.parameters()):,} parameters")
    start = time.perf_counter()
    losses = se.train(model, steps=args.train_steps)
    print(
        f"trained {args.train_steps} steps in {time.perf_counter() - start:.1f} s: loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    )

    noisy, clean = se.synthesize(1, args.seconds, torch.Generator().manual_seed(123))
    audio_seconds = noisy.shape[1] / se.SAMPLE_RATE
    with torch.inference_mode():
        start = time.perf_counter()
        offline = model.layer(sl.Sequence.from_values(noisy))
        layer_time = time.perf_counter() - start
    blocks = -(-noisy.shape[1] // se.HOP)
    bar = _progress(blocks, "streaming 10 ms blocks")
    start = time.perf_counter()
    live = se.stream(model, noisy, block=se.HOP, progress=bar)
    step_time = time.perf_counter() - start
    if bar is not None:
        bar.close()  # type: ignore[attr-defined]
    compiled, compiled_time = stream_compiled(model, noisy, se.HOP)

    n = offline.values.shape[1]
    assert bool(live.mask[:, :n].all()), "the live stream left out samples"
    difference = (offline.values - live.values[:, :n]).abs()[0]
    m = min(n, compiled.shape[1] - model.output_latency)
    compiled_diff = float(
        (offline.values[0, :m] - compiled[0, model.output_latency : model.output_latency + m]).abs().max()
    )
    latency_ms = (model.output_latency + model.block_size - 1) / se.SAMPLE_RATE * 1000

    print()
    print(
        f"max |layer - step| over all {n:,} samples: {float(difference.max()):.2e} (compiled step: {compiled_diff:.2e})"
    )
    print(
        f"algorithmic latency: {latency_ms:.1f} ms (declared output latency {model.output_latency} samples + a "
        f"{model.block_size}-sample block)"
    )
    print(
        f"real-time factor (compute time / audio time, lower is faster): layer-wise {layer_time / audio_seconds:.3f}, "
        f"step-wise eager {step_time / audio_seconds:.3f}, step-wise compiled {compiled_time / (m / se.SAMPLE_RATE):.3f}"
    )
    print(
        f"SNR: input {se.snr_db(noisy[:, :n], clean[:, :n]):.1f} dB -> enhanced {se.snr_db(live.values[:, :n], clean[:, :n]):.1f} dB"
    )
    path = Path(args.output).resolve()
    try:
        plot(path, noisy[0, :n], live.values[0, :n], clean[0, :n], difference)
        print(f"figure: {path}")
    except ImportError:
        print("figure skipped: install matplotlib (pip install sl-core[demo])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
