"""Parity cases for sl-attention against sequence_layers.jax's attention layers.

Where the reference cannot step a configuration that sl steps (relative positions with
lookahead, an unbounded past with a preallocated cache), the case compares layer mode
only (``check_step=False``) and says so in its label; sl's step mode for those is covered
by its own contract tests (packages/sl-attention/tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from common import Config, LayerCase, ours, ref

NO_REFERENCE: dict[str, str] = {}

D = 5  # input channels
S_D = 4  # source channels


def _slj(name: str, **kwargs: Any) -> Callable[[], Any]:
    """A deferred ``sequence_layers.jax.<name>(**kwargs)`` (dataclass configs that have no ``.Config``)."""

    def build() -> Any:
        import sequence_layers.jax as slj

        return getattr(slj, name)(**kwargs)

    build.__name__ = "build"
    return build


def _proj(kind: str, **kwargs: Any) -> Callable[[], Any]:
    names = {
        "combined": "CombinedQueryKeyValueProjection",
        "separate": "SeparateQueryKeyValueProjection",
        "query_and_key_value": "QueryAndKeyValueProjection",
        "query_and_shared_key_value": "QueryAndSharedKeyValueProjection",
    }
    return _slj(names[kind], **kwargs)


def _shaw(back: int, fwd: int, heads: int, units: int) -> tuple[Any, dict[str, Any]]:
    r = ref("ShawRelativePositionEmbedding", max_backward=back, max_forward=fwd, num_heads=heads, units_per_head=units)
    o = {"kind": "Shaw", "max_backward": back, "max_forward": fwd, "num_heads": heads, "units_per_head": units}
    return r, o


def _t5(buckets: int, heads: int, bidirectional: bool, max_distance: int = 16) -> tuple[Any, dict[str, Any]]:
    r = ref(
        "T5RelativePositionEmbedding",
        num_buckets=buckets,
        num_heads=heads,
        bidirectional=bidirectional,
        max_distance=max_distance,
    )
    o = {
        "kind": "T5",
        "num_buckets": buckets,
        "num_heads": heads,
        "bidirectional": bidirectional,
        "max_distance": max_distance,
    }
    return r, o


def _txl(heads: int, units: int, back: int, fwd: int, dim: int = 6) -> tuple[Any, dict[str, Any]]:
    r = ref(
        "TransformerXLRelativePositionEmbedding",
        num_heads=heads,
        units_per_head=units,
        max_backward=back,
        max_forward=fwd,
        position_bias_dim=dim,
    )
    o = {
        "kind": "TransformerXL",
        "num_heads": heads,
        "units_per_head": units,
        "max_backward": back,
        "max_forward": fwd,
        "position_bias_dim": dim,
    }
    return r, o


def _source(name: str = "source", channels: int = S_D, time: int | None = None, streamed: bool = False) -> Any:
    def make(rng: np.random.Generator, batch: int, t: int) -> dict[str, Any]:
        length = t if (streamed or time is None) else time
        values = rng.standard_normal((batch, length, channels)).astype(np.float32)
        mask = rng.uniform(size=(batch, length)) > 0.25
        values = np.where(mask[:, :, None], values, 0).astype(np.float32)
        return {name: ("sequence", values, mask)}

    return make


def _sources(*names: str, times: tuple[int, ...] = (7, 5)) -> Any:
    def make(rng: np.random.Generator, batch: int, t: int) -> dict[str, Any]:
        out = {}
        for name, length in zip(names, times):
            out.update(_source(name, time=length)(rng, batch, t))
        return out

    return make


def _dpsa_cases() -> list[LayerCase]:
    configs: list[Config] = []
    heads, units = 3, 4
    for past, future in ((3, 0), (3, 2), (0, 2), (1, 1), (-1, 0), (-1, -1), (4, -1)):
        configs.append(
            Config(
                f"P={past} F={future}",
                ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=past,
                    max_future_horizon=future),
                ours("DotProductSelfAttention", D, heads, units, past, future),
                (D,),
            )
        )
    configs.append(
        Config(
            "P=2 F=1, 2 blocks/step",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=2, max_future_horizon=1),
            ours("DotProductSelfAttention", D, heads, units, 2, 1),
            (D,),
            blocks_per_step=2,
        )
    )
    configs.append(
        Config(
            "P=-1 F=0 with max_cache_length (layer only: the reference cannot step an unbounded past)",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=-1),
            ours("DotProductSelfAttention", D, heads, units, -1, 0, max_cache_length=16),
            (D,),
            check_step=False,
        )
    )
    # Projections and grouped key/value heads.
    for label, proj, kw in (
        ("combined, shared K/V", _proj("combined", share_kv_projection=True), {"share_kv_projection": True}),
        ("separate", _proj("separate"), {"input_projection": "separate"}),
        ("query + key/value", _proj("query_and_key_value"), {"input_projection": "query_and_key_value"}),
        ("query + shared key/value", _proj("query_and_shared_key_value"), {"input_projection": "query_and_shared_key_value"}),
    ):
        configs.append(
            Config(
                f"{label}, P=3 F=1, bias",
                ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=3,
                    max_future_horizon=1, input_projection=proj, use_bias=True),
                ours("DotProductSelfAttention", D, heads, units, 3, 1, bias=True, **kw),
                (D,),
            )
        )
    for proj in ("separate", "query_and_key_value", "query_and_shared_key_value"):
        configs.append(
            Config(
                f"GQA 4 heads / 2 kv heads, {proj}, P=3 F=2",
                ref("DotProductSelfAttention", num_heads=4, units_per_head=units, max_past_horizon=3,
                    max_future_horizon=2, num_kv_heads=2, input_projection=_proj(proj)),
                ours("DotProductSelfAttention", D, 4, units, 3, 2, 2, input_projection=proj),
                (D,),
            )
        )
    configs.append(
        Config(
            "GQA 4/1, sinks x2, soft cap 5, P=-1 F=-1",
            ref("DotProductSelfAttention", num_heads=4, units_per_head=units, max_past_horizon=-1,
                max_future_horizon=-1, num_kv_heads=1, input_projection=_proj("separate"), num_sink_embeddings=2,
                attention_logits_soft_cap=5.0),
            ours("DotProductSelfAttention", D, 4, units, -1, -1, 1, input_projection="separate", num_sink_embeddings=2,
                 attention_logits_soft_cap=5.0),
            (D,),
        )
    )
    options: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("soft cap 2.0", {"attention_logits_soft_cap": 2.0}, {"attention_logits_soft_cap": 2.0}),
        ("sink embeddings x2", {"num_sink_embeddings": 2}, {"num_sink_embeddings": 2}),
        ("sink scalars", {"use_sink_scalars": True}, {"use_sink_scalars": True}),
        ("per-dim query+key scale", {"per_dim_scale": True, "per_dim_key_scale": True},
         {"per_dim_scale": True, "per_dim_key_scale": True}),
        ("query_scale 0.3", {"query_scale": 0.3}, {"query_scale": 0.3}),
        ("zero_fully_masked", {"zero_fully_masked": True}, {"zero_fully_masked": True}),
        ("dropout 0.5 (inference)", {"attention_probabilities_dropout_rate": 0.5}, {"dropout": 0.5}),
    ]
    for label, rkw, okw in options:
        configs.append(
            Config(
                f"{label}, P=3 F=2",
                ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=3,
                    max_future_horizon=2, **rkw),
                ours("DotProductSelfAttention", D, heads, units, 3, 2, **okw),
                (D,),
            )
        )
    # Relative positions.
    r, o = _shaw(3, 0, heads, units)
    configs.append(
        Config(
            "Shaw(3, 0), P=3 F=0",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=3,
                relative_position_embedding=r),
            ours("DotProductSelfAttention", D, heads, units, 3, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _shaw(2, 2, heads, units)
    configs.append(
        Config(
            "Shaw(2, 2), P=3 F=2 (layer only: the reference cannot step relative positions with lookahead)",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=3,
                max_future_horizon=2, relative_position_embedding=r),
            ours("DotProductSelfAttention", D, heads, units, 3, 2, relative_position_embedding=o),
            (D,),
            check_step=False,
        )
    )
    r, o = _t5(8, heads, False)
    configs.append(
        Config(
            "T5(8, causal), P=4 F=0",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=4,
                relative_position_embedding=r),
            ours("DotProductSelfAttention", D, heads, units, 4, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _t5(10, heads, True, max_distance=6)
    configs.append(
        Config(
            "T5(10, bidirectional), P=-1 F=-1",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=-1,
                max_future_horizon=-1, relative_position_embedding=r),
            ours("DotProductSelfAttention", D, heads, units, -1, -1, relative_position_embedding=o),
            (D,),
            time=21,
        )
    )
    # q/k networks (RoPE).
    configs.append(
        Config(
            "RoPE query/key networks, P=3 F=0",
            ref("DotProductSelfAttention", num_heads=heads, units_per_head=units, max_past_horizon=3,
                query_network=ref("ApplyRotaryPositionalEncoding", max_wavelength=100.0),
                key_network=ref("ApplyRotaryPositionalEncoding", max_wavelength=100.0)),
            ours("DotProductSelfAttention", D, heads, units, 3, 0,
                 query_network=ours("ApplyRotaryPositionalEncoding", 100.0),
                 key_network=ours("ApplyRotaryPositionalEncoding", 100.0)),
            (D,),
            random_mask=False,
        )
    )
    return [LayerCase("DotProductSelfAttention", configs, group="attention")]


def _local_cases() -> list[LayerCase]:
    configs: list[Config] = []
    heads, units = 2, 3
    for block, past, future in ((3, 2, 0), (4, 3, 2), (2, 5, 1), (5, 1, 3)):
        configs.append(
            Config(
                f"block={block} P={past} F={future}",
                ref("LocalDotProductSelfAttention", num_heads=heads, units_per_head=units, block_size=block,
                    max_past_horizon=past, max_future_horizon=future),
                ours("LocalDotProductSelfAttention", D, heads, units, block, past, future),
                (D,),
            )
        )
    configs.append(
        Config(
            "block=4 P=3 F=1, sinks x2, soft cap 3",
            ref("LocalDotProductSelfAttention", num_heads=heads, units_per_head=units, block_size=4, max_past_horizon=3,
                max_future_horizon=1, num_sink_embeddings=2, attention_logits_soft_cap=3.0),
            ours("LocalDotProductSelfAttention", D, heads, units, 4, 3, 1, num_sink_embeddings=2,
                 attention_logits_soft_cap=3.0),
            (D,),
        )
    )
    configs.append(
        Config(
            "block=3 P=3 F=0, sink scalars, per-dim scales",
            ref("LocalDotProductSelfAttention", num_heads=heads, units_per_head=units, block_size=3, max_past_horizon=3,
                use_sink_scalars=True, per_dim_scale=True, per_dim_key_scale=True),
            ours("LocalDotProductSelfAttention", D, heads, units, 3, 3, 0, use_sink_scalars=True, per_dim_scale=True,
                 per_dim_key_scale=True),
            (D,),
        )
    )
    r, o = _txl(heads, units, 3, 0)
    configs.append(
        Config(
            "TransformerXL, block=4 P=3 F=0",
            ref("LocalDotProductSelfAttention", num_heads=heads, units_per_head=units, block_size=4,
                max_past_horizon=3, relative_position_embedding=r),
            ours("LocalDotProductSelfAttention", D, heads, units, 4, 3, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _txl(heads, units, 2, 2)
    configs.append(
        Config(
            "TransformerXL, block=3 P=2 F=2 (layer only: the reference cannot step relative positions with lookahead)",
            ref("LocalDotProductSelfAttention", num_heads=heads, units_per_head=units, block_size=3,
                max_past_horizon=2, max_future_horizon=2, relative_position_embedding=r),
            ours("LocalDotProductSelfAttention", D, heads, units, 3, 2, 2, relative_position_embedding=o),
            (D,),
            check_step=False,
        )
    )
    return [LayerCase("LocalDotProductSelfAttention", configs, group="attention")]


def cases() -> list[LayerCase]:
    return [*_dpsa_cases(), *_local_cases()]
