"""Construction, registry, configs, dtypes and checkpoint converters."""

from __future__ import annotations

import json

import pytest
import torch

import sl
import sl_attention
from sl.interop.flax import default_converters
from sl.registry import plugin_layers
from sl.testing import random_sequence, verify_contract
from sl_attention import (
    DotProductAttention,
    DotProductSelfAttention,
    ShawRelativePositionEmbedding,
    T5RelativePositionEmbedding,
    TransformerXLRelativePositionEmbedding,
)


def test_issue_construction_works_as_written():
    layer = sl.attention.DotProductSelfAttention(input_size=128, num_heads=8, units_per_head=16, max_future_horizon=2)
    assert isinstance(layer, DotProductSelfAttention)
    assert layer.input_latency == layer.output_latency == 2
    assert layer.get_output_shape((128,)) == (8, 16)
    # P = -1 (the default) with lookahead streams once a cache size is given.
    assert not layer.supports_step
    assert sl.attention.DotProductSelfAttention(128, 8, 16, max_future_horizon=2, max_cache_length=64).supports_step


def test_every_layer_registered_exported_and_convertible():
    layers = plugin_layers("attention")
    assert set(layers) == {
        "DotProductSelfAttention",
        "LocalDotProductSelfAttention",
        "DotProductSelfAttentionV2",
        "BlockwiseDotProductSelfAttention",
        "DotProductAttention",
        "MultiSourceDotProductAttention",
        "StreamingDotProductAttention",
        "StreamingLocalDotProductAttention",
        "GmmAttention",
    }
    converters = default_converters()
    for name, cls in layers.items():
        assert getattr(sl_attention, name) is cls
        assert converters.lookup(cls) is not None, name


@pytest.mark.parametrize(
    "rpe",
    [
        ShawRelativePositionEmbedding(2, 1, 2, 3),
        T5RelativePositionEmbedding(8, 2, True, max_distance=10),
        TransformerXLRelativePositionEmbedding(2, 3, 2, 1, 4, bias=False),
    ],
    ids=["shaw", "t5", "txl"],
)
def test_config_round_trip_with_relative_positions(rpe):
    layer = DotProductSelfAttention(
        5, 2, 3, 2, 1, relative_position_embedding=rpe, input_projection="QueryAndKeyValueProjection"
    )
    config = layer.get_config()
    assert config["relative_position_embedding"]["kind"] == rpe.kind
    assert config["input_projection"] == "query_and_key_value"
    rebuilt = sl.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt.relative_position_embedding) is type(rpe)
    assert rebuilt.get_config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}


def test_config_round_trip_cross_attention_with_networks():
    layer = DotProductAttention(
        5, 2, 4, "enc", 3, query_network=sl.ApplyRotaryPositionalEncoding(10.0), num_sink_embeddings=2
    )
    config = layer.get_config()
    rebuilt = sl.from_config(json.loads(json.dumps(config)))
    assert isinstance(rebuilt.query_network, type(layer.query_network))
    assert rebuilt.get_config() == config


def test_parameter_layout_follows_torch():
    layer = DotProductSelfAttention(8, 2, 4, 3, 0, bias=True)
    assert tuple(layer.input_projection.in_proj_weight.shape) == (3 * 2 * 4, 8)
    assert tuple(layer.input_projection.in_proj_bias.shape) == (24,)
    gqa = DotProductSelfAttention(8, 4, 2, 3, 0, num_kv_heads=2, input_projection="query_and_key_value")
    assert tuple(gqa.input_projection.q_proj_weight.shape) == (8, 8)
    assert tuple(gqa.input_projection.kv_proj_weight.shape) == (2 * 2 * 2, 8)


def test_float64_and_dtype_argument():
    layer = DotProductSelfAttention(
        5,
        2,
        3,
        3,
        2,
        relative_position_embedding={
            "kind": "Shaw",
            "max_backward": 3,
            "max_forward": 2,
            "num_heads": 2,
            "units_per_head": 3,
            "compute_dtype": None,
        },
        dtype=torch.float64,
    ).eval()
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    x = random_sequence(2, 9, 5, dtype=torch.float64, random_mask=True)
    y = verify_contract(layer, x, training=False, rtol=1e-10, atol=1e-10)
    assert y.dtype == torch.float64
    assert layer.get_config()["dtype"] == {"__dtype__": "float64"}


def test_mixed_precision_output_dtype():
    layer = DotProductSelfAttention(5, 2, 3, 3, 0).to(torch.bfloat16)
    x = random_sequence(1, 6, 5)
    assert layer.layer(x).dtype == torch.float32  # promotion of float32 input and bfloat16 parameters
    layer = DotProductSelfAttention(5, 2, 3, 3, 0, compute_dtype=torch.bfloat16)
    assert layer.layer(x).dtype == torch.bfloat16


def test_autocast():
    layer = DotProductSelfAttention(5, 2, 3, 3, 1).eval()
    x = random_sequence(2, 8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer.layer(x)
        ys, _ = sl.step_by_step(layer, x)
    torch.testing.assert_close(y.mask_invalid().values.float(), ys.mask_invalid().values.float(), rtol=2e-2, atol=2e-2)
