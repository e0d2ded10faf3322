"""Dot-product self-attention: ``DotProductSelfAttention`` and ``LocalDotProductSelfAttention``.

Reference: ``attention/dot_product_self_attention.py`` and
``attention/local_dot_product_self_attention.py``. Output channels ``[num_heads,
units_per_head]`` (no output projection, as in the reference; follow with
``sl.DenseShaped((num_heads, units_per_head), d_model)``).

``input_size`` may be omitted: it is then inferred at the first call (``sl.lazy``, as
``torch.nn.LazyLinear``), recorded in the config, or read from a state dict loaded first.

Parameters (see :mod:`sl_attention.projection` for the projection layouts):
``input_projection.*`` (the q/k/v projections), ``per_dim_scale [H]`` and
``per_dim_key_scale [H]`` (when enabled), ``sink_key_embeddings [S, N, H]`` /
``sink_value_embeddings [S, K, H]`` or ``sink_scalars [N]`` (attention sinks),
``relative_position_embedding.*`` and the q/k/v networks' own parameters. Compute dtype:
``promoted_dtype(input, parameters, compute_dtype)``.

Step state (a dict of fixed-shape tensors; ``W`` = ``max_past_horizon +
max_future_horizon``, or ``max_cache_length`` for an unbounded past; ``F`` =
``max_future_horizon``):

* ``keys``, ``values`` ``[B, W, K, H]``; ``mask`` ``[B, W]`` bool; ``positions`` ``[B, W]`` int32:
  the last ``W`` projected keys/values and their validity and time positions (the cache's
  slots for an unbounded past, filled in arrival order by valid steps only);
* ``count`` ``[B]`` int32 (unbounded past only): cache slots in use;
* ``time`` ``[B]`` int32: the position of the next input step;
* ``queries`` ``[B, F, N, H]``, ``query_mask`` ``[B, F]``, ``query_positions`` ``[B, F]``
  (F > 0): the query delay buffer;
* ``query_network``, ``key_network``, ``value_network``: the networks' states (``()`` if none).

Deviations from the reference, each beyond it or forced by PyTorch:

* relative position embeddings stream with lookahead (the reference refuses
  ``max_future_horizon > 0`` with an embedding in step mode): positions are tracked, so a
  delayed query sees the same relative distances as in layer mode;
* an unbounded past (``max_past_horizon=-1``) streams with ``max_cache_length``: a
  preallocated cache, overflow raising a clear error (asynchronously on accelerators and
  under compile, never a host sync); the reference cannot step it;
* every relative position embedding works in every layer (the reference allows only
  TransformerXL in the local layer and only Shaw/T5 in this one), including with grouped
  key/value heads;
* layer mode uses ``F.scaled_dot_product_attention`` unless something needs the logits
  (soft cap, sinks, dropout, emitted probabilities); with finite horizons and a long input
  it computes in query blocks like the local layer (memory ``T * (P + F + block)``). A query
  with no visible valid key gets zeros on both paths unless sinks take its weight (the
  reference's ``zero_fully_masked=True``; without it the reference averages every key of its
  buffer uniformly, which differs between its layer and step modes). In self-attention only
  invalid queries can see no key; in the streaming cross-attention layers a valid query
  whose band holds only invalid source steps can;
* ``step`` with ``training=True`` and dropout raises (as ``sl.Dropout`` does);
* ``use_kv_cache_ringbuffer`` (a TPU-specific update strategy with the same outputs) is not
  ported.
"""

from __future__ import annotations

from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.toolkit import check_positive_int
from sl_attention._base import WindowedAttention
from sl_attention.projection import ProjectionKind
from sl_attention.relative_position import RelativePositionEmbedding

__all__ = ["DotProductSelfAttention", "LocalDotProductSelfAttention"]

RelPos = RelativePositionEmbedding | dict[str, Any] | None


class DotProductSelfAttention(WindowedAttention):
    """Multi-headed dot-product self-attention over a band of ``max_past_horizon`` past and
    ``max_future_horizon`` future steps (``-1``: unbounded).

    Streams when both horizons are finite (input and output latency
    ``max_future_horizon``, a K/V window of ``past + future`` steps and a query delay
    buffer), and with an unbounded past when ``max_cache_length`` gives the preallocated
    cache size (autoregressive decoding). ``num_kv_heads`` < ``num_heads`` gives grouped
    key/value heads (GQA). See the module docstring for parameters, state and deviations.

    Example::

        attn = sl.attention.DotProductSelfAttention(input_size=128, num_heads=8, units_per_head=16,
                                                    max_past_horizon=64, max_future_horizon=2)
    """

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        max_past_horizon: int = -1,
        max_future_horizon: int = 0,
        num_kv_heads: int | None = None,
        *,
        relative_position_embedding: RelPos = None,
        dropout: float = 0.0,
        broadcast_dropout_across_queries: bool = False,
        bias: bool = False,
        input_projection: str | None = None,
        share_kv_projection: bool = False,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        attention_logits_soft_cap: float | None = None,
        per_dim_scale: bool = False,
        per_dim_key_scale: bool = False,
        query_scale: float | None = None,
        zero_fully_masked: bool = False,
        num_sink_embeddings: int = 0,
        use_sink_scalars: bool = False,
        max_cache_length: int | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_window(max_past_horizon, max_future_horizon, max_cache_length)
        self._setup(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=num_kv_heads,
            bias=bias,
            input_projection=input_projection,
            default_projection=ProjectionKind.COMBINED,
            share_kv_projection=share_kv_projection,
            compute_dtype=compute_dtype,
            query_scale=query_scale,
            attention_logits_soft_cap=attention_logits_soft_cap,
            zero_fully_masked=zero_fully_masked,
            dropout=dropout,
            broadcast_dropout_across_queries=broadcast_dropout_across_queries,
            per_dim_scale=per_dim_scale,
            per_dim_key_scale=per_dim_key_scale,
            num_sink_embeddings=num_sink_embeddings,
            use_sink_scalars=use_sink_scalars,
            relative_position_embedding=relative_position_embedding,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            device=device,
            dtype=dtype,
        )

    def _layer_block(self, time: int, need_probs: bool) -> int | None:
        """Blocked computation for long inputs with a finite band (never when emitting: the
        probabilities keep the reference's ``[B, T, N, T]`` layout)."""
        past, future = self.max_past_horizon, self.max_future_horizon
        if need_probs or past < 0 or future < 0:
            return None
        block = max(32, past + future)
        if time < 2 * (block + past + future):
            return None
        return block


class LocalDotProductSelfAttention(WindowedAttention):
    """Sliding-window self-attention computed in query blocks of ``block_size`` steps in layer
    mode: each block attends to ``max_past_horizon + block_size + max_future_horizon`` keys,
    so time and memory grow as ``T * (past + block_size + future)``.

    ``block_size`` is the layer-mode compute block (the reference's name), not the step
    block size (which is 1). ``max_past_horizon >= 1``, ``max_future_horizon >= 0``, no
    grouped key/value heads, as in the reference. Steps like DotProductSelfAttention (same
    state); emitted probabilities use the reference's local layout ``[B, T, N, S + past +
    block_size + future]`` layer-wise. See :mod:`sl_attention.self_attention` for parameters,
    state and deviations.
    """

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        block_size: int | None = None,
        max_past_horizon: int | None = None,
        max_future_horizon: int = 0,
        *,
        relative_position_embedding: RelPos = None,
        dropout: float = 0.0,
        broadcast_dropout_across_queries: bool = False,
        bias: bool = False,
        input_projection: str | None = None,
        share_kv_projection: bool = False,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        attention_logits_soft_cap: float | None = None,
        per_dim_scale: bool = False,
        per_dim_key_scale: bool = False,
        query_scale: float | None = None,
        zero_fully_masked: bool = False,
        num_sink_embeddings: int = 0,
        use_sink_scalars: bool = False,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.local_block_size = check_positive_int(owner, "block_size", block_size)
        self._setup_window(max_past_horizon, max_future_horizon, None)  # type: ignore[arg-type]
        if self.max_past_horizon < 1:
            raise ValueError(f"{owner} expects max_past_horizon >= 1 (as in the reference); got {max_past_horizon}.")
        if self.max_future_horizon < 0:
            raise ValueError(f"{owner} expects max_future_horizon >= 0; got {max_future_horizon}.")
        self._setup(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=None,
            bias=bias,
            input_projection=input_projection,
            default_projection=ProjectionKind.COMBINED,
            share_kv_projection=share_kv_projection,
            compute_dtype=compute_dtype,
            query_scale=query_scale,
            attention_logits_soft_cap=attention_logits_soft_cap,
            zero_fully_masked=zero_fully_masked,
            dropout=dropout,
            broadcast_dropout_across_queries=broadcast_dropout_across_queries,
            per_dim_scale=per_dim_scale,
            per_dim_key_scale=per_dim_key_scale,
            num_sink_embeddings=num_sink_embeddings,
            use_sink_scalars=use_sink_scalars,
            relative_position_embedding=relative_position_embedding,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            device=device,
            dtype=dtype,
        )

    def _layer_block(self, time: int, need_probs: bool) -> int | None:
        return self.local_block_size
