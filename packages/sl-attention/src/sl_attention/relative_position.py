"""Relative position embeddings (the reference's ``attention/*_relative_position_embedding.py``).

These are plain ``torch.nn.Module`` s, not SequenceLayers: an attention layer takes one
through its ``relative_position_embedding`` argument and asks it for a logit bias. Every
embedding here depends only on the *relative* position ``key_position - query_position``,
so one interface serves layer mode, step mode (with or without lookahead), the blocked
local computation and cross-attention:

``bias(queries, keys, relative) -> [B or 1, num_heads, Tq, Tk]``

with ``queries [B, Tq, N, H]`` (the *unscaled* queries, after the query network),
``scaled_queries`` (queries after the query scale; TransformerXL uses those, as the
reference's ``get_logits`` does), ``keys [B, Tk, K, H]`` and ``relative`` an integer tensor
broadcastable to ``[B, Tq, Tk]`` holding ``key_position - query_position``.

The reference implements TransformerXL only as a ``get_logits`` function over blocked
queries with a "relative shift" (so it works only in LocalDotProductSelfAttention and
only without lookahead in step mode). Here its logits are written as a bias over the same
relative distances (``u . k + (q + v) . R[q - k]``), which is the reference's value on
every visible query/key pair when ``max_backward``/``max_forward`` equal the layer's
horizons (the reference's requirement), and works in every layer and in step mode with
lookahead. Distances outside ``[-max_forward, max_backward]`` are clipped (those pairs are
masked whenever the horizons match).

Configs: each embedding's ``get_config()`` is a JSON dict with a ``"kind"`` key, and
:func:`make_relative_position_embedding` rebuilds one from it, so attention layers with an
embedding round-trip through ``get_config``/``sl.from_config``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from sl.layers.position import timing_signal_1d
from sl.toolkit import check_positive_int, lecun_normal_, variance_scaling_

__all__ = [
    "RelativePositionEmbedding",
    "ShawRelativePositionEmbedding",
    "T5RelativePositionEmbedding",
    "TransformerXLRelativePositionEmbedding",
    "make_relative_position_embedding",
]


def _embed_init_(tensor: torch.Tensor) -> None:
    """flax ``default_embed_init``: a normal with variance 1 / prod(shape[1:])."""
    variance_scaling_(tensor, 1.0, math.prod(tensor.shape[1:]) if tensor.dim() > 1 else 1, "normal")


class RelativePositionEmbedding(torch.nn.Module):
    """Base class: a logit bias that depends on ``key_position - query_position``.

    Subclasses implement :meth:`bias` and :meth:`get_config`. ``uses_scaled_queries``
    says which queries the bias reads (TransformerXL: the scaled ones).
    """

    kind: str = ""
    uses_scaled_queries: bool = False

    @property
    def supports_position_bias(self) -> bool:
        """Every embedding here is a position bias (kept for the reference's API)."""
        return True

    def bias(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        relative: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement bias().")

    def get_position_bias(
        self,
        query_positions: torch.Tensor,
        key_positions: torch.Tensor,
        queries: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The reference's signature: positions ``[B or 1, Tq]`` and ``[B or 1, Tk]``."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        return self.bias(queries, keys if keys is not None else queries[:, :0], relative)

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def check_heads(self, owner: str, num_heads: int, units_per_head: int) -> None:
        """Raises unless the embedding was built for ``num_heads`` heads of ``units_per_head``."""
        heads = getattr(self, "num_heads", num_heads)
        units = getattr(self, "units_per_head", units_per_head)
        if heads != num_heads or units != units_per_head:
            raise ValueError(
                f"{owner}: relative_position_embedding {type(self).__name__} has num_heads={heads}"
                f"{f', units_per_head={units}' if hasattr(self, 'units_per_head') else ''}, but the layer has "
                f"num_heads={num_heads}, units_per_head={units_per_head}."
            )


class ShawRelativePositionEmbedding(RelativePositionEmbedding):
    """Query-dependent clipped relative embeddings (Shaw et al. 2018, arXiv:1803.02155).

    ``bias[b, n, q, k] = queries[b, q, n] . embedding[clip(k - q, -max_backward, max_forward) + max_backward, n]``
    computed in ``compute_dtype`` (float32 by default, as in the reference). Parameter:
    ``embedding [max_backward + max_forward + 1, num_heads, units_per_head]`` (the
    reference's layout and name).
    """

    kind = "Shaw"

    def __init__(
        self,
        max_backward: int,
        max_forward: int,
        num_heads: int,
        units_per_head: int,
        compute_dtype: torch.dtype | None = torch.float32,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.max_backward = check_positive_int(name, "max_backward", max_backward, allow_zero=True)
        self.max_forward = check_positive_int(name, "max_forward", max_forward, allow_zero=True)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.units_per_head = check_positive_int(name, "units_per_head", units_per_head)
        self.compute_dtype = compute_dtype
        self.embedding = torch.nn.Parameter(
            torch.empty(self.num_buckets, self.num_heads, self.units_per_head, device=device, dtype=dtype)
        )
        self.reset_parameters()

    @property
    def num_buckets(self) -> int:
        return self.max_backward + self.max_forward + 1

    def reset_parameters(self) -> None:
        _embed_init_(self.embedding)

    def bias(self, queries: torch.Tensor, keys: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or torch.promote_types(queries.dtype, self.embedding.dtype)
        emb = self.embedding.to(dtype)
        # [B, N, Tq, R]: each query against every clipped distance.
        per_bucket = torch.einsum("rnh,bqnh->bnqr", emb, queries.to(dtype))
        bucket = torch.clamp(relative, -self.max_backward, self.max_forward) + self.max_backward
        b, n, tq, _r = per_bucket.shape
        index = bucket.to(torch.int64)
        index = index.reshape(index.shape[0], 1, *index.shape[1:]).expand(b, n, tq, index.shape[-1])
        return torch.gather(per_bucket, 3, index)

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "max_backward": self.max_backward,
            "max_forward": self.max_forward,
            "num_heads": self.num_heads,
            "units_per_head": self.units_per_head,
            "compute_dtype": self.compute_dtype,
        }


class T5RelativePositionEmbedding(RelativePositionEmbedding):
    """T5's bucketed learned bias (Raffel et al. 2019).

    Relative distances map to ``num_buckets`` log-spaced buckets (half per direction when
    ``bidirectional``), each with a learned per-head bias. Bucketing follows the
    reference, including its ``(num_buckets - 1 - max_exact)`` scaling (which, unlike
    Mesh TensorFlow's T5, reaches the last bucket at ``max_distance``). Parameter:
    ``embedding [num_buckets, num_heads]``.
    """

    kind = "T5"

    def __init__(
        self,
        num_buckets: int,
        num_heads: int,
        bidirectional: bool,
        max_distance: int = 128,
        compute_dtype: torch.dtype | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_buckets = check_positive_int(name, "num_buckets", num_buckets)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.bidirectional = bool(bidirectional)
        self.max_distance = check_positive_int(name, "max_distance", max_distance)
        exact = (self.num_buckets // 2 if self.bidirectional else self.num_buckets) // 2
        if exact < 1:
            raise ValueError(
                f"{name} needs num_buckets >= {4 if self.bidirectional else 2} (at least one exact bucket per "
                f"direction); got num_buckets={self.num_buckets}, bidirectional={self.bidirectional}."
            )
        self.compute_dtype = compute_dtype
        self.embedding = torch.nn.Parameter(torch.empty(self.num_buckets, self.num_heads, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _embed_init_(self.embedding)

    @property
    def _degenerate(self) -> bool:
        """``max_distance`` equals the exact range (``num_buckets // 2`` per direction)."""
        return self.max_distance == (self.num_buckets // 2 if self.bidirectional else self.num_buckets) // 2

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """The bucket (int64, in ``[0, num_buckets)``) of each relative position ``key - query``
        (negative for far distances when ``max_distance`` equals the exact range: see below)."""
        n = -relative.to(torch.int64)
        num_buckets = self.num_buckets
        ret = torch.zeros_like(n)
        if self.bidirectional:
            num_buckets //= 2
            ret = ret + (n < 0).to(torch.int64) * num_buckets
            n = n.abs()
        else:
            n = torch.clamp(n, min=0)
        max_exact = num_buckets // 2
        is_small = n < max_exact
        eps = torch.finfo(torch.float32).eps
        if self._degenerate:
            # The log ratio is log(1) = 0: +inf (NaN at n = 0). The reference casts it to int32
            # (XLA saturates, NaN -> 0) and adds max_exact in int32, which wraps to a negative
            # bucket: its one-hot lookup gives those distances no bias (see ``bias``). torch's
            # float -> int cast of inf is undefined, so that arithmetic is spelled out here.
            large = torch.log(n.to(torch.float32) / max_exact + eps) / 0.0 * (num_buckets - 1 - max_exact)
            large = torch.nan_to_num(large, nan=0.0, posinf=2.0**31 - 1, neginf=-(2.0**31))
            large = (large.to(torch.int64) + max_exact + 2**31) % 2**32 - 2**31  # int32 wrap-around
        else:
            large = torch.log(n.to(torch.float32) / max_exact + eps) / math.log(self.max_distance / max_exact)
            large = max_exact + (large * (num_buckets - 1 - max_exact)).to(torch.int64)
        large = torch.clamp(large, max=num_buckets - 1)
        return ret + torch.where(is_small, n, large)

    def bias(self, queries: torch.Tensor, keys: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or queries.dtype
        values = self.embedding.to(dtype)  # [R, N]
        bucket = self.bucket(relative)  # [B or 1, Tq, Tk]
        if self._degenerate:
            # Negative buckets (see ``bucket``): no bias, as the reference's one-hot lookup gives.
            inside = (bucket >= 0)[..., None].to(dtype)
            return (values[bucket.clamp(min=0)] * inside).permute(0, 3, 1, 2)
        # [B, Tq, Tk, N] -> [B, N, Tq, Tk]
        return values[bucket].permute(0, 3, 1, 2)

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_buckets": self.num_buckets,
            "num_heads": self.num_heads,
            "bidirectional": self.bidirectional,
            "max_distance": self.max_distance,
            "compute_dtype": self.compute_dtype,
        }


class TransformerXLRelativePositionEmbedding(RelativePositionEmbedding):
    """Transformer-XL relative logits (Dai et al. 2019): ``(q + u) . k + (q + v) . R[q - k]``.

    ``R = pos_proj(sinusoid(d))`` for distances ``d = query - key`` in ``[-max_forward,
    max_backward]`` (a ``position_bias_dim``-wide timing signal, projected per head).
    As a bias on top of the attention's ``q . k``: ``u . k + (q + v) . R[q - k]`` with the
    scaled queries. Parameters (the reference's names): ``u``, ``v`` ``[num_heads,
    units_per_head]`` (with ``bias=True``, zero-initialised) and ``pos_proj``
    ``[position_bias_dim, num_heads, units_per_head]`` (the reference's einsum kernel
    layout). See the module docstring for how this relates to the reference's relative
    shift.
    """

    kind = "TransformerXL"
    uses_scaled_queries = True

    def __init__(
        self,
        num_heads: int,
        units_per_head: int,
        max_backward: int,
        max_forward: int,
        position_bias_dim: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.units_per_head = check_positive_int(name, "units_per_head", units_per_head)
        self.max_backward = check_positive_int(name, "max_backward", max_backward, allow_zero=True)
        self.max_forward = check_positive_int(name, "max_forward", max_forward, allow_zero=True)
        self.position_bias_dim = check_positive_int(name, "position_bias_dim", position_bias_dim)
        self.use_bias = bool(bias)
        self.pos_proj = torch.nn.Parameter(
            torch.empty(self.position_bias_dim, self.num_heads, self.units_per_head, device=device, dtype=dtype)
        )
        self.u: torch.nn.Parameter | None
        self.v: torch.nn.Parameter | None
        if self.use_bias:
            self.u = torch.nn.Parameter(torch.empty(self.num_heads, self.units_per_head, device=device, dtype=dtype))
            self.v = torch.nn.Parameter(torch.empty(self.num_heads, self.units_per_head, device=device, dtype=dtype))
        else:
            self.register_parameter("u", None)
            self.register_parameter("v", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        lecun_normal_(self.pos_proj, self.position_bias_dim * self.num_heads)
        if self.u is not None and self.v is not None:
            torch.nn.init.zeros_(self.u)
            torch.nn.init.zeros_(self.v)

    def position_embeddings(self, dtype: torch.dtype) -> torch.Tensor:
        """``R [max_backward + max_forward + 1, N, H]``: row ``i`` is distance ``max_backward - i``."""
        distances = torch.arange(
            self.max_backward, -self.max_forward - 1, -1, device=self.pos_proj.device, dtype=torch.float32
        )[None, :]
        signal = timing_signal_1d(distances, self.position_bias_dim, 1.0, 1.0e4, dtype)[0]  # [R, D]
        return torch.einsum("rd,dnh->rnh", signal, self.pos_proj.to(dtype))

    def bias(self, queries: torch.Tensor, keys: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        dtype = queries.dtype
        b, tq, n, _h = queries.shape
        emb = self.position_embeddings(dtype)  # [R, N, H]
        qv = queries + self.v.to(dtype) if self.v is not None else queries
        per_distance = torch.einsum("bqnh,rnh->bnqr", qv, emb)  # [B, N, Tq, R]
        # Row i of R is distance (query - key) = max_backward - i, i.e. i = max_backward + relative.
        index = torch.clamp(relative.to(torch.int64) + self.max_backward, 0, self.max_backward + self.max_forward)
        index = index.reshape(index.shape[0], 1, *index.shape[1:]).expand(b, n, tq, index.shape[-1])
        out = torch.gather(per_distance, 3, index)
        if self.u is not None:
            kv_heads = keys.shape[2]
            k = keys.to(dtype)
            if kv_heads != n:
                k = k.repeat_interleave(n // kv_heads, dim=2)
            out = out + torch.einsum("nh,bknh->bnk", self.u.to(dtype), k)[:, :, None, :]
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_heads": self.num_heads,
            "units_per_head": self.units_per_head,
            "max_backward": self.max_backward,
            "max_forward": self.max_forward,
            "position_bias_dim": self.position_bias_dim,
            "bias": self.use_bias,
        }


_KINDS: dict[str, type[RelativePositionEmbedding]] = {
    "shaw": ShawRelativePositionEmbedding,
    "t5": T5RelativePositionEmbedding,
    "transformerxl": TransformerXLRelativePositionEmbedding,
}


def make_relative_position_embedding(
    owner: str,
    spec: RelativePositionEmbedding | Mapping[str, Any] | None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RelativePositionEmbedding | None:
    """An embedding from an instance (returned as is), a ``get_config()`` dict, or None."""
    if spec is None or isinstance(spec, RelativePositionEmbedding):
        return spec
    if isinstance(spec, Mapping):
        args = dict(spec)
        kind = str(args.pop("kind", "")).lower().replace("_", "").replace("relativepositionembedding", "")
        cls = _KINDS.get(kind)
        if cls is None:
            raise ValueError(
                f"{owner}: relative_position_embedding config has kind {spec.get('kind')!r}; expected one of "
                "'Shaw', 'T5', 'TransformerXL'."
            )
        try:
            return cls(**args, device=device, dtype=dtype)
        except TypeError as e:
            raise TypeError(f"{owner}: bad relative_position_embedding config {dict(spec)!r}: {e}") from None
    raise TypeError(
        f"{owner}: relative_position_embedding must be a RelativePositionEmbedding (e.g. "
        f"sl_attention.ShawRelativePositionEmbedding(...)) or its get_config() dict; got {type(spec).__name__}."
    )
