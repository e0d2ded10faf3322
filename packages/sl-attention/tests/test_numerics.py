"""Agreement with a naive float64 attention written in the tests (tests/naive.py), on every
computation path: the fused kernel, the explicit (reference-arithmetic) path, the blocked
local computation, and step mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from naive import naive_self_attention

import sl
from sl.testing import random_sequence
from sl_attention import (
    DotProductSelfAttention,
    LocalDotProductSelfAttention,
    ShawRelativePositionEmbedding,
    T5RelativePositionEmbedding,
    TransformerXLRelativePositionEmbedding,
)


def _randomize(layer: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.7)


def _x(t: int = 11, d: int = 5, batch: int = 2, seed: int = 1) -> sl.Sequence:
    return random_sequence(batch, t, d, random_mask=True, generator=torch.Generator().manual_seed(seed))


CONFIGS = [
    ("P=3 F=0", {"max_past_horizon": 3}),
    ("P=2 F=2", {"max_past_horizon": 2, "max_future_horizon": 2}),
    ("P=-1 F=-1", {"max_past_horizon": -1, "max_future_horizon": -1}),
    ("P=-1 F=1", {"max_past_horizon": -1, "max_future_horizon": 1}),
    (
        "GQA 4/2 separate",
        {
            "num_heads": 4,
            "num_kv_heads": 2,
            "max_past_horizon": 3,
            "max_future_horizon": 1,
            "input_projection": "separate",
        },
    ),
    (
        "GQA 4/1 shared kv, bias",
        {
            "num_heads": 4,
            "num_kv_heads": 1,
            "max_past_horizon": -1,
            "input_projection": "query_and_shared_key_value",
            "bias": True,
        },
    ),
    ("combined shared kv", {"max_past_horizon": 2, "max_future_horizon": 2, "share_kv_projection": True}),
    ("soft cap", {"max_past_horizon": 3, "max_future_horizon": 1, "attention_logits_soft_cap": 1.5}),
    ("sinks", {"max_past_horizon": 3, "max_future_horizon": 1, "num_sink_embeddings": 2}),
    (
        "sink scalars GQA",
        {
            "num_heads": 4,
            "num_kv_heads": 2,
            "max_past_horizon": 2,
            "use_sink_scalars": True,
            "input_projection": "query_and_key_value",
        },
    ),
    (
        "per-dim scales + query_scale",
        {"max_past_horizon": 3, "per_dim_scale": True, "per_dim_key_scale": True, "query_scale": 0.3},
    ),
]


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_layer_matches_naive(name, kwargs):
    kwargs = dict(kwargs)
    heads = kwargs.pop("num_heads", 3)
    layer = DotProductSelfAttention(5, heads, 4, **kwargs).eval()
    _randomize(layer)
    x = _x()
    ctx, probs = naive_self_attention(layer, x, layer.max_past_horizon, layer.max_future_horizon)
    valid = x.mask[:, :, None, None]
    y = layer.layer(x)
    torch.testing.assert_close(
        torch.where(valid, y.values.double(), 0), torch.where(valid, ctx, 0), rtol=1e-5, atol=1e-5
    )
    y2, emits = layer.layer_with_emits(x)
    torch.testing.assert_close(
        torch.where(valid, y2.values.double(), 0), torch.where(valid, ctx, 0), rtol=1e-5, atol=1e-5
    )
    p = emits.probabilities
    assert p.values.shape == probs.shape
    torch.testing.assert_close(
        torch.where(valid, p.values.double(), 0), torch.where(valid, probs, 0), rtol=1e-5, atol=1e-5
    )


RELPOS = [
    ("Shaw", lambda: ShawRelativePositionEmbedding(3, 2, 3, 4)),
    ("T5 bidirectional", lambda: T5RelativePositionEmbedding(10, 3, True, max_distance=7)),
    ("T5 causal", lambda: T5RelativePositionEmbedding(6, 3, False, max_distance=5)),
    ("TransformerXL", lambda: TransformerXLRelativePositionEmbedding(3, 4, 3, 2, position_bias_dim=6)),
]


@pytest.mark.parametrize("name,make", RELPOS, ids=[r[0] for r in RELPOS])
@pytest.mark.parametrize("local", [False, True], ids=["full", "local"])
def test_relative_positions_match_naive(name, make, local):
    rpe = make()
    if local:
        layer = LocalDotProductSelfAttention(5, 3, 4, 4, 3, 2, relative_position_embedding=rpe).eval()
    else:
        layer = DotProductSelfAttention(5, 3, 4, 3, 2, relative_position_embedding=rpe).eval()
    _randomize(layer, seed=3)
    x = _x(t=13)
    ctx, _ = naive_self_attention(layer, x, 3, 2)
    valid = x.mask[:, :, None, None]
    for y in (layer.layer(x), sl.step_by_step(layer, x)[0]):
        torch.testing.assert_close(
            torch.where(valid, y.values.double(), 0), torch.where(valid, ctx, 0), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("past,future", [(4, 0), (3, 2), (0, 3)])
def test_blocked_path_matches_naive(past, future):
    """Long inputs with a finite band take the blocked computation (T * (P + F + block) memory)."""
    layer = DotProductSelfAttention(5, 2, 4, past, future).eval()
    _randomize(layer, seed=5)
    t = 100
    assert layer._layer_block(t, need_probs=False) is not None
    x = _x(t=t, batch=1, seed=7)
    ctx, _ = naive_self_attention(layer, x, past, future)
    valid = x.mask[:, :, None, None]
    y = layer.layer(x)
    torch.testing.assert_close(
        torch.where(valid, y.values.double(), 0), torch.where(valid, ctx, 0), rtol=1e-5, atol=1e-5
    )


def test_local_equals_banded_self_attention():
    """LocalDotProductSelfAttention computes the same function as DotProductSelfAttention with the same band."""
    local = LocalDotProductSelfAttention(5, 2, 3, 4, 3, 2, num_sink_embeddings=1).eval()
    full = DotProductSelfAttention(5, 2, 3, 3, 2, num_sink_embeddings=1).eval()
    _randomize(local, seed=9)
    full.load_state_dict(local.state_dict())
    x = _x(t=17)
    sl.testing.assert_sequences_close(local.layer(x).mask_invalid(), full.layer(x).mask_invalid(), rtol=1e-5, atol=1e-5)


def test_fused_kernel_used_when_nothing_needs_the_logits(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = _x()
    DotProductSelfAttention(5, 2, 3, 3, 1).eval().layer(x)
    assert calls, "layer() without soft cap/sinks/emits should use F.scaled_dot_product_attention"
    calls.clear()
    layer = DotProductSelfAttention(5, 2, 3, 3, 1).eval()
    layer.layer_with_emits(x)
    DotProductSelfAttention(5, 2, 3, 3, 1, attention_logits_soft_cap=2.0).eval().layer(x)
    assert not calls, "probabilities and soft caps need the explicit path"
    state = layer.get_initial_state(2, x.channel_spec)
    layer.step(x[:, :1], state)
    assert calls, "step() uses the fused kernel too"


def test_matches_torch_multihead_attention():
    """The combined projection's in_proj_weight has torch.nn.MultiheadAttention's layout: loading an
    MHA's input projection gives the same attention (before MHA's output projection)."""
    e, heads = 8, 2
    mha = torch.nn.MultiheadAttention(e, heads, bias=True, batch_first=True).eval()
    with torch.no_grad():
        mha.out_proj.weight.copy_(torch.eye(e))
        mha.out_proj.bias.zero_()
    layer = DotProductSelfAttention(e, heads, e // heads, -1, -1, bias=True).eval()
    with torch.no_grad():
        layer.input_projection.in_proj_weight.copy_(mha.in_proj_weight)
        layer.input_projection.in_proj_bias.copy_(mha.in_proj_bias)
    x = torch.randn(2, 7, e)
    lengths = torch.tensor([7, 4])
    seq = sl.Sequence.from_lengths(x, lengths, is_masked=True)
    ours = layer.layer(seq).values.reshape(2, 7, e)
    theirs, _ = mha(seq.values, seq.values, seq.values, key_padding_mask=~seq.mask, need_weights=False)
    valid = seq.mask[:, :, None]
    torch.testing.assert_close(torch.where(valid, ours, 0), torch.where(valid, theirs, 0), rtol=1e-5, atol=1e-5)


def test_dropout_in_training():
    layer = DotProductSelfAttention(5, 2, 3, 3, 1, dropout=0.5).train()
    x = _x()
    torch.manual_seed(0)
    _, e1 = layer.layer_with_emits(x, training=True)
    torch.manual_seed(0)
    _, e2 = layer.layer_with_emits(x, training=True)
    torch.testing.assert_close(e1.probabilities.values, e2.probabilities.values)
    p = e1.probabilities.values[x.mask]
    assert bool((p == 0).any()) and float(p.max()) > 1.0  # dropped and rescaled by 1 / (1 - 0.5)
    _, e3 = layer.layer_with_emits(x, training=False)
    sums = e3.probabilities.values.sum(-1)[x.mask]
    torch.testing.assert_close(sums, torch.ones_like(sums))
    # broadcast across queries: one decision per key column
    shared = DotProductSelfAttention(5, 2, 3, -1, -1, dropout=0.5, broadcast_dropout_across_queries=True)
    with torch.no_grad():
        shared.input_projection.in_proj_weight.zero_()  # uniform probabilities
    full = sl.Sequence.from_values(torch.randn(1, 6, 5))
    _, e = shared.layer_with_emits(full, training=True)
    kept = e.probabilities.values[0] != 0  # [T, N, T]
    assert bool((kept == kept[:1]).all())


def test_probabilities_sum_to_one_step_and_layer():
    layer = DotProductSelfAttention(5, 2, 3, 2, 2, num_sink_embeddings=1).eval()
    x = _x()
    _, e = layer.layer_with_emits(x)
    sums = e.probabilities.values.sum(-1)[x.mask]
    torch.testing.assert_close(sums, torch.ones_like(sums))
    _y, _, es = sl.step_by_step(layer, x, with_emits=True)
    step_probs = es.probabilities
    assert step_probs.values.shape[-1] == 1 + 2 + 2 + 1  # sinks + past + future + block
    sums = step_probs.values.sum(-1)[step_probs.mask]
    torch.testing.assert_close(sums, torch.ones_like(sums))
