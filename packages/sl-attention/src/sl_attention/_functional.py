"""Attention math shared by every layer of the package (the reference's ``attention/common.py``).

Layouts: queries ``[B, Tq, N, H]``, keys/values ``[B, Tk, K, H]`` (``N`` query heads,
``K`` key/value heads dividing ``N``; query head ``n`` reads key/value head ``n // (N/K)``
as in the reference's ``dot_product_attention``), visibility masks broadcastable to
``[B, N, Tq, Tk]`` (True = may attend), logit biases ``[B or 1, N, Tq, Tk]``.

:func:`attend` has two paths with the same result on every query that can see a key:

* the fused path, ``F.scaled_dot_product_attention`` (flash/efficient kernels), taken
  when nothing needs the logits or probabilities themselves: no soft cap, no sinks, no
  dropout, no emitted probabilities. A query that sees no key gets zeros.
* the explicit path, the reference's arithmetic: logits in the compute dtype, bias,
  soft cap, masking by *replacing* logits with -1e9 (so NaN/inf in masked positions
  cannot leak), sinks prepended, softmax in at least float32, dropout. A query that sees
  no key gets zeros here too (the reference's ``zero_fully_masked=True``; without it the
  reference averages all keys of its buffer uniformly, which differs between its layer
  and step modes), unless sinks take the weight.

:func:`blocked_attend` is the reference's ``local_dot_product_attention``: queries in
blocks of ``block`` steps, each against ``left + block + right`` keys, so time and memory
grow as ``T * (left + block + right)`` instead of ``T**2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "INVALID_LOGIT",
    "attend",
    "band_visibility",
    "blocked_attend",
    "scale_keys",
    "scale_queries",
    "soft_cap",
]

INVALID_LOGIT = -1e9
_R_SOFTPLUS_0 = 1.442695041  # 1 / softplus(0), so a zero-initialised per-dim scale starts at query_scale

BiasFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
DropoutFn = Callable[[torch.Tensor], torch.Tensor]


def scale_queries(queries: torch.Tensor, per_dim_scale: torch.Tensor | None, query_scale: float | None) -> torch.Tensor:
    """``queries * query_scale`` (default ``1/sqrt(H)``), or with a learned per-dimension scale
    ``query_scale * softplus(per_dim_scale) / softplus(0)``."""
    scale = 1.0 / math.sqrt(queries.shape[-1]) if query_scale is None else float(query_scale)
    if per_dim_scale is not None:
        factor = torch.tensor(_R_SOFTPLUS_0 * scale, dtype=queries.dtype, device=queries.device)
        return queries * (factor * F.softplus(per_dim_scale.to(queries.dtype)))
    return queries * torch.tensor(scale, dtype=queries.dtype, device=queries.device)


def scale_keys(keys: torch.Tensor, per_dim_key_scale: torch.Tensor | None) -> torch.Tensor:
    if per_dim_key_scale is None:
        return keys
    factor = torch.tensor(_R_SOFTPLUS_0, dtype=keys.dtype, device=keys.device)
    return keys * (factor * F.softplus(per_dim_key_scale.to(keys.dtype)))


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    if not cap:
        return logits
    c = torch.tensor(cap, dtype=logits.dtype, device=logits.device)
    return c * torch.tanh(logits / c)


def band_visibility(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    max_past_horizon: int,
    max_future_horizon: int,
) -> torch.Tensor | None:
    """``[B or 1, Tq, Tk]``: ``q - past <= k <= q + future`` (``-1``: unbounded), or None if unbounded."""
    if max_past_horizon < 0 and max_future_horizon < 0:
        return None
    q = query_positions[:, :, None]
    k = key_positions[:, None, :]
    out: torch.Tensor | None = None
    if max_past_horizon >= 0:
        out = k >= q - max_past_horizon
    if max_future_horizon >= 0:
        upper = k <= q + max_future_horizon
        out = upper if out is None else out & upper
    return out


def _fused_ok(
    soft_cap_value: float | None,
    sink_logits: torch.Tensor | None,
    dropout: DropoutFn | None,
    need_probs: bool,
) -> bool:
    return not soft_cap_value and sink_logits is None and dropout is None and not need_probs


def additive_mask(
    visible: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """One ``attn_mask`` for ``F.scaled_dot_product_attention``: ``bias`` plus ``-inf`` where
    ``visible`` (``[B or 1, Tq, Tk]`` or 4-D) or ``key_mask`` (``[B, Tk]``) is False."""
    out: torch.Tensor | None = None if bias is None else bias.to(dtype)
    if visible is not None:
        vis = visible if visible.dim() == 4 else visible[:, None]
        if out is None and key_mask is None:
            return vis
        neg = torch.where(vis, torch.zeros((), dtype=dtype), torch.full((), float("-inf"), dtype=dtype))
        out = neg if out is None else out + neg
    if key_mask is not None:
        km = key_mask[:, None, None, :]
        if out is None:
            return km
        out = out.masked_fill(~km, float("-inf"))
    return out


def _any_visible(visible: torch.Tensor | None, key_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, Tq]``: whether each query sees at least one key."""
    if visible is not None and visible.dim() == 4:
        visible = visible.any(dim=1)
    if key_mask is None:
        assert visible is not None
        return visible.any(dim=-1)
    km = key_mask[:, None, :]
    return (km if visible is None else visible & km).any(dim=-1)


def attend(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    visible: torch.Tensor | None,
    *,
    key_mask: torch.Tensor | None = None,
    scale: float = 1.0,
    bias: torch.Tensor | None = None,
    logits_soft_cap: float | None = None,
    sink_logits: torch.Tensor | None = None,
    sink_values: torch.Tensor | None = None,
    dropout: DropoutFn | None = None,
    zero_fully_masked: bool = False,
    need_probs: bool = False,
    gqa: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context vectors ``[B, Tq, N, H]`` and (when ``need_probs``) probabilities
    ``[B, Tq, N, S + Tk]`` (``S`` sinks first, as in the reference).

    Logits are ``scale * queries . keys`` (the fused kernel applies ``scale`` itself).
    ``visible`` ``[B or 1, Tq, Tk]`` is the structural mask (band, segments) and
    ``key_mask`` ``[B, Tk]`` the keys' validity. ``keys`` and ``values`` must be finite
    everywhere (masked values zero) for the fused path. ``sink_logits`` ``[B, N, Tq, S]``
    (soft-capped here) and ``sink_values`` ``[S, K, H]`` go together. ``gqa``: whether
    ``K < N`` (pass the layer's static answer so compiled code needs no shape guard).
    Computes in the promotion of the three dtypes.
    """
    b, tq, n, h = queries.shape
    tk = keys.shape[1]
    dtype = torch.promote_types(torch.promote_types(queries.dtype, keys.dtype), values.dtype)
    queries, keys, values = queries.to(dtype), keys.to(dtype), values.to(dtype)
    if gqa is None:
        gqa = bool(keys.shape[2] != n)
    if _fused_ok(logits_soft_cap, sink_logits, dropout, need_probs):
        if tk == 0:
            return queries.new_zeros((b, tq, n, h)), None
        mask = additive_mask(visible, key_mask, bias, dtype)
        out = F.scaled_dot_product_attention(
            queries.transpose(1, 2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attn_mask=mask,
            scale=scale,
            enable_gqa=gqa,
        ).transpose(1, 2)
        if torch.compiler.is_compiling() and (visible is not None or key_mask is not None):
            # Eager SDPA gives zeros to a query that sees no key; exported graphs (ONNX's
            # softmax over all -inf) may give NaN, so say it explicitly there.
            seen = _any_visible(visible, key_mask)
            out = torch.where(seen[:, :, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out, None
    if scale != 1.0:
        queries = queries * torch.tensor(scale, dtype=dtype, device=queries.device)
    if key_mask is not None:
        km = key_mask[:, None, :]
        visible = km if visible is None else (visible if visible.dim() == 3 else visible[:, 0]) & km
    return _explicit(
        queries,
        keys,
        values,
        visible,
        bias,
        logits_soft_cap,
        sink_logits,
        sink_values,
        dropout,
        zero_fully_masked,
        need_probs,
    )


def _explicit(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    visible: torch.Tensor | None,
    bias: torch.Tensor | None,
    logits_soft_cap: float | None,
    sink_logits: torch.Tensor | None,
    sink_values: torch.Tensor | None,
    dropout: DropoutFn | None,
    zero_fully_masked: bool,
    need_probs: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    b, tq, n, _ = queries.shape
    kv_heads = keys.shape[2]
    dtype = queries.dtype
    if kv_heads != n:
        group = n // kv_heads
        keys = keys.repeat_interleave(group, dim=2)
        values = values.repeat_interleave(group, dim=2)
        if sink_values is not None:
            sink_values = sink_values.repeat_interleave(group, dim=1)
    logits = torch.einsum("bqnh,bknh->bnqk", queries, keys.to(dtype))
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    logits = soft_cap(logits, logits_soft_cap)
    vis4 = None if visible is None else (visible if visible.dim() == 4 else visible[:, None])
    # Softmax in at least float32, masking by replacement (as the reference does).
    work = torch.promote_types(logits.dtype, torch.float32)
    lf = logits.to(work)
    if vis4 is not None:
        lf = lf.masked_fill(~vis4, INVALID_LOGIT)
    if sink_logits is not None:
        sl = soft_cap(sink_logits.to(dtype), logits_soft_cap).to(work)
        lf = torch.cat([sl.expand(b, n, tq, sl.shape[-1]), lf], dim=-1)
    probs = torch.softmax(lf, dim=-1).to(dtype)
    if dropout is not None:
        probs = dropout(probs)
    if vis4 is not None and (zero_fully_masked or sink_logits is None):
        # A query that sees no key gets zeros (the fused kernel's result). The reference averages
        # every key of its buffer uniformly unless zero_fully_masked, which differs between layer
        # and step mode (different buffers); with sinks the sinks take all the weight instead.
        any_visible = vis4.any(dim=-1, keepdim=True)
        probs = torch.where(any_visible, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    vv = values.to(dtype)
    if sink_logits is not None:
        assert sink_values is not None
        sv = sink_values.to(dtype)[None].expand(b, *sink_values.shape)
        vv = torch.cat([sv, vv], dim=1)
    context = torch.einsum("bnqk,bknh->bqnh", probs, vv)
    return context, (probs.permute(0, 2, 1, 3) if need_probs else None)


def _blocks(x: torch.Tensor, block: int, left: int, right: int, pad_value: float | bool = 0) -> torch.Tensor:
    """``[B, T, ...]`` -> ``[B * U, left + block + right, ...]``: block ``u`` holds steps
    ``u*block - left`` .. ``(u+1)*block + right - 1`` (outside the sequence: ``pad_value``).
    One padded copy, then overlapping windows as a strided view, then one contiguous copy."""
    b, t = x.shape[:2]
    rest = x.shape[2:]
    u = -(-t // block)
    size = left + block + right
    pad_right = right + u * block - t
    if x.dtype == torch.bool:
        parts = [x.new_full((b, left, *rest), bool(pad_value)), x, x.new_full((b, pad_right, *rest), bool(pad_value))]
        padded = torch.cat(parts, dim=1)
    elif left or pad_right:
        padded = F.pad(x, [0, 0] * len(rest) + [left, pad_right], value=float(pad_value))
    else:
        padded = x.contiguous()
    inner = padded.stride(1)
    windows = padded.as_strided((b, u, size, *rest), (padded.stride(0), block * inner, *padded.stride()[1:]))
    return windows.reshape(b * u, size, *rest)


def blocked_attend(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_mask: torch.Tensor,
    *,
    block: int,
    left: int,
    right: int,
    band: bool = True,
    bias_fn: BiasFn | None = None,
    bias_queries: torch.Tensor | None = None,
    logits_soft_cap: float | None = None,
    sink_logits: torch.Tensor | None = None,
    sink_values: torch.Tensor | None = None,
    dropout: DropoutFn | None = None,
    zero_fully_masked: bool = False,
    need_probs: bool = False,
    gqa: bool | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Local attention computed per query block (self-attention: ``Tq == Tk``).

    Each query block of ``block`` steps sees the ``left + block + right`` keys around it;
    with ``band`` a query at offset ``w`` sees context offsets ``w .. w + left + right``
    (``left`` past and ``right`` future steps), otherwise the whole context (block-wise
    bidirectional attention). ``bias_fn(queries, keys, relative)`` gives per-block biases from
    ``relative = key - query`` distances (called with the blocks of ``bias_queries`` when given,
    e.g. the unscaled queries Shaw embeddings read). Probabilities come back in the reference's local
    layout ``[B, T, N, S + left + block + right]``.
    """
    b, t, n, h = queries.shape
    context_size = left + block + right
    if t == 0:
        probs = queries.new_zeros((b, 0, n, context_size + (0 if sink_logits is None else sink_logits.shape[-1])))
        return queries.new_zeros((b, 0, n, h)), (probs if need_probs else None)
    u = -(-t // block)
    q_blocks = _blocks(queries, block, 0, 0)
    k_blocks = _blocks(keys, block, left, right)
    v_blocks = _blocks(values, block, left, right)
    m_blocks = _blocks(key_mask, block, left, right, False)
    w = torch.arange(block, device=queries.device)[:, None]
    c = torch.arange(context_size, device=queries.device)[None, :]
    visible = ((c >= w) & (c <= w + left + right))[None] if band else None
    bias = None
    if bias_fn is not None:
        relative = (c - w - left)[None]
        bq = q_blocks if bias_queries is None else _blocks(bias_queries, block, 0, 0)
        bias = bias_fn(bq, k_blocks, relative)
    sinks = None
    if sink_logits is not None:
        s = sink_logits.shape[-1]
        # [B, N, T, S] -> [B*U, N, block, S]
        sinks = _blocks(sink_logits.permute(0, 2, 1, 3), block, 0, 0).permute(0, 2, 1, 3)
        assert sinks.shape[-1] == s
    context, block_probs = attend(
        q_blocks,
        k_blocks,
        v_blocks,
        visible,
        key_mask=m_blocks,
        scale=scale,
        bias=bias,
        logits_soft_cap=logits_soft_cap,
        sink_logits=sinks,
        sink_values=sink_values,
        dropout=dropout,
        zero_fully_masked=zero_fully_masked,
        need_probs=need_probs,
        gqa=gqa,
    )
    context = context.reshape(b, u * block, n, h)[:, :t]
    if block_probs is None:
        return context, None
    return context, block_probs.reshape(b, u * block, n, block_probs.shape[-1])[:, :t]
