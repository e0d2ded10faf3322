"""T5 relative positions with max_distance == num_buckets // 2 (the log ratio is log(1) = 0).

The reference divides by zero, casts +inf to int32 (saturating) and adds max_exact in int32,
which wraps to a negative bucket; its one-hot lookup then gives no bias for distances >=
max_exact. torch's float -> int cast of inf is undefined, which used to index out of range.
"""

from __future__ import annotations

import torch

from sl_attention import T5RelativePositionEmbedding


def test_t5_max_distance_equal_to_max_exact_matches_reference() -> None:
    emb = T5RelativePositionEmbedding(num_buckets=4, num_heads=2, bidirectional=False, max_distance=2)
    with torch.no_grad():
        emb.embedding.copy_(torch.arange(8, dtype=torch.float32).reshape(4, 2) + 1.0)
    relative = -torch.arange(5, dtype=torch.int32)[None, None, :]  # key - query = 0, -1, ..., -4
    q = torch.zeros(1, 1, 2, 3)
    bias = emb.bias(q, q, relative)  # [1, N, 1, 5]
    expected = torch.tensor([[1.0, 3.0, 0.0, 0.0, 0.0], [2.0, 4.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(bias[0, :, 0], expected)
