"""sl-dsp: framing, overlap-add, FFT, STFT, inverse STFT, mel and windows for sl (an sl plugin;
depends on sl-core only).

Every layer is exported here (``from sl_dsp import STFT``) and registered by the ``dsp``
plugin, so it also resolves as ``sl.STFT`` / ``sl.dsp.STFT`` and from configs. ``Delay`` and
``Lookahead`` live in sl-core (``sl.Delay``) and are re-exported here for users who look for
them beside the DSP layers. The signal functions (windows, framing, overlap-add, the mel
matrix) are in :mod:`sl_dsp.signal`.

End of stream: :class:`Frame`, :class:`STFT`, :class:`OverlapAdd` and :class:`InverseSTFT`
implement ``flush(state)``; :class:`sl.Streamer` calls it (through any ``Serial`` /
``Residual`` stack) when a stream ends, so a streamed analysis-synthesis chain returns every
sample, including the last.
"""

from sl.layers import Delay, Lookahead
from sl_dsp import signal
from sl_dsp.fft import FFT, IFFT, IRFFT, RFFT
from sl_dsp.framing import Frame, OverlapAdd
from sl_dsp.mel import LinearToMelSpectrogram
from sl_dsp.signal import (
    get_window,
    get_window_fn,
    hamming_window,
    hann_window,
    inverse_stft_window,
    inverse_stft_window_fn,
    linear_to_mel_weight_matrix,
)
from sl_dsp.stft import STFT, InverseSTFT
from sl_dsp.window import Window

__version__ = "0.1.0"

__all__ = [
    "FFT",
    "IFFT",
    "IRFFT",
    "RFFT",
    "STFT",
    "Delay",
    "Frame",
    "InverseSTFT",
    "LinearToMelSpectrogram",
    "Lookahead",
    "OverlapAdd",
    "Window",
    "get_window",
    "get_window_fn",
    "hamming_window",
    "hann_window",
    "inverse_stft_window",
    "inverse_stft_window_fn",
    "linear_to_mel_weight_matrix",
    "signal",
]
