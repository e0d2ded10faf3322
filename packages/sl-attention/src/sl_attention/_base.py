"""Shared machinery of the attention layers.

:class:`AttentionBase` holds what every dot-product attention layer configures the same
way (projection, scales, soft cap, sinks, dropout, relative positions, q/k/v networks)
and routes ``layer``/``step`` (no probabilities: fused kernels) and
``layer_with_emits``/``step_with_emits`` (probabilities) to one implementation each.

:class:`WindowedAttention` is the streaming core of the banded layers
(DotProductSelfAttention, LocalDotProductSelfAttention, DotProductSelfAttentionV2,
BlockwiseDotProductSelfAttention and the two streaming cross-attention layers): a query
at position ``q`` sees keys at positions ``q - P .. q + F`` (P = max_past_horizon, F =
max_future_horizon, -1 = unbounded). Step mode keeps

* a fixed window of the last ``P + F`` keys/values (with their validity mask and
  positions), concatenated with each block's new keys, as the reference does; or, for
  an unbounded past (``P = -1``), a preallocated cache of ``max_cache_length`` valid
  keys/values written in place of the next free slots (invalid steps take no slot);
* a query delay buffer of ``F`` queries, so a query is answered once its ``F`` future keys
  have arrived (input and output latency ``F``);
* a position counter, so masks and relative positions use the same positions as layer
  mode (shifted back by any upstream latency: :meth:`shift_initial_state`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sl.layer import SequenceLayer
from sl.lazy import LazyInputSize
from sl.toolkit import (
    check_float_dtype,
    check_in_stream,
    check_positive_int,
    check_real,
    get_constant,
    promoted_dtype,
    state_full,
)
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State
from sl_attention import _functional as fn
from sl_attention.emits import CrossAttentionEmits, SelfAttentionEmits
from sl_attention.projection import InputProjectionModule, ProjectionKind, coerce_projection_kind, make_input_projection
from sl_attention.relative_position import RelativePositionEmbedding, make_relative_position_embedding

__all__ = ["AttentionBase", "WindowedAttention"]


def _name(layer: Any) -> str:
    return type(layer).__name__


def check_horizon(owner: str, arg: str, value: Any, minimum: int = -1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} expects {arg} to be an int; got {type(value).__name__} ({value!r}).")
    if value < minimum:
        what = "-1 (unbounded) or a non-negative int" if minimum == -1 else f"an int >= {minimum}"
        raise ValueError(f"{owner} expects {arg} to be {what}; got {value}.")
    return int(value)


def make_dropout(rate: float, broadcast_across_queries: bool) -> fn.DropoutFn:
    """Inverted dropout on probabilities ``[B, N, Tq, Tk]`` (shared across queries: axis 2)."""
    keep = 1.0 - rate

    def dropout(p: torch.Tensor) -> torch.Tensor:
        if rate >= 1.0:
            return torch.zeros_like(p)
        shape = list(p.shape)
        if broadcast_across_queries:
            shape[2] = 1
        u = torch.rand(shape, dtype=p.dtype, device=p.device)
        return p * (torch.floor(keep + u) / keep)

    return dropout


class AttentionBase(LazyInputSize, SequenceLayer):
    """Configuration shared by the dot-product attention layers (see the module docstring).

    ``input_size=None`` defers the parameters to the first call (``sl.lazy``): the input
    size is then inferred from the input, recorded in the config, or read from a state
    dict loaded before any call.
    """

    lazy_input_arg = "input_size"
    lazy_state_axis = -1
    input_size: int | None
    source_size: int | None  # cross-attention layers only

    @property
    def lazy_state_key(self) -> str:  # type: ignore[override]
        name = "in_proj" if self.projection_kind is ProjectionKind.COMBINED else "q_proj"
        return f"input_projection.{name}_weight"

    num_heads: int
    units_per_head: int
    num_kv_heads: int
    input_projection: InputProjectionModule
    relative_position_embedding: RelativePositionEmbedding | None
    query_network: SequenceLayer | None
    key_network: SequenceLayer | None
    value_network: SequenceLayer | None
    per_dim_scale: torch.nn.Parameter | None
    per_dim_key_scale: torch.nn.Parameter | None
    sink_key_embeddings: torch.nn.Parameter | None
    sink_value_embeddings: torch.nn.Parameter | None
    sink_scalars: torch.nn.Parameter | None

    def _setup(
        self,
        *,
        input_size: int | None,
        num_heads: int | None,
        units_per_head: int | None,
        num_kv_heads: int | None,
        bias: bool,
        input_projection: Any,
        default_projection: ProjectionKind,
        share_kv_projection: bool,
        kv_input_size: int | None = None,
        allow_combined: bool = True,
        allow_gqa: bool = True,
        compute_dtype: torch.dtype | None,
        query_scale: float | None,
        attention_logits_soft_cap: float | None,
        zero_fully_masked: bool = False,
        dropout: float = 0.0,
        broadcast_dropout_across_queries: bool = False,
        per_dim_scale: bool = False,
        per_dim_key_scale: bool = False,
        num_sink_embeddings: int = 0,
        use_sink_scalars: bool = False,
        relative_position_embedding: Any = None,
        query_network: SequenceLayer | None = None,
        key_network: SequenceLayer | None = None,
        value_network: SequenceLayer | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        owner = _name(self)
        if num_heads is None or units_per_head is None:
            raise TypeError(
                f"{owner} needs num_heads and units_per_head, e.g. {owner}(input_size=128, num_heads=8, "
                "units_per_head=16, ...); input_size may be omitted (inferred at the first call)."
            )
        self.num_heads = check_positive_int(owner, "num_heads", num_heads)
        self.units_per_head = check_positive_int(owner, "units_per_head", units_per_head)
        if num_kv_heads is None:
            num_kv_heads = self.num_heads
        self.num_kv_heads = check_positive_int(owner, "num_kv_heads", num_kv_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"{owner}: num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads} "
                "(each key/value head serves num_heads // num_kv_heads query heads)."
            )
        if not allow_gqa and self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"{owner} does not support grouped key/value heads (as in the reference); got num_heads="
                f"{self.num_heads}, num_kv_heads={self.num_kv_heads}."
            )
        self.use_bias = bool(bias)
        if input_projection is None:
            kind = default_projection
            if kind is ProjectionKind.COMBINED and self.num_kv_heads != self.num_heads:
                kind = ProjectionKind.SEPARATE
        else:
            kind = coerce_projection_kind(owner, input_projection)
        self.projection_kind = kind
        self.share_kv_projection = bool(share_kv_projection)
        self.kv_input_size = kv_input_size
        self.allow_combined = allow_combined
        self.compute_dtype = check_float_dtype(owner, "compute_dtype", compute_dtype)
        self.query_scale = check_real(owner, "query_scale", query_scale, optional=True)
        attention_logits_soft_cap = check_real(
            owner, "attention_logits_soft_cap", attention_logits_soft_cap, optional=True
        )
        if attention_logits_soft_cap is not None and attention_logits_soft_cap < 0:
            raise ValueError(
                f"{owner} expects attention_logits_soft_cap to be None or non-negative; got {attention_logits_soft_cap}."
            )
        self.attention_logits_soft_cap = attention_logits_soft_cap or None
        self.zero_fully_masked = bool(zero_fully_masked)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{owner} expects dropout (on the attention probabilities) in [0, 1]; got {dropout!r}.")
        self.dropout_rate = float(dropout)
        self.broadcast_dropout_across_queries = bool(broadcast_dropout_across_queries)
        self.num_sink_embeddings = check_positive_int(
            owner, "num_sink_embeddings", num_sink_embeddings, allow_zero=True
        )
        self.use_sink_scalars = bool(use_sink_scalars)
        if self.num_sink_embeddings and self.use_sink_scalars:
            raise ValueError(f"{owner}: use either num_sink_embeddings or use_sink_scalars, not both.")
        if self.zero_fully_masked and self.has_sinks:
            raise ValueError(f"{owner}: zero_fully_masked and attention sinks are incompatible (as in the reference).")
        self._want_per_dim_scale = bool(per_dim_scale)
        self._want_per_dim_key_scale = bool(per_dim_key_scale)
        for net_name, net in (
            ("query_network", query_network),
            ("key_network", key_network),
            ("value_network", value_network),
        ):
            if net is not None:
                if not isinstance(net, SequenceLayer):
                    raise TypeError(f"{owner} expects {net_name} to be an sl SequenceLayer; got {type(net).__name__}.")
                if net.output_ratio != 1 or net.block_size != 1:
                    raise ValueError(
                        f"{owner}: {net_name} must have output_ratio 1 and block_size 1; got "
                        f"{type(net).__name__} with output_ratio={net.output_ratio}, block_size={net.block_size}."
                    )
        self.query_network = query_network
        self.key_network = key_network
        self.value_network = value_network
        self.relative_position_embedding = make_relative_position_embedding(
            owner, relative_position_embedding, device=device, dtype=dtype
        )
        if self.relative_position_embedding is not None:
            self.relative_position_embedding.check_heads(owner, self.num_heads, self.units_per_head)
        self._factory: dict[str, Any] = {"device": device, "dtype": dtype}
        if input_size is None:
            self.input_size = None
            self._register_lazy_loading()
        else:
            self._make_parameters(check_positive_int(owner, "input_size", input_size))

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        if len(input_shape) != 1:
            raise ValueError(
                f"{_name(self)} expects inputs [batch, time, channels] (a channel shape of rank 1); got channel "
                f"shape {tuple(input_shape)}."
            )
        return int(input_shape[0])

    @property
    def has_sinks(self) -> bool:
        return bool(self.num_sink_embeddings) or self.use_sink_scalars

    def _make_parameters(self, size: int) -> None:
        """Creates every parameter for inputs of ``size`` channels."""
        owner = _name(self)
        device, dtype = self._factory["device"], self._factory["dtype"]
        self.input_size = size
        self.input_projection = make_input_projection(
            owner,
            self.projection_kind,
            input_size=size,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            units_per_head=self.units_per_head,
            bias=self.use_bias,
            compute_dtype=self.compute_dtype,
            share_kv_projection=self.share_kv_projection,
            kv_input_size=self.kv_input_size,
            allow_combined=self.allow_combined,
            device=device,
            dtype=dtype,
        )
        h = self.units_per_head

        def param(*shape: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))

        self.per_dim_scale = param(h) if self._want_per_dim_scale else None
        self.per_dim_key_scale = param(h) if self._want_per_dim_key_scale else None
        self.sink_key_embeddings = None
        self.sink_value_embeddings = None
        self.sink_scalars = None
        if self.num_sink_embeddings:
            self.sink_key_embeddings = param(self.num_sink_embeddings, self.num_heads, h)
            self.sink_value_embeddings = param(self.num_sink_embeddings, self.num_kv_heads, h)
        elif self.use_sink_scalars:
            self.sink_scalars = param(self.num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisers: projections lecun_normal (fan-in = input size), scales and sink
        scalars zeros, sink embeddings flax's default embedding init (normal, 1 / (heads * units))."""
        if self.relative_position_embedding is not None:
            self.relative_position_embedding.reset_parameters()  # type: ignore[operator]
        if self.input_size is None:
            return  # created at the first call
        self.input_projection.reset_parameters()
        for p in (self.per_dim_scale, self.per_dim_key_scale, self.sink_scalars):
            if p is not None:
                torch.nn.init.zeros_(p)
        for p in (self.sink_key_embeddings, self.sink_value_embeddings):
            if p is not None:
                with torch.no_grad():
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1] * p.shape[2]))

    def normalize_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments = super().normalize_config(arguments)
        rpe = arguments.get("relative_position_embedding")
        if isinstance(rpe, RelativePositionEmbedding):
            arguments = {**arguments, "relative_position_embedding": rpe.get_config()}
        if "input_projection" in arguments and arguments["input_projection"] is not None:
            arguments = {**arguments, "input_projection": self.projection_kind.value}
        return arguments

    # -- metadata ------------------------------------------------------------------------
    def _kv_source_names(self) -> tuple[str, ...]:
        """Constants the keys/values come from (cross-attention), for inferring ``source_size``."""
        return ()

    def _infer_source_size(self, constants: Constants | None) -> None:
        """With the input size inferred too, an omitted ``source_size`` is the source's channels."""
        if self.input_size is not None or not constants or getattr(self, "source_size", 0) is not None:
            return
        for name in self._kv_source_names():
            source = constants.get(name)
            if isinstance(source, Sequence) and source.values.dim() == 3:
                size = int(source.values.shape[2])
                self.source_size = size
                self.kv_input_size = size
                self.__dict__["_sl_init_args"]["source_size"] = size
                return

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        self._infer_source_size(constants)
        self._ensure_built(tuple(input_shape))
        if len(tuple(input_shape)) != 1 or input_shape[0] != self.input_size:
            raise ValueError(
                f"{_name(self)} expects inputs [batch, time, {self.input_size}] (channel shape ({self.input_size},)); "
                f"got channel shape {tuple(input_shape)}."
            )
        return (self.num_heads, self.units_per_head)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return promoted_dtype(input_dtype, self.input_projection.param_dtype, self.compute_dtype, owner=_name(self))

    def _networks(self) -> list[SequenceLayer]:
        return [n for n in (self.query_network, self.key_network, self.value_network) if n is not None]

    def _networks_step(self) -> bool:
        return all(n.supports_step for n in self._networks())

    # -- pieces of the computation ---------------------------------------------------------
    def _dropout(self, training: bool) -> fn.DropoutFn | None:
        if not training or self.dropout_rate == 0.0:
            return None
        return make_dropout(self.dropout_rate, self.broadcast_dropout_across_queries)

    def _check_step_training(self, training: bool) -> None:
        if training and self.dropout_rate > 0.0:
            raise ValueError(
                f"{_name(self)}.step does not support training=True with dropout={self.dropout_rate} (step-wise "
                "dropout cannot match layer-wise dropout, as for sl.Dropout); use layer() for training or step "
                "with training=False."
            )

    def _sinks(self, queries: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Sink logits ``[B, N, T, S]`` from the unscaled queries, and sink values ``[S, K, H]``."""
        b, t = queries.shape[:2]
        if self.sink_key_embeddings is not None and self.sink_value_embeddings is not None:
            logits = torch.einsum("btnh,snh->bnts", queries, self.sink_key_embeddings.to(queries.dtype))
            return logits, self.sink_value_embeddings
        if self.sink_scalars is not None:
            logits = self.sink_scalars.to(queries.dtype)[None, :, None, None].expand(b, self.num_heads, t, 1)
            values = torch.zeros(
                (1, self.num_kv_heads, self.units_per_head), dtype=queries.dtype, device=queries.device
            )
            return logits, values
        return None, None

    def _scaled(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """Queries and the scale the kernel applies to their logits, and the scaled keys.

        Without a per-dimension scale the query scale stays a float for the fused kernel
        (no pass over the queries); with one, the queries are scaled here.
        """
        if self.per_dim_scale is None:
            h = queries.shape[-1]
            scale = 1.0 / math.sqrt(h) if self.query_scale is None else self.query_scale
            q = queries
        else:
            q, scale = fn.scale_queries(queries, self.per_dim_scale, self.query_scale), 1.0
        k = fn.scale_keys(keys.to(q.dtype), self.per_dim_key_scale)
        return q, scale, k

    def _bias_queries(self, unscaled: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor | None:
        """The queries the relative position embedding reads: Shaw and T5 the unscaled ones (as
        the reference passes them), TransformerXL the scaled ones."""
        rpe = self.relative_position_embedding
        if rpe is None:
            return None
        if not rpe.uses_scaled_queries:
            return unscaled
        return q if scale == 1.0 else q * torch.tensor(scale, dtype=q.dtype, device=q.device)

    def _apply_network_layer(
        self, net: SequenceLayer | None, x: Sequence, training: bool, constants: Constants | None
    ) -> Sequence:
        return x if net is None else net.layer(x, training=training, constants=constants)

    def _apply_network_step(
        self, net: SequenceLayer | None, x: Sequence, state: State, training: bool, constants: Constants | None
    ) -> tuple[Sequence, State]:
        if net is None:
            return x, state
        return net.step(x, state, training=training, constants=constants)

    def _network_state(
        self, net: SequenceLayer | None, batch: int, spec: ChannelSpec, training: bool, constants: Constants | None
    ) -> State:
        if net is None:
            return ()
        return net.get_initial_state(batch, spec, training=training, constants=constants)

    # -- routing -------------------------------------------------------------------------
    def _layer_impl(
        self, x: Sequence, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, Emits]:
        raise NotImplementedError

    def _step_impl(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, State, Emits]:
        raise NotImplementedError

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self._layer_impl(x, training, constants, False)[0]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        return self._layer_impl(x, training, constants, True)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        y, state, _ = self._step_impl(x, state, training, constants, False)
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        return self._step_impl(x, state, training, constants, True)

    def _require_step(self) -> None:
        if not self.supports_step:
            raise ValueError(f"{_name(self)} cannot step: {self._why_not_steppable()}")

    def _why_not_steppable(self) -> str:
        bad = [type(n).__name__ for n in self._networks() if not n.supports_step]
        if bad:
            return f"its query/key/value network(s) {bad} do not support step()."
        return "its configuration is not streamable."


class WindowedAttention(AttentionBase):
    """Banded attention with a streaming K/V window (see the module docstring).

    Subclasses set ``max_past_horizon``/``max_future_horizon`` (-1 = unbounded),
    ``max_cache_length`` and implement :meth:`_project` (queries from the input, keys and
    values from the input or a streamed source).
    """

    max_past_horizon: int
    max_future_horizon: int
    max_cache_length: int | None = None
    use_query_delay_buffer: bool = True
    #: Emits are SelfAttentionEmits (self-attention) or CrossAttentionEmits keyed by source_name.
    source_name: str | None = None
    #: Query head n reads key/value head n // (N/K) ("interleave", the reference's dot_product_attention)
    #: or n % K ("tile", the reference's flash attention used by the V2/Blockwise layers).
    gqa_layout: str = "interleave"

    def _setup_window(self, max_past_horizon: int, max_future_horizon: int, max_cache_length: int | None) -> None:
        owner = _name(self)
        self.max_past_horizon = check_horizon(owner, "max_past_horizon", max_past_horizon)
        self.max_future_horizon = check_horizon(owner, "max_future_horizon", max_future_horizon)
        if self.max_past_horizon == 0 and self.max_future_horizon == 0:
            raise ValueError(
                f"{owner}: max_past_horizon=0 and max_future_horizon=0 would let each step see only itself; "
                "use a positive horizon (or -1 for unbounded)."
            )
        if max_cache_length is not None:
            max_cache_length = check_positive_int(owner, "max_cache_length", max_cache_length)
            if self.max_past_horizon != -1:
                raise ValueError(
                    f"{owner}: max_cache_length preallocates the K/V cache of an unbounded past "
                    f"(max_past_horizon=-1); with max_past_horizon={self.max_past_horizon} the window is already "
                    "bounded. Drop max_cache_length."
                )
        self.max_cache_length = max_cache_length

    # -- metadata ------------------------------------------------------------------------
    @property
    def _delay(self) -> int:
        return max(0, self.max_future_horizon) if self.use_query_delay_buffer else 0

    @property
    def input_latency(self) -> int:
        return self._delay

    @property
    def supports_step(self) -> bool:
        return not self._step_obstacles() and self._networks_step()

    def _step_obstacles(self) -> list[str]:
        out = []
        if self.max_future_horizon < 0:
            out.append("max_future_horizon=-1 (an unbounded future) cannot stream; use a finite lookahead")
        if self.max_past_horizon < 0 and self.max_cache_length is None:
            out.append(
                "max_past_horizon=-1 (an unbounded past) needs a preallocated K/V cache to stream: pass "
                "max_cache_length=<the most valid steps a stream will hold>, or use a finite max_past_horizon"
            )
        return out

    def _why_not_steppable(self) -> str:
        reasons = self._step_obstacles()
        if reasons:
            return "; ".join(reasons) + "."
        return super()._why_not_steppable()

    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        start = -math.inf if self.max_past_horizon < 0 else -self.max_past_horizon
        end = math.inf if self.max_future_horizon < 0 else self.max_future_horizon
        return {0: (start, end)}

    @property
    def _window(self) -> int:
        """Keys kept between steps: ``P + F``, or the cache length for an unbounded past."""
        if self.max_past_horizon < 0:
            return int(self.max_cache_length or 0)
        return self.max_past_horizon + max(0, self.max_future_horizon)

    @property
    def _cached(self) -> bool:
        return self.max_past_horizon < 0

    # -- subclass hooks --------------------------------------------------------------------
    def _project(self, x: Sequence, constants: Constants | None, step: bool) -> tuple[Sequence, Sequence, Sequence]:
        """Queries ``[B, T, N, H]`` and keys/values ``[B, T, K, H]`` (before the networks)."""
        q, k, v = self.input_projection.get_qkv(x.mask_invalid())
        return q, k, v

    def _state_dtype(self, input_spec: ChannelSpec, constants: Constants | None) -> torch.dtype:
        return self.input_projection.output_dtype(input_spec.dtype)

    def _positions(self, x: Sequence, constants: Constants | None, step: bool) -> torch.Tensor | None:
        """Positions ``[B or 1, T]`` from constants (V2/Blockwise), or None for the time index."""
        return None

    def _segment_ids(self, x: Sequence, constants: Constants | None) -> torch.Tensor | None:
        return None

    def _visibility(
        self,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        q_seg: torch.Tensor | None,
        k_seg: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """``[B or 1, Tq, Tk]`` from positions (and segment ids), before the key mask."""
        vis = fn.band_visibility(q_pos, k_pos, self.max_past_horizon, self.max_future_horizon)
        if q_seg is not None and k_seg is not None:
            same = q_seg[:, :, None] == k_seg[:, None, :]
            vis = same if vis is None else vis & same
        return vis

    def _layer_block(self, time: int, need_probs: bool) -> int | None:
        """Query block size for the blocked layer-mode computation, or None for one full pass."""
        return None

    # -- emits -----------------------------------------------------------------------------
    def _emits(self, probs: torch.Tensor | None, mask: torch.Tensor) -> Emits:
        if probs is None:
            return ()
        seq = Sequence._trusted(probs, mask)
        if self.source_name is not None:
            return CrossAttentionEmits({self.source_name: seq})
        return SelfAttentionEmits(seq)

    # -- the shared pieces -----------------------------------------------------------------
    def _heads_for_gqa(self, q: torch.Tensor) -> torch.Tensor:
        """Reorders query heads so the "tile" grouping becomes torch's interleaved grouping."""
        n, k = self.num_heads, self.num_kv_heads
        if self.gqa_layout != "tile" or n == k:
            return q
        b, t = q.shape[:2]
        # head j*K + kv  ->  kv*G + j
        return q.reshape(b, t, n // k, k, q.shape[-1]).transpose(2, 3).reshape(b, t, n, q.shape[-1])

    def _heads_back(self, y: torch.Tensor) -> torch.Tensor:
        n, k = self.num_heads, self.num_kv_heads
        if self.gqa_layout != "tile" or n == k:
            return y
        b, t = y.shape[:2]
        return y.reshape(b, t, k, n // k, y.shape[-1]).transpose(2, 3).reshape(b, t, n, y.shape[-1])

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        visible: torch.Tensor | None,
        key_mask: torch.Tensor | None,
        relative: torch.Tensor | None,
        training: bool,
        need_probs: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Full (unblocked) attention of unscaled queries ``q`` over ``k``/``v``."""
        sink_logits, sink_values = self._sinks(q)
        qk, scale, ks = self._scaled(q, k)
        bias = None
        rpe = self.relative_position_embedding
        if rpe is not None and relative is not None:
            bias = rpe.bias(self._bias_queries(q, qk, scale), ks, relative)  # type: ignore[arg-type]
        if self.gqa_layout == "tile" and self.num_kv_heads != self.num_heads:
            qk = self._heads_for_gqa(qk)
        ctx, probs = fn.attend(
            qk,
            ks,
            v,
            visible,
            key_mask=key_mask,
            scale=scale,
            bias=bias,
            logits_soft_cap=self.attention_logits_soft_cap,
            sink_logits=sink_logits,
            sink_values=sink_values,
            dropout=self._dropout(training),
            zero_fully_masked=self.zero_fully_masked,
            need_probs=need_probs,
            gqa=self.num_kv_heads != self.num_heads,
        )
        return self._heads_back(ctx), probs

    def _kv_after_networks_layer(
        self, q: Sequence, k: Sequence, v: Sequence, training: bool, constants: Constants | None
    ) -> tuple[Sequence, Sequence, Sequence]:
        q = self._apply_network_layer(self.query_network, q, training, constants)
        k = self._apply_network_layer(self.key_network, k, training, constants)
        v = self._apply_network_layer(self.value_network, v, training, constants)
        return q, k.mask_invalid(), v.mask_invalid()

    # -- layer -----------------------------------------------------------------------------
    def _layer_impl(
        self, x: Sequence, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        q, k, v = self._project(x, constants, step=False)
        q, k, v = self._kv_after_networks_layer(q, k, v, training, constants)
        kv_mask = k.mask & v.mask
        t, tk = x.values.shape[1], k.values.shape[1]
        block = self._layer_block(t, need_probs) if t == tk else None
        if block is not None:
            ctx, probs = self._blocked(q, k, v, kv_mask, block, training, need_probs)
        else:
            q_pos = self._positions(x, constants, step=False)
            if q_pos is None:
                q_pos = torch.arange(t, device=x.values.device, dtype=torch.int32)[None]
                k_pos = q_pos if tk == t else torch.arange(tk, device=x.values.device, dtype=torch.int32)[None]
            else:
                k_pos = q_pos
            seg = self._segment_ids(x, constants)
            visible = self._visibility(q_pos, k_pos, seg, seg)
            relative = None
            if self.relative_position_embedding is not None:
                relative = k_pos[:, None, :] - q_pos[:, :, None]
            ctx, probs = self._attend(q.values, k.values, v.values, visible, kv_mask, relative, training, need_probs)
        ctx = ctx.to(self.get_output_dtype(x.values.dtype))
        return Sequence._trusted(ctx, x.mask), self._emits(probs, x.mask)

    def _blocked(
        self,
        q: Sequence,
        k: Sequence,
        v: Sequence,
        kv_mask: torch.Tensor,
        block: int,
        training: bool,
        need_probs: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        past = max(0, self.max_past_horizon)
        future = max(0, self.max_future_horizon)
        sink_logits, sink_values = self._sinks(q.values)
        qk, scale, ks = self._scaled(q.values, k.values)
        rpe = self.relative_position_embedding
        bias_queries = self._bias_queries(q.values, qk, scale)
        tile = self.gqa_layout == "tile" and self.num_kv_heads != self.num_heads
        ctx, probs = fn.blocked_attend(
            self._heads_for_gqa(qk) if tile else qk,
            ks,
            v.values,
            kv_mask,
            block=block,
            left=past,
            right=future,
            band=self._band_in_blocks,
            bias_fn=None if rpe is None else rpe.bias,
            bias_queries=bias_queries,
            logits_soft_cap=self.attention_logits_soft_cap,
            sink_logits=sink_logits,
            sink_values=sink_values,
            dropout=self._dropout(training),
            zero_fully_masked=self.zero_fully_masked,
            need_probs=need_probs,
            gqa=self.num_kv_heads != self.num_heads,
            scale=scale,
        )
        return (self._heads_back(ctx) if tile else ctx), probs

    _band_in_blocks: bool = True

    # -- state -----------------------------------------------------------------------------
    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        self.get_output_shape(tuple(input_spec.shape), constants=constants)
        dtype = self._state_dtype(input_spec, constants)
        kh, h, n = self.num_kv_heads, self.units_per_head, self.num_heads
        w = self._window
        f = self._delay
        seg = self._uses_segment_ids
        state: dict[str, Any] = {
            "keys": state_full(self, (batch_size, w, kh, h), 0, dtype),
            "values": state_full(self, (batch_size, w, kh, h), 0, dtype),
            "mask": state_full(self, (batch_size, w), False, torch.bool),
            "positions": state_full(self, (batch_size, w), 0, torch.int32),
            "time": state_full(self, (batch_size,), 0, torch.int32),
        }
        if seg:
            state["segment_ids"] = state_full(self, (batch_size, w), 0, torch.int32)
        if self._cached:
            state["count"] = state_full(self, (batch_size,), 0, torch.int32)
        if f:
            state["queries"] = state_full(self, (batch_size, f, n, h), 0, dtype)
            state["query_mask"] = state_full(self, (batch_size, f), False, torch.bool)
            state["query_positions"] = state_full(self, (batch_size, f), 0, torch.int32)
            if seg:
                state["query_segment_ids"] = state_full(self, (batch_size, f), 0, torch.int32)
        q_spec = ChannelSpec((n, h), dtype)
        kv_spec = ChannelSpec((kh, h), dtype)
        state["query_network"] = self._network_state(self.query_network, batch_size, q_spec, training, constants)
        state["key_network"] = self._network_state(self.key_network, batch_size, kv_spec, training, constants)
        state["value_network"] = self._network_state(self.value_network, batch_size, kv_spec, training, constants)
        return state

    _uses_segment_ids: bool = False

    def shift_initial_state(self, state: State, latency: int) -> State:
        state = dict(state)
        state["time"] = state["time"] - latency
        for name, net in (("query_network", self.query_network), ("key_network", self.key_network)):
            if net is not None:
                state[name] = net.shift_initial_state(state[name], latency)
        if self.value_network is not None:
            state["value_network"] = self.value_network.shift_initial_state(state["value_network"], latency)
        return state

    # -- step ------------------------------------------------------------------------------
    def _step_impl(
        self, x: Sequence, state: State, training: bool, constants: Constants | None, need_probs: bool
    ) -> tuple[Sequence, State, Emits]:
        self._require_step()
        self._check_step_training(training)
        self.get_output_shape(x.channel_shape, constants=constants)
        state = dict(state)
        t = x.values.shape[1]
        q, k, v = self._project(x, constants, step=True)
        q, state["query_network"] = self._apply_network_step(
            self.query_network, q, state["query_network"], training, constants
        )
        k, state["key_network"] = self._apply_network_step(
            self.key_network, k, state["key_network"], training, constants
        )
        v, state["value_network"] = self._apply_network_step(
            self.value_network, v, state["value_network"], training, constants
        )
        k, v = k.mask_invalid(), v.mask_invalid()
        kv_mask = k.mask & v.mask
        time = state["time"]
        new_pos = self._positions(x, constants, step=True)
        if new_pos is None:
            new_pos = time[:, None] + torch.arange(t, device=time.device, dtype=torch.int32)[None]
        else:
            new_pos = new_pos.to(torch.int32).expand(x.values.shape[0], t)
        seg = self._segment_ids(x, constants) if self._uses_segment_ids else None
        if seg is not None:
            seg = seg.to(torch.int32).expand(x.values.shape[0], t)
        state["time"] = time + t

        # Keys: the window (concatenated) or the cache (written in place of free slots).
        if self._cached:
            keys, values, k_mask, k_pos, k_seg = self._write_cache(state, k.values, v.values, kv_mask, new_pos, seg)
        else:
            keys = torch.cat([state["keys"], k.values.to(state["keys"].dtype)], 1)
            values = torch.cat([state["values"], v.values.to(state["values"].dtype)], 1)
            k_mask = torch.cat([state["mask"], kv_mask], 1)
            k_pos = torch.cat([state["positions"], new_pos], 1)
            k_seg = torch.cat([state["segment_ids"], seg], 1) if seg is not None else None
            state["keys"], state["values"] = keys[:, t:], values[:, t:]
            state["mask"], state["positions"] = k_mask[:, t:], k_pos[:, t:]
            if k_seg is not None:
                state["segment_ids"] = k_seg[:, t:]

        # Queries: delayed by F so their future keys have arrived.
        f = self._delay
        queries, q_mask, q_pos, q_seg = q.values, q.mask, new_pos, seg
        if f:
            dq = torch.cat([state["queries"], queries.to(state["queries"].dtype)], 1)
            dm = torch.cat([state["query_mask"], q_mask], 1)
            dp = torch.cat([state["query_positions"], q_pos], 1)
            queries, q_mask, q_pos = dq[:, :t], dm[:, :t], dp[:, :t]
            state["queries"], state["query_mask"], state["query_positions"] = dq[:, t:], dm[:, t:], dp[:, t:]
            if q_seg is not None:
                ds = torch.cat([state["query_segment_ids"], q_seg], 1)
                q_seg, state["query_segment_ids"] = ds[:, :t], ds[:, t:]
        elif self.max_future_horizon > 0:
            # No delay buffer (streaming cross-attention): the caller delays the input by F, so a
            # query at step s stands for position s - F.
            q_pos = q_pos - self.max_future_horizon

        visible = self._visibility(q_pos, k_pos, q_seg, k_seg)
        relative = None
        if self.relative_position_embedding is not None:
            relative = k_pos[:, None, :] - q_pos[:, :, None]
        ctx, probs = self._attend(queries, keys, values, visible, k_mask, relative, training, need_probs)
        ctx = ctx.to(self.get_output_dtype(x.values.dtype))
        return Sequence._trusted(ctx, q_mask), state, self._emits(probs, q_mask)

    def _write_cache(
        self,
        state: dict[str, Any],
        k: torch.Tensor,
        v: torch.Tensor,
        kv_mask: torch.Tensor,
        positions: torch.Tensor,
        seg: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Writes this block's valid keys to the next free cache slots (no host sync)."""
        length = int(self.max_cache_length or 0)
        b, t = kv_mask.shape
        count = state["count"]
        new_count = count + kv_mask.sum(1, dtype=torch.int32)
        check_in_stream(
            self,
            new_count <= length,
            lambda: (
                f"the K/V cache is full: max_cache_length={length} valid steps, but the stream has delivered "
                f"{int(new_count.max())} (an unbounded past keeps every valid step). Build the layer with a larger "
                "max_cache_length, or use a finite max_past_horizon."
            ),
        )
        slot = count[:, None] + torch.cumsum(kv_mask.to(torch.int32), 1) - 1
        spare = length + torch.arange(t, device=kv_mask.device, dtype=torch.int32)[None]
        slot = torch.where(kv_mask & (slot < length), slot, spare).to(torch.int64)

        def write(buffer: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            extra = buffer.new_zeros((b, t, *buffer.shape[2:]))
            grown = torch.cat([buffer, extra], 1)
            index = slot.reshape(b, t, *([1] * (buffer.dim() - 2))).expand(b, t, *buffer.shape[2:])
            return torch.scatter(grown, 1, index, new.to(buffer.dtype))[:, :length]

        state["keys"] = keys = write(state["keys"], k)
        state["values"] = values = write(state["values"], v)
        state["mask"] = mask = write(state["mask"], kv_mask)
        state["positions"] = pos = write(state["positions"], positions)
        k_seg = None
        if seg is not None:
            state["segment_ids"] = k_seg = write(state["segment_ids"], seg)
        state["count"] = new_count
        return keys, values, mask, pos, k_seg


def get_source(layer: SequenceLayer, constants: Constants | None, name: str, rank: int = 3) -> Sequence:
    """``constants[name]`` as a Sequence of rank ``rank`` with an error naming the layer."""
    source = get_constant(layer, constants, name)
    if not isinstance(source, Sequence):
        raise ValueError(
            f"{_name(layer)} expects constants[{name!r}] to be an sl.Sequence; got {type(source).__name__}."
        )
    if source.values.dim() != rank:
        raise ValueError(
            f"{_name(layer)} expects constants[{name!r}] of rank {rank} ([batch, time{', channels' if rank == 3 else ''}]); "
            f"got shape {list(source.values.shape)}."
        )
    return source


def positions_constant(layer: SequenceLayer, constants: Constants | None, name: str, x: Sequence) -> torch.Tensor:
    """Integer positions/segment ids ``[B or 1, T]`` from ``constants[name]`` (tensor or Sequence)."""
    value = get_constant(layer, constants, name)
    if isinstance(value, Sequence):
        value = value.values
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        raise ValueError(
            f"{_name(layer)} expects constants[{name!r}] to be a [batch, time] tensor or Sequence; got "
            f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else ' of shape ' + str(list(value.shape))}."
        )
    if value.shape[1] != x.values.shape[1] or value.shape[0] not in (1, x.values.shape[0]):
        raise ValueError(
            f"{_name(layer)} expects constants[{name!r}] of shape [{x.values.shape[0]}, {x.values.shape[1]}] (the "
            f"input's batch and time); got {list(value.shape)}."
        )
    return value
