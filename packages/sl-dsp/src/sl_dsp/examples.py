"""sl-dsp's example layers for the conformance kit (``sl_example_layers``).

Every registered layer appears at least once, in small configurations that exercise its
options (each padding mode, frame lengths and steps that do and do not divide, FFT lengths
shorter and longer than the frame, right and center FFT padding, windows, magnitude
output, complex and real paths), plus the analysis-synthesis chains (STFT -> InverseSTFT,
Frame -> Window -> Window -> OverlapAdd) the streaming contract must hold for. The shared
suite (``tests/test_examples.py``, ``python -m sl check dsp``) runs ``verify_contract``
(float32 with declared and random masks, bfloat16 where the kernels have it), the config
round trip, and compiled, exported and ONNX steps on each. Names are unique (test ids).
"""

from __future__ import annotations

from typing import Any

import torch

import sl
from sl.registry import LayerExample
from sl_dsp import fft as Fo
from sl_dsp import framing as Fr
from sl_dsp import mel as M
from sl_dsp import stft as St
from sl_dsp import window as W
from sl_dsp.signal import inverse_stft_window

__all__ = ["example_layers"]

# Layers whose layer-wise length is not T * ratio by design (valid: shorter or longer;
# semicausal_full: longer).
_LENGTH = {"test_output_length": False}
# "valid" overlap-add ANDs the masks of the frames that overlap each sample (the reference's
# rule), so its last frame_length - frame_step samples turn invalid when (invalid) frames follow:
# not padding invariant by definition.
_VALID_OLA = {"test_output_length": False, "test_padding_invariance": False}
# Declared receptive fields wider than the Jacobian's, as the reference declares them: the
# reference's InverseSTFT(semicausal_full) per-step fields use the transposed convolution's
# padding; a perfect-reconstruction chain is a pure delay, which composition cannot know (and
# FFT round-off leaves tiny non-zero gradients around it).
_RELAXED_RF = {"receptive_field_relaxed": True}
_F32 = (torch.float32,)
_COMPLEX = "complex tensors: ONNX has no complex dtype"


def _ex(layer: Any, input_shape: tuple[int, ...], name: str, **kw: Any) -> LayerExample:
    return LayerExample(layer, input_shape, name=name, **kw)


def _framing() -> list[LayerExample]:
    return [
        _ex(Fr.Frame(4, 2, padding="causal"), (3,), "Frame(4/2, causal)"),
        _ex(Fr.Frame(3, 2, padding="reverse_causal_valid"), (3,), "Frame(3/2, reverse_causal_valid)", random_mask=True),
        _ex(Fr.Frame(5, 2, padding="semicausal"), (), "Frame(5/2, semicausal)"),
        _ex(Fr.Frame(3, 1, padding="causal_valid"), (2,), "Frame(3/1, causal_valid)"),
        _ex(Fr.Frame(2, 3, padding="reverse_causal"), (2,), "Frame(2/3, reverse_causal)"),
        _ex(Fr.Frame(6, 4, padding="reverse_causal"), (), "Frame(6/4, reverse_causal)"),
        _ex(Fr.Frame(4, 3, padding=(2, 1)), (2,), "Frame(4/3, explicit (2, 1))"),
        _ex(Fr.Frame(5, 2, padding=(0, 4), explicit_padding_is_same_like=True), (), "Frame(5/2, explicit (0, 4))"),
        _ex(Fr.Frame(1, 2, padding="causal"), (3,), "Frame(1/2, causal)"),
        _ex(Fr.Frame(4, 2, padding="semicausal_full"), (2,), "Frame(4/2, semicausal_full)", contract=_LENGTH),
        _ex(Fr.Frame(3, 2, padding="valid"), (2,), "Frame(3/2, valid)", contract=_LENGTH),
        _ex(Fr.Frame(3, 2, padding="same"), (2,), "Frame(3/2, same)"),
        _ex(Fr.OverlapAdd(4, 2, padding="causal"), (4, 3), "OverlapAdd(4/2, causal)"),
        _ex(Fr.OverlapAdd(5, 2, padding="causal"), (5,), "OverlapAdd(5/2, causal)", random_mask=True),
        _ex(Fr.OverlapAdd(2, 2, padding="causal"), (2,), "OverlapAdd(2/2, causal)"),
        _ex(Fr.OverlapAdd(3, 2, padding="valid"), (3, 2), "OverlapAdd(3/2, valid)", contract=_VALID_OLA),
        _ex(Fr.OverlapAdd(4, 2, padding="semicausal_full"), (4,), "OverlapAdd(4/2, semicausal_full)", contract=_LENGTH),
    ]


def _ffts() -> list[LayerExample]:
    c64 = {"dtype": torch.complex64, "onnx": _COMPLEX}
    return [
        _ex(Fo.FFT(8), (6,), "FFT(8, right)", **c64),
        _ex(Fo.FFT(4, axis=-2, padding="center"), (6, 3), "FFT(4, axis -2, center)", **c64),
        _ex(Fo.FFT(), (5,), "FFT(real input)", dtypes=_F32, onnx=_COMPLEX),
        _ex(Fo.IFFT(frame_length=6, padding="center"), (8,), "IFFT(frame 6, center)", **c64),
        _ex(Fo.IFFT(axis=2), (5, 2), "IFFT(axis 2)", **c64),
        _ex(Fo.RFFT(8), (6,), "RFFT(8, right)", onnx=_COMPLEX),
        _ex(Fo.RFFT(5, axis=-2, padding="center"), (7, 2), "RFFT(5, axis -2, center)", onnx=_COMPLEX),
        _ex(Fo.IRFFT(8, frame_length=6), (5,), "IRFFT(8, frame 6)", **c64),
        _ex(Fo.IRFFT(frame_length=9, padding="center"), (4, 2), "IRFFT(frame 9, center)", **c64),
    ]


def _stfts() -> list[LayerExample]:
    istft_in = {"dtype": torch.complex64, "onnx": _COMPLEX}
    return [
        _ex(
            St.STFT(8, 3, 8, time_padding="causal", output_magnitude=True),
            (),
            "STFT(8/3, fft 8, causal, magnitude)",
            time=24,
        ),
        _ex(
            St.STFT(6, 2, 8, window_fn="hamming", time_padding="semicausal", fft_padding="center"),
            (2,),
            "STFT(6/2, fft 8, semicausal, hamming, center)",
            onnx=_COMPLEX,
        ),
        _ex(St.STFT(4, 2, 4), (), "STFT(4/2, reverse_causal_valid)", onnx=_COMPLEX),
        _ex(
            St.STFT(5, 2, 4, window_fn=None, time_padding="causal_valid", output_magnitude=True),
            (),
            "STFT(5/2, fft 4 < frame, causal_valid, no window)",
        ),
        _ex(
            St.STFT(8, 4, 8, time_padding="semicausal_full", output_magnitude=True),
            (),
            "STFT(8/4, semicausal_full)",
            contract=_LENGTH,
        ),
        _ex(
            St.InverseSTFT(8, 3, 8, window_fn=inverse_stft_window(3)),
            (5,),
            "InverseSTFT(8/3, causal, inverse hann)",
            **istft_in,
        ),
        _ex(
            St.InverseSTFT(6, 2, 4, window_fn=("kaiser", 6.0), fft_padding="center"),
            (3, 2),
            "InverseSTFT(6/2, fft 4 < frame, center, kaiser)",
            random_mask=True,
            **istft_in,
        ),
        _ex(
            St.InverseSTFT(4, 2, 4, time_padding="valid"),
            (3,),
            "InverseSTFT(4/2, valid)",
            contract=_VALID_OLA,
            **istft_in,
        ),
        _ex(
            St.InverseSTFT(8, 4, 8, window_fn=inverse_stft_window(4), time_padding="semicausal_full"),
            (5,),
            "InverseSTFT(8/4, semicausal_full)",
            contract={**_LENGTH, **_RELAXED_RF},
            **istft_in,
        ),
    ]


def _others() -> list[LayerExample]:
    return [
        _ex(M.LinearToMelSpectrogram(8, 400, 1.0, 200.0), (5,), "LinearToMelSpectrogram(8 bands)"),
        _ex(M.LinearToMelSpectrogram(3, 16000, 80.0, 7600.0), (2, 9), "LinearToMelSpectrogram(3 bands, [2, 9])"),
        _ex(W.Window(axis=-1), (6,), "Window(hann)"),
        _ex(W.Window(axis=2, window_fn=("kaiser", 4.0)), (5, 3), "Window(kaiser, axis 2)"),
        _ex(W.Window(axis=-1, window_fn=inverse_stft_window(2, "hamming")), (2, 6), "Window(inverse hamming)"),
    ]


def _chains() -> list[LayerExample]:
    k, s = 8, 2
    return [
        _ex(
            sl.Serial(
                St.STFT(k, s, k, time_padding="semicausal"),
                St.InverseSTFT(k, s, k, window_fn=inverse_stft_window(s)),
            ),
            (),
            "STFT -> InverseSTFT (8/2, semicausal -> causal)",
            time=20,
            contract=_RELAXED_RF,
            onnx=_COMPLEX,
        ),
        _ex(
            sl.Serial(
                Fr.Frame(6, 3, padding="semicausal"),
                W.Window(axis=2, window_fn="hamming"),
                W.Window(axis=2, window_fn=inverse_stft_window(3, "hamming")),
                Fr.OverlapAdd(6, 3, padding="causal"),
            ),
            (2,),
            "Frame -> Window -> Window -> OverlapAdd (6/3)",
            time=18,
            contract=_RELAXED_RF,
        ),
    ]


def example_layers() -> list[LayerExample]:
    return [*_framing(), *_ffts(), *_stfts(), *_others(), *_chains()]
