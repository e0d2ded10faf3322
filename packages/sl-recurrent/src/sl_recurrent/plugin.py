"""Registers sl-recurrent's layers with the sl registry (entry point ``sl.plugins: recurrent``).

The convention every package follows: this module holds the explicit list of the
package's layers and aliases; ``examples.py`` its example instances; ``converters.py``
its reference-checkpoint (Flax) converters. Layer modules never import the registry.
"""

from __future__ import annotations

from collections.abc import Iterable

import sl_recurrent as r
from sl.registry import LayerExample, LayerRegistry, hookimpl

# (layer, aliases): the registry name is the class name.
LAYERS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (r.LSTM, ()),
    (r.GRU, ()),
    (r.VanillaRNN, ("SimpleRNN",)),
    (r.RNN, ()),
    (r.RGLRU, ()),
)


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    from sl_recurrent.examples import example_layers

    return example_layers()


@hookimpl
def sl_register_converters(converters: object) -> None:
    from sl_recurrent.converters import register_converters

    register_converters(converters)  # type: ignore[arg-type]
