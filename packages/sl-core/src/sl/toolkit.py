"""The author toolkit: what a layer implementation needs besides the base classes.

Plugin packages (and sl-core's own layers) build on these instead of writing their
own copies:

* argument checks that name the layer: :func:`as_shape`, :func:`check_positive_int`,
  :func:`coerce_enum`;
* dtypes: :func:`promoted_dtype` (the reference's ``get_promoted_dtype``),
  :func:`is_floating`;
* the reference's initialisers: :func:`variance_scaling_`, :func:`lecun_normal_`,
  :func:`reference_fans`, :func:`reference_fan_in`;
* side inputs: :func:`get_constant`;
* padding modes and convolution-like time arithmetic: :class:`PaddingMode` and the
  module :mod:`sl.padding` (re-exported as ``padding``);
* step state on the layer's device: :func:`track_device`, :func:`layer_device`,
  :func:`state_full`;
* input sizes inferred at the first call: :class:`LazyInputSize` (see :mod:`sl.lazy`);
* streaming-time checks without host syncs: :func:`check_in_stream`;
* the form an operation takes in a traced step: :func:`is_replay_capturing` (see
  :mod:`sl.replay`);
* the error types of the contract checks: :class:`SpecMismatchError`,
  :class:`StateMismatchError`.

Conventions every layer follows (see ``docs/plugins.md``): constructors take torch's
keyword names where torch has the concept, plus ``device=``/``dtype=``; implementations
of ``layer``/``step`` take ``training: bool``; errors name the layer, what was
expected and what arrived; step state is a pytree of fixed-shape tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as TypingSequence

import torch

from sl import padding
from sl.dtypes import promoted_dtype
from sl.errors import SpecMismatchError, StateMismatchError
from sl.initializers import lecun_normal_, reference_fan_in, reference_fans, variance_scaling_
from sl.layer import SequenceLayer, get_constant
from sl.lazy import LazyInputSize, has_uninitialized_parameters
from sl.replay import is_replay_capturing
from sl.types import PaddingMode
from sl.validation import as_shape, check_float_dtype, check_positive_int, check_real, coerce_enum

__all__ = [
    "LazyInputSize",
    "PaddingMode",
    "SpecMismatchError",
    "StateMismatchError",
    "as_shape",
    "check_float_dtype",
    "check_in_stream",
    "check_positive_int",
    "check_real",
    "coerce_enum",
    "get_constant",
    "has_uninitialized_parameters",
    "is_floating",
    "is_replay_capturing",
    "layer_device",
    "lecun_normal_",
    "padding",
    "promoted_dtype",
    "reference_fan_in",
    "reference_fans",
    "state_full",
    "track_device",
    "variance_scaling_",
]

_ANCHOR = "_sl_device_anchor"


def is_floating(dtype: torch.dtype) -> bool:
    """Floating point or complex (the dtypes gradients and NaN padding apply to)."""
    return dtype.is_floating_point or dtype.is_complex


def track_device(layer: torch.nn.Module) -> None:
    """Lets a layer without parameters know its device: registers an empty non-persistent
    buffer that ``.to()``/``.cuda()`` move, so :func:`layer_device` follows the module."""
    if not hasattr(layer, _ANCHOR):
        layer.register_buffer(_ANCHOR, torch.empty(0), persistent=False)


def layer_device(layer: torch.nn.Module) -> torch.device:
    """The device of the layer's first parameter or buffer (CPU for a layer with neither)."""
    for tensors in (layer.parameters(recurse=False), layer.buffers(recurse=False), layer.parameters(), layer.buffers()):
        for tensor in tensors:
            return tensor.device
    return torch.device("cpu")


def state_full(
    layer: torch.nn.Module,
    shape: TypingSequence[int],
    fill: float | bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """A state tensor of ``shape`` filled with ``fill``, on the layer's device, so ``step``
    never moves state between devices (call :func:`track_device` in ``__init__`` of a layer
    without parameters)."""
    return torch.full(tuple(shape), fill, dtype=dtype, device=layer_device(layer))


def check_in_stream(layer: SequenceLayer, ok: torch.Tensor, message: str | Callable[[], str]) -> None:
    """Raises when ``ok`` (a bool tensor) is not all True, without a host sync where that matters.

    Eager CPU tensors are checked at once (a ValueError naming the layer; ``message``
    may be a function, called only on failure, to describe what arrived). On an
    accelerator, or under ``torch.compile``/``torch.export``, the check is an
    asynchronous device assertion (``torch._assert_async``), so ``step`` never waits
    for the device.
    """
    if torch.compiler.is_compiling() or ok.device.type != "cpu":
        text = message if isinstance(message, str) else "invalid input (see the layer's documentation)"
        torch._assert_async(ok.all(), f"{type(layer).__name__}: {text}")
    elif not bool(ok.all()):
        raise ValueError(f"{type(layer).__name__}: {message if isinstance(message, str) else message()}")
