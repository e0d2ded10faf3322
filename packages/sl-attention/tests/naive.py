"""A naive float64 attention written independently of sl_attention's kernels, for numerics tests.

Everything is explicit: projections as einsums of the layer's weights, logits for every
query/key pair, masks from the band definition, a hand-written softmax, and the relative
position embeddings from their papers' definitions (T5 bucketing with Python math).
"""

from __future__ import annotations

import math

import torch

from sl.types import Sequence


def project(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, T, N, H], k, v [B, T, K, H] from the layer's projection weights (float64)."""
    p = layer.input_projection
    n, k, h = layer.num_heads, layer.num_kv_heads, layer.units_per_head
    b, t, _ = x.shape

    def lin(name: str, heads: int) -> torch.Tensor:
        w = getattr(p, name + "_weight").double()
        y = x @ w.T
        bias = getattr(p, name + "_bias")
        if bias is not None:
            y = y + bias.double()
        return y.reshape(b, t, -1, h)

    kind = type(p).__name__
    if kind == "CombinedQueryKeyValueProjection":
        y = lin("in_proj", n)
        if p.share_kv:
            return y[:, :, :n], y[:, :, n:], y[:, :, n:]
        return y[:, :, :n], y[:, :, n : 2 * n], y[:, :, 2 * n :]
    if kind == "SeparateQueryKeyValueProjection":
        return lin("q_proj", n), lin("k_proj", k), lin("v_proj", k)
    if kind == "QueryAndKeyValueProjection":
        kv = lin("kv_proj", 2 * k)
        return lin("q_proj", n), kv[:, :, :k], kv[:, :, k:]
    kv = lin("kv_proj", k)
    return lin("q_proj", n), kv, kv


def t5_bucket(rel: int, num_buckets: int, bidirectional: bool, max_distance: int) -> int:
    n = -rel
    ret = 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    eps = torch.finfo(torch.float32).eps
    val = max_exact + int(
        math.log(float(torch.tensor(n / max_exact, dtype=torch.float32)) + eps)
        / math.log(max_distance / max_exact)
        * (num_buckets - 1 - max_exact)
    )
    return ret + min(val, num_buckets - 1)


def sinusoid(positions: list[int], dim: int) -> torch.Tensor:
    half = dim // 2
    inc = math.log(1.0e4) / max(half - 1, 1)
    inv = [math.exp(-i * inc) for i in range(half)]
    rows = []
    for p in positions:
        row = [math.sin(p * f) for f in inv] + [math.cos(p * f) for f in inv]
        if dim % 2:
            row.append(0.0)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@torch.no_grad()
def naive_self_attention(layer, x: Sequence, past: int, future: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Context ``[B, T, N, H]`` and probabilities ``[B, T, N, S + T]`` (float64) of a
    DotProductSelfAttention-like layer with band ``past``/``future`` (-1: unbounded)."""
    xv = torch.where(x.mask[:, :, None], x.values, 0).double()
    q, k, v = project(layer, xv)
    b, t, n, h = q.shape
    kh = k.shape[2]
    group = n // kh
    scale = 1 / math.sqrt(h) if layer.query_scale is None else layer.query_scale
    qs = q * scale
    if layer.per_dim_scale is not None:
        qs = q * (scale / math.log(2.0)) * torch.nn.functional.softplus(layer.per_dim_scale.double())
    ks = k
    if layer.per_dim_key_scale is not None:
        ks = k / math.log(2.0) * torch.nn.functional.softplus(layer.per_dim_key_scale.double())
    kv_of = [i // group for i in range(n)]
    ctx = torch.zeros(b, t, n, h, dtype=torch.float64)
    s = layer.num_sink_embeddings + int(layer.use_sink_scalars)
    probs = torch.zeros(b, t, n, s + t, dtype=torch.float64)
    rpe = layer.relative_position_embedding
    txl_r = None
    if rpe is not None and type(rpe).__name__ == "TransformerXLRelativePositionEmbedding":
        dists = list(range(rpe.max_backward, -rpe.max_forward - 1, -1))
        txl_r = torch.einsum("rd,dnh->rnh", sinusoid(dists, rpe.position_bias_dim), rpe.pos_proj.double())
    for bi in range(b):
        for i in range(t):
            for ni in range(n):
                kvi = kv_of[ni]
                logits, values, visible = [], [], []
                if layer.sink_key_embeddings is not None:
                    for si in range(layer.num_sink_embeddings):
                        logits.append(float(q[bi, i, ni] @ layer.sink_key_embeddings[si, ni].double()))
                        values.append(layer.sink_value_embeddings[si, kvi].double())
                        visible.append(True)
                if layer.sink_scalars is not None:
                    logits.append(float(layer.sink_scalars[ni]))
                    values.append(torch.zeros(h, dtype=torch.float64))
                    visible.append(True)
                n_sinks = len(logits)
                for j in range(t):
                    lg = float(qs[bi, i, ni] @ ks[bi, j, kvi])
                    rel = j - i
                    if rpe is not None:
                        kind = type(rpe).__name__
                        if kind == "ShawRelativePositionEmbedding":
                            idx = min(max(rel, -rpe.max_backward), rpe.max_forward) + rpe.max_backward
                            lg += float(q[bi, i, ni] @ rpe.embedding[idx, ni].double())
                        elif kind == "T5RelativePositionEmbedding":
                            lg += float(
                                rpe.embedding[t5_bucket(rel, rpe.num_buckets, rpe.bidirectional, rpe.max_distance), ni]
                            )
                        else:
                            idx = min(max(rel + rpe.max_backward, 0), rpe.max_backward + rpe.max_forward)
                            qv = qs[bi, i, ni] + (rpe.v[ni].double() if rpe.v is not None else 0)
                            lg += float(qv @ txl_r[idx, ni])
                            if rpe.u is not None:
                                lg += float(rpe.u[ni].double() @ k[bi, j, kvi])
                    ok = bool(x.mask[bi, j])
                    if past >= 0 and j < i - past:
                        ok = False
                    if future >= 0 and j > i + future:
                        ok = False
                    logits.append(lg)
                    values.append(v[bi, j, kvi])
                    visible.append(ok)
                cap = layer.attention_logits_soft_cap
                if cap:
                    logits = [cap * math.tanh(lg / cap) for lg in logits]
                if not any(visible):
                    continue
                m = max(lg for lg, vis in zip(logits, visible) if vis)
                w = [math.exp(lg - m) if vis else 0.0 for lg, vis in zip(logits, visible)]
                z = sum(w)
                w = [wi / z for wi in w]
                for wi, vi in zip(w, values):
                    ctx[bi, i, ni] += wi * vi
                probs[bi, i, ni, : n_sinks + t] = torch.tensor(w, dtype=torch.float64)
    return ctx, probs
