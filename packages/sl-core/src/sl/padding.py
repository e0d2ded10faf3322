"""Padding modes and the time arithmetic of convolution-like layers.

Convolutions, pooling, framing (sl-conv, sl-dsp) and overlap-add / transposed
convolutions share these rules, so they live in sl-core (the reference keeps them in
``utils.py`` and ``convolution.py``). For a window of ``kernel_size`` taps spaced
``dilation`` apart, moved ``stride`` steps at a time over time:

* :func:`explicit_padding` is how many steps each mode pads before and after;
* :func:`conv_output_mask` is the output mask: ``*_valid`` modes AND the window's
  input masks, ``semicausal_full`` ORs them, the others keep the mask of the input
  step each output lines up with;
* :func:`conv_input_latency`, :func:`conv_output_latency`, :func:`conv_buffer_width`
  and :func:`conv_initial_buffer` give the streaming contract and the step state
  (the last ``buffer_width`` input steps);
* the ``transpose_*`` functions are the same for transposed convolution and
  overlap-add (output ratio ``stride``, an output tail as state).

Padding arguments are :class:`~sl.types.PaddingMode` members or their string values;
:func:`validate_padding` turns either into the member with an error naming the layer.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from sl.types import ChannelSpec, MaskedSequence, PaddingMode, ReceptiveField

__all__ = [
    "STEPPABLE_PADDINGS",
    "conv_buffer_width",
    "conv_initial_buffer",
    "conv_input_latency",
    "conv_output_latency",
    "conv_output_mask",
    "conv_receptive_field_per_step",
    "effective_kernel_size",
    "explicit_padding",
    "output_length",
    "transpose_explicit_padding",
    "transpose_output_length",
    "transpose_output_mask",
    "transpose_receptive_field_per_step",
    "validate_padding",
]

STEPPABLE_PADDINGS = (
    PaddingMode.CAUSAL_VALID,
    PaddingMode.REVERSE_CAUSAL_VALID,
    PaddingMode.CAUSAL,
    PaddingMode.REVERSE_CAUSAL,
    PaddingMode.SEMICAUSAL,
)
"""Padding modes with which a convolution-like layer can run ``step`` (the reference's set)."""

_KEEP_MASK = (PaddingMode.SAME, PaddingMode.CAUSAL, PaddingMode.REVERSE_CAUSAL, PaddingMode.SEMICAUSAL)
_WINDOW_MASK = (
    PaddingMode.VALID,
    PaddingMode.CAUSAL_VALID,
    PaddingMode.REVERSE_CAUSAL_VALID,
    PaddingMode.SEMICAUSAL_FULL,
)


def validate_padding(
    padding: PaddingMode | str, *, owner: str = "layer", allowed: Iterable[PaddingMode] | None = None
) -> PaddingMode:
    """``padding`` as a PaddingMode member; an unknown (or not ``allowed``) mode is a ValueError naming ``owner``."""
    choices = list(PaddingMode) if allowed is None else list(allowed)
    mode: PaddingMode | None
    if isinstance(padding, PaddingMode):  # a member (no str methods: they do not trace under torch.compile)
        mode = padding
    else:
        try:
            mode = PaddingMode(padding.lower() if isinstance(padding, str) else padding)
        except ValueError:
            mode = None
    if mode is None or mode not in choices:
        raise ValueError(f"{owner} does not support padding={padding!r}; expected one of {[m.value for m in choices]}.")
    return mode


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """``kernel_size`` with ``dilation - 1`` holes between taps."""
    return (kernel_size - 1) * dilation + 1


def explicit_padding(padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """``(before, after)`` time padding of a padding mode (the reference's ``convolution_explicit_padding``)."""
    mode = validate_padding(padding)
    k = effective_kernel_size(kernel_size, dilation)
    if mode in (PaddingMode.CAUSAL_VALID, PaddingMode.CAUSAL):
        return k - 1, 0
    if mode in (PaddingMode.REVERSE_CAUSAL_VALID, PaddingMode.REVERSE_CAUSAL):
        return 0, k - 1
    if mode is PaddingMode.SEMICAUSAL:
        left = max(k - stride, 0)
        return left, k - 1 - left
    if mode is PaddingMode.SAME:
        return (k - 1) // 2, k - 1 - (k - 1) // 2
    if mode is PaddingMode.SEMICAUSAL_FULL:
        return max(k - stride, 0), k - 1
    return 0, 0  # VALID


def output_length(input_length: int, padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int) -> int:
    """Output steps of a convolution-like layer over ``input_length`` steps."""
    before, after = explicit_padding(padding, kernel_size, stride, dilation)
    span = max(0, input_length + before + after - (effective_kernel_size(kernel_size, dilation) - 1))
    return -(-span // stride)


def _window_mask(mask: torch.Tensor, kernel_size: int, stride: int, dilation: int, use_or: bool) -> torch.Tensor:
    """AND (or OR) of the mask over each window of a VALID convolution (no windows: an empty mask)."""
    if mask.shape[1] < (kernel_size - 1) * dilation + 1:
        return mask[:, :0]
    if dilation == 1 and kernel_size % stride == 0:
        # Reduce within each stride first: fewer, wider windows.
        frames = mask.shape[1] // stride
        mask = mask[:, : frames * stride].reshape(mask.shape[0], frames, stride)
        mask = mask.any(-1) if use_or else mask.all(-1)
        kernel_size, stride = kernel_size // stride, 1
    m = mask.to(torch.float32)[:, None, :]
    if not use_or:
        m = 1.0 - m  # an AND is "no invalid step in the window"
    hits = F.conv1d(
        m, torch.ones((1, 1, kernel_size), dtype=torch.float32, device=mask.device), stride=stride, dilation=dilation
    )
    hits = hits[:, 0]
    return hits > 0 if use_or else hits == 0


def conv_output_mask(
    mask: torch.Tensor,
    padding: PaddingMode | str,
    kernel_size: int,
    stride: int,
    dilation: int,
    *,
    is_step: bool,
) -> torch.Tensor:
    """Output mask ``[B, T_out]`` of a convolution-like layer (the reference's ``compute_conv_mask``).

    Layer-wise (``is_step=False``) ``mask`` is the input mask. Step-wise it is the
    step state's buffer followed by the block (``buffer_width`` + block steps), and the
    result has one entry per output of the block.
    """
    mode = validate_padding(padding)
    k = effective_kernel_size(kernel_size, dilation)
    if is_step:
        if mode in _KEEP_MASK:
            before, _ = explicit_padding(mode, kernel_size, stride, dilation)
            # Output j lines up with buffered step j * stride + before.
            count = max(0, -(-(mask.shape[1] - (k - 1)) // stride))
            return mask[:, before : before + (count - 1) * stride + 1 : stride] if count else mask[:, :0]
        if mode is PaddingMode.SEMICAUSAL_FULL:
            raise ValueError("semicausal_full padding cannot step.")
        return _window_mask(mask, kernel_size, stride, dilation, use_or=False)
    if mode in _KEEP_MASK:
        return mask[:, ::stride] if stride > 1 else mask
    before, after = explicit_padding(mode, kernel_size, stride, dilation)
    fill = mode is PaddingMode.CAUSAL_VALID
    mask = F.pad(mask, (before, after), value=fill) if before or after else mask
    return _window_mask(mask, kernel_size, stride, dilation, use_or=mode is PaddingMode.SEMICAUSAL_FULL)


def conv_input_latency(padding: PaddingMode | str, kernel_size: int, dilation: int) -> int:
    """Invalid steps a stream needs at its end to flush every output (reference ``BaseConv.input_latency``)."""
    mode = validate_padding(padding)
    if mode in (PaddingMode.REVERSE_CAUSAL_VALID, PaddingMode.REVERSE_CAUSAL, PaddingMode.SEMICAUSAL_FULL):
        return effective_kernel_size(kernel_size, dilation) - 1
    return 0


def conv_output_latency(padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int) -> int:
    """Leading step outputs that only line the stream up (``input_latency // stride``; 0 for semicausal_full)."""
    if validate_padding(padding) is PaddingMode.SEMICAUSAL_FULL:
        return 0
    return int(fractions.Fraction(conv_input_latency(padding, kernel_size, dilation), stride))


def conv_buffer_width(
    padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int, *, owner: str = "layer"
) -> int:
    """Input steps a streaming convolution keeps between blocks."""
    mode = validate_padding(padding, owner=owner, allowed=STEPPABLE_PADDINGS)
    k = effective_kernel_size(kernel_size, dilation)
    if mode is PaddingMode.SEMICAUSAL:
        return max(k - stride, 0)
    if mode in (PaddingMode.REVERSE_CAUSAL, PaddingMode.REVERSE_CAUSAL_VALID):
        return (k - 1) // stride * stride
    return k - 1


def conv_initial_buffer(
    batch_size: int,
    input_spec: ChannelSpec,
    buffer_width: int,
    padding: PaddingMode | str,
    *,
    device: torch.device | str | None = None,
    pad_value: float = 0.0,
) -> MaskedSequence:
    """The initial step state: ``buffer_width`` steps of ``pad_value``, valid for the ``*_valid``
    modes (so the window AND does not invalidate the first outputs) and invalid otherwise."""
    mode = validate_padding(padding, allowed=STEPPABLE_PADDINGS)
    valid = mode in (PaddingMode.CAUSAL_VALID, PaddingMode.REVERSE_CAUSAL_VALID)
    values = torch.full((batch_size, buffer_width, *input_spec.shape), pad_value, dtype=input_spec.dtype, device=device)
    mask = torch.full((batch_size, buffer_width), valid, dtype=torch.bool, device=device)
    return MaskedSequence._trusted(values, mask)


def conv_receptive_field_per_step(
    padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int
) -> dict[int, ReceptiveField]:
    start = -explicit_padding(padding, kernel_size, stride, dilation)[0]
    return {0: (start, start + effective_kernel_size(kernel_size, dilation) - 1)}


# -- transposed convolution and overlap-add ------------------------------------------------


def transpose_explicit_padding(
    padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int
) -> tuple[int, int]:
    """Padding of the equivalent input-dilated convolution (reference ``transpose_conv_explicit_padding``)."""
    mode = validate_padding(
        padding, allowed=(PaddingMode.VALID, PaddingMode.CAUSAL, PaddingMode.SAME, PaddingMode.SEMICAUSAL_FULL)
    )
    k = effective_kernel_size(kernel_size, dilation)
    if mode is PaddingMode.VALID:
        return k - 1, k + stride - 2 + max(k - stride, 0) - (k - 1)
    if mode is PaddingMode.CAUSAL:
        return k - 1, stride - 1
    if mode is PaddingMode.SAME:
        amount = k + stride - 2
        left = k - 1 if stride > k - 1 else math.ceil(amount / 2)
        return left, amount - left
    return k - stride, k - 1  # SEMICAUSAL_FULL


def transpose_output_length(
    input_length: int, padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int
) -> int:
    """Output steps of a transposed convolution: the input dilated by ``stride``, padded by
    :func:`transpose_explicit_padding`, convolved VALID (``T * stride`` for causal/same; ``valid``
    adds ``max(k - stride, 0)``; ``semicausal_full`` gives ``T * stride + k + 1 - 2 * stride``)."""
    if input_length <= 0:
        return 0
    before, after = transpose_explicit_padding(padding, kernel_size, stride, dilation)
    k = effective_kernel_size(kernel_size, dilation)
    return max(0, (input_length - 1) * stride + 1 + before + after - (k - 1))


def transpose_receptive_field_per_step(
    padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int
) -> dict[int, ReceptiveField]:
    before, _ = transpose_explicit_padding(padding, kernel_size, stride, dilation)
    k = effective_kernel_size(kernel_size, dilation)
    unused = k - before - 1  # kernel taps unused in the first step
    start = -math.ceil((before + 1) / stride) + 1
    end = math.ceil(unused / stride) - 1
    out: dict[int, ReceptiveField] = {}
    for i in range(stride):
        s = start if (before + 1) % stride == 0 or i < (before + 1) % stride else start + 1
        e = end if i < -unused % stride else end + 1
        out[i] = (s, e) if s <= e else None
    return out


def transpose_output_mask(
    mask: torch.Tensor, padding: PaddingMode | str, kernel_size: int, stride: int, dilation: int
) -> torch.Tensor:
    """Layer-wise output mask of a transposed convolution (reference ``compute_conv_transpose_mask``):
    each input step's mask repeated ``stride`` times, or for ``valid``/``semicausal_full`` with
    a kernel longer than the stride, the AND (OR) over the input steps each output mixes."""
    mode = validate_padding(
        padding, allowed=(PaddingMode.VALID, PaddingMode.CAUSAL, PaddingMode.SAME, PaddingMode.SEMICAUSAL_FULL)
    )
    k = effective_kernel_size(kernel_size, dilation)
    # semicausal_full with k <= stride: the repeated mask, as the reference (its values are then shorter).
    if k <= stride or mode in (PaddingMode.SAME, PaddingMode.CAUSAL):
        return mask.repeat_interleave(stride, dim=1)
    before, after = transpose_explicit_padding(mode, kernel_size, stride, dilation)
    use_or = mode is PaddingMode.SEMICAUSAL_FULL
    signal = (mask if use_or else ~mask).to(torch.float32)[:, None, :]
    # A transposed convolution with a ones kernel = a convolution over the input dilated by stride.
    dilated = torch.zeros((signal.shape[0], 1, max(0, (signal.shape[2] - 1) * stride + 1)), device=mask.device)
    dilated[:, :, ::stride] = signal
    dilated = F.pad(dilated, (before, after))
    hits = F.conv1d(dilated, torch.ones((1, 1, kernel_size), device=mask.device), dilation=dilation)[:, 0]
    return hits > 0 if use_or else hits == 0
