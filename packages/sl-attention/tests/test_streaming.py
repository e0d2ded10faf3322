"""Streaming: the contract over the horizon grid (with and without relative positions and grouped
heads), lookahead inside a pre-norm transformer block, the preallocated cache of an unbounded
past, positions behind upstream latency, and state checkpoints."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sl
from sl.testing import assert_sequences_close, random_sequence, tolerances, verify_contract
from sl_attention import (
    BlockwiseDotProductSelfAttention,
    DotProductSelfAttention,
    DotProductSelfAttentionV2,
    LocalDotProductSelfAttention,
    ShawRelativePositionEmbedding,
)

TOL = {"rtol": 1e-5, "atol": 1e-5, "grad_rtol": 1e-4, "grad_atol": 1e-5}
HORIZONS = [(p, f) for p, f in itertools.product((0, 3, -1), (0, 2, -1)) if (p, f) != (0, 0)]


def _x(t: int = 9, d: int = 5, seed: int = 0) -> sl.Sequence:
    return random_sequence(2, t, d, random_mask=True, generator=torch.Generator().manual_seed(seed))


def _dpsa(past: int, future: int, relpos: bool, gqa: bool) -> DotProductSelfAttention:
    heads, kv = (4, 2) if gqa else (2, None)
    rpe = ShawRelativePositionEmbedding(3, 2, heads, 3) if relpos else None
    cache = 32 if past == -1 else None
    return DotProductSelfAttention(
        5,
        heads,
        3,
        past,
        future,
        kv,
        relative_position_embedding=rpe,
        max_cache_length=cache,
        input_projection="separate" if gqa else None,
    )


@pytest.mark.parametrize("relpos,gqa", [(False, False), (True, True)], ids=["plain-mha", "shaw-gqa"])
@pytest.mark.parametrize("past,future", HORIZONS, ids=[f"P={p},F={f}" for p, f in HORIZONS])
def test_contract_grid(past, future, relpos, gqa):
    """verify_contract (random masks, 1- and 2-block steps, gradients, NaN padding, garbage rows,
    receptive field) for every horizon combination; steppable ones also step in 3-step blocks."""
    layer = _dpsa(past, future, relpos, gqa).eval()
    x = _x()
    assert layer.supports_step == (future >= 0)
    assert layer.input_latency == layer.output_latency == max(future, 0)
    y = verify_contract(layer, x, training=False, **TOL)
    if layer.supports_step:
        y3, _ = sl.step_by_step(layer, x, blocks_per_step=3)
        assert_sequences_close(y.mask_invalid(), y3.mask_invalid(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("past,future", HORIZONS, ids=[f"P={p},F={f}" for p, f in HORIZONS])
def test_contract_grid_bfloat16(past, future):
    """The horizon grid in bfloat16 (parameters and input), with grouped heads and relative positions."""
    layer = _dpsa(past, future, True, True).to(torch.bfloat16).eval()
    x = _x().to(torch.bfloat16)
    y = verify_contract(layer, x, training=False, test_receptive_field=False, **tolerances(torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_relative_positions_with_lookahead_step_like_layer():
    """Beyond the reference (which refuses the combination in step mode)."""
    for rpe in (
        {"kind": "T5", "num_buckets": 8, "num_heads": 2, "bidirectional": True, "max_distance": 6},
        {
            "kind": "TransformerXL",
            "num_heads": 2,
            "units_per_head": 3,
            "max_backward": 3,
            "max_forward": 2,
            "position_bias_dim": 4,
        },
    ):
        for layer in (
            DotProductSelfAttention(5, 2, 3, 3, 2, relative_position_embedding=rpe),
            LocalDotProductSelfAttention(5, 2, 3, 4, 3, 2, relative_position_embedding=rpe),
        ):
            assert layer.supports_step
            verify_contract(layer.eval(), _x(t=11), training=False, **TOL)


def _norm(d: int) -> sl.SequenceLayer:
    """A LayerNorm without parameters, written here (sl-attention does not depend on sl-conv)."""
    return sl.Lambda(lambda v: F.layer_norm(v, (d,)))


def test_pre_norm_transformer_block_with_lookahead():
    d, heads, units, future = 8, 2, 4, 2
    block = sl.Serial(
        sl.Residual(
            [_norm(d), DotProductSelfAttention(d, heads, units, 4, future), sl.DenseShaped((heads, units), (d,))],
            shortcut_layers=sl.Delay(future, delay_layer_output=False),
        ),
        sl.Residual([_norm(d), sl.Dense(d, 16, activation="relu"), sl.Dense(16, d)]),
    ).eval()
    assert block.input_latency == block.output_latency == future
    verify_contract(block, _x(t=12, d=d), training=False, **TOL)
    with pytest.raises(ValueError, match=r"Delay\(2, delay_layer_output=False\)"):
        sl.Residual([_norm(d), DotProductSelfAttention(d, heads, units, 4, future)])


def test_cache_overflow_raises_without_dropping_context():
    layer = DotProductSelfAttention(5, 2, 3, -1, 0, max_cache_length=5).eval()
    x = sl.Sequence.from_values(torch.randn(1, 8, 5))
    state = layer.get_initial_state(1, x.channel_spec)
    _y, state = layer.step(x[:, :5], state)  # exactly full
    with pytest.raises(ValueError, match=r"DotProductSelfAttention: the K/V cache is full: max_cache_length=5"):
        layer.step(x[:, 5:6], state)


def test_cache_holds_valid_steps_only():
    """Invalid steps (padding, an upstream layer's latency) take no cache slot."""
    layer = DotProductSelfAttention(5, 2, 3, -1, 1, max_cache_length=6).eval()
    mask = torch.tensor([[True, False, True, False, True, True, False, False, True, False, True, False]])
    x = sl.Sequence(torch.randn(1, 12, 5), mask)
    y_layer = layer.layer(x)
    y_step, state = sl.step_by_step(layer, x)  # 6 valid steps in 12 + 1 flush step: fits
    assert_sequences_close(y_layer.mask_invalid(), y_step.mask_invalid(), rtol=1e-5, atol=1e-5)
    assert int(state["count"][0]) == 6


def test_cache_overflow_checked_in_compiled_step():
    """Under torch.compile the check is an asynchronous device assertion (no host sync): the graph
    has no break, and an overflow still fails."""
    layer = DotProductSelfAttention(5, 2, 3, -1, 0, max_cache_length=3).eval()
    x = sl.Sequence.from_values(torch.randn(1, 2, 5))

    def step(xb, s):
        return layer.step(xb, s)

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    state = layer.get_initial_state(1, x.channel_spec)
    y, state = compiled(x, state)
    eager, _ = layer.step(x, layer.get_initial_state(1, x.channel_spec))
    torch.testing.assert_close(y.values, eager.values)
    with pytest.raises(Exception):  # noqa: B017 - the async assertion's error type is backend-specific
        compiled(x, state)


def test_positions_follow_upstream_latency():
    """Layers with an absolute time counter start it at -latency behind a layer with step-wise latency."""
    layer = BlockwiseDotProductSelfAttention(5, 2, 2, 3, 1, 1)
    state = layer.get_initial_state(2, ((5,), torch.float32))
    shifted = layer.shift_initial_state(state, 4)
    assert shifted["time"].tolist() == [-4, -4]
    with pytest.raises(ValueError, match="not a multiple of block_size=2"):
        sl.Serial(sl.Delay(3, delay_layer_output=False), layer).get_initial_state(2, ((5,), torch.float32))
    model = sl.Serial(sl.Delay(2, delay_layer_output=False), layer).eval()
    verify_contract(model, _x(t=12), training=False, **TOL)


def test_state_checkpoint_resumes_identically():
    layer = DotProductSelfAttention(
        5, 2, 3, 3, 2, relative_position_embedding=ShawRelativePositionEmbedding(3, 2, 2, 3)
    )
    layer.eval()
    x = _x(t=10)
    state = layer.get_initial_state(2, x.channel_spec)
    _, state = layer.step(x[:, :4], state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=True)
    a, _ = layer.step(x[:, 4:], state)
    b, _ = layer.step(x[:, 4:], restored)
    torch.testing.assert_close(a.values, b.values)
    assert torch.equal(a.mask, b.mask)


def test_v2_segments_and_positions_stream():
    layer = DotProductSelfAttentionV2(5, 2, 3, 2, 1, segment_ids_name="seg", position_name="pos").eval()
    x = _x(t=10)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]] * 2, dtype=torch.int32)
    pos = torch.arange(10, dtype=torch.int32)[None].expand(2, 10).contiguous()
    constants = {"seg": sl.Sequence.from_values(seg), "pos": sl.Sequence.from_values(pos)}
    verify_contract(layer, x, training=False, constants=constants, stream_constants=True, pad_constants=True, **TOL)
    # a query never sees another segment: changing segment 0's inputs leaves segment 2 alone
    y1 = layer.layer(x, constants=constants)
    x2 = sl.Sequence(x.values.clone(), x.mask)
    x2.values[:, :3] += 10.0
    y2 = layer.layer(x2, constants=constants)
    torch.testing.assert_close(y1.values[:, 7:], y2.values[:, 7:])


@settings(max_examples=8, deadline=None)
@given(
    past=st.sampled_from([-1, 1, 2, 4]),
    future=st.sampled_from([0, 1, 3]),
    heads=st.sampled_from([(2, 2), (4, 2), (4, 1)]),
    cap=st.sampled_from([None, 2.0]),
    sinks=st.sampled_from([0, 1]),
    relpos=st.sampled_from([None, "shaw", "t5"]),
)
def test_contract_property(past, future, heads, cap, sinks, relpos):
    """Random configurations obey the contract (hypothesis samples the option grid)."""
    n, k = heads
    rpe = None
    if relpos == "shaw":
        rpe = ShawRelativePositionEmbedding(2, 2, n, 3)
    elif relpos == "t5":
        rpe = {"kind": "T5", "num_buckets": 6, "num_heads": n, "bidirectional": True, "max_distance": 5}
    layer = DotProductSelfAttention(
        4,
        n,
        3,
        past,
        future,
        k,
        input_projection="separate" if k != n else None,
        attention_logits_soft_cap=cap,
        num_sink_embeddings=sinks,
        relative_position_embedding=rpe,
        max_cache_length=24 if past == -1 else None,
    ).eval()
    x = random_sequence(2, 8, 4, random_mask=True, generator=torch.Generator().manual_seed(past * 7 + future))
    verify_contract(layer, x, training=False, test_receptive_field=False, **TOL)
