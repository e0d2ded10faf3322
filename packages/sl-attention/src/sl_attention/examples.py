"""sl-attention's example layers for the conformance kit (``sl_example_layers``).

Every layer appears in small configurations covering its options (the full horizon grid,
``P`` in {0, 3, -1} x ``F`` in {0, 2, -1}, runs in ``tests/test_streaming.py``): step block
sizes 1 and 3, relative positions
(also with lookahead in step mode, beyond the reference), grouped key/value heads, the
projection layouts, sinks, soft cap, per-dimension scales, the preallocated cache of an
unbounded past (beyond the reference), and layers behind a layer with step-wise latency
(``Serial(sl.Delay(2, delay_layer_output=False), layer)``: positions stay aligned).
The shared suite runs each in float32 (declared and random masks) and bfloat16, round-trips
its config, and compiles/exports its step.
"""

from __future__ import annotations

from typing import Any

import torch

from sl import combinators as c
from sl import layers as L
from sl.registry import LayerExample
from sl.types import Sequence
from sl_attention import layers as A

__all__ = ["example_layers"]

D = 6  # input channels
SD = 5  # source channels
TOL = {"rtol": 1e-5, "atol": 1e-5, "grad_rtol": 1e-4, "grad_atol": 1e-5}
STREAM = {**TOL, "stream_constants": True, "pad_constants": True}


def _source(*names: str, channels: int = SD, time: int | None = None, seed: int = 5) -> Any:
    """Sequence constants ``[B, time or T, channels]`` with random (non-contiguous) masks."""

    def make(batch: int, t: int) -> dict[str, Sequence]:
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for i, name in enumerate(names):
            length = t if time is None else time + i
            values = torch.randn((batch, length, channels), generator=gen)
            mask = torch.rand((batch, length), generator=gen) > 0.25
            out[name] = Sequence(values, mask).mask_invalid()
        return out

    return make


def _segments(batch: int, t: int) -> dict[str, Sequence]:
    gen = torch.Generator().manual_seed(9)
    ids = torch.sort(torch.randint(0, 3, (batch, t), generator=gen), dim=1).values.to(torch.int32)
    return {"segments": Sequence.from_values(ids)}


def _shaw(back: int, fwd: int, heads: int, units: int) -> dict[str, Any]:
    return {"kind": "Shaw", "max_backward": back, "max_forward": fwd, "num_heads": heads, "units_per_head": units}


def _t5(buckets: int, heads: int, bidirectional: bool) -> dict[str, Any]:
    return {"kind": "T5", "num_buckets": buckets, "num_heads": heads, "bidirectional": bidirectional, "max_distance": 8}


def _txl(heads: int, units: int, back: int, fwd: int) -> dict[str, Any]:
    return {
        "kind": "TransformerXL",
        "num_heads": heads,
        "units_per_head": units,
        "max_backward": back,
        "max_forward": fwd,
        "position_bias_dim": 4,
    }


def _self_attention() -> list[LayerExample]:
    DPSA = A.DotProductSelfAttention
    ex = [
        LayerExample(DPSA(D, 2, 3, 3, 0), (D,), contract=TOL, name="DPSA(P=3, F=0)"),
        LayerExample(DPSA(D, 2, 3, 3, 2), (D,), contract=TOL, random_mask=True, name="DPSA(P=3, F=2)"),
        LayerExample(DPSA(D, 2, 3, -1, 0, max_cache_length=256), (D,), contract=TOL, name="DPSA(P=-1, F=0, cache)"),
        LayerExample(
            DPSA(D, 4, 3, 3, 2, 2, input_projection="separate"), (D,), contract=TOL, name="DPSA(GQA 4/2, separate)"
        ),
        LayerExample(
            DPSA(D, 4, 3, 3, 0, 1, input_projection="query_and_shared_key_value", use_sink_scalars=True),
            (D,),
            contract=TOL,
            name="DPSA(GQA 4/1, shared K/V, sink scalars)",
        ),
        LayerExample(
            DPSA(D, 2, 3, 3, 2, relative_position_embedding=_shaw(3, 2, 2, 3)),
            (D,),
            contract=TOL,
            name="DPSA(Shaw, P=3, F=2: relative positions + lookahead)",
        ),
        LayerExample(
            DPSA(D, 2, 3, -1, 0, max_cache_length=256, relative_position_embedding=_t5(8, 2, False)),
            (D,),
            contract=TOL,
            name="DPSA(T5, P=-1 cache)",
        ),
        LayerExample(
            DPSA(D, 2, 3, 3, 2, relative_position_embedding=_txl(2, 3, 3, 2), input_projection="query_and_key_value"),
            (D,),
            contract=TOL,
            name="DPSA(TransformerXL, P=3, F=2)",
        ),
        LayerExample(
            DPSA(
                D,
                2,
                3,
                2,
                1,
                attention_logits_soft_cap=3.0,
                num_sink_embeddings=2,
                per_dim_scale=True,
                per_dim_key_scale=True,
                query_scale=0.4,
            ),
            (D,),
            contract=TOL,
            name="DPSA(soft cap, sinks, per-dim scales)",
        ),
        LayerExample(
            DPSA(D, 2, 3, 3, 1, bias=True, share_kv_projection=True, zero_fully_masked=True, dropout=0.3),
            (D,),
            contract=TOL,
            name="DPSA(bias, shared K/V, zero_fully_masked, dropout)",
        ),
        LayerExample(
            DPSA(
                D,
                2,
                4,
                3,
                1,
                query_network=L.ApplyRotaryPositionalEncoding(100.0),
                key_network=L.ApplyRotaryPositionalEncoding(100.0),
            ),
            (D,),
            contract=TOL,
            name="DPSA(RoPE query/key networks)",
        ),
        LayerExample(
            c.Serial(
                L.Delay(2, delay_layer_output=False),
                DPSA(D, 2, 3, -1, 1, max_cache_length=256, relative_position_embedding=_shaw(4, 1, 2, 3)),
            ),
            (D,),
            contract=TOL,
            random_mask=True,
            name="Serial(Delay(2), DPSA(P=-1 cache, Shaw))",
        ),
        LayerExample(
            A.LocalDotProductSelfAttention(D, 2, 3, 4, 2, 2, relative_position_embedding=_txl(2, 3, 2, 2)),
            (D,),
            contract=TOL,
            name="Local(block=4, P=2, F=2, TransformerXL)",
        ),
        LayerExample(
            A.LocalDotProductSelfAttention(D, 2, 3, 2, 3, 1, num_sink_embeddings=1, attention_logits_soft_cap=4.0),
            (D,),
            contract=TOL,
            random_mask=True,
            name="Local(block=2, sinks, soft cap)",
        ),
    ]
    return ex


def _flash() -> list[LayerExample]:
    V2 = A.DotProductSelfAttentionV2
    BW = A.BlockwiseDotProductSelfAttention
    return [
        LayerExample(
            V2(D, 4, 3, 3, 2, 2, input_projection="separate"), (D,), contract=TOL, name="V2(GQA 4/2, P=3, F=2)"
        ),
        LayerExample(
            V2(D, 2, 3, -1, 0, max_cache_length=256, attention_logits_soft_cap=3.0, per_dim_scale=True),
            (D,),
            contract=TOL,
            name="V2(P=-1 cache, soft cap)",
        ),
        LayerExample(
            V2(D, 2, 3, 2, 1, segment_ids_name="segments", position_name="segments_positions"),
            (D,),
            # The band is in position units (2 per step here): the declared field is an upper bound.
            contract={**STREAM, "receptive_field_relaxed": True},
            constants=lambda b, t: {
                **_segments(b, t),
                "segments_positions": Sequence.from_values(
                    (torch.arange(t, dtype=torch.int32) * 2)[None].expand(b, t).contiguous()
                ),
            },
            name="V2(segment ids, positions from constants)",
        ),
        LayerExample(BW(D, 3, 2, 3, 1, 1), (D,), contract=TOL, time=15, name="Blockwise(block=3, 1/1)"),
        LayerExample(
            BW(D, 2, 4, 3, -1, 1, 2, max_cache_length=256),
            (D,),
            contract=TOL,
            time=14,
            name="Blockwise(block=2, past -1 cache, GQA)",
        ),
        LayerExample(
            BW(D, 2, 2, 3, 1, 0, segment_ids_name="segments"),
            (D,),
            contract=STREAM,
            constants=_segments,
            time=14,
            name="Blockwise(segment ids)",
        ),
        LayerExample(
            c.Serial(L.Delay(2, delay_layer_output=False), BW(D, 2, 2, 3, 1, 1)),
            (D,),
            contract=TOL,
            time=14,
            random_mask=True,
            name="Serial(Delay(2), Blockwise(block=2))",
        ),
    ]


def _cross() -> list[LayerExample]:
    DPA = A.DotProductAttention
    return [
        LayerExample(DPA(D, 2, 3, "source", SD), (D,), constants=_source("source", time=7), contract=TOL, name="DPA"),
        LayerExample(
            DPA(
                D,
                2,
                4,
                "source",
                SD,
                relative_position_embedding=_shaw(4, 4, 2, 4),
                num_sink_embeddings=1,
                query_network=L.ApplyRotaryPositionalEncoding(50.0),
                input_projection="separate",
            ),
            (D,),
            constants=_source("source", time=7),
            contract=TOL,
            name="DPA(Shaw, sinks, RoPE query network)",
        ),
        LayerExample(
            c.Serial(
                L.Delay(2, delay_layer_output=False),
                DPA(D, 2, 3, "source", SD, relative_position_embedding=_t5(8, 2, True), recompute_kv_per_step=True),
            ),
            (D,),
            constants=_source("source", time=9),
            contract=TOL,
            random_mask=True,
            name="Serial(Delay(2), DPA(T5, recompute K/V))",
        ),
        LayerExample(
            A.MultiSourceDotProductAttention(D, 4, 3, ["a", "b"], SD, 2, attention_logits_soft_cap=3.0),
            (D,),
            constants=_source("a", "b", time=6),
            contract=TOL,
            name="MultiSource(2 sources, GQA, soft cap)",
        ),
        LayerExample(
            A.StreamingDotProductAttention(D, 2, 3, "source", 3, 2, SD),
            (D,),
            constants=_source("source"),
            contract=STREAM,
            name="Streaming(P=3, F=2)",
        ),
        LayerExample(
            A.StreamingDotProductAttention(
                D, 2, 3, "source", 2, 2, SD, relative_position_embedding=_shaw(2, 2, 2, 3), use_sink_scalars=True
            ),
            (D,),
            constants=_source("source"),
            contract=STREAM,
            name="Streaming(Shaw + lookahead, sink scalars)",
        ),
        LayerExample(
            c.Serial(
                L.Delay(2, delay_layer_output=False),
                A.StreamingDotProductAttention(D, 2, 3, "source", 3, 2, SD, use_query_delay_buffer=False),
            ),
            (D,),
            constants=_source("source"),
            contract=STREAM,
            name="Serial(Delay(2), Streaming(no query delay buffer))",
        ),
        LayerExample(
            A.StreamingLocalDotProductAttention(D, 2, 3, "source", 3, 2, 1, SD, num_sink_embeddings=1),
            (D,),
            constants=_source("source"),
            contract=STREAM,
            name="StreamingLocal(block=3, P=2, F=1, sinks)",
        ),
        LayerExample(
            A.GmmAttention(D, 2, 3, 4, "source", False, SD),
            (D,),
            constants=_source("source", time=9),
            contract=TOL,
            name="Gmm",
        ),
        LayerExample(
            A.GmmAttention(D, 2, 3, 3, "source", True, SD, max_offset=1.5),
            (D,),
            constants=_source("source", time=9),
            contract=TOL,
            random_mask=True,
            name="Gmm(monotonic)",
        ),
    ]


def example_layers() -> list[LayerExample]:
    return [*_self_attention(), *_flash(), *_cross()]
