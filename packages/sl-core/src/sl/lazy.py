"""Input sizes inferred at the first call (``sl.Dense(features=256)``), like ``torch.nn.LazyLinear``.

A layer whose input size only shapes its parameters may leave it ``None``: its
parameters start as ``torch.nn.UninitializedParameter`` and are created (with the
layer's own initialisers) the first time the layer sees an input spec, through any
of ``layer``, ``step``, ``get_initial_state`` or ``get_output_spec``. The inferred size
is then recorded in ``get_config()``, so configs rebuild an eager layer, and a
``state_dict`` loads into a layer that has not seen an input yet (the size comes from
the checkpoint). Run one batch (or ``get_output_spec``) before building the optimizer,
as with torch's lazy modules.

A layer opts in with :class:`LazyInputSize`: set ``lazy_input_arg`` (the constructor
argument, e.g. ``"in_features"``), implement ``_input_size(input_shape)`` (which axis
carries it) and ``_make_parameters(size)`` (create and initialise the parameters for
that size), and call ``self._ensure_built(input_shape)`` where the input shape first
becomes known (``get_output_shape`` is called by all four entry points).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

__all__ = ["LazyInputSize", "has_uninitialized_parameters"]


def has_uninitialized_parameters(module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` (or its children) waits for its input size."""
    return any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in module.parameters())


class LazyInputSize:
    """Mixin for layers with an optional input size (see the module docstring)."""

    lazy_input_arg: ClassVar[str] = ""
    # State-dict key (relative to the layer) and axis that carry the input size when loading.
    lazy_state_key: ClassVar[str] = "weight"
    lazy_state_axis: ClassVar[int] = -1

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def _make_parameters(self, size: int) -> None:
        raise NotImplementedError

    def _register_lazy_loading(self) -> None:
        """Call in ``__init__`` when the input size is None: lets ``load_state_dict`` build the layer."""
        module: Any = self
        module._register_load_state_dict_pre_hook(_build_from_state_dict, with_module=True)

    @property
    def is_built(self) -> bool:
        return getattr(self, self.lazy_input_arg) is not None

    def _ensure_built(self, input_shape: tuple[int, ...]) -> None:
        if getattr(self, self.lazy_input_arg) is None:
            self._build(self._input_size(tuple(input_shape)))

    def _build(self, size: int) -> None:
        module: Any = self
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"{type(self).__name__} infers its {self.lazy_input_arg} at the first call; run one eager call "
                "(or get_output_spec) before torch.compile."
            )
        setattr(self, self.lazy_input_arg, size)
        self._make_parameters(size)
        module.__dict__["_sl_init_args"][self.lazy_input_arg] = size
        module.invalidate_caches()


def _build_from_state_dict(module: Any, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    tensor = state_dict.get(prefix + module.lazy_state_key)
    if isinstance(tensor, torch.Tensor) and getattr(module, module.lazy_input_arg) is None:
        module._build(int(tensor.shape[module.lazy_state_axis]))
