"""Every layer class of sl-attention in one place (plugin, converters and tests read this)."""

from __future__ import annotations

from sl_attention.cross_attention import DotProductAttention, MultiSourceDotProductAttention
from sl_attention.gmm import GmmAttention
from sl_attention.self_attention import DotProductSelfAttention, LocalDotProductSelfAttention
from sl_attention.streaming import StreamingDotProductAttention, StreamingLocalDotProductAttention
from sl_attention.v2 import BlockwiseDotProductSelfAttention, DotProductSelfAttentionV2

__all__ = [
    "DOT_PRODUCT_LAYERS",
    "BlockwiseDotProductSelfAttention",
    "DotProductAttention",
    "DotProductSelfAttention",
    "DotProductSelfAttentionV2",
    "GmmAttention",
    "LocalDotProductSelfAttention",
    "MultiSourceDotProductAttention",
    "StreamingDotProductAttention",
    "StreamingLocalDotProductAttention",
]

#: The layers built on the shared dot-product machinery (same parameter names).
DOT_PRODUCT_LAYERS: tuple[type, ...] = (
    DotProductSelfAttention,
    LocalDotProductSelfAttention,
    DotProductSelfAttentionV2,
    BlockwiseDotProductSelfAttention,
    DotProductAttention,
    MultiSourceDotProductAttention,
    StreamingDotProductAttention,
    StreamingLocalDotProductAttention,
)
