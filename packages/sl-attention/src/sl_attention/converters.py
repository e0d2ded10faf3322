"""Converters from the reference's Flax variables to sl-attention's layers (``sl_register_converters``).

The reference's projections share the layer's Flax scope (``nn.share_scope``), so their
kernels sit next to the layer's own variables:

* ``query_key_value_projection/kernel [D, S, N, H]`` -> ``input_projection.in_proj_weight [S*N*H, D]``;
* ``query_projection``, ``key_projection``, ``value_projection`` ``[D, heads, H]`` ->
  ``q_proj_weight``/``k_proj_weight``/``v_proj_weight [heads*H, D]``;
* ``key_value_projection [D, 2, K, H]`` or ``shared_key_value_projection [D, K, H]`` ->
  ``kv_proj_weight``;
* biases ``[*out]`` -> ``*_bias [prod(out)]``;
* ``per_dim_scale``, ``per_dim_key_scale``, ``sink_key_embeddings``,
  ``sink_value_embeddings``, ``sink_scalars`` as they are;
* ``relative_position_embedding``: Shaw/T5 ``embedding``, TransformerXL ``u``, ``v`` and
  ``pos_proj/kernel``;
* ``query_network``/``key_network``/``value_network``: the child layers' own converters;
* GmmAttention: ``hidden/kernel [C, N, U]`` and ``output/kernel [N, U, M, 3]``,
  ``output/bias [N, M, 3]`` kept in the reference layout.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sl.interop.flax import ConverterRegistry, Variables
from sl_attention import layers as A
from sl_attention.projection import (
    CombinedQueryKeyValueProjection,
    InputProjectionModule,
    QueryAndKeyValueProjection,
    QueryAndSharedKeyValueProjection,
    SeparateQueryKeyValueProjection,
)
from sl_attention.relative_position import (
    RelativePositionEmbedding,
    ShawRelativePositionEmbedding,
    T5RelativePositionEmbedding,
    TransformerXLRelativePositionEmbedding,
)

__all__ = ["register_attention_converters"]


def _kernel_to_weight(kernel: np.ndarray) -> np.ndarray:
    """``[D, *out]`` -> ``[prod(out), D]``."""
    return kernel.reshape(kernel.shape[0], -1).T


def _flatten(bias: np.ndarray) -> np.ndarray:
    return bias.reshape(-1)


_PROJECTION_NAMES: dict[type, tuple[tuple[str, str], ...]] = {
    CombinedQueryKeyValueProjection: (("in_proj", "query_key_value_projection"),),
    SeparateQueryKeyValueProjection: (
        ("q_proj", "query_projection"),
        ("k_proj", "key_projection"),
        ("v_proj", "value_projection"),
    ),
    QueryAndKeyValueProjection: (("q_proj", "query_projection"), ("kv_proj", "key_value_projection")),
    QueryAndSharedKeyValueProjection: (("q_proj", "query_projection"), ("kv_proj", "shared_key_value_projection")),
}


def convert_projection(projection: InputProjectionModule, variables: Variables, *, prefix: str = "") -> None:
    """Fills ``projection`` from reference scopes ``<prefix><name>`` (see the module docstring)."""
    for ours, theirs in _PROJECTION_NAMES[type(projection)]:
        scope = variables.child(prefix + theirs)
        scope.assign(
            getattr(projection, ours + "_weight"), "kernel", transform=_kernel_to_weight, target_name=ours + "_weight"
        )
        bias = getattr(projection, ours + "_bias")
        if bias is not None or scope.has("bias"):
            scope.assign(bias, "bias", transform=_flatten, target_name=ours + "_bias")


def convert_relative_position(module: RelativePositionEmbedding | None, variables: Variables) -> None:
    if module is None:
        return
    scope = variables.child("relative_position_embedding")
    if isinstance(module, (ShawRelativePositionEmbedding, T5RelativePositionEmbedding)):
        scope.assign(module.embedding, "embedding", target_name="embedding")
    elif isinstance(module, TransformerXLRelativePositionEmbedding):
        scope.child("pos_proj").assign(module.pos_proj, "kernel", target_name="pos_proj")
        scope.assign(module.u, "u", target_name="u")
        scope.assign(module.v, "v", target_name="v")


def _own(variables: Variables, module: torch.nn.Module, *names: str) -> None:
    for name in names:
        target = getattr(module, name, None)
        if target is None and not variables.has(name):
            continue
        variables.assign(target, name, target_name=name)


def convert_attention(module: torch.nn.Module, variables: Variables) -> None:
    """Dot-product attention layers (self, cross, streaming, V2, blockwise, multi-source)."""
    convert_projection(module.input_projection, variables)  # type: ignore[arg-type]
    _own(
        variables,
        module,
        "per_dim_scale",
        "per_dim_key_scale",
        "sink_key_embeddings",
        "sink_value_embeddings",
        "sink_scalars",
    )
    convert_relative_position(getattr(module, "relative_position_embedding", None), variables)
    for name in ("query_network", "key_network", "value_network"):
        net = getattr(module, name, None)
        if net is not None:
            variables.convert_child(net, name)


def convert_gmm(module: torch.nn.Module, variables: Variables) -> None:
    variables.child("hidden").assign(module.hidden_weight, "kernel", target_name="hidden_weight")  # type: ignore[arg-type]
    out = variables.child("output")
    out.assign(module.output_weight, "kernel", target_name="output_weight")  # type: ignore[arg-type]
    out.assign(module.output_bias, "bias", target_name="output_bias")  # type: ignore[arg-type]


def _converters() -> dict[type, Callable[[torch.nn.Module, Variables], None]]:
    out: dict[type, Callable[[torch.nn.Module, Variables], None]] = {}
    for cls in A.DOT_PRODUCT_LAYERS:
        out[cls] = convert_attention
    out[A.GmmAttention] = convert_gmm
    return out


def register_attention_converters(converters: ConverterRegistry) -> None:
    """sl-attention's ``sl_register_converters`` hook."""
    for cls, fn in _converters().items():
        converters.register(cls, fn)
