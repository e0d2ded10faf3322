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

FULLY_MASKED = (
    "a valid query whose band holds no valid source step: sl returns zeros (the fused kernel's result, and the "
    "reference's zero_fully_masked=True); the reference averages every key of its buffer uniformly, which "
    "differs between its own layer (all source steps) and step (the window) modes. All other values agree"
)

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


def _source(
    name: str = "source", channels: int = S_D, time: int | None = None, streamed: bool = False, holes: bool = True
) -> Any:
    def make(rng: np.random.Generator, batch: int, t: int) -> dict[str, Any]:
        length = t if (streamed or time is None) else time
        values = rng.standard_normal((batch, length, channels)).astype(np.float32)
        mask = rng.uniform(size=(batch, length)) > (0.25 if holes else -1.0)
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
                ref(
                    "DotProductSelfAttention",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=past,
                    max_future_horizon=future,
                ),
                ours("DotProductSelfAttention", D, heads, units, past, future),
                (D,),
            )
        )
    configs.append(
        Config(
            "P=2 F=1, 2 blocks/step",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=2,
                max_future_horizon=1,
            ),
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
        (
            "query + shared key/value",
            _proj("query_and_shared_key_value"),
            {"input_projection": "query_and_shared_key_value"},
        ),
    ):
        configs.append(
            Config(
                f"{label}, P=3 F=1, bias",
                ref(
                    "DotProductSelfAttention",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=3,
                    max_future_horizon=1,
                    input_projection=proj,
                    use_bias=True,
                ),
                ours("DotProductSelfAttention", D, heads, units, 3, 1, bias=True, **kw),
                (D,),
            )
        )
    for proj in ("separate", "query_and_key_value", "query_and_shared_key_value"):
        configs.append(
            Config(
                f"GQA 4 heads / 2 kv heads, {proj}, P=3 F=2",
                ref(
                    "DotProductSelfAttention",
                    num_heads=4,
                    units_per_head=units,
                    max_past_horizon=3,
                    max_future_horizon=2,
                    num_kv_heads=2,
                    input_projection=_proj(proj),
                ),
                ours("DotProductSelfAttention", D, 4, units, 3, 2, 2, input_projection=proj),
                (D,),
            )
        )
    configs.append(
        Config(
            "GQA 4/1, sinks x2, soft cap 5, P=-1 F=-1",
            ref(
                "DotProductSelfAttention",
                num_heads=4,
                units_per_head=units,
                max_past_horizon=-1,
                max_future_horizon=-1,
                num_kv_heads=1,
                input_projection=_proj("separate"),
                num_sink_embeddings=2,
                attention_logits_soft_cap=5.0,
            ),
            ours(
                "DotProductSelfAttention",
                D,
                4,
                units,
                -1,
                -1,
                1,
                input_projection="separate",
                num_sink_embeddings=2,
                attention_logits_soft_cap=5.0,
            ),
            (D,),
        )
    )
    options: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("soft cap 2.0", {"attention_logits_soft_cap": 2.0}, {"attention_logits_soft_cap": 2.0}),
        ("sink embeddings x2", {"num_sink_embeddings": 2}, {"num_sink_embeddings": 2}),
        ("sink scalars", {"use_sink_scalars": True}, {"use_sink_scalars": True}),
        (
            "per-dim query+key scale",
            {"per_dim_scale": True, "per_dim_key_scale": True},
            {"per_dim_scale": True, "per_dim_key_scale": True},
        ),
        ("query_scale 0.3", {"query_scale": 0.3}, {"query_scale": 0.3}),
        ("zero_fully_masked", {"zero_fully_masked": True}, {"zero_fully_masked": True}),
        ("dropout 0.5 (inference)", {"attention_probabilities_dropout_rate": 0.5}, {"dropout": 0.5}),
    ]
    for label, rkw, okw in options:
        configs.append(
            Config(
                f"{label}, P=3 F=2",
                ref(
                    "DotProductSelfAttention",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=3,
                    max_future_horizon=2,
                    **rkw,
                ),
                ours("DotProductSelfAttention", D, heads, units, 3, 2, **okw),
                (D,),
            )
        )
    # Relative positions.
    r, o = _shaw(3, 0, heads, units)
    configs.append(
        Config(
            "Shaw(3, 0), P=3 F=0",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=3,
                relative_position_embedding=r,
            ),
            ours("DotProductSelfAttention", D, heads, units, 3, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _shaw(2, 2, heads, units)
    configs.append(
        Config(
            "Shaw(2, 2), P=3 F=2 (layer only: the reference cannot step relative positions with lookahead)",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=3,
                max_future_horizon=2,
                relative_position_embedding=r,
            ),
            ours("DotProductSelfAttention", D, heads, units, 3, 2, relative_position_embedding=o),
            (D,),
            check_step=False,
        )
    )
    r, o = _t5(8, heads, False)
    configs.append(
        Config(
            "T5(8, causal), P=4 F=0",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=4,
                relative_position_embedding=r,
            ),
            ours("DotProductSelfAttention", D, heads, units, 4, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _t5(10, heads, True, max_distance=6)
    configs.append(
        Config(
            "T5(10, bidirectional), P=-1 F=-1",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=-1,
                max_future_horizon=-1,
                relative_position_embedding=r,
            ),
            ours("DotProductSelfAttention", D, heads, units, -1, -1, relative_position_embedding=o),
            (D,),
            time=21,
        )
    )
    r, o = _t5(4, heads, False, max_distance=2)
    configs.append(
        Config(
            "T5(4, causal, max_distance 2 = max_exact: no bias beyond the exact buckets), P=4 F=0",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=4,
                relative_position_embedding=r,
            ),
            ours("DotProductSelfAttention", D, heads, units, 4, 0, relative_position_embedding=o),
            (D,),
        )
    )
    # q/k networks (RoPE).
    configs.append(
        Config(
            "RoPE query/key networks, P=3 F=0",
            ref(
                "DotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=3,
                query_network=ref("ApplyRotaryPositionalEncoding", max_wavelength=100.0),
                key_network=ref("ApplyRotaryPositionalEncoding", max_wavelength=100.0),
            ),
            ours(
                "DotProductSelfAttention",
                D,
                heads,
                units,
                3,
                0,
                query_network=ours("ApplyRotaryPositionalEncoding", 100.0),
                key_network=ours("ApplyRotaryPositionalEncoding", 100.0),
            ),
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
                ref(
                    "LocalDotProductSelfAttention",
                    num_heads=heads,
                    units_per_head=units,
                    block_size=block,
                    max_past_horizon=past,
                    max_future_horizon=future,
                ),
                ours("LocalDotProductSelfAttention", D, heads, units, block, past, future),
                (D,),
            )
        )
    configs.append(
        Config(
            "block=4 P=3 F=1, sinks x2, soft cap 3",
            ref(
                "LocalDotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                block_size=4,
                max_past_horizon=3,
                max_future_horizon=1,
                num_sink_embeddings=2,
                attention_logits_soft_cap=3.0,
            ),
            ours(
                "LocalDotProductSelfAttention",
                D,
                heads,
                units,
                4,
                3,
                1,
                num_sink_embeddings=2,
                attention_logits_soft_cap=3.0,
            ),
            (D,),
        )
    )
    configs.append(
        Config(
            "block=3 P=3 F=0, sink scalars, per-dim scales",
            ref(
                "LocalDotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                block_size=3,
                max_past_horizon=3,
                use_sink_scalars=True,
                per_dim_scale=True,
                per_dim_key_scale=True,
            ),
            ours(
                "LocalDotProductSelfAttention",
                D,
                heads,
                units,
                3,
                3,
                0,
                use_sink_scalars=True,
                per_dim_scale=True,
                per_dim_key_scale=True,
            ),
            (D,),
        )
    )
    r, o = _txl(heads, units, 3, 0)
    configs.append(
        Config(
            "TransformerXL, block=4 P=3 F=0",
            ref(
                "LocalDotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                block_size=4,
                max_past_horizon=3,
                relative_position_embedding=r,
            ),
            ours("LocalDotProductSelfAttention", D, heads, units, 4, 3, 0, relative_position_embedding=o),
            (D,),
        )
    )
    r, o = _txl(heads, units, 2, 2)
    configs.append(
        Config(
            "TransformerXL, block=3 P=2 F=2 (layer only: the reference cannot step relative positions with lookahead)",
            ref(
                "LocalDotProductSelfAttention",
                num_heads=heads,
                units_per_head=units,
                block_size=3,
                max_past_horizon=2,
                max_future_horizon=2,
                relative_position_embedding=r,
            ),
            ours("LocalDotProductSelfAttention", D, heads, units, 3, 2, 2, relative_position_embedding=o),
            (D,),
            check_step=False,
        )
    )
    return [LayerCase("LocalDotProductSelfAttention", configs, group="attention")]


def _int_constants(**spec: tuple[str, int]) -> Any:
    """Integer [B, T] constants: ``name=("positions"|"segments", high)``, as arrays or Sequences."""

    def make(rng: np.random.Generator, batch: int, t: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (kind, high) in spec.items():
            if kind.startswith("positions"):
                values = np.broadcast_to(np.arange(t, dtype=np.int32) * high, (batch, t)).copy()
            else:
                values = np.sort(rng.integers(0, high, size=(batch, t)), axis=1).astype(np.int32)
            if kind.endswith("sequence"):
                out[name] = ("sequence", values, np.ones((batch, t), dtype=bool))
            else:
                out[name] = values
        return out

    return make


def _v2_cases() -> list[LayerCase]:
    configs: list[Config] = []
    heads, units = 4, 3
    for past, future in ((3, 0), (3, 2), (0, 2), (-1, 0), (-1, -1), (2, -1)):
        configs.append(
            Config(
                f"P={past} F={future}",
                ref(
                    "DotProductSelfAttentionV2",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=past,
                    max_future_horizon=future,
                ),
                ours("DotProductSelfAttentionV2", D, heads, units, past, future),
                (D,),
            )
        )
    configs.append(
        Config(
            "GQA 4/2 (flash grouping), separate, soft cap 3, per-dim scale, P=3 F=1",
            ref(
                "DotProductSelfAttentionV2",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=3,
                max_future_horizon=1,
                num_kv_heads=2,
                input_projection=_proj("separate"),
                attention_logits_soft_cap=3.0,
                per_dim_scale=True,
            ),
            ours(
                "DotProductSelfAttentionV2",
                D,
                heads,
                units,
                3,
                1,
                2,
                input_projection="separate",
                attention_logits_soft_cap=3.0,
                per_dim_scale=True,
            ),
            (D,),
        )
    )
    configs.append(
        Config(
            "GQA 4/2, query + shared key/value, flash block sizes 4/3, P=4 F=0, 2 blocks/step",
            ref(
                "DotProductSelfAttentionV2",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=4,
                num_kv_heads=2,
                input_projection=_proj("query_and_shared_key_value"),
                flash_attention_query_block_size=4,
                flash_attention_key_block_size=3,
            ),
            ours(
                "DotProductSelfAttentionV2",
                D,
                heads,
                units,
                4,
                0,
                2,
                input_projection="query_and_shared_key_value",
                flash_attention_query_block_size=4,
                flash_attention_key_block_size=3,
            ),
            (D,),
            blocks_per_step=2,
        )
    )
    configs.append(
        Config(
            "segment ids + positions (x2) from constants, P=2 F=1 (layer only: the reference reads these as "
            "arrays, which step_by_step cannot stream)",
            ref(
                "DotProductSelfAttentionV2",
                num_heads=heads,
                units_per_head=units,
                max_past_horizon=2,
                max_future_horizon=1,
                segment_ids_name="seg",
                position_name="pos",
            ),
            ours("DotProductSelfAttentionV2", D, heads, units, 2, 1, segment_ids_name="seg", position_name="pos"),
            (D,),
            constants=_int_constants(seg=("segments", 3), pos=("positions", 2)),
            check_step=False,
        )
    )
    return [LayerCase("DotProductSelfAttentionV2", configs, group="attention")]


def _blockwise_cases() -> list[LayerCase]:
    configs: list[Config] = []
    heads, units = 2, 3
    for block, past, future in ((2, 1, 0), (3, 1, 1), (2, 0, 1), (3, 2, 0), (2, -1, 0), (2, 1, -1), (1, 2, 1)):
        configs.append(
            Config(
                f"block={block} past_blocks={past} future_blocks={future}",
                ref(
                    "BlockwiseDotProductSelfAttention",
                    block_size=block,
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon_blocks=past,
                    max_future_horizon_blocks=future,
                ),
                ours("BlockwiseDotProductSelfAttention", D, block, heads, units, past, future),
                (D,),
                time=14,
            )
        )
    configs.append(
        Config(
            "GQA 4/2, separate, soft cap 2, per-dim scale, block=3 1/1, 2 blocks/step",
            ref(
                "BlockwiseDotProductSelfAttention",
                block_size=3,
                num_heads=4,
                units_per_head=units,
                max_past_horizon_blocks=1,
                max_future_horizon_blocks=1,
                num_kv_heads=2,
                input_projection=_proj("separate"),
                attention_logits_soft_cap=2.0,
                per_dim_scale=True,
            ),
            ours(
                "BlockwiseDotProductSelfAttention",
                D,
                3,
                4,
                units,
                1,
                1,
                2,
                input_projection="separate",
                attention_logits_soft_cap=2.0,
                per_dim_scale=True,
            ),
            (D,),
            time=15,
            blocks_per_step=2,
        )
    )
    # No segment-id/position case: sequence-layers 0.2's Blockwise reads them with get_source (a
    # Sequence) and then indexes the Sequence like an array, which raises; sl accepts a [B, T] tensor
    # or Sequence (tested in packages/sl-attention/tests).
    return [LayerCase("BlockwiseDotProductSelfAttention", configs, group="attention")]


def _cross_cases() -> list[LayerCase]:
    heads, units = 3, 4
    configs: list[Config] = []
    base = {"source_name": "source", "num_heads": heads, "units_per_head": units}
    for label, rkw, okw in (
        ("default (query + key/value)", {}, {}),
        (
            "separate, bias",
            {"input_projection": _proj("separate"), "use_bias": True},
            {"input_projection": "separate", "bias": True},
        ),
        (
            "query + shared key/value",
            {"input_projection": _proj("query_and_shared_key_value")},
            {"input_projection": "query_and_shared_key_value"},
        ),
        (
            "soft cap 3, per-dim scales, query_scale 0.5",
            {"attention_logits_soft_cap": 3.0, "per_dim_scale": True, "per_dim_key_scale": True, "query_scale": 0.5},
            {"attention_logits_soft_cap": 3.0, "per_dim_scale": True, "per_dim_key_scale": True, "query_scale": 0.5},
        ),
        ("sink embeddings x2", {"num_sink_embeddings": 2}, {"num_sink_embeddings": 2}),
        ("sink scalars", {"use_sink_scalars": True}, {"use_sink_scalars": True}),
        ("zero_fully_masked", {"zero_fully_masked": True}, {"zero_fully_masked": True}),
    ):
        configs.append(
            Config(
                label,
                ref("DotProductAttention", **base, **rkw),
                ours("DotProductAttention", D, heads, units, "source", S_D, **okw),
                (D,),
                constants=_source(time=7),
            )
        )
    for name, (r, o) in (("Shaw(4, 4)", _shaw(4, 4, heads, units)), ("T5(8, bidirectional)", _t5(8, heads, True))):
        configs.append(
            Config(
                f"{name} relative positions",
                ref("DotProductAttention", **base, relative_position_embedding=r),
                ours("DotProductAttention", D, heads, units, "source", S_D, relative_position_embedding=o),
                (D,),
                constants=_source(time=9),
            )
        )
    configs.append(
        Config(
            "RoPE query network",
            ref("DotProductAttention", **base, query_network=ref("ApplyRotaryPositionalEncoding", max_wavelength=50.0)),
            ours(
                "DotProductAttention",
                D,
                heads,
                units,
                "source",
                S_D,
                query_network=ours("ApplyRotaryPositionalEncoding", 50.0),
            ),
            (D,),
            constants=_source(time=6),
            random_mask=False,
        )
    )
    multi = []
    for label, rkw, okw, names in (
        ("one source", {}, {}, ("a",)),
        ("two sources", {}, {}, ("a", "b")),
        (
            "two sources, GQA 4/2 (flash grouping), soft cap 4, per-dim scale",
            {"num_heads": 4, "num_kv_heads": 2, "attention_logits_soft_cap": 4.0, "per_dim_scale": True},
            {"num_heads": 4, "num_kv_heads": 2, "attention_logits_soft_cap": 4.0, "per_dim_scale": True},
            ("a", "b"),
        ),
        (
            "two sources, separate projection",
            {"input_projection": _proj("separate")},
            {"input_projection": "separate"},
            ("a", "b"),
        ),
    ):
        r_heads = rkw.pop("num_heads", heads)
        o_heads = okw.pop("num_heads", heads)
        multi.append(
            Config(
                label,
                ref(
                    "MultiSourceDotProductAttention", source_names=names, num_heads=r_heads, units_per_head=units, **rkw
                ),
                ours("MultiSourceDotProductAttention", D, o_heads, units, list(names), S_D, **okw),
                (D,),
                constants=_sources(*names),
            )
        )
    return [
        LayerCase("DotProductAttention", configs, group="attention"),
        LayerCase("MultiSourceDotProductAttention", multi, group="attention"),
    ]


def _streaming_cases() -> list[LayerCase]:
    heads, units = 2, 3
    out = []
    for local in (False, True):
        name = "StreamingLocalDotProductAttention" if local else "StreamingDotProductAttention"
        configs: list[Config] = []
        grid = ((1, 0), (3, 0), (3, 2), (2, 4)) if not local else ((1, 0), (3, 2), (4, 1))
        for past, future in grid:
            block = {"block_size": 3} if local else {}
            oblock = (3,) if local else ()
            configs.append(
                Config(
                    f"P={past} F={future}" + (", block=3" if local else ""),
                    ref(
                        name,
                        source_name="source",
                        num_heads=heads,
                        units_per_head=units,
                        max_past_horizon=past,
                        max_future_horizon=future,
                        **block,
                    ),
                    ours(name, D, heads, units, "source", *oblock, past, future, S_D),
                    (D,),
                    constants=_source(streamed=True, holes=False),
                    stream_constants=True,
                )
            )
        configs.append(
            Config(
                "P=2 F=1, source with invalid steps" + (", block=3" if local else ""),
                ref(
                    name,
                    source_name="source",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=2,
                    max_future_horizon=1,
                    **({"block_size": 3} if local else {}),
                ),
                ours(name, D, heads, units, "source", *((3,) if local else ()), 2, 1, S_D),
                (D,),
                constants=_source(streamed=True),
                stream_constants=True,
                known_difference=FULLY_MASKED,
                known_scope=("layer", "step"),
            )
        )
        block = {"block_size": 4} if local else {}
        oblock = (4,) if local else ()
        configs.append(
            Config(
                "P=3 F=2, sinks x2, soft cap 3, per-dim scales" + (", block=4" if local else ""),
                ref(
                    name,
                    source_name="source",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=3,
                    max_future_horizon=2,
                    num_sink_embeddings=2,
                    attention_logits_soft_cap=3.0,
                    per_dim_scale=True,
                    per_dim_key_scale=True,
                    **block,
                ),
                ours(
                    name,
                    D,
                    heads,
                    units,
                    "source",
                    *oblock,
                    3,
                    2,
                    S_D,
                    num_sink_embeddings=2,
                    attention_logits_soft_cap=3.0,
                    per_dim_scale=True,
                    per_dim_key_scale=True,
                ),
                (D,),
                constants=_source(streamed=True),
                stream_constants=True,
            )
        )
        configs.append(
            Config(
                "P=3 F=1, sink scalars, separate projection" + (", block=4" if local else ""),
                ref(
                    name,
                    source_name="source",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=3,
                    max_future_horizon=1,
                    use_sink_scalars=True,
                    input_projection=_proj("separate"),
                    **block,
                ),
                ours(
                    name,
                    D,
                    heads,
                    units,
                    "source",
                    *oblock,
                    3,
                    1,
                    S_D,
                    use_sink_scalars=True,
                    input_projection="separate",
                ),
                (D,),
                constants=_source(streamed=True),
                stream_constants=True,
            )
        )
        configs.append(
            Config(
                "P=2 F=2 without the query delay buffer (raw step outputs)" + (", block=4" if local else ""),
                ref(
                    name,
                    source_name="source",
                    num_heads=heads,
                    units_per_head=units,
                    max_past_horizon=2,
                    max_future_horizon=2,
                    use_query_delay_buffer=False,
                    **block,
                ),
                ours(name, D, heads, units, "source", *oblock, 2, 2, S_D, use_query_delay_buffer=False),
                (D,),
                constants=_source(streamed=True, holes=False),
                stream_constants=True,
            )
        )
        if local:
            r, o = _txl(heads, units, 3, 0)
            configs.append(
                Config(
                    "TransformerXL, P=3 F=0, block=4",
                    ref(
                        name,
                        source_name="source",
                        num_heads=heads,
                        units_per_head=units,
                        max_past_horizon=3,
                        block_size=4,
                        relative_position_embedding=r,
                    ),
                    ours(name, D, heads, units, "source", 4, 3, 0, S_D, relative_position_embedding=o),
                    (D,),
                    constants=_source(streamed=True),
                    stream_constants=True,
                )
            )
        out.append(LayerCase(name, configs, group="attention"))
    return out


def _gmm_cases() -> list[LayerCase]:
    configs: list[Config] = []
    for monotonic in (False, True):
        for label, rkw, okw in (
            ("", {}, {}),
            (
                ", max_offset 2, offset/scale biases, no output bias",
                {"max_offset": 2.0, "init_offset_bias": 0.5, "init_scale_bias": 1.0, "output_use_bias": False},
                {"max_offset": 2.0, "init_offset_bias": 0.5, "init_scale_bias": 1.0, "output_bias": False},
            ),
        ):
            configs.append(
                Config(
                    f"{'monotonic' if monotonic else 'not monotonic'}{label}",
                    ref(
                        "GmmAttention",
                        source_name="source",
                        num_heads=2,
                        units_per_head=3,
                        num_components=4,
                        monotonic=monotonic,
                        **rkw,
                    ),
                    ours("GmmAttention", D, 2, 3, 4, "source", monotonic, S_D, **okw),
                    (D,),
                    constants=_source(time=9),
                    # Monotonic: the reference also advances the means on invalid query steps; sl does
                    # not (see GmmAttention's docstring). They agree for end padding (length masks).
                    random_mask=not monotonic,
                    rtol=1e-4,
                    atol=1e-4,
                )
            )
    return [LayerCase("GmmAttention", configs, group="attention")]


def cases() -> list[LayerCase]:
    return [
        *_dpsa_cases(),
        *_local_cases(),
        *_v2_cases(),
        *_blockwise_cases(),
        *_cross_cases(),
        *_streaming_cases(),
        *_gmm_cases(),
    ]
