"""Shared definitions for the parity cases (sl vs the JAX reference sequence-layers).

A cases module (``parity/cases_<group>.py``) defines ``cases() -> list[LayerCase]`` and may
define ``NO_REFERENCE: dict[str, str]`` (sl layer name -> why it has no reference
counterpart). Cases build both layers lazily, so a module whose layers are not ported yet
still imports; its rows then say "not yet ported".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass
class Config:
    """One configuration of one layer, built on both sides.

    ``ref``: returns the reference ``Config`` (``sequence_layers.jax.X.Config(...)``);
    ``ours``: returns the sl layer. ``input_shape`` is the channel shape. ``constants``:
    ``(rng, batch, time) -> dict`` of numpy arrays or ``("sequence", values, mask)`` tuples.
    ``known_difference``: a documented reason this configuration may disagree (the row is
    then not a failure).
    """

    label: str
    ref: Callable[[], Any]
    ours: Callable[[], Any]
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    time: int = 13
    batch: int = 3
    int_high: int | None = None
    random_mask: bool = True
    constants: Callable[[np.random.Generator, int, int], dict[str, Any]] | None = None
    stream_constants: bool = False
    rtol: float = 1e-5
    atol: float = 1e-5
    check_step: bool = True
    randomize: bool = True
    known_difference: str | None = None
    # Problem kinds the known difference covers ("layer", "step", a property name); empty: any.
    known_scope: tuple[str, ...] = ()
    blocks_per_step: int = 1
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # applied to the random input values


@dataclasses.dataclass
class LayerCase:
    """All configurations of one layer: ``name`` is our registry name, ``ref_name`` the reference's."""

    name: str
    configs: list[Config]
    ref_name: str | None = None
    group: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.ref_name is None:
            self.ref_name = self.name


def ours(name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A deferred ``sl.registry.get(name)(*args, **kwargs)`` (arguments may themselves be deferred)."""

    def build() -> Any:
        import sl

        cls = sl.registry.get(name)
        return cls(*[_force(a) for a in args], **{k: _force(v) for k, v in kwargs.items()})

    build.sl_name = name  # type: ignore[attr-defined]
    return build


def ref(name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A deferred ``sequence_layers.jax.<name>.Config(*args, **kwargs)`` (arguments may be deferred)."""

    def build() -> Any:
        import sequence_layers.jax as slj

        obj: Any = slj
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj.Config(*[_force(a) for a in args], **{k: _force(v) for k, v in kwargs.items()})

    return build


def _force(x: Any) -> Any:
    if callable(x) and (getattr(x, "sl_name", None) is not None or getattr(x, "__name__", "") == "build"):
        return x()
    if isinstance(x, (list, tuple)) and any(callable(e) and getattr(e, "__name__", "") == "build" for e in x):
        return type(x)(_force(e) for e in x)
    return x
