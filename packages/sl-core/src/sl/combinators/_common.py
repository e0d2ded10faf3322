"""Helpers every combinator family shares: child checks, constants copies, state checks, tails."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sl.layer import SequenceLayer
from sl.types import Constants, Emits, Sequence, State


def copy_constants(constants: Constants | None) -> Constants | None:
    """A shallow copy per child, so a child cannot change what its siblings see (upstream 5fed1df)."""
    return None if constants is None else dict(constants)


def insert_with_unique_key(emits: dict[str, Emits], key: str, value: Emits) -> str:
    """Adds ``value`` under ``key``, or ``key_1``, ``key_2``... if taken."""
    if key not in emits:
        emits[key] = value
        return key
    i = 1
    while f"{key}_{i}" in emits:
        i += 1
    emits[f"{key}_{i}"] = value
    return f"{key}_{i}"


def check_child(owner: str, what: str, layer: Any) -> SequenceLayer:
    if not isinstance(layer, SequenceLayer):
        raise TypeError(f"{owner} expects a SequenceLayer as {what}; got {type(layer).__name__} ({layer!r:.80}).")
    return layer


def as_layer_list(owner: str, layers: Iterable[Any]) -> list[SequenceLayer]:
    """``(a, b)`` or ``([a, b],)`` (a single list/tuple argument) as a checked list of layers."""
    layers = tuple(layers)
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    return [check_child(owner, f"child {i}", layer) for i, layer in enumerate(layers)]


def layer_list_argument(owner: str, what: str, value: Any) -> list[SequenceLayer]:
    """A layer or an iterable of layers (``Residual(layers=...)``) as a checked list."""
    if isinstance(value, SequenceLayer):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise TypeError(f"{owner} expects {what} to be a SequenceLayer or a list of them; got {type(value).__name__}.")
    return [check_child(owner, f"{what}[{i}]", layer) for i, layer in enumerate(value)]


def check_tuple_state(owner: str, state: State, n: int, what: str = "child states") -> None:
    if not isinstance(state, tuple) or len(state) != n:
        got = (
            f"{type(state).__name__} of length {len(state)}"
            if isinstance(state, (tuple, list))
            else type(state).__name__
        )
        raise ValueError(f"{owner} expects a state tuple of {n} {what} (from get_initial_state); got {got}.")


def concatenate_tails(parts: list[Sequence]) -> Sequence | None:
    """Flushed outputs in time order (None when there are none)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return Sequence.concatenate_sequences(parts)


def same_length_tails(owner: str, tails: list[Sequence | None]) -> list[Sequence] | None:
    """Tails of branches that are combined: all None, or all present with one length."""
    if all(t is None for t in tails):
        return None
    lengths = [None if t is None else t.values.shape[1] for t in tails]
    if any(t is None for t in tails) or len(set(lengths)) > 1:
        raise ValueError(
            f"{owner}.flush: its branches leave tails of lengths {lengths} (None: no tail) at the end of the "
            "stream, which cannot be combined; flush the branches separately."
        )
    return [t for t in tails if t is not None]
