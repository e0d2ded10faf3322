"""sl-dsp: framing, overlap-add, FFT, STFT, mel, windows (an sl plugin; depends on sl-core only)."""

__version__ = "0.1.0"
