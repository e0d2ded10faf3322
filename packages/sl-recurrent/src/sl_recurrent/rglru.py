"""The real-gated linear recurrent unit of Griffin / RecurrentGemma (the reference's ``RGLRU``).

For input ``x [B, T, units]`` (input width = ``units``), per timestep and channel::

    gate_x = sigmoid(BlockDiag_in(x)),  gate_a = sigmoid(BlockDiag_a(x))        (num_heads diagonal blocks)
    log_a  = -8 * gate_a * softplus(a_param)
    a      = exp(log_a)                    (only_real)
           = exp(log_a + i * a_imag_param * gate_a)                   (complex: x, h are complex)
    b      = x * gate_x * sqrt(1 - |a|^2)  (the multiplier is 1 where the time index is 0)
    h_t    = a_t * h_{t-1} + b_t  (a_t = 0 where the time index is 0),   y_t = h_t

numerically as the reference (recurrentgemma's): gates and ``a``/``b`` in the compute dtype
(``compute_dtype``, else the promotion of input and parameter dtypes), the recurrence
accumulated in float32 (state ``h`` is always float32), ``y`` cast back to the compute dtype;
the square root's gradient is bounded (``max_gradient=1000``, the reference's
``sqrt_bound_derivative``). With ``only_real=False`` the channels are complex: the first half
of ``units`` is the real part, the second half the imaginary part (input, output and state),
computed with real arithmetic (so bfloat16, ``torch.compile`` and ONNX work alike).

Deviation from the reference, by design: **invalid timesteps leave the state unchanged**
(``a_t = 1, b_t = 0`` there), so any mask is correct, not only left-aligned ones (the
reference decays the state through invalid steps and documents that only left-aligned masks
work). On left-aligned masks the two agree. The time index that triggers the reset counts
every step, valid or not, from 0 at the start of the sequence, as in the reference (in
``step`` it starts at ``-latency`` behind upstream latency, see ``shift_initial_state``).

Layer mode is a parallel scan over time (``scan_type``): ``"associative"`` (Hillis-Steele,
``log2(T)`` rounds of whole-tensor ops), ``"chunked"`` (a blocked scan: the recurrence inside
``sqrt(T)``-long chunks all at once, a parallel scan over the chunk ends, one fix-up pass;
``O(T)`` work), ``"auto"`` (chunked on CPU, where memory traffic dominates, associative on
accelerators, where launches do) or ``"linear"`` (the sequential loop, for comparison; the
reference's names ``linear_native``/``associative_native``/``linear_pallas`` are accepted).
``step`` runs the recurrence on the block's timesteps.

Parameters (RecurrentGemma's PyTorch names, so its ``RGLRU`` state dicts load; the reference's
Flax layout is the same arrays, see ``converters.py``)::

    a_param        [W]                         W = units (only_real) or units // 2
    a_imag_param   [W]                         only_real=False
    input_gate.w   [num_heads, units / num_heads, W / num_heads]   reference input_gate/kernel
    input_gate.b   [num_heads, W / num_heads]                       reference input_gate/bias
    a_gate.w, a_gate.b                          the same for the A gate

Initialisers follow the reference: ``a_param`` so that ``exp(-softplus(a_param))`` is uniform on
the ring ``[min_rad, 0.999]`` by area, ``a_imag_param`` uniform in ``[0, 0.1 * pi]``, gate
kernels normal with variance ``gate_kernel_variance_scale / fan_in`` (flax's fan-in of the
``[heads, in, out]`` kernel: ``units``), gate biases zero.

State::

    "h"     float32 [B, units]   the recurrence (complex: real half, imaginary half)
    "time"  int32   [B]          the next step's time index, saturated at 1 (only 0 matters)

``units`` may be omitted (``sl.RGLRU(num_heads=4)``): it is the input width, inferred at the
first call (see :mod:`sl.lazy`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from sl.layer import SequenceLayer
from sl.lazy import LazyInputSize
from sl.toolkit import (
    check_float_dtype,
    check_positive_int,
    check_real,
    promoted_dtype,
    reference_fans,
    state_full,
    variance_scaling_,
)
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_recurrent import _kernels
from sl_recurrent.recurrent import check_float_input

__all__ = ["RGLRU", "associative_scan", "chunked_scan", "linear_scan"]

_MAX_RAD = 0.999
_MAX_IMAG_RAD = 0.1
_SCAN_TYPES = {
    "auto": "auto",
    "associative": "associative",
    "associative_native": "associative",
    "chunked": "chunked",
    "linear": "linear",
    "linear_native": "linear",
    "linear_pallas": "linear",
}

Number = list[torch.Tensor]  # [real] or [real, imaginary]


def _mul(a: Number, b: Number) -> Number:
    if len(a) == 1:
        return [a[0] * b[0]]
    return [a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]]


def associative_scan(a: Number, b: Number) -> Number:
    """``h_t = a_t * h_{t-1} + b_t`` from ``h_{-1} = 0`` over axis 1, in ``ceil(log2(T))`` rounds.

    ``a`` and ``b`` are ``[real]`` or ``[real, imag]`` lists of ``[B, T, ...]`` tensors. Each round
    combines every element with the one ``d`` steps earlier (Hillis-Steele):
    ``(A, B)[t] <- (A[t] A[t-d], A[t] B[t-d] + B[t])``.
    """
    time = a[0].shape[1]
    d = 1
    while d < time:
        head = [t[:, d:] for t in a]
        carried = _mul(head, [t[:, :-d] for t in b])
        b = [torch.cat([bt[:, :d], bt[:, d:] + ct], dim=1) for bt, ct in zip(b, carried)]
        if 2 * d < time:
            products = _mul(head, [t[:, :-d] for t in a])
            a = [torch.cat([at[:, :d], pt], dim=1) for at, pt in zip(a, products)]
        d *= 2
    return b


def _pad_time(x: torch.Tensor, amount: int, value: float) -> torch.Tensor:
    if not amount:
        return x
    fill = torch.full((x.shape[0], amount, *x.shape[2:]), value, dtype=x.dtype, device=x.device)
    return torch.cat([x, fill], dim=1)


def chunked_scan(a: Number, b: Number, chunk: int | None = None) -> Number:
    """:func:`associative_scan`'s result with ``O(T)`` work: a blocked parallel scan.

    Time is cut into ``T / chunk`` chunks (``chunk`` ~ ``sqrt(T)``). The recurrence runs inside
    every chunk at once (a loop over the ``chunk`` positions, vectorised across chunks), also
    giving each position's product of ``a`` since its chunk began; a parallel scan over the
    chunk ends then gives the state entering each chunk, and one fused pass adds it in:
    ``h = h_local + (prod a) * h_in``. ``2 sqrt(T)`` sequential steps on ``sqrt(T)``-times smaller
    tensors instead of ``T`` (the linear loop) or ``log2(T)`` passes over everything
    (:func:`associative_scan`, better where launches are cheap relative to memory traffic).
    """
    batch, time = a[0].shape[:2]
    if chunk is None:
        chunk = max(8, math.isqrt(max(time, 1)))
    if time <= chunk:
        return associative_scan(a, b)
    pad = -time % chunk
    a = [_pad_time(t, pad, 1.0 if i == 0 else 0.0) for i, t in enumerate(a)]
    b = [_pad_time(t, pad, 0.0) for t in b]
    rest = a[0].shape[2:]
    n = (time + pad) // chunk
    a = [t.reshape(batch, n, chunk, *rest) for t in a]
    b = [t.reshape(batch, n, chunk, *rest) for t in b]
    h = [t[:, :, 0] for t in b]
    p = [t[:, :, 0] for t in a]
    hs, ps = [h], [p]
    for k in range(1, chunk):
        ak = [t[:, :, k] for t in a]
        h = [x + y[:, :, k] for x, y in zip(_mul(ak, h), b)]
        p = _mul(ak, p)
        hs.append(h)
        ps.append(p)
    local = [torch.stack([x[i] for x in hs], dim=2) for i in range(len(b))]
    prods = [torch.stack([x[i] for x in ps], dim=2) for i in range(len(a))]
    ends = associative_scan([t[:, :, -1] for t in prods], [t[:, :, -1] for t in local])
    entering = [torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], dim=1).unsqueeze(2) for t in ends]
    out = [x + c for x, c in zip(local, _mul(prods, entering))]
    return [t.reshape(batch, n * chunk, *rest)[:, :time] for t in out]


def linear_scan(a: Number, b: Number, h: Number) -> tuple[Number, Number]:
    """The same recurrence one timestep at a time from ``h`` (``[B, ...]`` parts); returns ``(y, h_T)``."""
    outputs: list[Number] = []
    for t in range(a[0].shape[1]):
        carried = _mul([x[:, t] for x in a], h)
        h = [c + x[:, t] for c, x in zip(carried, b)]
        outputs.append(h)
    if not outputs:
        return [x[:, :0] for x in b], h
    return [torch.stack([o[k] for o in outputs], dim=1) for k in range(len(h))], h


def _sqrt_bound_derivative(x: torch.Tensor, max_gradient: float) -> torch.Tensor:
    """``sqrt(x)`` whose gradient is taken at ``max(x, 1 / (4 max_gradient^2))`` (bounded by ``max_gradient``)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.sqrt(x)
    floor = 1.0 / (4.0 * max_gradient**2)
    bounded = torch.sqrt(x + (torch.clamp(x, min=floor) - x).detach())
    return torch.sqrt(x).detach() + (bounded - bounded.detach())


class _BlockDiagonal(torch.nn.Module):
    """``num_heads`` independent dense maps (RecurrentGemma's ``BlockDiagonalLinear``): ``w [h, i, j]``, ``b [h, j]``."""

    def __init__(self, device: Any, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.w: Any = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        self.b: Any = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]

    def project(self, x_heads: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[..., h, i] -> [..., h * j]`` in ``dtype``."""
        w = self.w if self.w.dtype == dtype else self.w.to(dtype)
        b = self.b if self.b.dtype == dtype else self.b.to(dtype)
        return (torch.einsum("...hi,hij->...hj", x_heads, w) + b).flatten(-2)


class RGLRU(LazyInputSize, SequenceLayer):
    """Real-gated linear recurrent unit (Griffin, arXiv:2402.19427); see the module docstring.

    ``units`` is the input and output width; ``num_heads`` the number of diagonal blocks of the
    gates (it must divide ``units``, or ``units // 2`` when ``only_real=False``).
    """

    lazy_input_arg = "units"
    units: int | None

    def __init__(
        self,
        units: int | None = None,
        num_heads: int = 1,
        only_real: bool = True,
        min_rad: float = 0.9,
        gate_kernel_variance_scale: float = 1.0,
        scan_type: str = "auto",
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.units = None if units is None else check_positive_int("RGLRU", "units", units)
        self.num_heads = check_positive_int("RGLRU", "num_heads", num_heads)
        if not isinstance(only_real, bool):
            raise TypeError(f"RGLRU expects only_real to be a bool; got {only_real!r}.")
        self.only_real = only_real
        self.min_rad = check_real("RGLRU", "min_rad", min_rad)
        if not 0.0 <= self.min_rad < 1.0:
            raise ValueError(f"RGLRU expects 0 <= min_rad < 1; got {min_rad!r}.")
        if not only_real and self.min_rad >= _MAX_RAD:
            raise ValueError(f"RGLRU: with only_real=False, min_rad must be less than {_MAX_RAD}; got {min_rad!r}.")
        self.gate_kernel_variance_scale = check_real("RGLRU", "gate_kernel_variance_scale", gate_kernel_variance_scale)
        if not self.gate_kernel_variance_scale > 0:
            raise ValueError(f"RGLRU expects gate_kernel_variance_scale > 0; got {gate_kernel_variance_scale!r}.")
        if scan_type not in _SCAN_TYPES:
            raise ValueError(f"RGLRU expects scan_type to be one of {sorted(_SCAN_TYPES)}; got {scan_type!r}.")
        self.scan_type = scan_type
        self.compute_dtype = check_float_dtype("RGLRU", "compute_dtype", compute_dtype)
        self.a_param: Any = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        if only_real:
            self.register_parameter("a_imag_param", None)
        else:
            self.a_imag_param: Any = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        self.input_gate = _BlockDiagonal(device, dtype)
        self.a_gate = _BlockDiagonal(device, dtype)
        if self.units is None:
            self._register_load_state_dict_pre_hook(_build_from_state_dict, with_module=True)
        else:
            self._make_parameters(self.units)

    # -- parameters ---------------------------------------------------------------------
    @property
    def _width(self) -> int:
        assert self.units is not None
        return self.units if self.only_real else self.units // 2

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        if len(input_shape) != 1:
            raise ValueError(f"RGLRU expected input channel shape (units,); got {tuple(input_shape)}.")
        return int(input_shape[0])

    def _make_parameters(self, size: int) -> None:
        problem = None
        width = size if self.only_real else size // 2
        if not self.only_real and size % 2:
            problem = f"RGLRU: with only_real=False, units must be even; got units={size}."
        elif width % self.num_heads:
            what = "units" if self.only_real else "units // 2 (the complex width)"
            problem = f"RGLRU: num_heads={self.num_heads} must divide {what} = {width}."
        if problem is not None:
            self.units = self.__dict__.get("_sl_init_args", {}).get("units")  # a lazy layer stays unbuilt
            raise ValueError(problem)
        self.units = size
        heads = self.num_heads
        self.a_param.materialize((width,))
        if self.a_imag_param is not None:
            self.a_imag_param.materialize((width,))
        for gate in (self.input_gate, self.a_gate):
            gate.w.materialize((heads, size // heads, width // heads))
            gate.b.materialize((heads, width // heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisers (see the module docstring)."""
        if self.units is None:
            return  # created at the first call
        with torch.no_grad():
            width = self.a_param.shape[0]
            unif = torch.rand(width, dtype=torch.float32, device=self.a_param.device)
            a_real = 0.5 * torch.log(unif * (_MAX_RAD**2 - self.min_rad**2) + self.min_rad**2 + 1e-8)
            self.a_param.copy_(torch.log(torch.exp(-a_real) - 1.0))
            if self.a_imag_param is not None:
                unif = torch.rand(width, dtype=torch.float32, device=self.a_param.device)
                self.a_imag_param.copy_(math.pi * _MAX_IMAG_RAD * unif)
            for gate in (self.input_gate, self.a_gate):
                fan_in, _ = reference_fans(tuple(gate.w.shape))
                variance_scaling_(gate.w, self.gate_kernel_variance_scale, fan_in, "normal")
                gate.b.zero_()

    # -- metadata -----------------------------------------------------------------------
    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf, 0)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._ensure_built(input_shape)
        if input_shape != (self.units,):
            raise ValueError(
                f"RGLRU expected input channel shape (units,) = ({self.units},) (its input and output width); "
                f"got {input_shape}."
            )
        assert self.units is not None
        return (self.units,)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        check_float_input("RGLRU", input_dtype)
        return promoted_dtype(input_dtype, self.a_param.dtype, self.compute_dtype, owner="RGLRU")

    def _compute_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        cache = self.__dict__.get("_sl_dtypes")
        if cache is None:
            cache = self.__dict__["_sl_dtypes"] = {}
        dtype = cache.get(input_dtype)
        if dtype is None:
            dtype = cache[input_dtype] = self.get_output_dtype(input_dtype)
        return dtype  # type: ignore[no-any-return]

    def _check_input(self, x: Sequence) -> None:
        if x.values.dim() != 3 or x.values.shape[-1] != self.units:
            self.get_output_shape(x.channel_shape)

    # -- state --------------------------------------------------------------------------
    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(tuple(input_spec.shape))
        self._compute_dtype(input_spec.dtype)
        assert self.units is not None
        return {
            "h": state_full(self, (batch_size, self.units), 0.0, torch.float32),
            "time": state_full(self, (batch_size,), 0, torch.int32),
        }

    def shift_initial_state(self, state: State, latency: int) -> State:
        """The reset happens at time index 0; behind ``latency`` upstream steps it comes ``latency`` steps later."""
        if not latency:
            return state
        return {"h": state["h"], "time": state["time"] - latency}

    # -- processing ---------------------------------------------------------------------
    def _coefficients(self, values: torch.Tensor, reset: torch.Tensor, mask: torch.Tensor) -> tuple[Number, Number]:
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` in float32; ``reset`` and ``mask`` are bool ``[B or 1, T]``.

        Invalid steps get ``a = 1, b = 0`` (the state carried through): their ``log a`` (and the
        complex phase) is multiplied by 0 and they never reset, so ``a = exp(0) = 1`` and the
        input multiplier ``sqrt(1 - |a|^2) = 0``, exactly, without a select over the whole tensor
        (the input is already masked, so every value is finite). Valid steps are untouched
        (multiplied by exactly 1).
        """
        dtype = values.dtype
        heads = self.num_heads
        x_heads = values.unflatten(-1, (heads, values.shape[-1] // heads))
        # Both gates in one batched matmul: [..., 2, heads, W / heads].
        w = torch.stack([self.input_gate.w, self.a_gate.w])
        bias = torch.stack([self.input_gate.b, self.a_gate.b])
        if w.dtype != dtype:
            w, bias = w.to(dtype), bias.to(dtype)
        gates = torch.sigmoid(torch.einsum("...hi,ghij->...ghj", x_heads, w) + bias)
        gate_x, gate_a = gates.select(-3, 0).flatten(-2), gates.select(-3, 1).flatten(-2)
        keep = mask.unsqueeze(-1).to(dtype)
        gate_a = gate_a * keep
        a_param = self.a_param if self.a_param.dtype == dtype else self.a_param.to(dtype)
        log_a = -8.0 * gate_a * F.softplus(a_param)
        # The reference's reset arithmetic: multiplier = r + (1 - r) m, a = a (1 - r); lerp is exact at 0 and 1.
        r = (reset & mask).unsqueeze(-1).to(dtype)
        one = torch.ones((), dtype=dtype, device=values.device)
        multiplier = torch.lerp(_sqrt_bound_derivative(1 - torch.exp(2 * log_a), 1000.0), one, r)
        magnitude = torch.exp(log_a) * (1 - r)
        if self.a_imag_param is None:
            a = [magnitude]
            b = [values * gate_x * multiplier]
        else:
            a_imag = self.a_imag_param if self.a_imag_param.dtype == dtype else self.a_imag_param.to(dtype)
            theta = a_imag * gate_a
            a = [magnitude * torch.cos(theta), magnitude * torch.sin(theta)]
            b = [part * gate_x * multiplier for part in values.chunk(2, dim=-1)]
        return [t.float() for t in a], [t.float() for t in b]

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self._check_input(x)
        dtype = self._compute_dtype(x.values.dtype)
        values = _kernels.mask_values(x.values.to(dtype), x.mask)
        time = values.shape[1]
        reset = (torch.arange(time, device=values.device) == 0).unsqueeze(0)
        a, b = self._coefficients(values, reset, x.mask)
        scan = _SCAN_TYPES[self.scan_type]
        if scan == "auto":
            scan = "chunked" if values.device.type == "cpu" else "associative"
        if scan == "linear":
            # The initial state from the shape (not ``t[:, 0]``, which an empty input lacks).
            h, _ = linear_scan(a, b, [t.new_zeros((t.shape[0], *t.shape[2:])) for t in b])
        elif scan == "chunked":
            h = chunked_scan(a, b)
        else:
            h = associative_scan(a, b)
        y = h[0] if len(h) == 1 else torch.cat(h, dim=-1)
        return Sequence._trusted(y.to(dtype), x.mask)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self._check_input(x)
        dtype = self._compute_dtype(x.values.dtype)
        values = _kernels.mask_values(x.values.to(dtype), x.mask)
        block = values.shape[1]
        start = state["time"]
        positions = start.unsqueeze(1) + torch.arange(block, device=start.device, dtype=start.dtype).unsqueeze(0)
        a, b = self._coefficients(values, positions == 0, x.mask)
        h = state["h"]
        parts = [h] if self.a_imag_param is None else list(h.chunk(2, dim=-1))
        ys, parts = linear_scan(a, b, parts)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        new_time = torch.clamp(start + block, max=1)
        return Sequence._trusted(y.to(dtype), x.mask), {"h": h, "time": new_time}


def _build_from_state_dict(module: Any, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """A lazy RGLRU takes ``units`` from a checkpoint's ``a_param`` (doubled for complex units)."""
    tensor = state_dict.get(prefix + "a_param")
    if isinstance(tensor, torch.Tensor) and module.units is None:
        module._build(int(tensor.shape[0]) * (1 if module.only_real else 2))
