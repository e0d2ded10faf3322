"""Signal functions behind the DSP layers (the reference's ``signal.py``, in torch).

* windows: :func:`hann_window`, :func:`hamming_window` (tf.signal's raised cosines),
  :func:`get_window` / :func:`get_window_fn` (the scipy-named windows torch provides in
  ``torch.signal.windows``), :func:`inverse_stft_window_fn` (the synthesis window that
  inverts an STFT, Griffin and Lim's equation 7);
* :func:`frame` (framing with the convolution padding modes) and
  :func:`overlap_and_add` (its adjoint), both without a Python loop over frames;
* :func:`linear_to_mel_weight_matrix` (the HTK mel filterbank of tf.signal) and
  :func:`hertz_to_mel`.

Window specifications. The layers take a window as ``window_fn``, in any of these forms;
the first four are plain JSON data, so layer configs that use them round-trip:

* ``None``: no window (rectangular);
* explicit window values: a list of floats (or a 1-D tensor, stored as a list);
* a name: ``"hann"``, ``"hamming"`` (the raised cosines below) or a window of
  ``torch.signal.windows`` by its scipy name (``"blackman"``, ``"bartlett"``,
  ``"cosine"``, ``"nuttall"``, ``"boxcar"``);
* a tuple ``(name, *parameters)`` for parameterised windows, as scipy's ``get_window``:
  ``("kaiser", beta)``, ``("gaussian", std)``, ``("general_hamming", alpha)``,
  ``("general_cosine", [a0, a1, ...])``, ``("exponential", center, tau)``; a bare
  float is a Kaiser ``beta`` (as in scipy);
* ``{"inverse_stft": <forward window>, "frame_step": s}``: the inverse-STFT window of a
  forward window (:func:`inverse_stft_window`);
* a callable ``fn(length, dtype=...)`` returning the window (the reference's
  ``window_fn`` convention): :func:`hann_window`, :func:`hamming_window`, the functions
  :func:`get_window_fn` and :func:`inverse_stft_window_fn` return (these four are
  stored in configs as the equivalent data), or any function of your own (such a layer
  has no JSON config).

"Periodic" follows the reference: a periodic window of even length is the first
``length`` points of a symmetric window of ``length + 1``; odd lengths are symmetric
either way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from sl import padding as P
from sl.types import PaddingMode
from sl.validation import check_positive_int, check_real

__all__ = [
    "WindowSpec",
    "describe_window",
    "frame",
    "get_window",
    "get_window_fn",
    "hamming_window",
    "hann_window",
    "hertz_to_mel",
    "inverse_stft_window",
    "inverse_stft_window_fn",
    "linear_to_mel_weight_matrix",
    "make_window",
    "normalize_window",
    "overlap_and_add",
]

WindowSpec = Any
"""A window specification (see the module docstring)."""

# -- windows ------------------------------------------------------------------------------


def _raised_cosine(
    window_length: int, periodic: bool, dtype: torch.dtype | None, device: Any, a: float, b: float, owner: str
) -> torch.Tensor:
    """``a - b * cos(2 pi n / N)`` as tf.signal computes it (computed in float64)."""
    window_length = check_positive_int(owner, "window_length", window_length)
    if not isinstance(periodic, bool):
        raise TypeError(f"{owner} expects periodic to be a bool; got {type(periodic).__name__} ({periodic!r}).")
    if window_length == 1:
        return torch.ones(1, dtype=dtype, device=device)
    even = 1 - window_length % 2
    denominator = window_length + int(periodic) * even - 1
    n = torch.arange(window_length, dtype=torch.float64, device=device)
    window = a - b * torch.cos(2 * math.pi * n / denominator)
    return window.to(dtype or torch.get_default_dtype())


def hann_window(
    window_length: int, periodic: bool = True, dtype: torch.dtype | None = None, device: Any = None
) -> torch.Tensor:
    """A Hann window (tf.signal's; ``periodic`` for STFTs)."""
    return _raised_cosine(window_length, periodic, dtype, device, 0.5, 0.5, "hann_window")


def hamming_window(
    window_length: int, periodic: bool = True, dtype: torch.dtype | None = None, device: Any = None
) -> torch.Tensor:
    """A Hamming window with scipy's coefficient ``0.54``."""
    return _raised_cosine(window_length, periodic, dtype, device, 0.54, 0.46, "hamming_window")


_TORCH_WINDOWS = {
    "hann": ("hann", ()),
    "hanning": ("hann", ()),
    "hamming": ("hamming", ()),
    "blackman": ("blackman", ()),
    "bartlett": ("bartlett", ()),
    "cosine": ("cosine", ()),
    "nuttall": ("nuttall", ()),
    "kaiser": ("kaiser", ("beta",)),
    "gaussian": ("gaussian", ("std",)),
    "general_hamming": ("general_hamming", ("alpha",)),
    "general_cosine": ("general_cosine", ("a",)),
    "exponential": ("exponential", ("center", "tau")),
}
_ONES = ("boxcar", "rectangular", "ones", "rect")
# Windows whose parameter scipy requires (torch.signal.windows would quietly use a default).
_REQUIRED_PARAMETERS = ("kaiser", "general_cosine", "gaussian", "general_hamming")


def _split_name(name: Any) -> tuple[str, tuple[Any, ...]]:
    if isinstance(name, bool):
        raise TypeError(f"A window name must be a string, a (name, *parameters) tuple or a float; got {name!r}.")
    if isinstance(name, (int, float)):
        return "kaiser", (float(name),)
    if isinstance(name, str):
        return name.lower(), ()
    if isinstance(name, (tuple, list)) and name and isinstance(name[0], str):
        return name[0].lower(), tuple(name[1:])
    raise TypeError(f"A window name must be a string, a (name, *parameters) tuple or a float; got {name!r}.")


def get_window(
    name: Any,
    window_length: int,
    periodic: bool = True,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> torch.Tensor:
    """The window ``name`` (a scipy window name, ``(name, *parameters)`` or a Kaiser beta) of
    ``window_length`` points, from ``torch.signal.windows`` (computed in float64).

    As the reference's ``get_window``: the window is periodic (scipy's ``fftbins``) when
    ``periodic`` and the length is even.
    """
    base, params = _split_name(name)
    length = check_positive_int("get_window", "window_length", window_length)
    out_dtype = dtype or torch.get_default_dtype()
    if base in _ONES:
        if params:
            raise ValueError(f"get_window: the {base!r} window takes no parameters; got {params}.")
        return torch.ones(length, dtype=out_dtype, device=device)
    if base not in _TORCH_WINDOWS:
        known = sorted([*_TORCH_WINDOWS, *_ONES])
        raise ValueError(f"get_window: unknown window {base!r}; expected one of {known}.")
    fn_name, names = _TORCH_WINDOWS[base]
    if params and not names:
        raise ValueError(f"get_window: the {base!r} window takes no parameters; got {list(params)}.")
    if len(params) > len(names) or (not params and fn_name in _REQUIRED_PARAMETERS):
        raise ValueError(
            f"get_window: the {base!r} window takes parameters {list(names)}; got {list(params)}. "
            f"Pass ({base!r}, {', '.join(names)})."
        )
    for k, v in zip(names, params):
        values = v if k == "a" and isinstance(v, (list, tuple)) else [v]
        if (k == "a" and not values) or not all(
            isinstance(p, numbers.Real) and not isinstance(p, bool) for p in values if p is not None
        ):
            raise TypeError(
                f"get_window: the {base!r} window's {k} must be {'a list of numbers' if k == 'a' else 'a number'}; got {v!r}."
            )
    kwargs = {k: (list(v) if k == "a" else v) for k, v in zip(names, params) if v is not None}
    sym = not (periodic and length % 2 == 0)
    fn = getattr(torch.signal.windows, fn_name)
    window = fn(length, sym=sym, dtype=torch.float64, device=device, **kwargs)
    return window.to(out_dtype)  # type: ignore[no-any-return]


class _NamedWindowFn:
    """``get_window_fn(name)``: a reference-style ``fn(length, periodic=True, dtype=...)``."""

    def __init__(self, name: Any) -> None:
        _split_name(name)  # validates
        self.name = name

    def __call__(
        self, window_length: int, periodic: bool = True, dtype: torch.dtype | None = None, device: Any = None
    ) -> torch.Tensor:
        return get_window(self.name, window_length, periodic=periodic, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"get_window_fn({self.name!r})"


def get_window_fn(name: Any) -> Callable[..., torch.Tensor]:
    """A window function ``fn(length, periodic=True, dtype=None)`` for ``name`` (see :func:`get_window`)."""
    return _NamedWindowFn(name)


class _InverseSTFTWindowFn:
    """``inverse_stft_window_fn(frame_step, forward)``: a reference-style window function."""

    def __init__(self, frame_step: int, forward_window_fn: WindowSpec) -> None:
        if isinstance(frame_step, bool) or not isinstance(frame_step, int) or frame_step < 1:
            raise ValueError(f"inverse_stft_window_fn: frame_step must be a positive int; got {frame_step!r}.")
        self.frame_step = frame_step
        self.forward = normalize_window(forward_window_fn, owner="inverse_stft_window_fn")
        if self.forward is None:
            raise ValueError("inverse_stft_window_fn needs a forward window; got None.")

    def __call__(self, frame_length: int, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
        forward = make_window(self.forward, frame_length, torch.float64, device, owner="inverse_stft_window_fn")
        assert forward is not None  # a forward window is required (checked in __init__)
        overlaps = -(-frame_length // self.frame_step)
        denom = F.pad(forward.square(), (0, overlaps * self.frame_step - frame_length))
        denom = denom.reshape(overlaps, self.frame_step).sum(0, keepdim=True)
        denom = denom.repeat(overlaps, 1).reshape(-1)[:frame_length]
        zero = torch.zeros((), dtype=torch.float64, device=device)
        window = torch.where(denom == 0, zero, forward / torch.where(denom == 0, denom + 1, denom))
        return window.to(dtype or torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"inverse_stft_window_fn({self.frame_step}, {self.forward!r})"


def inverse_stft_window_fn(frame_step: int, forward_window_fn: WindowSpec = "hann") -> Callable[..., torch.Tensor]:
    """The window function that makes an inverse STFT invert an STFT with ``forward_window_fn``
    and hop ``frame_step`` (tf.signal's ``inverse_stft_window_fn``): the forward window divided
    by the sum of its squares over the frames that overlap each sample (Griffin and Lim, eq. 7).

    ``forward_window_fn`` is any window specification (default Hann). The returned callable
    takes ``(frame_length, dtype=None)``; in a layer config it is stored as
    ``{"inverse_stft": forward, "frame_step": frame_step}`` (:func:`inverse_stft_window`).
    """
    return _InverseSTFTWindowFn(frame_step, forward_window_fn)


def inverse_stft_window(frame_step: int, forward: WindowSpec = "hann") -> dict[str, Any]:
    """The JSON form of :func:`inverse_stft_window_fn`: ``{"inverse_stft": forward, "frame_step": s}``."""
    spec = _InverseSTFTWindowFn(frame_step, forward)
    return {"inverse_stft": spec.forward, "frame_step": spec.frame_step}


_CANONICAL_FUNCTIONS: dict[Any, str] = {hann_window: "hann", hamming_window: "hamming"}


def normalize_window(spec: WindowSpec, *, owner: str = "layer") -> WindowSpec:
    """The canonical (JSON-able where possible) form of a window specification; errors name ``owner``."""
    if spec is None:
        return None
    if isinstance(spec, torch.Tensor):
        if spec.dim() != 1 or not spec.dtype.is_floating_point:
            raise ValueError(
                f"{owner}: a window tensor must be 1-D floating point; got {tuple(spec.shape)} {spec.dtype}."
            )
        return normalize_window([float(v) for v in spec.detach().cpu().tolist()], owner=owner)
    if isinstance(spec, list) and spec and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
        if not all(math.isfinite(v) for v in spec):
            raise ValueError(f"{owner}: an explicit window must be finite; got {spec!r:.80}.")
        return [float(v) for v in spec]
    for fn, fn_name in _CANONICAL_FUNCTIONS.items():
        if spec is fn:
            return fn_name
    if isinstance(spec, _NamedWindowFn):
        return normalize_window(spec.name, owner=owner)
    if isinstance(spec, _InverseSTFTWindowFn):
        return {"inverse_stft": spec.forward, "frame_step": spec.frame_step}
    if isinstance(spec, Mapping):
        if set(spec) != {"inverse_stft", "frame_step"}:
            raise ValueError(
                f"{owner}: a window dict must be {{'inverse_stft': <forward window>, 'frame_step': int}}; "
                f"got keys {sorted(spec)}."
            )
        inner = _InverseSTFTWindowFn(spec["frame_step"], spec["inverse_stft"])
        return {"inverse_stft": inner.forward, "frame_step": inner.frame_step}
    if isinstance(spec, (str, int, float, tuple, list)) and not isinstance(spec, bool):
        try:
            base, params = _split_name(spec)
            probe = get_window(spec, 2, device="cpu")  # validates the name and its parameters
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{owner}: invalid window_fn {spec!r}: {e}") from None
        if not bool(torch.isfinite(probe).all()):
            raise ValueError(f"{owner}: invalid window_fn {spec!r}: its values are not finite (NaN or inf).")
        if not params and isinstance(spec, str):
            return base
        if isinstance(spec, (int, float)):
            return ("kaiser", float(spec))
        return (base, *[(list(p) if isinstance(p, (list, tuple)) else p) for p in params])
    if callable(spec):
        return spec
    raise ValueError(
        f"{owner}: window_fn must be None, a window name, a (name, *parameters) tuple, an inverse-STFT window dict, "
        f"a 1-D tensor or a callable (length, dtype=...) -> window; got {type(spec).__name__} ({spec!r:.80})."
    )


def make_window(
    spec: WindowSpec, length: int, dtype: torch.dtype, device: Any = None, *, owner: str = "make_window"
) -> torch.Tensor | None:
    """The ``[length]`` window a (normalised) specification describes, in ``dtype`` (None: no window).

    Named windows are periodic, as the reference's STFT uses them. A window that is not real
    or not finite (a NaN Kaiser beta, a function returning complex values) is a ValueError
    naming ``owner``: it would turn every frame into NaN or drop an imaginary part.
    """
    if spec is None:
        return None
    if isinstance(spec, list):
        if len(spec) != length:
            raise ValueError(f"{owner}: the explicit window has {len(spec)} points, but {length} are needed.")
        window = torch.tensor(spec, dtype=torch.float64, device=device)
    elif isinstance(spec, str) and spec in ("hann", "hamming"):
        window = (hann_window if spec == "hann" else hamming_window)(length, dtype=torch.float64, device=device)
    elif isinstance(spec, (str, tuple)):
        window = get_window(spec, length, dtype=torch.float64, device=device)
    elif isinstance(spec, Mapping):
        window = _InverseSTFTWindowFn(spec["frame_step"], spec["inverse_stft"])(
            length, dtype=torch.float64, device=device
        )
    else:
        try:
            window = torch.as_tensor(spec(length, dtype=dtype))
        except TypeError as e:
            raise TypeError(
                f"{owner}: the window function {spec!r} must accept (length, dtype=...) and return a [length] "
                f"tensor; calling it raised: {e}"
            ) from None
        if window.shape != (length,):
            raise ValueError(
                f"{owner}: the window function returned shape {tuple(window.shape)}; expected ({length},)."
            )
    if window.is_complex() or not window.is_floating_point():
        if window.is_complex():
            raise ValueError(f"{owner}: the window must be real; the window function returned {window.dtype}.")
        window = window.to(torch.float64)
    checkable = not torch.compiler.is_compiling() and window.device.type != "meta"  # (no values to read)
    if checkable and not bool(torch.isfinite(window).all()):
        raise ValueError(f"{owner}: the window {describe_window(spec)} has non-finite values (NaN or inf).")
    return window.to(device=device, dtype=dtype)


def describe_window(spec: WindowSpec) -> str:
    """A short human-readable name of a window specification."""
    return "none" if spec is None else repr(spec)


# -- framing and overlap-add --------------------------------------------------------------


def _explicit(pad_mode: PaddingMode | str | tuple[int, int], frame_length: int, frame_step: int) -> tuple[int, int]:
    if isinstance(pad_mode, (tuple, list)):
        if len(pad_mode) != 2:
            raise ValueError(f"frame: explicit padding must be (before, after); got {pad_mode!r}.")
        before, after = (check_positive_int("frame", "explicit padding", p, allow_zero=True) for p in pad_mode)
        return before, after
    try:
        return P.explicit_padding(pad_mode, frame_length, frame_step, 1)
    except ValueError as e:
        raise ValueError(f"frame: pad_mode {pad_mode!r} is neither a padding mode nor (before, after): {e}") from None


def frame(
    x: torch.Tensor,
    frame_length: int,
    frame_step: int,
    axis: int = -1,
    pad_mode: PaddingMode | str | tuple[int, int] = "reverse_causal_valid",
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Splits ``axis`` of ``x`` into frames of ``frame_length`` every ``frame_step`` samples:
    ``(..., samples, ...)`` -> ``(..., frames, frame_length, ...)``.

    The number of frames is that of a convolution with kernel ``frame_length``, stride
    ``frame_step`` and padding ``pad_mode`` (a padding mode or explicit ``(before,
    after)``), padded with ``pad_value``: ``ceil((samples + before + after - frame_length
    + 1) / frame_step)`` (at least 0). The frames are a strided view of the padded input
    (``Tensor.unfold``), not a gather.
    """
    frame_length = check_positive_int("frame", "frame_length", frame_length)
    frame_step = check_positive_int("frame", "frame_step", frame_step)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"frame expects a tensor signal; got {type(x).__name__}.")
    if x.dim() < 1:
        raise ValueError("frame: the signal must have rank at least 1.")
    axis = axis % x.dim()
    before, after = _explicit(pad_mode, frame_length, frame_step)
    if before or after:
        moved = x.movedim(axis, -1)
        moved = F.pad(moved, (before, after), value=pad_value) if moved.numel() else _pad_empty(moved, before, after)
        x = moved.movedim(-1, axis)
    return frame_valid(x, frame_length, frame_step, axis)


def _pad_empty(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    return x.new_zeros((*x.shape[:-1], x.shape[-1] + before + after))


def frame_valid(x: torch.Tensor, frame_length: int, frame_step: int, axis: int) -> torch.Tensor:
    """Frames of ``x`` along ``axis`` without padding (``(..., frames, frame_length, ...)``)."""
    axis = axis % x.dim()
    length = x.shape[axis]
    if length < frame_length:
        shape = (*x.shape[:axis], 0, frame_length, *x.shape[axis + 1 :])
        return x.new_zeros(shape)
    frames = x.unfold(axis, frame_length, frame_step)
    return frames if axis + 2 == frames.dim() else frames.movedim(-1, axis + 1)


def overlap_and_add(signal: torch.Tensor, frame_step: int, axis: int = -2) -> torch.Tensor:
    """Adds frames ``(..., frames, frame_length, ...)`` (frames on ``axis``, their samples on the
    next axis) offset by ``frame_step``: ``(..., (frames - 1) * frame_step + frame_length, ...)``.

    One addition per ``ceil(frame_length / frame_step)`` segment of a frame, never a loop
    over frames; any dtype (complex included), differentiable, exportable.
    """
    frame_step = check_positive_int("overlap_and_add", "frame_step", frame_step)
    if signal.dim() < 2:
        raise ValueError(f"overlap_and_add: the signal must have rank at least 2; got shape {tuple(signal.shape)}.")
    axis = axis % signal.dim()
    if axis == signal.dim() - 1:
        raise ValueError("overlap_and_add: the frames axis cannot be the last axis (the frame samples follow it).")
    frames, frame_length = signal.shape[axis], signal.shape[axis + 1]
    outer, inner = signal.shape[:axis], signal.shape[axis + 2 :]
    out_length = (frames - 1) * frame_step + frame_length
    if out_length <= 0:
        return signal.new_zeros((*outer, 0, *inner))
    if frame_length == frame_step:
        return signal.reshape(*outer, frames * frame_length, *inner)
    segments = -(-frame_length // frame_step)
    extra = segments * frame_step - frame_length
    if extra:
        signal = F.pad(signal, [0, 0] * len(inner) + [0, extra])
    # [..., frames, segments, step, ...]: segment i of frame j lands on output block j + i.
    signal = signal.reshape(*outer, frames, segments, frame_step, *inner)
    out = signal.new_zeros((*outer, frames + segments - 1, frame_step, *inner))
    if frames:
        for i in range(segments):
            out.narrow(axis, i, frames).add_(signal.select(axis + 1, i))
    out = out.reshape(*outer, (frames + segments - 1) * frame_step, *inner)
    return out.narrow(axis, 0, out_length)


# -- mel --------------------------------------------------------------------------------------

_MEL_BREAK_FREQUENCY_HERTZ = 700.0
_MEL_HIGH_FREQUENCY_Q = 1127.0


def hertz_to_mel(frequencies_hertz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``1127 * ln(1 + f / 700)``."""
    f = torch.as_tensor(frequencies_hertz)
    f = f if f.dtype == torch.float64 else f.to(torch.float64)
    return _MEL_HIGH_FREQUENCY_Q * torch.log1p(f / _MEL_BREAK_FREQUENCY_HERTZ)


def check_mel_arguments(
    num_mel_bins: int, sample_rate: float, lower_edge_hertz: float, upper_edge_hertz: float, *, owner: str
) -> None:
    """The reference's (tf.signal's) argument checks, with errors naming ``owner``."""
    if isinstance(num_mel_bins, bool) or not isinstance(num_mel_bins, int) or num_mel_bins <= 0:
        raise ValueError(f"{owner}: num_mel_bins must be a positive int; got {num_mel_bins!r}.")
    for name, value in (
        ("sample_rate", sample_rate),
        ("lower_edge_hertz", lower_edge_hertz),
        ("upper_edge_hertz", upper_edge_hertz),
    ):
        check_real(owner, name, value)
    if not sample_rate > 0:
        raise ValueError(f"{owner}: sample_rate must be positive; got {sample_rate!r}.")
    if lower_edge_hertz < 0:
        raise ValueError(f"{owner}: lower_edge_hertz must be non-negative; got {lower_edge_hertz!r}.")
    if lower_edge_hertz >= upper_edge_hertz:
        raise ValueError(
            f"{owner}: lower_edge_hertz ({lower_edge_hertz}) must be below upper_edge_hertz ({upper_edge_hertz})."
        )
    if upper_edge_hertz > sample_rate / 2:
        raise ValueError(
            f"{owner}: upper_edge_hertz ({upper_edge_hertz} Hz) is above the Nyquist frequency "
            f"({sample_rate / 2} Hz = sample_rate / 2 for sample_rate={sample_rate}); the top mel band must end at or "
            "below it."
        )


def linear_to_mel_weight_matrix(
    num_mel_bins: int = 20,
    num_spectrogram_bins: int = 129,
    sample_rate: float = 8000,
    lower_edge_hertz: float = 125.0,
    upper_edge_hertz: float = 3800.0,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> torch.Tensor:
    """``[num_spectrogram_bins, num_mel_bins]`` triangular HTK mel filters (tf.signal's matrix).

    Spectrogram bin ``i`` is at ``i * (sample_rate / 2) / (num_spectrogram_bins - 1)`` Hz;
    band ``m`` rises linearly in mel from edge ``m`` to its centre ``m + 1`` and falls to
    edge ``m + 2``, with ``num_mel_bins + 2`` edges evenly spaced in mel between
    ``lower_edge_hertz`` and ``upper_edge_hertz``. The DC bin is all zeros. Computed in
    float64, returned in ``dtype``.
    """
    check_mel_arguments(
        num_mel_bins, sample_rate, lower_edge_hertz, upper_edge_hertz, owner="linear_to_mel_weight_matrix"
    )
    if isinstance(num_spectrogram_bins, bool) or not isinstance(num_spectrogram_bins, int) or num_spectrogram_bins < 1:
        raise ValueError(
            f"linear_to_mel_weight_matrix: num_spectrogram_bins must be a positive int; got {num_spectrogram_bins!r}."
        )
    f64 = torch.float64
    nyquist = sample_rate / 2.0
    bins_hz = torch.linspace(0.0, nyquist, num_spectrogram_bins, dtype=f64, device=device)[1:]
    bins_mel = hertz_to_mel(bins_hz)[:, None]
    lo = _MEL_HIGH_FREQUENCY_Q * math.log1p(lower_edge_hertz / _MEL_BREAK_FREQUENCY_HERTZ)
    hi = _MEL_HIGH_FREQUENCY_Q * math.log1p(upper_edge_hertz / _MEL_BREAK_FREQUENCY_HERTZ)
    edges = torch.linspace(lo, hi, num_mel_bins + 2, dtype=f64, device=device)
    left, centre, right = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (bins_mel - left) / (centre - left)
    falling = (right - bins_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = F.pad(weights, (0, 0, 1, 0))  # the DC bin
    return weights.to(dtype or torch.get_default_dtype())
