"""Convolutions over time (the reference's ``convolution.py``), streaming like the reference.

Layers: :class:`Conv1D`, :class:`DepthwiseConv1D`, :class:`Conv2D`, :class:`Conv3D`,
:class:`Conv1DTranspose`, :class:`Conv2DTranspose`, and two the reference lacks that fall
out of the same code: :class:`DepthwiseConv2D` and :class:`Conv3DTranspose`.

Layout. Inputs are ``[B, T, *S, C]``: time is axis 1 and streams; the 2-D/3-D layers have
one or two further spatial axes ``S`` that never stream and use their own padding
(``spatial_padding``: a mode or an explicit ``(before, after)`` pair, as in the
reference); channels are last. Parameters follow ``torch.nn`` so its checkpoints load:

* ``Conv*``: ``weight [out_channels, in_channels / groups, *kernel_size]`` (the
  reference's kernel ``[*kernel_size, in / groups, filters]`` permuted), ``bias
  [out_channels]``. ``DepthwiseConv*`` are the same with ``groups = in_channels`` and
  ``out_channels = in_channels * depth_multiplier``.
* ``Conv*Transpose``: ``weight [in_channels, out_channels / groups, *kernel_size]``
  (``torch.nn.ConvTranspose*``), which is the reference kernel permuted *and flipped*
  along every kernel axis (the reference correlates the stride-dilated input with its
  kernel; torch's transposed convolution is the adjoint of a correlation).
* ``use_weight_norm=True``: an extra ``weight_scale [out_channels]`` (the reference's
  ``scale``, initialised to the initial filter norms); ``kernel_constraint``: a
  :class:`~sl_conv.normalization.WeightNormalization` (``"l2"``/``"spectral"``) kept as
  the ``kernel_constraint`` submodule.

Input sizes (``sl.lazy``): ``in_channels`` may be omitted, and is then inferred at the first
call (any of ``layer``, ``step``, ``get_initial_state``, ``get_output_spec``), like
``torch.nn.LazyConv1d``: ``sl.Conv1D(out_channels=64, kernel_size=3, padding="causal")``,
``sl.DepthwiseConv1D(kernel_size=5, padding="causal")`` (whose ``groups`` and
``out_channels`` follow from it), ``sl.Conv1DTranspose(out_channels=8, kernel_size=4,
stride=2, padding="causal")``. Until then every parameter is a
``torch.nn.UninitializedParameter`` (``.to()`` still sets its device and dtype); the
inferred size is recorded in ``get_config()``, and a state dict (ours or ``torch.nn``'s)
loaded before the first call builds the layer from its ``weight``. Run one batch before
building the optimizer. Eager construction (``sl.Conv1D(128, 256, kernel_size=3,
padding="same")``) is unchanged.

Initialisers follow the reference: ``lecun_normal`` kernel (fan-in ``prod(kernel_size) *
in_channels / groups``), zero bias. Compute happens in ``compute_dtype`` or the
promotion of input and parameter dtypes. One ``F.conv*d`` (``F.conv_transpose*d``) call
per ``layer`` and per ``step`` block; padding is an explicit ``F.pad``.

Time axis (padding modes, masks, latencies, step buffers) follows the reference
exactly, through :mod:`sl.padding`:

* ``Conv*``: ``block_size = stride[0]``, ``output_ratio = 1 / stride[0]``; steppable
  with ``causal_valid``, ``reverse_causal_valid``, ``causal``, ``reverse_causal``,
  ``semicausal``. ``valid`` needs at least the effective kernel size of timesteps (an
  empty input gives an empty output). Step state: the last ``buffer_width`` input
  steps (``sl.padding.conv_buffer_width``) as a ``MaskedSequence`` ``(values [B, W, *S,
  C], mask [B, W])``, ``()`` when ``W == 0``; initially zeros, valid for the
  ``*_valid`` modes and invalid otherwise.
* ``Conv*Transpose``: ``block_size = 1``, ``output_ratio = stride[0]``, latency 0; time
  padding ``valid``, ``same``, ``causal`` or ``semicausal_full``; steppable with
  ``causal`` only. Step state: the output tail ``W = max(effective_kernel - stride, 0)``
  steps long that later inputs still add to: ``(values [B, W, *S_out, out_channels]``
  in the output dtype, without bias, ``mask [B, W])``; ``()`` when ``W == 0``. ``flush``
  returns that tail (bias and activation applied; its mask is the AND of the masks of
  the inputs that reach each tail step, initially True), padded with invalid steps to
  a whole number of ``stride``-step output blocks; so a causal stream followed by its
  flush equals, on its values, ``layer`` with ``padding='valid'`` (the full transposed
  convolution). With stride 1 that is also ``semicausal_full``; with a larger stride
  the reference's ``semicausal_full`` drops the first ``stride - 1`` steps of it.

Deviations from the reference:

* ``semicausal_full`` transposed convolutions need an effective kernel longer than the
  stride (or kernel and stride 1): otherwise the reference's values and mask lengths
  disagree and it fails; here that configuration is a ValueError at construction.
  A spatial axis of a transposed convolution reports its true output size for every
  mode (the reference declares ``size * stride`` for ``semicausal_full``, which its
  convolution does not produce).
* ``valid`` with a non-empty input shorter than the effective kernel is a ValueError
  (as ``torch.nn.Conv1d``); the reference returns an empty output there.
* A transposed convolution of an empty input (0 timesteps) is an empty output in every
  mode. The reference is inconsistent there: with ``valid`` it returns ``k_eff - stride``
  steps marked *valid* (bias only, from no input), with ``semicausal_full`` ``k_eff - 1``
  (stride 1) or ``k_eff - stride`` invalid steps, and with ``same``/``causal`` and a
  stride above 1 (or ``valid`` with ``k_eff < stride``) it fails (values and mask
  lengths disagree).
* A layer-wise output keeps ``MaskedSequence`` only without bias, activation and with
  a one-step time kernel (the reference ignores the activation there).
* The reference's quantisation hooks (``ConvArrayConstraintFactory``), sharding and
  precision options are not ported.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sl import activations
from sl.layer import SequenceLayer
from sl.lazy import LazyInputSize
from sl.toolkit import PaddingMode, check_float_dtype, check_positive_int, layer_device, lecun_normal_, promoted_dtype
from sl.toolkit import padding as P
from sl.types import ChannelSpec, Constants, MaskedSequence, ReceptiveField, Sequence, State
from sl_conv._common import (
    SpatialPadding,
    TimeMask,
    as_ntuple,
    channels_first_pads,
    encode_spatial,
    explicit_spatial_padding,
    normalize_spatial_paddings,
    spatial_output_size,
    time_padding_mode,
)
from sl_conv.normalization import WeightNormalization, make_kernel_constraint

__all__ = [
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
]

Activation = str | Callable[[torch.Tensor], torch.Tensor] | None

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_TRANSPOSE_PADDINGS = (PaddingMode.VALID, PaddingMode.SAME, PaddingMode.CAUSAL, PaddingMode.SEMICAUSAL_FULL)


_CHANNELS_LAST_MIN_ROWS = 256


def _use_channels_last(values: torch.Tensor) -> bool:
    """Whether to convolve ``[B, T, *S, C]`` in place as channels-last memory (no layout copies) rather
    than as a contiguous channels-first copy. Channels-last wins on long inputs; on small ones
    (a streaming step) its per-call weight reordering costs more than the copy (measured on CPU:
    the crossover is near 256 rows of ``B * T * prod(S)``)."""
    return values.numel() >= _CHANNELS_LAST_MIN_ROWS * values.shape[-1]


def _uninitialized(device: Any, dtype: Any) -> Any:
    return torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]


def _build_from_state_dict(module: Any, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """A lazy convolution loading a state dict before its first call takes ``in_channels`` from ``weight``."""
    weight = state_dict.get(prefix + "weight")
    if isinstance(weight, torch.Tensor) and module.in_channels is None and weight.dim() == module._rank + 2:
        module._build(module._size_from_checkpoint(weight))


class _ConvBase(LazyInputSize, SequenceLayer):
    """Arguments, parameters, kernel constraints and dtype handling shared by every convolution."""

    _rank: ClassVar[int]  # convolved axes: time plus the spatial axes
    _transposed: ClassVar[bool] = False
    lazy_input_arg = "in_channels"

    in_channels: int | None
    # None until a lazy depthwise layer sees its input (typed as built: every call builds first).
    out_channels: int
    groups: int
    depth_multiplier: int
    weight: Any
    bias: Any
    weight_scale: Any
    kernel_constraint: WeightNormalization | None
    _constraint_spec: WeightNormalization | None

    def _configure(
        self,
        *,
        in_channels: int | None,
        out_channels: int | None,
        kernel_size: Any,
        stride: Any,
        dilation: Any,
        time_padding: Any,
        spatial_padding: Any,
        groups: int | None,
        bias: bool,
        activation: Activation,
        compute_dtype: torch.dtype | None,
        use_weight_norm: bool,
        kernel_constraint: Any,
        device: Any,
        dtype: Any,
        depth_multiplier: int | None = None,
    ) -> None:
        """``depth_multiplier`` set: a depthwise layer (``groups = in_channels``, ``out_channels =
        in_channels * depth_multiplier``; ``groups``/``out_channels`` are ignored). ``in_channels=None``:
        the parameters wait for the first call (``sl.lazy``)."""
        owner = type(self).__name__
        n = self._rank
        if kernel_size is None or (depth_multiplier is None and out_channels is None):
            needs = "kernel_size" if depth_multiplier is not None else "out_channels and kernel_size"
            example = (
                f"sl.{owner}(kernel_size=3)"
                if depth_multiplier is not None
                else f"sl.{owner}(out_channels=64, kernel_size=3)"
            )
            raise TypeError(
                f"{owner} needs {needs}: {example} (in_channels inferred at the first call) or "
                f"sl.{owner}(in_channels, {'' if depth_multiplier is not None else 'out_channels, '}kernel_size)."
            )
        self._depthwise = depth_multiplier is not None
        self.in_channels = None if in_channels is None else check_positive_int(owner, "in_channels", in_channels)
        if self._depthwise:
            self.groups = self.in_channels  # type: ignore[assignment]
            self.out_channels = None if self.in_channels is None else self.in_channels * int(depth_multiplier or 1)  # type: ignore[assignment]
        else:
            self.out_channels = check_positive_int(owner, "out_channels", out_channels)
            self.groups = check_positive_int(owner, "groups", groups)
            if self.out_channels % self.groups:
                raise ValueError(f"{owner}: groups={self.groups} must divide out_channels={self.out_channels}.")
            if self.in_channels is not None and self.in_channels % self.groups:
                raise ValueError(
                    f"{owner}: groups={self.groups} must divide in_channels={self.in_channels} and "
                    f"out_channels={self.out_channels}."
                )
        self.kernel_size = as_ntuple(owner, "kernel_size", kernel_size, n)
        self.stride = as_ntuple(owner, "stride", stride, n)
        self.dilation = as_ntuple(owner, "dilation", dilation, n)
        allowed = _TRANSPOSE_PADDINGS if self._transposed else None
        self._time_padding = time_padding_mode(owner, "padding" if n == 1 else "time_padding", time_padding, allowed)
        self._spatial_padding = normalize_spatial_paddings(owner, spatial_padding, n - 1, allowed) if n > 1 else ()
        self.compute_dtype = check_float_dtype(owner, "compute_dtype", compute_dtype, complex_ok=True)
        self.activation = activations.resolve(activation, owner=owner)
        self.use_weight_norm = bool(use_weight_norm)
        constraint = make_kernel_constraint(owner, kernel_constraint)
        if self.use_weight_norm and constraint is not None:
            raise ValueError(f"{owner}: use_weight_norm and kernel_constraint are both set; choose one.")
        # Time-axis arithmetic, fixed for the layer's life (read on every call).
        self._k, self._s, self._d = self.kernel_size[0], self.stride[0], self.dilation[0]
        self._ek = P.effective_kernel_size(self._k, self._d)
        # The unbound constraint (no tensors) is not a submodule; _make_parameters binds a copy.
        object.__setattr__(self, "_constraint_spec", constraint)
        # Every parameter starts uninitialised (device and dtype only) and is created by
        # _make_parameters: now when in_channels is given, else at the first call.
        self.weight = _uninitialized(device, dtype)
        if bias:
            self.bias = _uninitialized(device, dtype)
        else:
            self.register_parameter("bias", None)
        if self.use_weight_norm:
            self.weight_scale = _uninitialized(device, dtype)
        else:
            self.register_parameter("weight_scale", None)
        self.kernel_constraint = None
        if self.in_channels is None:
            self._register_load_state_dict_pre_hook(_build_from_state_dict, with_module=True)
        else:
            self._make_parameters(self.in_channels)

    # -- parameters ---------------------------------------------------------------------
    def _weight_shape(self, in_channels: int) -> tuple[int, ...]:
        assert self.out_channels is not None and self.groups is not None
        if self._transposed:
            return (in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, in_channels // self.groups, *self.kernel_size)

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        """``in_channels`` from the input channel shape (at the first call of a lazy layer)."""
        self._check_rank(input_shape)
        size = input_shape[-1]
        if size < 1:
            raise ValueError(
                f"{type(self).__name__} expected at least 1 input channel; got channel shape {input_shape}."
            )
        if not self._depthwise and size % self.groups:
            raise ValueError(
                f"{type(self).__name__}: groups={self.groups} must divide in_channels; got {size} input channels "
                f"(channel shape {input_shape})."
            )
        return size

    def _size_from_checkpoint(self, weight: torch.Tensor) -> int:
        """``in_channels`` from a checkpoint's ``weight`` (a state dict loaded before the first call)."""
        if self._transposed:
            return int(weight.shape[0])
        if self._depthwise:
            return int(weight.shape[0]) // self.depth_multiplier
        return int(weight.shape[1]) * int(self.groups or 1)

    def _make_parameters(self, size: int) -> None:
        """Every parameter, for ``size`` input channels (created in this one place, from the
        uninitialised parameters' device and dtype)."""
        if self._depthwise:
            self.groups = size
            self.out_channels = size * self.depth_multiplier
        out = self.out_channels
        assert out is not None
        self.weight.materialize(self._weight_shape(size))
        if self.bias is not None:
            self.bias.materialize((out,))
        if self.weight_scale is not None:
            self.weight_scale.materialize((out,))
        constraint = self._constraint_spec
        if constraint is not None:
            self.kernel_constraint = constraint.bind(out, device=self.weight.device, dtype=self.weight.dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisers: lecun_normal kernel (fan-in ``prod(kernel_size) * in / groups``), zero
        bias; the weight-norm scale starts at the filter norms so the initial kernel is unchanged."""
        if self.in_channels is None or self.groups is None:
            return  # created at the first call
        fan_in = math.prod(self.kernel_size) * (self.in_channels // self.groups)
        lecun_normal_(self.weight, fan_in)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)
        if self.weight_scale is not None:
            with torch.no_grad():
                self.weight_scale.copy_(self._filter_matrix(self.weight).norm(dim=0))

    def _filter_matrix(self, w: torch.Tensor) -> torch.Tensor:
        """The kernel as ``[fan_in, out_channels]`` (column ``o`` is output filter ``o``)."""
        if not self._transposed:
            return w.reshape(w.shape[0], -1).T
        g = self.groups
        in_g, out_g, kernel = w.shape[0] // g, w.shape[1], w.shape[2:]
        n = len(kernel)
        w = w.reshape(g, in_g, out_g, *kernel).permute(1, *range(3, 3 + n), 0, 2)
        return w.reshape(-1, g * out_g)

    def _from_filter_matrix(self, m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if not self._transposed:
            return m.T.reshape(shape)
        g = self.groups
        in_g, out_g, kernel = shape[0] // g, shape[1], tuple(shape[2:])
        n = len(kernel)
        w = m.reshape(in_g, *kernel, g, out_g).permute(n + 1, 0, n + 2, *range(1, n + 1))
        return w.reshape(shape)

    def _kernel(self, training: bool) -> torch.Tensor:
        w = self.weight
        if self.weight_scale is None and self.kernel_constraint is None:
            return w
        m = self._filter_matrix(w)
        if self.weight_scale is not None:
            m = m * torch.rsqrt(m.square().sum(0, keepdim=True) + 1e-12) * self.weight_scale.to(m.dtype)
        else:
            assert self.kernel_constraint is not None
            m = self.kernel_constraint(m, training=training)
        return self._from_filter_matrix(m, w.shape)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        for key in ("padding", "time_padding"):
            if key in arguments:
                arguments = {**arguments, key: self._time_padding.value}
        if "kernel_constraint" in arguments:
            kc = self.kernel_constraint
            arguments = {**arguments, "kernel_constraint": kc.config() if kc is not None else None}
        return arguments

    # -- dtypes and shapes ----------------------------------------------------------------
    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.weight.dtype, self.compute_dtype, owner=type(self).__name__)

    def _check_rank(self, input_shape: tuple[int, ...]) -> None:
        n = self._rank
        if len(input_shape) != n:
            spatial = ("height", "width")[: n - 1]
            channels = "in_channels" if self.in_channels is None else f"in_channels={self.in_channels}"
            raise ValueError(
                f"{type(self).__name__} expected an input of rank {n + 2} ([batch, time, "
                f"{', '.join((*spatial, channels))}]); got channel shape {tuple(input_shape)} "
                f"(input shape [batch, time, {', '.join(str(d) for d in input_shape)}])."
            )

    def _check_channels(self, input_shape: tuple[int, ...]) -> None:
        self._ensure_built(input_shape)
        self._check_rank(input_shape)
        if input_shape[-1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expected {self.in_channels} input channels (last axis); got channel shape "
                f"{tuple(input_shape)} (input shape [batch, time, {', '.join(str(d) for d in input_shape)}])."
            )

    def _empty(self, x: Sequence) -> Sequence:
        shape = self.get_output_shape(x.channel_shape)
        dtype = self.get_output_dtype(x.values.dtype)
        b = x.values.shape[0]
        return MaskedSequence._trusted(
            torch.zeros((b, 0, *shape), dtype=dtype, device=x.values.device),
            torch.zeros((b, 0), dtype=torch.bool, device=x.values.device),
        )

    def _operands(self, values: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        dtype = self.get_output_dtype(values.dtype)
        w = self._kernel(training)
        if w.dtype != dtype:
            w = w.to(dtype)
        b: torch.Tensor | None = self.bias
        if b is not None and b.dtype != dtype:
            b = b.to(dtype)
        if values.dtype != dtype:
            values = values.to(dtype)
        return values, w, b

    def extra_repr(self) -> str:
        return super().extra_repr()


# ============================================================================ convolution
class _Conv(_ConvBase):
    """Strided/dilated/grouped convolution over time (and spatial axes)."""

    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)
        mode = self._time_padding
        k, s, d = self._k, self._s, self._d
        self._time_pad = P.explicit_padding(mode, k, s, d)
        self._spatial_pads = tuple(
            explicit_spatial_padding(p, self.kernel_size[i + 1], self.stride[i + 1], self.dilation[i + 1])
            for i, p in enumerate(self._spatial_padding)
        )
        self._supports_step = mode in P.STEPPABLE_PADDINGS
        self._buffer_width = P.conv_buffer_width(mode, k, s, d) if self._supports_step else 0
        self._input_latency = P.conv_input_latency(mode, k, d)
        self._output_latency = P.conv_output_latency(mode, k, s, d)
        self._ratio = fractions.Fraction(1, s)
        self._mask = TimeMask(mode, k, s, d)
        self._conv_fn = _CONV[self._rank]

    # -- metadata -------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self._supports_step

    @property
    def block_size(self) -> int:
        return self._s

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self._ratio

    @property
    def input_latency(self) -> int:
        return self._input_latency

    @property
    def output_latency(self) -> int:
        return self._output_latency

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return P.conv_receptive_field_per_step(self._time_padding, self._k, self._s, self._d)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._check_channels(input_shape)
        spatial = tuple(
            spatial_output_size(
                type(self).__name__,
                i + 2,
                input_shape[i],
                self._spatial_pads[i],
                self.kernel_size[i + 1],
                self.stride[i + 1],
                self.dilation[i + 1],
            )
            for i in range(self._rank - 1)
        )
        return (*spatial, self.out_channels)

    # -- compute ---------------------------------------------------------------------------
    def _conv(self, values: torch.Tensor, time_pad: tuple[int, int], training: bool) -> torch.Tensor:
        """``[B, T, *S, C]`` -> ``[B, T', *S', O]`` with one (channels-last) convolution call.

        Padding happens in the sequence layout, whose channels-first view is channels-last
        memory, which the convolution reads and writes directly: no layout copies. 1-D
        convolutions run as 2-D ones over ``[B, C, 1, T]`` to get that fast path.
        """
        v, w, b = self._operands(values, training)
        pads = [0, 0, *channels_first_pads((time_pad, *self._spatial_pads))]
        if any(pads):
            v = F.pad(v, pads)
        channels_last = _use_channels_last(v)
        v = v.movedim(-1, 1)
        if v.shape[1] == 1:
            # One input channel: that view's size-1 channel axis has stride 1, so its strides are
            # ambiguous between the contiguous and channels-last layouts, and torch's CPU (oneDNN)
            # convolution then computes wrong values for some shapes (a 2-D/3-D convolution whose
            # last axis is strided down to one output position, batch > 1; cf. pytorch#82060).
            # The same memory with the standard contiguous strides (a view, no copy) avoids it.
            v = v.squeeze(1).unsqueeze(1)
        if self._rank == 1 and channels_last:
            y = F.conv2d(v.unsqueeze(2), w.unsqueeze(2), b, (1, self._s), 0, (1, self._d), self.groups).squeeze(2)
        elif self._rank == 1:
            y = F.conv1d(v.contiguous(), w, b, self._s, 0, self._d, self.groups)
        else:
            v = v if channels_last else v.contiguous()
            y = self._conv_fn(v, w, b, self.stride, 0, self.dilation, self.groups)
        y = y.movedim(1, -1)
        return self.activation(y) if self.activation is not None else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)  # clear errors before computing
        if self._ek > 1:
            x = x.mask_invalid()
        t = x.values.shape[1]
        before, after = self._time_pad
        if t + before + after < self._ek:
            if t == 0:
                return self._empty(x)
            raise ValueError(
                f"{type(self).__name__}: padding={self._time_padding.value!r} needs at least {self._ek} timesteps "
                f"(the effective kernel size: kernel_size {self._k}, dilation {self._d}); got an input of {t} "
                "timesteps. Use a padding mode that pads time ('same', 'causal', ...) or a longer input."
            )
        values = self._conv(x.values, self._time_pad, training)
        mask = self._mask.layer(x.mask)
        if self.bias is None and self.activation is None and self._ek == 1 and isinstance(x, MaskedSequence):
            return MaskedSequence._trusted(values, mask)
        return Sequence._trusted(values, mask)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self._supports_step:
            raise ValueError(
                f"{type(self).__name__} with padding={self._time_padding.value!r} cannot step; steppable paddings "
                f"are {[m.value for m in P.STEPPABLE_PADDINGS]}."
            )
        self.get_output_shape(tuple(input_spec.shape))
        if not self._buffer_width:
            return ()
        return P.conv_initial_buffer(
            batch_size, input_spec, self._buffer_width, self._time_padding, device=layer_device(self)
        )

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self.get_output_shape(x.channel_shape)
        if x.values.shape[1] == 0:
            return self._empty(x), state
        if self._ek > 1:
            x = x.mask_invalid()
        width = self._buffer_width
        if width:
            values = torch.cat([state.values, x.values], 1)
            mask = torch.cat([state.mask, x.mask], 1)
            state = MaskedSequence._trusted(values[:, -width:], mask[:, -width:])
        else:
            values, mask = x.values, x.mask
        y = self._conv(values, (0, 0), training)
        return Sequence._trusted(y, self._mask.step(mask, y.shape[1])), state


_COMMON_ARGS_DOC = """
    ``bias``: add a learned bias. ``activation``: a name from ``sl.activations`` or a
    function applied to the output. ``compute_dtype``: compute in this dtype (default:
    the promotion of input and parameter dtypes). ``use_weight_norm``: the reference's
    weight normalisation (adds ``weight_scale``); ``kernel_constraint``: ``"l2"``,
    ``"spectral"``, a dict ``{"kind": ..., **options}`` or an
    ``L2WeightNormalization``/``SpectralWeightNormalization`` (see
    :mod:`sl_conv.normalization`).
"""


class Conv1D(_Conv):
    """A 1-D convolution over time, streaming per the reference (see the module docstring).

    ``Conv1D(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)``
    maps ``[B, T, in_channels]`` to ``[B, T', out_channels]`` with ``T' = ceil(T / stride)``
    for the modes that pad ``k_eff - 1`` steps (fewer for ``valid``, more for
    ``semicausal_full``: ``sl.padding.output_length``); ``padding`` is a time padding mode (``"valid"``, ``"same"``, ``"causal_valid"``,
    ``"reverse_causal_valid"``, ``"causal"``, ``"reverse_causal"``, ``"semicausal"``,
    ``"semicausal_full"``). ``weight`` is ``torch.nn.Conv1d``'s ``[out, in / groups, k]``,
    so its state dicts load. ``in_channels`` may be omitted (``Conv1D(out_channels=64,
    kernel_size=3)``): it is inferred at the first call (see the module docstring).
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 1

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | None = None,
        stride: int = 1,
        padding: PaddingMode | str = PaddingMode.VALID,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=padding,
            spatial_padding=None,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )

    @property
    def padding(self) -> PaddingMode:
        return self._time_padding


class DepthwiseConv1D(_Conv):
    """A depthwise 1-D convolution: each input channel convolved with ``depth_multiplier``
    filters of its own (``groups = in_channels``, ``out_channels = in_channels *
    depth_multiplier``; output channel ``c * depth_multiplier + m``). ``weight`` is
    ``[in_channels * depth_multiplier, 1, kernel_size]`` as ``torch.nn.Conv1d(groups=in_channels)``.
    ``DepthwiseConv1D(kernel_size=5, padding="causal")`` infers ``in_channels`` (so ``groups``
    and ``out_channels``) at the first call.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 1

    def __init__(
        self,
        in_channels: int | None = None,
        kernel_size: int | None = None,
        stride: int = 1,
        padding: PaddingMode | str = PaddingMode.VALID,
        dilation: int = 1,
        depth_multiplier: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.depth_multiplier = check_positive_int("DepthwiseConv1D", "depth_multiplier", depth_multiplier)
        self._configure(
            in_channels=in_channels,
            out_channels=None,
            depth_multiplier=self.depth_multiplier,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=padding,
            spatial_padding=None,
            groups=None,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )

    @property
    def padding(self) -> PaddingMode:
        return self._time_padding


class _SpatialArgs:
    """``time_padding``/``spatial_padding`` accessors and config form of the 2-D/3-D layers."""

    _time_padding: PaddingMode
    _spatial_padding: tuple[SpatialPadding, ...]

    @property
    def time_padding(self) -> PaddingMode:
        return self._time_padding

    @property
    def spatial_padding(self) -> Any:
        return encode_spatial(self._spatial_padding)

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)  # type: ignore[misc]
        return {**arguments, "spatial_padding": self.spatial_padding}


class Conv2D(_SpatialArgs, _Conv):
    """A 2-D convolution over time and one spatial axis: ``[B, T, H, in] -> [B, T', H', out]``.

    ``time_padding`` streams as Conv1D's ``padding``; ``spatial_padding`` (default
    ``"same"``) is a mode or an explicit ``(before, after)`` pair for ``H``.
    ``kernel_size``/``stride``/``dilation`` are an int or ``(time, height)``. ``weight`` is
    ``torch.nn.Conv2d``'s ``[out, in / groups, k_t, k_h]``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 2

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: PaddingMode | str | tuple[int, int] = PaddingMode.SAME,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=time_padding,
            spatial_padding=spatial_padding,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )


class DepthwiseConv2D(_SpatialArgs, _Conv):
    """A depthwise 2-D convolution (beyond the reference, which has only DepthwiseConv1D):
    Conv2D with ``groups = in_channels`` and ``out_channels = in_channels * depth_multiplier``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 2

    def __init__(
        self,
        in_channels: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: PaddingMode | str | tuple[int, int] = PaddingMode.SAME,
        dilation: int | tuple[int, int] = 1,
        depth_multiplier: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.depth_multiplier = check_positive_int("DepthwiseConv2D", "depth_multiplier", depth_multiplier)
        self._configure(
            in_channels=in_channels,
            out_channels=None,
            depth_multiplier=self.depth_multiplier,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=time_padding,
            spatial_padding=spatial_padding,
            groups=None,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )


class Conv3D(_SpatialArgs, _Conv):
    """A 3-D convolution over time and two spatial axes: ``[B, T, H, W, in] -> [B, T', H', W', out]``.

    ``spatial_padding`` is one mode for both spatial axes or two entries (each a mode or
    a ``(before, after)`` pair); ``kernel_size``/``stride``/``dilation`` an int or
    ``(time, height, width)``. ``weight`` is ``torch.nn.Conv3d``'s ``[out, in / groups, k_t, k_h, k_w]``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 3

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int, int] | None = None,
        stride: int | tuple[int, int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: Any = (PaddingMode.SAME, PaddingMode.SAME),
        dilation: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=time_padding,
            spatial_padding=spatial_padding,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )


# ============================================================================ transposed
def _crop_or_pad(y: torch.Tensor, amounts: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Crops (positive) or zero-pads (negative) each of ``y``'s trailing axes by ``(left, right)``."""
    first = y.dim() - len(amounts)
    index: list[slice] = [slice(None)] * y.dim()
    pads: list[tuple[int, int]] = []
    for i, (left, right) in enumerate(amounts):
        size = y.shape[first + i]
        lo, hi = max(left, 0), max(right, 0)
        if lo or hi:
            index[first + i] = slice(lo, size - hi)
        pads.append((max(-left, 0), max(-right, 0)))
    y = y[tuple(index)]
    flat = channels_first_pads(pads)
    return F.pad(y, flat) if any(flat) else y


class _ConvTranspose(_ConvBase):
    """Transposed convolution: upsampling in time by ``stride``, causal streaming with an output tail."""

    _transposed = True

    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)
        owner = type(self).__name__
        for axis, mode in enumerate((self._time_padding, *self._spatial_padding)):
            k = P.effective_kernel_size(self.kernel_size[axis], self.dilation[axis])
            s = self.stride[axis]
            if mode is PaddingMode.SEMICAUSAL_FULL and k <= s and (k, s) != (1, 1):
                raise ValueError(
                    f"{owner}: padding 'semicausal_full' on axis {axis + 1} needs an effective kernel size larger than "
                    f"the stride; got effective kernel {k} and stride {s} (the reference's output values and mask "
                    "disagree there)."
                )
        self._layer_crops = tuple(
            self._crops(axis, mode) for axis, mode in enumerate((self._time_padding, *self._spatial_padding))
        )
        self._step_crops = (self._crops(0, PaddingMode.VALID), *self._layer_crops[1:])
        self._supports_step = self._time_padding is PaddingMode.CAUSAL
        self._tail = max(0, self._ek - self._s)
        self._ratio = fractions.Fraction(self._s, 1)
        self._conv_fn = _CONV_T[self._rank]

    def _crops(self, axis: int, mode: SpatialPadding) -> tuple[int, int]:
        """Crop (or, negative, zero-pad) of the full transposed convolution giving the reference's padding."""
        assert isinstance(mode, PaddingMode)
        k, s, d = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
        ek = P.effective_kernel_size(k, d)
        before, after = P.transpose_explicit_padding(mode, k, s, d)
        return ek - 1 - before, ek - 1 - after

    # -- metadata -------------------------------------------------------------------------
    @property
    def supports_step(self) -> bool:
        return self._supports_step

    @property
    def output_ratio(self) -> fractions.Fraction:
        return self._ratio

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return P.transpose_receptive_field_per_step(self._time_padding, self._k, self._s, self._d)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        self._check_channels(input_shape)
        spatial = []
        for i in range(self._rank - 1):
            size = input_shape[i]
            if size < 1:
                raise ValueError(
                    f"{type(self).__name__}: spatial axis {i + 2} has size {size}; a transposed convolution needs at "
                    "least 1."
                )
            ek = P.effective_kernel_size(self.kernel_size[i + 1], self.dilation[i + 1])
            left, right = self._layer_crops[i + 1]
            spatial.append((size - 1) * self.stride[i + 1] + ek - left - right)
        return (*spatial, self.out_channels)

    # -- compute ---------------------------------------------------------------------------
    def _conv_t(self, values: torch.Tensor, crops: tuple[tuple[int, int], ...]) -> torch.Tensor:
        # The reference applies its kernel constraint with training=False in transposed convolutions.
        v, w, _ = self._operands(values, False)
        channels_last = _use_channels_last(v)
        v = v.movedim(-1, 1)  # channels-last memory (see _Conv._conv)
        if self._rank == 1 and channels_last:
            y = F.conv_transpose2d(v.unsqueeze(2), w.unsqueeze(2), None, (1, self._s), 0, 0, self.groups, (1, self._d))
            y = y.squeeze(2)
        else:
            v = v if channels_last else v.contiguous()
            y = self._conv_fn(v, w, None, self.stride, 0, 0, self.groups, self.dilation)
        return _crop_or_pad(y, crops).movedim(1, -1)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return self.activation(y) if self.activation is not None else y

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        if x.values.shape[1] == 0:
            return self._empty(x)
        if self._k > 1:
            x = x.mask_invalid()
        values = self._finish(self._conv_t(x.values, self._layer_crops))
        # A plain-str mode traces (the repeat path); see sl_conv._common.TimeMask.
        mask = P.transpose_output_mask(x.mask, self._time_padding.value, self._k, self._s, self._d)
        return Sequence._trusted(values, mask)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self._supports_step:
            raise ValueError(
                f"{type(self).__name__} with {'padding' if self._rank == 1 else 'time_padding'}="
                f"{self._time_padding.value!r} cannot step; only 'causal' streams."
            )
        spec = self.get_output_spec(ChannelSpec(tuple(input_spec.shape), input_spec.dtype))
        if not self._tail:
            return ()
        device = layer_device(self)
        return (
            torch.zeros((batch_size, self._tail, *spec.shape), dtype=spec.dtype, device=device),
            torch.ones((batch_size, self._tail), dtype=torch.bool, device=device),
        )

    def _invalid_hits(self, mask: torch.Tensor) -> torch.Tensor:
        """How many invalid inputs reach each step of the block's full output ``[B, t * stride + tail]``."""
        invalid = (~mask).to(torch.float32)[:, None, :]
        ones = torch.ones((1, 1, self._k), dtype=torch.float32, device=mask.device)
        hits = F.conv_transpose1d(invalid, ones, None, self._s, 0, 0, 1, self._d)[:, 0]
        return _crop_or_pad(hits, (self._step_crops[0],))

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        self.get_output_shape(x.channel_shape)
        t = x.values.shape[1]
        if t == 0:
            return self._empty(x), state
        if self._k > 1:
            x = x.mask_invalid()
        full = self._conv_t(x.values, self._step_crops)  # [B, t * stride + tail, ...]
        n = t * self._s
        if self._tail:
            tail_values, tail_mask = state
            pad = torch.zeros((full.shape[0], n, *full.shape[2:]), dtype=full.dtype, device=full.device)
            full = full + torch.cat([tail_values.to(full.dtype), pad], 1)
            reached = self._invalid_hits(x.mask) == 0
            keep = torch.ones((x.mask.shape[0], n), dtype=torch.bool, device=x.mask.device)
            valid = reached & torch.cat([tail_mask, keep], 1)
            state = (full[:, n:], valid[:, n:])
            full = full[:, :n]
        mask = x.mask.repeat_interleave(self._s, dim=1)
        return Sequence._trusted(self._finish(full), mask), state

    def flush(self, state: State, *, training: bool, constants: Constants | None = None) -> Sequence | None:
        """The output tail a causal stream still owes: ``max(effective_kernel - stride, 0)`` steps
        (bias and activation applied; mask: every input reaching the step was valid), padded with
        invalid steps to whole ``stride``-step blocks. Stream + flush = ``layer`` with ``padding='valid'``."""
        if not self._tail or not isinstance(state, tuple) or len(state) != 2:
            return None
        tail_values, tail_mask = state
        values = self._finish(tail_values)
        extra = -self._tail % self._s
        if extra:
            b = values.shape[0]
            values = torch.cat(
                [values, torch.zeros((b, extra, *values.shape[2:]), dtype=values.dtype, device=values.device)], 1
            )
            tail_mask = torch.cat([tail_mask, torch.zeros((b, extra), dtype=torch.bool, device=values.device)], 1)
        return Sequence._trusted(values, tail_mask)


class Conv1DTranspose(_ConvTranspose):
    """A 1-D transposed convolution (upsampling by ``stride``): ``[B, T, in] -> [B, T * stride (+ ...), out]``.

    ``padding``: ``"valid"`` (the full transposed convolution, ``T * stride + max(k_eff -
    stride, 0)`` steps), ``"same"``, ``"causal"`` (``T * stride`` steps; the only mode that
    streams), ``"semicausal_full"``. ``weight`` is ``torch.nn.ConvTranspose1d``'s
    ``[in, out / groups, k]``. See the module docstring for the stream's tail and ``flush``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 1

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | None = None,
        stride: int = 1,
        padding: PaddingMode | str = PaddingMode.VALID,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=padding,
            spatial_padding=None,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )

    @property
    def padding(self) -> PaddingMode:
        return self._time_padding


class Conv2DTranspose(_SpatialArgs, _ConvTranspose):
    """A 2-D transposed convolution over time and one spatial axis (``time_padding`` as
    Conv1DTranspose's ``padding``; ``spatial_padding`` one of the same four modes).
    ``weight`` is ``torch.nn.ConvTranspose2d``'s ``[in, out / groups, k_t, k_h]``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 2

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: PaddingMode | str = PaddingMode.SAME,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=time_padding,
            spatial_padding=spatial_padding,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )


class Conv3DTranspose(_SpatialArgs, _ConvTranspose):
    """A 3-D transposed convolution over time and two spatial axes (beyond the reference).
    ``weight`` is ``torch.nn.ConvTranspose3d``'s ``[in, out / groups, k_t, k_h, k_w]``.
    """

    __doc__ = (__doc__ or "") + _COMMON_ARGS_DOC
    _rank = 3

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int, int] | None = None,
        stride: int | tuple[int, int, int] = 1,
        time_padding: PaddingMode | str = PaddingMode.VALID,
        spatial_padding: Any = (PaddingMode.SAME, PaddingMode.SAME),
        dilation: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Activation = None,
        compute_dtype: torch.dtype | None = None,
        use_weight_norm: bool = False,
        kernel_constraint: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            time_padding=time_padding,
            spatial_padding=spatial_padding,
            groups=groups,
            bias=bias,
            activation=activation,
            compute_dtype=compute_dtype,
            use_weight_norm=use_weight_norm,
            kernel_constraint=kernel_constraint,
            device=device,
            dtype=dtype,
        )
