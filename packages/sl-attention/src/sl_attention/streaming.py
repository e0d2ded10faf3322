"""Streaming cross-attention: ``StreamingDotProductAttention`` and ``StreamingLocalDotProductAttention``.

Reference: ``attention/streaming_dot_product_attention.py`` and
``attention/streaming_local_dot_product_attention.py``. The source
``constants[source_name]`` ``[B, S, source_size]`` streams in lockstep with the input: in
step mode each call gets the source block of the same length as the input block
(``stream_constants``); layer-wise the whole source is given at once. Query ``t`` sees
source steps ``t - max_past_horizon .. t + max_future_horizon``.

With ``use_query_delay_buffer`` (default) the layer delays queries by
``max_future_horizon`` itself (input and output latency ``max_future_horizon``). Without
it the latency is 0 and the caller delays the *input* by ``max_future_horizon`` steps
relative to the source in step mode (e.g. ``sl.Serial(sl.Delay(F,
delay_layer_output=False), layer)``), as in the reference.

Parameters, state and deviations: as DotProductSelfAttention (:mod:`sl_attention.self_attention`)
with keys/values projected from the source (``source_size`` channels; default projection
``"query_and_key_value"``, ``"combined"`` refused). Emits:
``CrossAttentionEmits({source_name: probabilities})``. The position counter is not shifted
by upstream latency (the source is streamed unshifted).
"""

from __future__ import annotations

from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.toolkit import check_positive_int
from sl.types import ChannelSpec, Constants, ReceptiveField, Sequence, State
from sl_attention._base import WindowedAttention, get_source
from sl_attention.projection import ProjectionKind
from sl_attention.relative_position import RelativePositionEmbedding

__all__ = ["StreamingDotProductAttention", "StreamingLocalDotProductAttention"]

RelPos = RelativePositionEmbedding | dict[str, Any] | None


class _Streaming(WindowedAttention):
    source_name: str
    #: Layer mode requires a source as long as the input (the local layer, as in the reference).
    _same_length: bool = False

    def _setup_streaming(
        self,
        *,
        input_size: int | None,
        num_heads: int | None,
        units_per_head: int | None,
        source_name: str | None,
        source_size: int | None,
        max_past_horizon: int | None,
        max_future_horizon: int,
        use_query_delay_buffer: bool,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(source_name, str) or not source_name:
            raise ValueError(f"{owner} expects source_name to be a non-empty string; got {source_name!r}.")
        self.source_name = source_name
        self.use_query_delay_buffer = bool(use_query_delay_buffer)
        self._setup_window(max_past_horizon, max_future_horizon, None)  # type: ignore[arg-type]
        if self.max_past_horizon < 1:
            raise ValueError(f"{owner} expects max_past_horizon >= 1 (as in the reference); got {max_past_horizon}.")
        if self.max_future_horizon < 0:
            raise ValueError(f"{owner} expects max_future_horizon >= 0; got {max_future_horizon}.")
        self.source_size = None if source_size is None else check_positive_int(owner, "source_size", source_size)
        self._setup(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=None,
            default_projection=ProjectionKind.QUERY_AND_KEY_VALUE,
            share_kv_projection=False,
            kv_input_size=self.source_size,
            allow_combined=False,
            **kwargs,
        )

    def _project(self, x: Sequence, constants: Constants | None, step: bool) -> tuple[Sequence, Sequence, Sequence]:
        source = get_source(self, constants, self.source_name)
        owner = type(self).__name__
        if source.values.shape[0] != x.values.shape[0]:
            raise ValueError(
                f"{owner}: constants[{self.source_name!r}] has batch size {source.values.shape[0]}, but the input "
                f"has batch size {x.values.shape[0]}; they must match."
            )
        if not step and self._same_length and source.values.shape[1] != x.values.shape[1]:
            raise ValueError(
                f"{owner} expects the source constants[{self.source_name!r}] to have as many steps as the input "
                f"({x.values.shape[1]}), as in the reference (its layer mode attends in aligned blocks); got "
                f"{source.values.shape[1]}. Use StreamingDotProductAttention for a source of another length."
            )
        if step and source.values.shape[1] != x.values.shape[1]:
            raise ValueError(
                f"{owner}.step expects the source block constants[{self.source_name!r}] to have as many steps as the "
                f"input block ({x.values.shape[1]}); got {source.values.shape[1]}. Stream the source in lockstep "
                "(stream_constants=True)."
            )
        q = self.input_projection.get_q(x.mask_invalid())
        k, v = self.input_projection.get_kv(source.mask_invalid())
        return q, k, v

    def _kv_source_names(self) -> tuple[str, ...]:
        return (self.source_name,)

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        # In the input (the queries): the source enters through constants.
        if self.query_network is not None:
            return self.query_network.receptive_field_per_step
        return {0: (0, 0)}

    def shift_initial_state(self, state: State, latency: int) -> State:
        # The source streams unshifted: keep the counter, shift only the networks.
        state = dict(state)
        for name in ("query_network", "key_network", "value_network"):
            net = getattr(self, name)
            if net is not None:
                state[name] = net.shift_initial_state(state[name], latency)
        return state

    def _state_dtype(self, input_spec: ChannelSpec, constants: Constants | None) -> torch.dtype:
        return self.input_projection.output_dtype(input_spec.dtype)


class StreamingDotProductAttention(_Streaming):
    """Banded cross-attention to a source streamed in lockstep with the input (see the module
    docstring)."""

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        source_name: str | None = None,
        max_past_horizon: int | None = None,
        max_future_horizon: int = 0,
        source_size: int | None = None,
        *,
        use_query_delay_buffer: bool = True,
        relative_position_embedding: RelPos = None,
        dropout: float = 0.0,
        broadcast_dropout_across_queries: bool = False,
        bias: bool = False,
        input_projection: str | None = None,
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
        self._setup_streaming(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            source_name=source_name,
            source_size=source_size,
            max_past_horizon=max_past_horizon,
            max_future_horizon=max_future_horizon,
            use_query_delay_buffer=use_query_delay_buffer,
            relative_position_embedding=relative_position_embedding,
            dropout=dropout,
            broadcast_dropout_across_queries=broadcast_dropout_across_queries,
            bias=bias,
            input_projection=input_projection,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            attention_logits_soft_cap=attention_logits_soft_cap,
            per_dim_scale=per_dim_scale,
            per_dim_key_scale=per_dim_key_scale,
            query_scale=query_scale,
            zero_fully_masked=zero_fully_masked,
            num_sink_embeddings=num_sink_embeddings,
            use_sink_scalars=use_sink_scalars,
            compute_dtype=compute_dtype,
            device=device,
            dtype=dtype,
        )


class StreamingLocalDotProductAttention(_Streaming):
    """StreamingDotProductAttention computed in query blocks of ``block_size`` steps in layer
    mode (memory ``T * (past + block_size + future)``; the input and source must have the
    same length, as in the reference). ``block_size`` is the layer-mode compute block; the
    step block size is 1."""

    _same_length = True

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        source_name: str | None = None,
        block_size: int | None = None,
        max_past_horizon: int | None = None,
        max_future_horizon: int = 0,
        source_size: int | None = None,
        *,
        use_query_delay_buffer: bool = True,
        relative_position_embedding: RelPos = None,
        dropout: float = 0.0,
        broadcast_dropout_across_queries: bool = False,
        bias: bool = False,
        input_projection: str | None = None,
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
        self.local_block_size = check_positive_int(type(self).__name__, "block_size", block_size)
        self._setup_streaming(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            source_name=source_name,
            source_size=source_size,
            max_past_horizon=max_past_horizon,
            max_future_horizon=max_future_horizon,
            use_query_delay_buffer=use_query_delay_buffer,
            relative_position_embedding=relative_position_embedding,
            dropout=dropout,
            broadcast_dropout_across_queries=broadcast_dropout_across_queries,
            bias=bias,
            input_projection=input_projection,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            attention_logits_soft_cap=attention_logits_soft_cap,
            per_dim_scale=per_dim_scale,
            per_dim_key_scale=per_dim_key_scale,
            query_scale=query_scale,
            zero_fully_masked=zero_fully_masked,
            num_sink_embeddings=num_sink_embeddings,
            use_sink_scalars=use_sink_scalars,
            compute_dtype=compute_dtype,
            device=device,
            dtype=dtype,
        )

    def _layer_block(self, time: int, need_probs: bool) -> int | None:
        return self.local_block_size
