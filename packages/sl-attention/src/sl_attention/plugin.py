"""Registers sl-attention's layers with the sl registry (entry point ``sl.plugins: attention``).

``LAYERS`` is the explicit list of layers and aliases; ``sl_example_layers`` gives the
conformance kit's examples (``examples.py``) and ``sl_register_converters`` the reference
checkpoint converters (``converters.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sl.registry import LayerExample, LayerRegistry, hookimpl
from sl_attention import layers as A

LAYERS: list[tuple[type, tuple[str, ...]]] = [
    (A.DotProductSelfAttention, ()),
    (A.LocalDotProductSelfAttention, ()),
    (A.DotProductSelfAttentionV2, ()),
    (A.BlockwiseDotProductSelfAttention, ()),
    (A.DotProductAttention, ()),
    (A.MultiSourceDotProductAttention, ()),
    (A.StreamingDotProductAttention, ()),
    (A.StreamingLocalDotProductAttention, ()),
    (A.GmmAttention, ()),
]


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    from sl_attention.examples import example_layers

    return example_layers()


@hookimpl
def sl_register_converters(converters: Any) -> None:
    from sl_attention.converters import register_attention_converters

    register_attention_converters(converters)
