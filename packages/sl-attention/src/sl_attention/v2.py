"""``DotProductSelfAttentionV2`` and ``BlockwiseDotProductSelfAttention``.

Reference: ``attention/dot_product_self_attention_v2.py`` and
``attention/blockwise_dot_product_self_attention.py``, the reference's flash-attention
rewrites (online softmax over key blocks). Here the fused kernel is PyTorch's
``F.scaled_dot_product_attention``, so the reference's ``flash_attention_*_block_size``
and remat knobs are accepted and have no effect on the result (they were memory knobs of
its scan). Semantics kept from the reference:

* masks from positions: a query at position ``q`` sees keys ``q - P .. q + F``
  (V2) or whole blocks ``b - P_blocks .. b + F_blocks`` with ``b = q // block_size``
  (Blockwise). Positions are the time index (counted in step mode), or
  ``constants[position_name]`` ``[B, T]``; ``constants[segment_ids_name]`` restricts
  attention to equal segment ids;
* grouped key/value heads read head ``n % num_kv_heads`` (the flash kernel's grouping,
  unlike DotProductSelfAttention's ``n // (num_heads // num_kv_heads)``);
* a query with no visible key gets zeros;
* no relative positions, sinks, dropout, per-dim key scale or emits.

Step state: as DotProductSelfAttention's (:mod:`sl_attention.self_attention`), plus
``segment_ids`` ``[B, W]`` / ``query_segment_ids`` ``[B, F]`` with ``segment_ids_name``.
Beyond the reference: ``max_past_horizon=-1`` (V2) / ``max_past_horizon_blocks=-1``
(Blockwise) stream with ``max_cache_length``.

Blockwise's block ids are absolute, so behind a layer with step-wise latency ``L`` the
position counter starts at ``-L`` (:meth:`shift_initial_state`); ``L`` must be a multiple
of ``block_size`` (blocks would straddle step boundaries otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.toolkit import check_positive_int
from sl.types import Constants, Emits, ReceptiveField, Sequence, State
from sl_attention._base import WindowedAttention, check_horizon, positions_constant
from sl_attention.projection import ProjectionKind

__all__ = ["BlockwiseDotProductSelfAttention", "DotProductSelfAttentionV2"]


class _FlashStyle(WindowedAttention):
    """Positions/segment ids from constants, tile GQA grouping, zeros for fully masked queries."""

    gqa_layout = "tile"
    position_name: str | None
    segment_ids_name: str | None

    def _setup_flash(
        self,
        *,
        input_size: int | None,
        num_heads: int | None,
        units_per_head: int | None,
        num_kv_heads: int | None,
        bias: bool,
        input_projection: Any,
        share_kv_projection: bool,
        query_network: SequenceLayer | None,
        key_network: SequenceLayer | None,
        value_network: SequenceLayer | None,
        attention_logits_soft_cap: float | None,
        per_dim_scale: bool,
        query_scale: float | None,
        segment_ids_name: str | None,
        position_name: str | None,
        compute_dtype: torch.dtype | None,
        device: Any,
        dtype: Any,
    ) -> None:
        self.segment_ids_name = segment_ids_name or None
        self.position_name = position_name or None
        self._uses_segment_ids = self.segment_ids_name is not None
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
            zero_fully_masked=True,  # the flash kernel's divide_no_nan: no visible key -> zeros
            per_dim_scale=per_dim_scale,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            device=device,
            dtype=dtype,
        )

    def _positions(self, x: Sequence, constants: Constants | None, step: bool) -> torch.Tensor | None:
        if self.position_name is None:
            return None
        if step and (constants is None or self.position_name not in constants):
            return None  # the reference counts positions in step mode when the constant is absent
        return positions_constant(self, constants, self.position_name, x)

    def _segment_ids(self, x: Sequence, constants: Constants | None) -> torch.Tensor | None:
        if self.segment_ids_name is None:
            return None
        return positions_constant(self, constants, self.segment_ids_name, x)

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer_impl(x, training, constants, False)[0], ()

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        y, state, _ = self._step_impl(x, state, training, constants, False)
        return y, state, ()


class DotProductSelfAttentionV2(_FlashStyle):
    """Multi-headed self-attention with position- and segment-based masks (the reference's flash
    rewrite of DotProductSelfAttention). See the module docstring."""

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        max_past_horizon: int = -1,
        max_future_horizon: int = 0,
        num_kv_heads: int | None = None,
        *,
        bias: bool = False,
        input_projection: str | None = None,
        share_kv_projection: bool = False,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        attention_logits_soft_cap: float | None = None,
        per_dim_scale: bool = False,
        query_scale: float | None = None,
        segment_ids_name: str | None = None,
        position_name: str | None = None,
        flash_attention_query_block_size: int | None = None,
        flash_attention_key_block_size: int | None = None,
        max_cache_length: int | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_window(max_past_horizon, max_future_horizon, max_cache_length)
        self._setup_flash(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=num_kv_heads,
            bias=bias,
            input_projection=input_projection,
            share_kv_projection=share_kv_projection,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            attention_logits_soft_cap=attention_logits_soft_cap,
            per_dim_scale=per_dim_scale,
            query_scale=query_scale,
            segment_ids_name=segment_ids_name,
            position_name=position_name,
            compute_dtype=compute_dtype,
            device=device,
            dtype=dtype,
        )


class BlockwiseDotProductSelfAttention(_FlashStyle):
    """Block-bidirectional self-attention: steps in blocks of ``block_size``; every step of block
    ``b`` sees all of blocks ``b - max_past_horizon_blocks .. b + max_future_horizon_blocks``
    (-1: unbounded). Input/output latency ``max_future_horizon_blocks * block_size``. Layer mode
    computes block by block (memory ``T * (past + 1 + future) * block_size``) unless positions
    or segment ids come from constants. See the module docstring."""

    _band_in_blocks = False

    def __init__(
        self,
        input_size: int | None = None,
        block_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        max_past_horizon_blocks: int | None = None,
        max_future_horizon_blocks: int = 0,
        num_kv_heads: int | None = None,
        *,
        bias: bool = False,
        input_projection: str | None = None,
        share_kv_projection: bool = False,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        attention_logits_soft_cap: float | None = None,
        per_dim_scale: bool = False,
        query_scale: float | None = None,
        segment_ids_name: str | None = None,
        position_name: str | None = None,
        flash_attention_query_block_size: int | None = None,
        flash_attention_key_block_size: int | None = None,
        max_cache_length: int | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self._block = check_positive_int(owner, "block_size", block_size)
        self.max_past_horizon_blocks = check_horizon(owner, "max_past_horizon_blocks", max_past_horizon_blocks)
        self.max_future_horizon_blocks = check_horizon(owner, "max_future_horizon_blocks", max_future_horizon_blocks)
        past = -1 if self.max_past_horizon_blocks < 0 else self.max_past_horizon_blocks * self._block
        future = -1 if self.max_future_horizon_blocks < 0 else self.max_future_horizon_blocks * self._block
        # The window arithmetic in steps; visibility is by block (see _visibility). A block always
        # sees itself, so past = future = 0 is allowed here (unlike the banded layers).
        self.max_past_horizon, self.max_future_horizon = past, future
        if max_cache_length is not None:
            max_cache_length = check_positive_int(owner, "max_cache_length", max_cache_length)
            if past != -1:
                raise ValueError(
                    f"{owner}: max_cache_length preallocates the K/V cache of an unbounded past "
                    "(max_past_horizon_blocks=-1); drop it for a bounded window."
                )
        self.max_cache_length = max_cache_length
        for name, net in (
            ("query_network", query_network),
            ("key_network", key_network),
            ("value_network", value_network),
        ):
            if net is not None and (net.output_ratio != 1 or self._block % net.block_size):
                raise ValueError(
                    f"{owner}: {name} must have output_ratio 1 and a block_size dividing {self._block}; got "
                    f"{type(net).__name__} with output_ratio={net.output_ratio}, block_size={net.block_size}."
                )
        nets = {"query_network": query_network, "key_network": key_network, "value_network": value_network}
        self._setup_flash(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=num_kv_heads,
            bias=bias,
            input_projection=input_projection,
            share_kv_projection=share_kv_projection,
            query_network=None,
            key_network=None,
            value_network=None,
            attention_logits_soft_cap=attention_logits_soft_cap,
            per_dim_scale=per_dim_scale,
            query_scale=query_scale,
            segment_ids_name=segment_ids_name,
            position_name=position_name,
            compute_dtype=compute_dtype,
            device=device,
            dtype=dtype,
        )
        self.query_network, self.key_network, self.value_network = (
            nets["query_network"],
            nets["key_network"],
            nets["value_network"],
        )

    @property
    def block_size(self) -> int:
        return self._block

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        out: dict[int, ReceptiveField] = {}
        past = self.max_past_horizon_blocks * self._block
        future = self.max_future_horizon_blocks * self._block
        for i in range(self._block):
            start = -math.inf if self.max_past_horizon_blocks < 0 else -past - i
            end = math.inf if self.max_future_horizon_blocks < 0 else future + self._block - 1 - i
            out[i] = (start, end)
        return out

    def _visibility(
        self,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        q_seg: torch.Tensor | None,
        k_seg: torch.Tensor | None,
    ) -> torch.Tensor | None:
        qb = torch.div(q_pos, self._block, rounding_mode="floor")[:, :, None]
        kb = torch.div(k_pos, self._block, rounding_mode="floor")[:, None, :]
        vis: torch.Tensor | None = None
        if self.max_past_horizon_blocks >= 0:
            vis = kb >= qb - self.max_past_horizon_blocks
        if self.max_future_horizon_blocks >= 0:
            upper = kb <= qb + self.max_future_horizon_blocks
            vis = upper if vis is None else vis & upper
        if q_seg is not None and k_seg is not None:
            same = q_seg[:, :, None] == k_seg[:, None, :]
            vis = same if vis is None else vis & same
        return vis

    def _layer_block(self, time: int, need_probs: bool) -> int | None:
        if self.max_past_horizon < 0 or self.max_future_horizon < 0:
            return None
        if self.position_name is not None or self.segment_ids_name is not None:
            return None
        return self._block

    def shift_initial_state(self, state: State, latency: int) -> State:
        if latency % self._block:
            raise ValueError(
                f"{type(self).__name__}: an upstream step-wise latency of {latency} is not a multiple of "
                f"block_size={self._block}, so its blocks would straddle step boundaries. Insert "
                f"sl.Delay({-latency % self._block}, delay_layer_output=False) before it."
            )
        return super().shift_initial_state(state, latency)
