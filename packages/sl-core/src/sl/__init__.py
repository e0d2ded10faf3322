"""sl: streaming sequence layers for PyTorch.

Every layer runs layer-wise (whole sequence) and step-wise (block by block with
explicit state), and the two agree exactly. Layers are found through a plugin
registry: ``sl.Dense``, ``sl.dsp.STFT`` and ``sl.registry.get("dsp:STFT")`` resolve
lazily, so ``import sl`` loads no plugin.
"""

from __future__ import annotations

from typing import Any

from sl import activations, composition, registry
from sl.config import from_config
from sl.layer import (
    Emitting,
    PreservesShape,
    PreservesType,
    SequenceLayer,
    Stateless,
    StatelessEmitting,
    StatelessPointwise,
    StatelessPointwiseFunctor,
    get_constant,
)
from sl.registry import LayerExample, hookimpl
from sl.stepping import step_by_step
from sl.types import (
    ChannelSpec,
    Constants,
    Emits,
    MaskedSequence,
    PaddingMode,
    ReceptiveField,
    Sequence,
    State,
    sequence_mask,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelSpec",
    "Constants",
    "Emits",
    "Emitting",
    "LayerExample",
    "MaskedSequence",
    "PaddingMode",
    "PreservesShape",
    "PreservesType",
    "ReceptiveField",
    "Sequence",
    "SequenceLayer",
    "State",
    "Stateless",
    "StatelessEmitting",
    "StatelessPointwise",
    "StatelessPointwiseFunctor",
    "activations",
    "composition",
    "from_config",
    "get_constant",
    "hookimpl",
    "registry",
    "sequence_mask",
    "step_by_step",
]

_SUBMODULES = {"testing", "combinators", "layers", "interop", "utils"}


def __getattr__(name: str) -> Any:
    """``sl.NAME`` (a registered layer) and ``sl.PLUGIN`` (a plugin namespace)."""
    if name.startswith("__"):
        raise AttributeError(f"module 'sl' has no attribute {name!r}")
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"sl.{name}")
    ns = registry.namespace(name)
    if ns is not None:
        return ns
    try:
        return registry.get(name)
    except KeyError as e:
        raise AttributeError(f"module 'sl' has no attribute {name!r}: {e.args[0]}") from None


def __dir__() -> list[str]:
    names = set(globals()) | set(__all__)
    names.update(n.split(":", 1)[1] for n in registry.all_layers())
    names.update(p.name for p in registry.plugins() if p.ok)
    return sorted(names)
