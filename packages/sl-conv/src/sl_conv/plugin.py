"""Registers sl-conv's layers with the sl registry (entry point ``sl.plugins: conv``).

The convention every package follows: this module holds the explicit list of the
package's layers and aliases; ``examples.py`` its example instances; ``converters.py``
its reference-checkpoint (Flax) converters. Layer modules never import the registry.
"""

from __future__ import annotations

from collections.abc import Iterable

import sl_conv as c
from sl.registry import LayerExample, LayerRegistry, hookimpl

# (layer, aliases): the registry name is the class name.
LAYERS: tuple[tuple[type, tuple[str, ...]], ...] = (
    # convolution
    (c.Conv1D, ()),
    (c.DepthwiseConv1D, ()),
    (c.Conv2D, ()),
    (c.DepthwiseConv2D, ()),
    (c.Conv3D, ()),
    (c.Conv1DTranspose, ()),
    (c.Conv2DTranspose, ()),
    (c.Conv3DTranspose, ()),
    # pooling
    (c.MaxPooling1D, ()),
    (c.MaxPooling2D, ()),
    (c.MaxPooling3D, ()),
    (c.MinPooling1D, ()),
    (c.MinPooling2D, ()),
    (c.MinPooling3D, ()),
    (c.AveragePooling1D, ()),
    (c.AveragePooling2D, ()),
    (c.AveragePooling3D, ()),
    # normalization
    (c.L2Normalize, ()),
    (c.LayerNormalization, ("LayerNorm",)),
    (c.RMSNormalization, ("RMSNorm",)),
    (c.BatchNormalization, ("BatchNorm",)),
    (c.GroupNormalization, ("GroupNorm",)),
)


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    from sl_conv.examples import example_layers

    return example_layers()


@hookimpl
def sl_register_converters(converters: object) -> None:
    from sl_conv.converters import register_converters

    register_converters(converters)  # type: ignore[arg-type]
