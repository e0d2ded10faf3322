"""sl-core's own plugin: registers the core combinators and layers like any other plugin."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from sl.registry import LayerExample, LayerRegistry, hookimpl

# Each module exposes ``register_layers(registry)`` and ``example_layers()``.
CORE_MODULES = (
    "sl.combinators",
    "sl.layers.pointwise",
    "sl.layers.utility",
    "sl.layers.shape",
    "sl.layers.resampling",
    "sl.layers.embedding",
    "sl.layers.stochastic",
    "sl.layers.dense",
    "sl.layers.latency",
    "sl.layers.position",
    "sl.layers.conditioning",
    "sl.layers.time_varying",
)


def _modules() -> list[object]:
    return [importlib.import_module(m) for m in CORE_MODULES]


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for module in _modules():
        module.register_layers(registry)  # type: ignore[attr-defined]


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    examples: list[LayerExample] = []
    for module in _modules():
        examples.extend(module.example_layers())  # type: ignore[attr-defined]
    return examples


@hookimpl
def sl_register_converters(converters: object) -> None:
    from sl.interop.converters import register_core_converters

    register_core_converters(converters)  # type: ignore[arg-type]
