"""Omitted input sizes are inferred at the first call (sl.lazy), recorded in the config, and read
from a state dict loaded before any call; an omitted source size comes from the source then."""

from __future__ import annotations

import json

import pytest
import torch

import sl
from sl.testing import random_sequence, verify_contract
from sl_attention import (
    BlockwiseDotProductSelfAttention,
    DotProductAttention,
    DotProductSelfAttention,
    GmmAttention,
    MultiSourceDotProductAttention,
    StreamingDotProductAttention,
)

X = random_sequence(2, 9, 6, random_mask=True, generator=torch.Generator().manual_seed(0))
SRC = {"s": random_sequence(2, 5, 4, generator=torch.Generator().manual_seed(1))}
STREAMED = {"s": random_sequence(2, 9, 4, generator=torch.Generator().manual_seed(2))}

CASES = [
    (
        "DPSA",
        lambda: DotProductSelfAttention(num_heads=2, units_per_head=3, max_past_horizon=3, max_future_horizon=1),
        None,
        None,
    ),
    ("DPA", lambda: DotProductAttention(num_heads=2, units_per_head=3, source_name="s"), SRC, 4),
    ("MultiSource", lambda: MultiSourceDotProductAttention(num_heads=2, units_per_head=3, source_names=["s"]), SRC, 4),
    (
        "Streaming",
        lambda: StreamingDotProductAttention(num_heads=2, units_per_head=3, source_name="s", max_past_horizon=2),
        STREAMED,
        4,
    ),
    (
        "Gmm",
        lambda: GmmAttention(num_heads=2, units_per_head=3, num_components=2, source_name="s", monotonic=True),
        SRC,
        None,
    ),
    (
        "Blockwise",
        lambda: BlockwiseDotProductSelfAttention(
            block_size=3, num_heads=2, units_per_head=3, max_past_horizon_blocks=1
        ),
        None,
        None,
    ),
]


@pytest.mark.parametrize("name,make,constants,source_size", CASES, ids=[c[0] for c in CASES])
def test_lazy_input_size(name, make, constants, source_size):
    layer = make().eval()
    assert layer.input_size is None
    streamed = name == "Streaming"
    verify_contract(
        layer,
        X,
        training=False,
        constants=constants,
        rtol=1e-5,
        atol=1e-5,
        stream_constants=streamed,
        pad_constants=streamed,
        test_receptive_field=False,
    )
    config = layer.get_config()
    assert config["input_size"] == 6
    assert config.get("source_size") == source_size
    eager = sl.from_config(json.loads(json.dumps(config)))
    eager.load_state_dict(layer.state_dict())
    lazy = sl.from_config({**config, "input_size": None})
    lazy.load_state_dict(layer.state_dict())  # builds from the checkpoint's projection
    assert lazy.input_size == 6
    expected = layer.layer(X, constants=constants).values
    for other in (eager, lazy):
        torch.testing.assert_close(other.eval().layer(X, constants=constants).values, expected)


def test_missing_sizes_are_errors():
    with pytest.raises(TypeError, match=r"DotProductSelfAttention needs num_heads and units_per_head"):
        DotProductSelfAttention(16)
    with pytest.raises(TypeError, match=r"GmmAttention needs monotonic=True or False"):
        GmmAttention(6, 2, 3, 2, "s")
    with pytest.raises(TypeError, match=r"MultiSourceDotProductAttention needs source_names"):
        MultiSourceDotProductAttention(6, 2, 3)
