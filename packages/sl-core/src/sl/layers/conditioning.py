"""Core layers (conditioning). Filled in by the core-layers work (issue 3)."""

from __future__ import annotations

from sl.registry import LayerExample, LayerRegistry

__all__: list[str] = []


def register_layers(registry: LayerRegistry) -> None:
    for name in __all__:
        registry.add(globals()[name])


def example_layers() -> list[LayerExample]:
    return []
