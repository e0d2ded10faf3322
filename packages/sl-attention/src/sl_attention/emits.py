"""Emits of the attention layers (the reference's ``SelfAttentionEmits``/``CrossAttentionEmits``)."""

from __future__ import annotations

from typing import NamedTuple

from sl.types import Sequence

__all__ = ["CrossAttentionEmits", "SelfAttentionEmits"]


class SelfAttentionEmits(NamedTuple):
    """``probabilities``: a Sequence ``[B, T, num_heads, S + keys]`` of attention weights per
    query (``S`` sink positions first), masked like the output. The key axis is the layer's
    own: all ``T`` steps layer-wise; the ``max_past_horizon + max_future_horizon + block``
    window step-wise (or the cache for unbounded past); ``past + block_size + future``
    context steps in LocalDotProductSelfAttention's layer mode, as in the reference."""

    probabilities: Sequence


class CrossAttentionEmits(NamedTuple):
    """``probabilities_by_source``: ``{source_name: Sequence [B, T, num_heads, S + source_time]}``."""

    probabilities_by_source: dict[str, Sequence]
