"""Cross-attention to sources in ``constants``: ``DotProductAttention`` and
``MultiSourceDotProductAttention``.

Reference: ``attention/dot_product_attention.py`` and
``attention/multi_source_dot_product_attention.py``. The source is a Sequence
``[B, S, source_size]`` in ``constants[source_name]``, projected to keys and values once in
``get_initial_state`` (step mode then reads only the state) and in every ``layer`` call.
Queries come from the input; every query sees every valid source step (receptive field
``(0, 0)`` in the input, or the query network's).

Parameters: as the self-attention layers (:mod:`sl_attention.self_attention`), with the
key/value projection reading ``source_size`` channels (default: ``input_size``; when the
input size is left to be inferred, the source's channels at the first call). The default projection is
``"query_and_key_value"``; ``"combined"`` is refused (queries and keys come from
different sequences), as in the reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.toolkit import check_positive_int, state_full
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State
from sl_attention import _functional as fn
from sl_attention._base import AttentionBase, get_source, positions_constant
from sl_attention.emits import CrossAttentionEmits
from sl_attention.projection import ProjectionKind
from sl_attention.relative_position import RelativePositionEmbedding

__all__ = ["DotProductAttention", "MultiSourceDotProductAttention"]

RelPos = RelativePositionEmbedding | dict[str, Any] | None


def _check_name(owner: str, arg: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{owner} expects {arg} to be a non-empty string (a key of constants); got {name!r}.")
    return name


class DotProductAttention(AttentionBase):
    """Multi-headed cross-attention from the input to ``constants[source_name]``.

    With a relative position embedding, key positions are the source's time index and
    query positions the input's (counted in step mode, so behind a layer with step-wise
    latency the counter starts at ``-latency``), or ``constants[query_positions_name]``
    ``[B, T]`` (streamed with the input). ``recompute_kv_per_step`` re-projects the
    source from constants at every step instead of caching it in the state (for a source
    that changes while streaming; the reference added this after 0.2).

    Step state (a dict): ``keys``/``values`` ``[B, S, N, H]`` and ``mask`` ``[B, S]`` (the
    projected source; absent with ``recompute_kv_per_step``), ``time`` ``[B]`` int32, and
    ``query_network``. Emits: ``CrossAttentionEmits({source_name: probabilities})``.
    Deviations: as :mod:`sl_attention.self_attention` (fused kernel unless logits are
    needed; any relative position embedding; step with dropout in training raises).
    """

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        source_name: str | None = None,
        source_size: int | None = None,
        *,
        relative_position_embedding: RelPos = None,
        query_positions_name: str | None = None,
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
        recompute_kv_per_step: bool = False,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.source_name = _check_name(owner, "source_name", source_name)
        self.query_positions_name = query_positions_name or None
        self.recompute_kv_per_step = bool(recompute_kv_per_step)
        self.source_size = None if source_size is None else check_positive_int(owner, "source_size", source_size)
        self._setup(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=None,
            bias=bias,
            input_projection=input_projection,
            default_projection=ProjectionKind.QUERY_AND_KEY_VALUE,
            share_kv_projection=False,
            kv_input_size=self.source_size,
            allow_combined=False,
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

    @property
    def supports_step(self) -> bool:
        return self.query_network is None or self.query_network.supports_step

    def _kv_source_names(self) -> tuple[str, ...]:
        return tuple(getattr(self, "source_names", None) or (self.source_name,))

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        if self.query_network is not None:
            return self.query_network.receptive_field_per_step
        return {0: (0, 0)}

    def _source_kv(
        self, constants: Constants | None, training: bool, batch: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = get_source(self, constants, self.source_name)
        if batch is not None and source.values.shape[0] != batch:
            raise ValueError(
                f"{type(self).__name__}: constants[{self.source_name!r}] has batch size {source.values.shape[0]}, "
                f"but the input has batch size {batch}; they must match."
            )
        k, v = self.input_projection.get_kv(source.mask_invalid())
        k = self._apply_network_layer(self.key_network, k, training, constants).mask_invalid()
        v = self._apply_network_layer(self.value_network, v, training, constants).mask_invalid()
        return k.values, v.values, k.mask & v.mask

    def _query_positions(self, x: Sequence, constants: Constants | None, time: torch.Tensor | None) -> torch.Tensor:
        if self.query_positions_name is not None:
            return positions_constant(self, constants, self.query_positions_name, x).to(torch.int32)
        t = x.values.shape[1]
        steps = torch.arange(t, device=x.values.device, dtype=torch.int32)[None]
        return steps if time is None else time[:, None] + steps

    def _attention(
        self,
        q: Sequence,
        keys: torch.Tensor,
        values: torch.Tensor,
        kv_mask: torch.Tensor,
        q_pos: torch.Tensor | None,
        training: bool,
        need_probs: bool,
    ) -> tuple[Sequence, Emits]:
        sink_logits, sink_values = self._sinks(q.values)
        qk, scale, ks = self._scaled(q.values, keys)
        bias = None
        rpe = self.relative_position_embedding
        if rpe is not None and q_pos is not None:
            k_pos = torch.arange(keys.shape[1], device=keys.device, dtype=torch.int32)[None]
            relative = k_pos[:, None, :] - q_pos[:, :, None]
            bias = rpe.bias(self._bias_queries(q.values, qk, scale), ks, relative)  # type: ignore[arg-type]
        ctx, probs = fn.attend(
            qk,
            ks,
            values,
            None,
            key_mask=kv_mask,
            scale=scale,
            bias=bias,
            logits_soft_cap=self.attention_logits_soft_cap,
            sink_logits=sink_logits,
            sink_values=sink_values,
            dropout=self._dropout(training),
            zero_fully_masked=self.zero_fully_masked,
            need_probs=need_probs,
            gqa=False,
        )
        ctx = ctx.to(self.get_output_dtype(q.values.dtype))
        emits: Emits = ()
        if probs is not None:
            emits = CrossAttentionEmits({self.source_name: Sequence._trusted(probs, q.mask)})
        return Sequence._trusted(ctx, q.mask), emits

    def _layer_impl(
        self, x: Sequence, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        keys, values, kv_mask = self._source_kv(constants, training, x.values.shape[0])
        q = self.input_projection.get_q(x.mask_invalid())
        q = self._apply_network_layer(self.query_network, q, training, constants)
        q_pos = self._query_positions(x, constants, None) if self.relative_position_embedding is not None else None
        return self._attention(q, keys, values, kv_mask, q_pos, training, need_probs)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(tuple(input_spec.shape), constants=constants)
        dtype = self.input_projection.output_dtype(input_spec.dtype)
        state: dict[str, Any] = {}
        if not self.recompute_kv_per_step:
            keys, values, mask = self._source_kv(constants, training, batch_size)
            state.update(keys=keys, values=values, mask=mask)
        state["time"] = state_full(self, (batch_size,), 0, torch.int32)
        state["query_network"] = self._network_state(
            self.query_network,
            batch_size,
            ChannelSpec((self.num_heads, self.units_per_head), dtype),
            training,
            constants,
        )
        return state

    def shift_initial_state(self, state: State, latency: int) -> State:
        state = dict(state)
        state["time"] = state["time"] - latency
        if self.query_network is not None:
            state["query_network"] = self.query_network.shift_initial_state(state["query_network"], latency)
        return state

    def _step_impl(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, State, Emits]:
        self._require_step()
        self._check_step_training(training)
        self.get_output_shape(x.channel_shape, constants=constants)
        state = dict(state)
        if self.recompute_kv_per_step:
            keys, values, kv_mask = self._source_kv(constants, training, x.values.shape[0])
        else:
            keys, values, kv_mask = state["keys"], state["values"], state["mask"]
        q = self.input_projection.get_q(x.mask_invalid())
        q, state["query_network"] = self._apply_network_step(
            self.query_network, q, state["query_network"], training, constants
        )
        time = state["time"]
        q_pos = self._query_positions(x, constants, time) if self.relative_position_embedding is not None else None
        state["time"] = time + x.values.shape[1]
        y, emits = self._attention(q, keys, values, kv_mask, q_pos, training, need_probs)
        return y, state, emits


class MultiSourceDotProductAttention(AttentionBase):
    """Cross-attention over several sources at once: one softmax across the valid steps of
    every ``constants[name]`` for ``name`` in ``source_names`` (sources share a channel size
    and one key/value projection, as in the reference).

    ``num_kv_heads`` groups key/value heads (query head ``n`` reads ``n % num_kv_heads``, the
    reference's flash grouping). With ``query_segment_ids_name`` and
    ``source_segment_ids_names`` a query sees only source steps of its own segment id. A
    query that sees nothing gets zeros. No sinks, dropout, relative positions or emits (as
    in the reference); the reference's ``query_positions_name``/``source_position_names``
    feed no mask there, so they are not arguments here.

    Step state (a dict): ``sources``, a tuple of per-source dicts (``keys``, ``values``,
    ``mask``, and ``segment_ids`` when used), and ``query_network``.
    """

    gqa_layout = "tile"

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        source_names: str | Iterable[str] | None = None,
        source_size: int | None = None,
        num_kv_heads: int | None = None,
        *,
        query_segment_ids_name: str | None = None,
        source_segment_ids_names: str | Iterable[str] | None = None,
        bias: bool = False,
        input_projection: str | None = None,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        attention_logits_soft_cap: float | None = None,
        per_dim_scale: bool = False,
        query_scale: float | None = None,
        flash_attention_query_block_size: int | None = None,
        flash_attention_source_block_sizes: int | list[int] | None = None,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if source_names is None:
            raise TypeError(f"{owner} needs source_names, the constants to attend to (a name or a list of names).")
        names = (source_names,) if isinstance(source_names, str) else tuple(source_names)
        if not names:
            raise ValueError(f"{owner} expects at least one source name.")
        self.source_names = tuple(_check_name(owner, "source_names", n) for n in names)
        self.query_segment_ids_name = query_segment_ids_name or None
        if source_segment_ids_names is None:
            seg_names: tuple[str | None, ...] = (None,) * len(self.source_names)
        elif isinstance(source_segment_ids_names, str):
            seg_names = (source_segment_ids_names,) * len(self.source_names)
        else:
            seg_names = tuple(source_segment_ids_names)
        if len(seg_names) != len(self.source_names):
            raise ValueError(
                f"{owner}: source_segment_ids_names has {len(seg_names)} entries for {len(self.source_names)} sources."
            )
        if self.query_segment_ids_name is not None and any(s is None for s in seg_names):
            raise ValueError(
                f"{owner}: query_segment_ids_name={self.query_segment_ids_name!r} needs a segment id constant for "
                "every source (source_segment_ids_names)."
            )
        self.source_segment_ids_names = seg_names
        self.source_size = None if source_size is None else check_positive_int(owner, "source_size", source_size)
        self._setup(
            input_size=input_size,
            num_heads=num_heads,
            units_per_head=units_per_head,
            num_kv_heads=num_kv_heads,
            bias=bias,
            input_projection=input_projection,
            default_projection=ProjectionKind.QUERY_AND_KEY_VALUE,
            share_kv_projection=False,
            kv_input_size=self.source_size,
            allow_combined=False,
            compute_dtype=compute_dtype,
            query_scale=query_scale,
            attention_logits_soft_cap=attention_logits_soft_cap,
            zero_fully_masked=True,
            per_dim_scale=per_dim_scale,
            query_network=query_network,
            key_network=key_network,
            value_network=value_network,
            device=device,
            dtype=dtype,
        )

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        names = arguments.get("source_names")
        if names is not None and not isinstance(names, str):
            arguments = {**arguments, "source_names": list(names)}
        seg = arguments.get("source_segment_ids_names")
        if seg is not None and not isinstance(seg, str):
            arguments = {**arguments, "source_segment_ids_names": list(seg)}
        return arguments

    @property
    def supports_step(self) -> bool:
        return self.query_network is None or self.query_network.supports_step

    def _kv_source_names(self) -> tuple[str, ...]:
        return tuple(getattr(self, "source_names", None) or (self.source_name,))

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        if self.query_network is not None:
            return self.query_network.receptive_field_per_step
        return {0: (0, 0)}

    def _sources(self, constants: Constants | None, training: bool, batch: int) -> tuple[dict[str, torch.Tensor], ...]:
        out = []
        for name, seg_name in zip(self.source_names, self.source_segment_ids_names):
            source = get_source(self, constants, name)
            size = self.input_projection.kv_input_size
            if source.values.shape[-1] != size:
                raise ValueError(
                    f"{type(self).__name__} expects every source with {size} channels; constants[{name!r}] "
                    f"has shape {list(source.values.shape)}."
                )
            if source.values.shape[0] != batch:
                raise ValueError(
                    f"{type(self).__name__}: constants[{name!r}] has batch size {source.values.shape[0]}, but the "
                    f"input has batch size {batch}; they must match."
                )
            k, v = self.input_projection.get_kv(source.mask_invalid())
            k = self._apply_network_layer(self.key_network, k, training, constants).mask_invalid()
            v = self._apply_network_layer(self.value_network, v, training, constants).mask_invalid()
            entry = {"keys": k.values, "values": v.values, "mask": k.mask & v.mask}
            if seg_name is not None:
                entry["segment_ids"] = (
                    positions_constant(self, constants, seg_name, source)
                    .to(torch.int32)
                    .expand(batch, source.values.shape[1])
                )
            out.append(entry)
        return tuple(out)

    def _attention(
        self,
        x: Sequence,
        q: Sequence,
        sources: tuple[dict[str, torch.Tensor], ...],
        constants: Constants | None,
    ) -> Sequence:
        keys = torch.cat([s["keys"] for s in sources], 1)
        values = torch.cat([s["values"] for s in sources], 1)
        key_mask = torch.cat([s["mask"] for s in sources], 1)
        visible = None
        if self.query_segment_ids_name is not None:
            q_seg = positions_constant(self, constants, self.query_segment_ids_name, x).to(torch.int32)
            k_seg = torch.cat([s["segment_ids"] for s in sources], 1)
            visible = q_seg[:, :, None] == k_seg[:, None, :]
        qk, scale, ks = self._scaled(q.values, keys)
        n, kh = self.num_heads, self.num_kv_heads
        if n != kh:
            b, t, _, h = qk.shape
            qk = qk.reshape(b, t, n // kh, kh, h).transpose(2, 3).reshape(b, t, n, h)
        ctx, _ = fn.attend(
            qk,
            ks,
            values,
            visible,
            key_mask=key_mask,
            scale=scale,
            logits_soft_cap=self.attention_logits_soft_cap,
            zero_fully_masked=True,
            gqa=n != kh,
        )
        if n != kh:
            b, t, _, h = ctx.shape
            ctx = ctx.reshape(b, t, kh, n // kh, h).transpose(2, 3).reshape(b, t, n, h)
        return Sequence._trusted(ctx.to(self.get_output_dtype(x.values.dtype)), q.mask)

    def _layer_impl(
        self, x: Sequence, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        sources = self._sources(constants, training, x.values.shape[0])
        q = self.input_projection.get_q(x.mask_invalid())
        q = self._apply_network_layer(self.query_network, q, training, constants)
        return self._attention(x, q, sources, constants), ()

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(tuple(input_spec.shape), constants=constants)
        dtype = self.input_projection.output_dtype(input_spec.dtype)
        return {
            "sources": self._sources(constants, training, batch_size),
            "query_network": self._network_state(
                self.query_network,
                batch_size,
                ChannelSpec((self.num_heads, self.units_per_head), dtype),
                training,
                constants,
            ),
        }

    def shift_initial_state(self, state: State, latency: int) -> State:
        if self.query_network is None:
            return state
        return {**state, "query_network": self.query_network.shift_initial_state(state["query_network"], latency)}

    def _step_impl(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, State, Emits]:
        self._require_step()
        self.get_output_shape(x.channel_shape, constants=constants)
        state = dict(state)
        q = self.input_projection.get_q(x.mask_invalid())
        q, state["query_network"] = self._apply_network_step(
            self.query_network, q, state["query_network"], training, constants
        )
        return self._attention(x, q, state["sources"], constants), state, ()
