"""Cross-attention layers: cached and recomputed sources, multi-source segments, GMM attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import sl
from sl.testing import assert_sequences_close, random_sequence, verify_contract
from sl_attention import CrossAttentionEmits, DotProductAttention, GmmAttention, MultiSourceDotProductAttention

TOL = {"rtol": 1e-5, "atol": 1e-5, "grad_rtol": 1e-4, "grad_atol": 1e-5}


def _source(b: int, t: int, d: int, seed: int) -> sl.Sequence:
    return random_sequence(b, t, d, random_mask=True, generator=torch.Generator().manual_seed(seed))


def test_cross_attention_emits_and_state():
    layer = DotProductAttention(5, 2, 3, "enc", 4).eval()
    x = random_sequence(2, 6, 5)
    src = _source(2, 7, 4, 1)
    y, emits = layer.layer_with_emits(x, constants={"enc": src})
    assert isinstance(emits, CrossAttentionEmits)
    probs = emits.probabilities_by_source["enc"]
    assert probs.values.shape == (2, 6, 2, 7)
    assert bool((probs.values[:, :, :, ~src.mask[0]][0] == 0).all())  # invalid source steps get no weight
    state = layer.get_initial_state(2, x.channel_spec, constants={"enc": src})
    assert set(state) == {"keys", "values", "mask", "time", "query_network"}
    ys, _ = layer.step(x, state, constants={"enc": src})
    torch.testing.assert_close(ys.values, y.values, rtol=1e-5, atol=1e-5)


def test_recompute_kv_per_step_reads_the_current_source():
    cached = DotProductAttention(5, 2, 3, "enc", 4).eval()
    fresh = DotProductAttention(5, 2, 3, "enc", 4, recompute_kv_per_step=True).eval()
    fresh.load_state_dict(cached.state_dict())
    x = random_sequence(2, 3, 5)
    a, b = _source(2, 6, 4, 1), _source(2, 6, 4, 2)
    s_cached = cached.get_initial_state(2, x.channel_spec, constants={"enc": a})
    s_fresh = fresh.get_initial_state(2, x.channel_spec, constants={"enc": a})
    assert "keys" not in s_fresh
    y_cached, _ = cached.step(x, s_cached, constants={"enc": b})  # still attends to a
    y_fresh, _ = fresh.step(x, s_fresh, constants={"enc": b})
    torch.testing.assert_close(y_cached.values, cached.layer(x, constants={"enc": a}).values)
    torch.testing.assert_close(y_fresh.values, cached.layer(x, constants={"enc": b}).values)


def test_multi_source_is_one_softmax_over_all_sources():
    layer = MultiSourceDotProductAttention(5, 2, 3, ["a", "b"], 4).eval()
    single = DotProductAttention(5, 2, 3, "ab", 4).eval()
    with torch.no_grad():
        single.input_projection.q_proj_weight.copy_(layer.input_projection.q_proj_weight)
        single.input_projection.kv_proj_weight.copy_(layer.input_projection.kv_proj_weight)
    a, b = _source(2, 4, 4, 3), _source(2, 5, 4, 4)
    x = random_sequence(2, 6, 5)
    y = layer.layer(x, constants={"a": a, "b": b})
    y_single = single.layer(x, constants={"ab": a.concatenate(b)})
    torch.testing.assert_close(y.values, y_single.values, rtol=1e-5, atol=1e-5)


def test_multi_source_segment_ids_step_like_layer():
    layer = MultiSourceDotProductAttention(
        5, 2, 3, ["a", "b"], 4, query_segment_ids_name="qseg", source_segment_ids_names=["aseg", "bseg"]
    ).eval()
    a, b = _source(2, 4, 4, 5), _source(2, 5, 4, 6)
    x = random_sequence(2, 6, 5, random_mask=True)
    qseg = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.int32)
    constants = {
        "a": a,
        "b": b,
        "aseg": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.int32),
        "bseg": torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.int32),
        "qseg": qseg,
    }
    y = layer.layer(x, constants=constants)
    state = layer.get_initial_state(2, x.channel_spec, constants=constants)
    outs = []
    for t in range(6):
        step_constants = {**constants, "qseg": qseg[:, t : t + 1]}
        yt, state = layer.step(x[:, t : t + 1], state, constants=step_constants)
        outs.append(yt)
    assert_sequences_close(
        y.mask_invalid(), sl.Sequence.concatenate_sequences(outs).mask_invalid(), rtol=1e-5, atol=1e-5
    )


def _gmm_naive(layer: GmmAttention, x: sl.Sequence, src: sl.Sequence) -> torch.Tensor:
    """A step-by-step loop of the GMM recursion (positions advance on valid steps only)."""
    b, t, _ = x.values.shape
    prev = torch.zeros(b, layer.num_heads, layer.num_components, dtype=torch.float64)
    out = []
    for i in range(t):
        xi = torch.where(x.mask[:, i, None], x.values[:, i], 0).double()
        h = F.relu(torch.einsum("bc,cnu->bnu", xi, layer.hidden_weight.double()))
        o = torch.einsum("bnu,numl->bnml", h, layer.output_weight.double()) + layer.output_bias.double()
        prior, offset, scale = o.unbind(-1)
        prior = torch.softmax(prior, -1)
        var = F.softplus(scale) ** 2
        step = F.softplus(offset)
        pos = prev + torch.where(x.mask[:, i, None, None], step, 0) if layer.monotonic else step
        if layer.monotonic:
            prev = pos
        j = torch.arange(src.values.shape[1], dtype=torch.float64)
        w = (
            prior[..., None, :]
            * torch.sqrt(2 * math.pi * var[..., None, :] + 1e-8)
            * torch.exp(-((j[:, None] - pos[..., None, :]) ** 2) / (2 * var[..., None, :] + 1e-9))
        ).sum(-1)
        w = torch.where(src.mask[:, None, :], w, 0)
        out.append(torch.einsum("bns,bsc->bnc", w, torch.where(src.mask[..., None], src.values, 0).double()))
    return torch.stack(out, 1)


def test_gmm_parallel_form_matches_recursion():
    for monotonic in (False, True):
        layer = GmmAttention(5, 2, 3, 3, "enc", monotonic, 4).eval()
        with torch.no_grad():
            layer.output_bias.normal_()
        x = random_sequence(2, 9, 5, random_mask=True)
        src = _source(2, 8, 4, 7)
        y = layer.layer(x, constants={"enc": src})
        expected = _gmm_naive(layer, x, src)
        valid = x.mask[:, :, None, None]
        torch.testing.assert_close(
            torch.where(valid, y.values.double(), 0), torch.where(valid, expected, 0), rtol=1e-5, atol=1e-5
        )
        verify_contract(layer, x, training=False, constants={"enc": src}, **TOL)
        if monotonic:
            # behind a layer with step-wise latency the filler steps do not move the means
            verify_contract(
                sl.Serial(sl.Delay(2, delay_layer_output=False), layer),
                x,
                training=False,
                constants={"enc": src},
                **TOL,
            )
