"""Parity cases for sl-dsp (framing, overlap-add, FFTs, STFT, inverse STFT, mel, windows) against
sequence_layers.jax.

Grids cover every padding mode of Frame (and explicit pairs) with frame lengths below, at and
above the step, steps that do and do not divide the length; OverlapAdd and InverseSTFT in their
three modes; the FFT family on real and complex inputs, both FFT paddings, lengths shorter and
longer than the axis, several axes; STFT with and without magnitude, FFT lengths shorter and
longer than the frame, every time padding; mel matrices; windows including the inverse-STFT
window. Layer-wise and (where the reference steps) step-wise outputs and every latency and
receptive-field property are compared. The layers have no parameters.
"""

from __future__ import annotations

from typing import Any

from common import Config, LayerCase, ours, ref

NO_REFERENCE: dict[str, str] = {}

_FRAME_PADDINGS = (
    "valid",
    "same",
    "causal_valid",
    "reverse_causal_valid",
    "causal",
    "reverse_causal",
    "semicausal",
    "semicausal_full",
)
# (frame_length, frame_step): shorter than, equal to, longer than the step; dividing or not.
_FRAME_GRID = ((1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (2, 3), (4, 2), (5, 2), (8, 3))


def _sig(name: str, *args: Any) -> Any:
    """A deferred reference ``signal`` function (``name``) or its result with ``args``."""

    def build() -> Any:
        from sequence_layers.jax import signal

        fn = getattr(signal, name)
        return fn(*[a() if callable(a) and getattr(a, "__name__", "") == "build" else a for a in args]) if args else fn

    build.__name__ = "build"
    return build


def _inverse(step: int, forward: str = "hann_window") -> Any:
    return _sig("inverse_stft_window_fn", step, _sig(forward))


def _ours_window(step: int, forward: str = "hann") -> dict[str, Any]:
    return {"inverse_stft": forward, "frame_step": step}


def _frame() -> LayerCase:
    configs = []
    for k, s in _FRAME_GRID:
        for p in _FRAME_PADDINGS:
            configs.append(
                Config(
                    f"{k}/{s} {p}",
                    ref("Frame", frame_length=k, frame_step=s, padding=p),
                    ours("Frame", k, s, padding=p),
                    (2,) if (k + s) % 2 else (),
                    random_mask=(k * s) % 2 == 0,
                    time=13 + k,
                )
            )
        overlap = max(0, k - s)
        configs.append(
            Config(
                f"{k}/{s} explicit ({overlap}, {k - 1 - overlap})",
                ref("Frame", frame_length=k, frame_step=s, padding=(overlap, k - 1 - overlap)),
                ours("Frame", k, s, padding=(overlap, k - 1 - overlap)),
                (),
            )
        )
    configs.append(
        Config(
            "5/2 explicit (1, 3) same-like",
            ref("Frame", frame_length=5, frame_step=2, padding=(1, 3), explicit_padding_is_same_like=True),
            ours("Frame", 5, 2, padding=(1, 3), explicit_padding_is_same_like=True),
            (3,),
        )
    )
    return LayerCase("Frame", configs, group="dsp")


def _overlap_add() -> LayerCase:
    configs = []
    for k, s in ((1, 1), (2, 1), (2, 2), (3, 2), (4, 2), (5, 2), (8, 3)):
        for p in ("causal", "valid", "semicausal_full"):
            configs.append(
                Config(
                    f"{k}/{s} {p}",
                    ref("OverlapAdd", frame_length=k, frame_step=s, padding=p),
                    ours("OverlapAdd", k, s, padding=p),
                    (k, 2) if k % 2 else (k,),
                    random_mask=(k + s) % 2 == 0,
                )
            )
    return LayerCase("OverlapAdd", configs, group="dsp")


def _ffts() -> list[LayerCase]:
    shapes = (((32,), -1), ((5, 32), -1), ((32, 5), -2), ((5, 32), 2))
    fft, ifft, rfft, irfft = [], [], [], []
    for shape, axis in shapes:
        size = shape[axis - 2] if axis >= 0 else shape[axis]
        for padding in ("right", "center"):
            for n in (31, 32, 33):
                tag = f"{shape} axis {axis} n {n} {padding}"
                fft.append(
                    Config(
                        tag,
                        ref("FFT", fft_length=n, axis=axis, padding=padding),
                        ours("FFT", n, axis=axis, padding=padding),
                        shape,
                        dtype="complex64",
                        time=5,
                    )
                )
                rfft.append(
                    Config(
                        tag,
                        ref("RFFT", fft_length=n, axis=axis, padding=padding),
                        ours("RFFT", n, axis=axis, padding=padding),
                        shape,
                        time=5,
                    )
                )
            for frame in (31, 33, None):
                ifft.append(
                    Config(
                        f"{shape} axis {axis} frame {frame} {padding}",
                        ref("IFFT", fft_length=size, frame_length=frame, axis=axis, padding=padding),
                        ours("IFFT", size, frame_length=frame, axis=axis, padding=padding),
                        shape,
                        dtype="complex64",
                        time=5,
                    )
                )
    for shape, axis in (((17,), -1), ((5, 17), -1), ((17, 5), -2)):
        for padding in ("right", "center"):
            for frame in (31, 32, 33, None):
                for n in (32, None):
                    irfft.append(
                        Config(
                            f"{shape} axis {axis} fft {n} frame {frame} {padding}",
                            ref("IRFFT", fft_length=n, frame_length=frame, axis=axis, padding=padding),
                            ours("IRFFT", n, frame_length=frame, axis=axis, padding=padding),
                            shape,
                            dtype="complex64",
                            time=5,
                        )
                    )
    return [
        LayerCase("FFT", fft, group="dsp"),
        LayerCase("IFFT", ifft, group="dsp"),
        LayerCase("RFFT", rfft, group="dsp"),
        LayerCase("IRFFT", irfft, group="dsp"),
    ]


def _stft() -> LayerCase:
    configs = []
    paddings = ("causal_valid", "valid", "same", "reverse_causal_valid", "causal", "reverse_causal", "semicausal")
    for magnitude in (False, True):
        for k, s, n in ((1, 1, 2), (3, 2, 2), (4, 2, 3), (4, 1, 4), (8, 3, 8), (6, 4, 16), (25, 10, 32)):
            for p in (*paddings, "semicausal_full"):
                for fft_padding in ("right", "center"):
                    if (k + len(p) + (fft_padding == "center")) % 3 and p not in ("semicausal", "causal"):
                        continue  # a sample of the grid; every mode and padding still appears
                    configs.append(
                        Config(
                            f"{k}/{s} fft {n} {p} {fft_padding}{' magnitude' if magnitude else ''}",
                            ref(
                                "STFT",
                                frame_length=k,
                                frame_step=s,
                                fft_length=n,
                                time_padding=p,
                                fft_padding=fft_padding,
                                output_magnitude=magnitude,
                            ),
                            ours(
                                "STFT",
                                k,
                                s,
                                n,
                                time_padding=p,
                                fft_padding=fft_padding,
                                output_magnitude=magnitude,
                            ),
                            (),
                            time=30,
                            random_mask=magnitude,
                        )
                    )
    for name, ours_name in (("hamming_window", "hamming"), (None, None)):
        configs.append(
            Config(
                f"8/3 fft 8 causal window {ours_name}, [2, 3] channels",
                ref(
                    "STFT",
                    frame_length=8,
                    frame_step=3,
                    fft_length=8,
                    time_padding="causal",
                    window_fn=_sig(name) if name else None,
                    output_magnitude=True,
                ),
                ours("STFT", 8, 3, 8, time_padding="causal", window_fn=ours_name, output_magnitude=True),
                (2, 3),
                time=24,
            )
        )
    return LayerCase("STFT", configs, group="dsp")


def _inverse_stft() -> LayerCase:
    configs = []
    for k, s, n in (
        (1, 1, 2),
        (2, 1, 3),
        (2, 2, 2),
        (3, 2, 3),
        (4, 2, 2),
        (4, 1, 4),
        (8, 3, 8),
        (16, 4, 32),
        (32, 8, 32),
    ):
        for p in ("causal", "valid", "semicausal_full"):
            for fft_padding in ("right", "center"):
                if fft_padding == "center" and (k + s) % 2:
                    continue
                configs.append(
                    Config(
                        f"{k}/{s} fft {n} {p} {fft_padding}",
                        ref(
                            "InverseSTFT",
                            frame_length=k,
                            frame_step=s,
                            fft_length=n,
                            window_fn=_inverse(s),
                            time_padding=p,
                            fft_padding=fft_padding,
                        ),
                        ours(
                            "InverseSTFT",
                            k,
                            s,
                            n,
                            window_fn=_ours_window(s),
                            time_padding=p,
                            fft_padding=fft_padding,
                        ),
                        (n // 2 + 1,),
                        dtype="complex64",
                        time=12,
                        random_mask=(k + n) % 2 == 0,
                    )
                )
    configs.append(
        Config(
            "8/3 fft 8 causal default hann, [5, 2, 3] channels",
            ref("InverseSTFT", frame_length=8, frame_step=3, fft_length=8),
            ours("InverseSTFT", 8, 3, 8),
            (5, 2, 3),
            dtype="complex64",
        )
    )
    return LayerCase("InverseSTFT", configs, group="dsp")


def _mel() -> LayerCase:
    grid = (
        (8, 400.0, 1.0, 200.0, (5,)),
        (80, 16000.0, 0.0, 8000.0, (257,)),
        (20, 8000.0, 125.0, 3800.0, (3, 129)),
        (3, 22050.0, 300.0, 5000.0, (33,)),
    )
    configs = [
        Config(
            f"{m} bands, {rate:g} Hz, {lo:g}-{hi:g} Hz, {shape}",
            ref("LinearToMelSpectrogram", num_mel_bins=m, sample_rate=rate, lower_edge_hertz=lo, upper_edge_hertz=hi),
            ours("LinearToMelSpectrogram", m, rate, lo, hi),
            shape,
            time=6,
            transform=abs,
            atol=1e-4 if m == 80 else 1e-5,
        )
        for m, rate, lo, hi, shape in grid
    ]
    return LayerCase("LinearToMelSpectrogram", configs, group="dsp")


def _window() -> LayerCase:
    configs = []
    for axis, shape in ((-1, (6,)), (2, (5, 3)), (-2, (7, 2)), (3, (2, 9))):
        for ref_fn, our_fn in (
            (_sig("hann_window"), "hann"),
            (_sig("hamming_window"), "hamming"),
            (_inverse(2, "hamming_window"), _ours_window(2, "hamming")),
            (_sig("get_window_fn", ("kaiser", 4.0)), ("kaiser", 4.0)),
            (_sig("get_window_fn", "blackman"), "blackman"),
        ):
            configs.append(
                Config(
                    f"axis {axis} {shape} {our_fn}",
                    ref("Window", axis=axis, window_fn=ref_fn),
                    ours("Window", axis=axis, window_fn=our_fn),
                    shape,
                    time=7,
                )
            )
    return LayerCase("Window", configs, group="dsp")


def _chains() -> list[LayerCase]:
    """Analysis-synthesis chains (Serial of the layers above), layer and step."""
    return [
        LayerCase(
            "Serial (STFT -> InverseSTFT)",
            [
                Config(
                    f"STFT {k}/{s} semicausal -> InverseSTFT causal",
                    ref(
                        "Serial",
                        layers=(
                            ref("STFT", frame_length=k, frame_step=s, fft_length=k, time_padding="semicausal"),
                            ref("InverseSTFT", frame_length=k, frame_step=s, fft_length=k, window_fn=_inverse(s)),
                        ),
                    ),
                    ours(
                        "Serial",
                        ours("STFT", k, s, k, time_padding="semicausal"),
                        ours("InverseSTFT", k, s, k, window_fn=_ours_window(s)),
                    ),
                    (),
                    time=40,
                    random_mask=False,
                )
                for k, s in ((8, 2), (12, 5), (16, 4))
            ],
            ref_name="Serial",
            group="dsp",
            note="DSP chains",
        )
    ]


def cases() -> list[LayerCase]:
    return [_frame(), _overlap_add(), *_ffts(), _stft(), _inverse_stft(), _mel(), _window(), *_chains()]
