"""sl-attention: attention and relative position layers (an sl plugin; depends on sl-core only).

Layers (all ``sl.SequenceLayer`` s, registered as ``sl.attention.<Name>``):
DotProductSelfAttention, LocalDotProductSelfAttention, DotProductSelfAttentionV2,
BlockwiseDotProductSelfAttention, DotProductAttention, MultiSourceDotProductAttention,
StreamingDotProductAttention, StreamingLocalDotProductAttention, GmmAttention.

Relative position embeddings (``torch.nn.Module`` s passed as ``relative_position_embedding``):
ShawRelativePositionEmbedding, T5RelativePositionEmbedding,
TransformerXLRelativePositionEmbedding. Projections: CombinedQueryKeyValueProjection,
SeparateQueryKeyValueProjection, QueryAndKeyValueProjection,
QueryAndSharedKeyValueProjection (chosen by name with ``input_projection=``). Emits:
SelfAttentionEmits, CrossAttentionEmits.
"""

from sl_attention.emits import CrossAttentionEmits, SelfAttentionEmits
from sl_attention.layers import (
    BlockwiseDotProductSelfAttention,
    DotProductAttention,
    DotProductSelfAttention,
    DotProductSelfAttentionV2,
    GmmAttention,
    LocalDotProductSelfAttention,
    MultiSourceDotProductAttention,
    StreamingDotProductAttention,
    StreamingLocalDotProductAttention,
)
from sl_attention.projection import (
    CombinedQueryKeyValueProjection,
    InputProjectionModule,
    QueryAndKeyValueProjection,
    QueryAndSharedKeyValueProjection,
    SeparateQueryKeyValueProjection,
)
from sl_attention.relative_position import (
    RelativePositionEmbedding,
    ShawRelativePositionEmbedding,
    T5RelativePositionEmbedding,
    TransformerXLRelativePositionEmbedding,
)

__version__ = "0.1.0"

__all__ = [
    "BlockwiseDotProductSelfAttention",
    "CombinedQueryKeyValueProjection",
    "CrossAttentionEmits",
    "DotProductAttention",
    "DotProductSelfAttention",
    "DotProductSelfAttentionV2",
    "GmmAttention",
    "InputProjectionModule",
    "LocalDotProductSelfAttention",
    "MultiSourceDotProductAttention",
    "QueryAndKeyValueProjection",
    "QueryAndSharedKeyValueProjection",
    "RelativePositionEmbedding",
    "SelfAttentionEmits",
    "SeparateQueryKeyValueProjection",
    "ShawRelativePositionEmbedding",
    "StreamingDotProductAttention",
    "StreamingLocalDotProductAttention",
    "T5RelativePositionEmbedding",
    "TransformerXLRelativePositionEmbedding",
]
