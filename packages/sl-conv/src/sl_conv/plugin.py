"""Registers sl-conv's layers with the sl registry (entry point ``sl.plugins: conv``).

The layers arrive with their own issues; until then the plugin registers none.
"""

from __future__ import annotations

from collections.abc import Iterable

from sl.registry import LayerExample, LayerRegistry, hookimpl

LAYERS: list[tuple[type, tuple[str, ...]]] = []


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    return []
