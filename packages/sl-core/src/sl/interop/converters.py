"""Converters for sl-core's layers (reference Flax variable layout -> sl tensors).

A converter is ``fn(module, variables)``: it assigns the module's tensors from
``variables`` (a :class:`sl.interop.flax.Variables` view of the module's scope in every
collection) and recurses into children with ``variables.convert_child(child, name)``
using the reference's Flax submodule names (``layers_0``, ``child_layer``...).

The table maps each sl-core layer class to its converter; ``register_core_converters``
is sl-core's ``sl_register_converters`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sl import combinators as c
from sl import layers as L
from sl.interop.flax import ConverterRegistry, Variables

__all__ = [
    "dense_kernel_to_weight",
    "register_core_converters",
    "same_names",
    "serial_children",
]


# ----------------------------------------------------------------------------- helpers
def dense_kernel_to_weight(kernel: np.ndarray) -> np.ndarray:
    """Flax Dense kernel ``[in, out]`` -> torch Linear weight ``[out, in]``."""
    if kernel.ndim != 2:
        return kernel  # shape check reports it
    return kernel.T


def _tensor(module: torch.nn.Module, *names: str) -> torch.Tensor | None:
    for n in names:
        t = getattr(module, n, None)
        if isinstance(t, torch.Tensor):
            return t
    return None


def same_names(*names: str, **renamed: str) -> Callable[[torch.nn.Module, Variables], None]:
    """A converter copying reference values into same-named (or ``sl_name=ref_name``) tensors as-is."""
    pairs = [(n, n) for n in names] + list(renamed.items())

    def convert(module: torch.nn.Module, variables: Variables) -> None:
        for ours, theirs in pairs:
            target = _tensor(module, ours)
            if target is None and not variables.has(theirs):
                continue  # optional tensor absent on both sides
            variables.assign(target, theirs, target_name=ours)

    return convert


def serial_children(attr: str = "layers", prefix: str = "layers_") -> Callable[[torch.nn.Module, Variables], None]:
    """Children kept in ``module.<attr>`` map to reference scopes ``<prefix>0``, ``<prefix>1``..."""

    def convert(module: torch.nn.Module, variables: Variables) -> None:
        for i, child in enumerate(getattr(module, attr)):
            variables.convert_child(child, f"{prefix}{i}")

    return convert


def _single_child(attr: str, ref_name: str = "child_layer") -> Callable[[torch.nn.Module, Variables], None]:
    def convert(module: torch.nn.Module, variables: Variables) -> None:
        child = getattr(module, attr, None)
        if child is not None:
            variables.convert_child(child, ref_name)

    return convert


def _find_child_attr(module: torch.nn.Module, *names: str) -> Any:
    for n in names:
        c = getattr(module, n, None)
        if c is not None:
            return c
    return None


# ----------------------------------------------------------------------------- combinators
def _convert_residual(module: torch.nn.Module, variables: Variables) -> None:
    body = _find_child_attr(module, "layers")
    if isinstance(body, torch.nn.ModuleList):
        for i, child in enumerate(body):
            variables.convert_child(child, f"layers_{i}")
    elif body is not None:
        variables.convert_child(body, "layers_0")
    shortcut = _find_child_attr(module, "shortcut_layer", "shortcut")
    if shortcut is not None:
        variables.convert_child(shortcut, "shortcut_layer")


def _convert_repeat(module: torch.nn.Module, variables: Variables) -> None:
    """Reference Repeat stacks the child's variables on a leading ``num_repeats`` axis."""
    copies = _find_child_attr(module, "layers", "repeats")
    child_vars = variables.child("child_layer")
    if isinstance(copies, torch.nn.ModuleList):
        for i, child in enumerate(copies):
            child_vars_i = _IndexedVariables(child_vars, i, len(copies))
            child_vars_i.convert_as(child)
        return
    child = _find_child_attr(module, "layer", "child_layer")
    if child is not None:
        variables.convert_child(child, "child_layer")


class _IndexedVariables(Variables):
    """A view that reads slice ``index`` of the leading (stacked) axis of every value. Nested
    Repeats stack again (outer axis first), so a view of a view indexes both, outer first."""

    def __init__(self, base: Variables, index: int, count: int) -> None:
        super().__init__(base._trees, base.path, base._ctx, base.module_path)
        outer = base._levels if isinstance(base, _IndexedVariables) else ()
        self._levels: tuple[tuple[int, int], ...] = (*outer, (index, count))

    def take(self, name: str, collection: str = "params") -> np.ndarray:
        arr = Variables.take(self, name, collection)
        counts = tuple(count for _, count in self._levels)
        if arr.ndim < len(counts) or tuple(arr.shape[: len(counts)]) != counts:
            expected = (
                f"a Repeat of {counts[0]} expects a leading axis of {counts[0]}"
                if len(counts) == 1
                else f"nested Repeats of {' x '.join(map(str, counts))} expect leading axes {counts}"
            )
            self._ctx.problems.append(f"mis-shaped: {self.path_of(name, collection)} has shape {arr.shape}; {expected}")
            from sl.interop.flax import _Missing

            raise _Missing(name)
        for index, _ in self._levels:
            arr = arr[index]
        return arr

    def child(self, name: str) -> Variables:
        view = _IndexedVariables(Variables.child(self, name), 0, 1)
        view._levels = self._levels
        return view


# ----------------------------------------------------------------------------- layers
def _permute(*axes: int) -> Callable[[np.ndarray], np.ndarray]:
    def transform(a: np.ndarray) -> np.ndarray:
        return np.transpose(a, axes) if a.ndim == len(axes) else a  # shape check reports a wrong rank

    return transform


def _convert_dense(module: torch.nn.Module, variables: Variables) -> None:
    """Dense: kernel ``[in, out]`` -> weight ``[out, in]``."""
    variables.assign(_tensor(module, "weight"), "kernel", transform=dense_kernel_to_weight, target_name="weight")
    variables.assign(_tensor(module, "bias"), "bias")


def _convert_dense_shaped(module: torch.nn.Module, variables: Variables) -> None:
    """DenseShaped: kernel ``[*in, *out]`` -> weight ``[*out, *in]`` (empty shapes stored as ``(1,)``)."""
    n_in = len(tuple(getattr(module, "input_shape", ())) or (1,))
    n_out = len(tuple(getattr(module, "output_shape", ())) or (1,))
    axes = (*range(n_in, n_in + n_out), *range(n_in))
    variables.assign(_tensor(module, "weight"), "kernel", transform=_permute(*axes), target_name="weight")
    variables.assign(_tensor(module, "bias"), "bias")


def _convert_sequence_dense(module: torch.nn.Module, variables: Variables) -> None:
    """SequenceDense: kernel ``[T, in, out]`` -> weight ``[T, out, in]``."""
    variables.assign(_tensor(module, "weight"), "kernel", transform=_permute(0, 2, 1), target_name="weight")
    variables.assign(_tensor(module, "bias"), "bias")


def _convert_masked_dense(module: torch.nn.Module, variables: Variables) -> None:
    """MaskedDense: kernel ``[T_in, T_out, in, out]`` -> weight ``[T_out, out, T_in, in]``."""
    variables.assign(_tensor(module, "weight"), "kernel", transform=_permute(1, 3, 0, 2), target_name="weight")
    variables.assign(_tensor(module, "bias"), "bias")


def _convert_embedding_transpose(module: torch.nn.Module, variables: Variables) -> None:
    """EmbeddingTranspose: its bias, plus the table when the reference adopted an unbound Embedding.

    A reference EmbeddingTranspose given an unbound Embedding owns it as the child scope
    ``embedding``; given a bound (tied) one, the table lives at the Embedding's own scope
    elsewhere in the tree and is loaded there.
    """
    variables.assign(_tensor(module, "bias"), "bias")
    emb = getattr(module, "embedding", None)
    if emb is None:
        return
    child = variables.child("embedding")
    if any(child.names(c) for c in child.collections):
        variables.convert_child(emb, "embedding")
    elif getattr(emb, "weight", None) is not None:
        variables._ctx.assigned.add(id(emb.weight))  # loaded (or reported) at the Embedding's own scope


def _convert_bidirectional(module: torch.nn.Module, variables: Variables) -> None:
    variables.convert_child(getattr(module, "forward_layer"), "forward")  # noqa: B009 (typed as Module)
    variables.convert_child(getattr(module, "backward_layer"), "backward")  # noqa: B009


def _shares_scope(attr: str) -> Callable[[torch.nn.Module, Variables], None]:
    """Wrappers whose reference child shares the wrapper's Flax scope (no ``child_layer`` level)."""

    def convert(module: torch.nn.Module, variables: Variables) -> None:
        variables.convert_as(getattr(module, attr))

    return convert


_CONVERTERS: dict[type, Callable[[torch.nn.Module, Variables], None]] = {
    c.Serial: serial_children(),
    c.Parallel: serial_children(),
    c.Residual: _convert_residual,
    c.Repeat: _convert_repeat,
    # Reference WrapperMixin children: Blockwise and ParallelChannels share the parent scope,
    # CheckpointGradient nests under ``child_layer`` (checked against sequence-layers 0.2).
    c.ParallelChannels: _shares_scope("child_layer"),
    c.Blockwise: _shares_scope("child_layer"),
    c.CheckpointGradient: _single_child("child_layer"),
    c.Bidirectional: _convert_bidirectional,
    L.Dense: _convert_dense,
    L.DenseShaped: _convert_dense_shaped,
    # EinsumDense keeps the reference kernel layout (the equation's kernel spec).
    L.EinsumDense: same_names(weight="kernel", bias="bias"),
    L.Affine: same_names("scale", "bias"),
    L.PRelu: same_names("negative_slope"),
    L.Snake: same_names("alpha_log", "beta_log"),
    L.Embedding: same_names(weight="embedding"),
    L.EmbeddingTranspose: _convert_embedding_transpose,
    L.AddTimingSignal: same_names("scale"),
    L.SequenceEmbedding: same_names(weight="embedding"),
    L.SequenceDense: _convert_sequence_dense,
    L.MaskedDense: _convert_masked_dense,
    L.Conditioning: _single_child("dense", "dense"),
}


def register_core_converters(converters: ConverterRegistry) -> None:
    """Registers the converters of sl-core's layers (its ``sl_register_converters`` hook)."""
    for cls, fn in _CONVERTERS.items():
        converters.register(cls, fn)
