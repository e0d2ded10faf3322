"""Named activation functions, so layers that take an ``activation`` stay serialisable.

Layers accept either a name from this table (``"relu"``, ``"gelu"``, ...) or one of
the functions in it; both round-trip through ``get_config``. Register more with
:func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["get", "name_of", "names", "register", "resolve"]

Activation = Callable[[torch.Tensor], torch.Tensor]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_TABLE: dict[str, Activation] = {
    "relu": torch.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": F.silu,
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "elu": F.elu,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "leaky_relu": F.leaky_relu,
    "mish": F.mish,
    "exp": torch.exp,
    "identity": _identity,
    "linear": _identity,
}
_ALIASES_OF: dict[int, str] = {}


def _reindex() -> None:
    _ALIASES_OF.clear()
    for name, fn in _TABLE.items():
        _ALIASES_OF.setdefault(id(fn), name)
    # Common spellings users pass directly.
    for fn, name in ((F.relu, "relu"), (torch.nn.functional.tanh, "tanh"), (F.sigmoid, "sigmoid")):
        _ALIASES_OF.setdefault(id(fn), name)


_reindex()


def register(name: str, fn: Activation) -> None:
    """Adds ``fn`` under ``name`` (an error if the name is taken by another function)."""
    if name in _TABLE and _TABLE[name] is not fn:
        raise ValueError(f"Activation {name!r} is already registered.")
    _TABLE[name] = fn
    _reindex()


def names() -> list[str]:
    return sorted(_TABLE)


def get(name: str) -> Activation:
    try:
        return _TABLE[name]
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; known: {names()}.") from None


def name_of(fn: object) -> str | None:
    """The registered name of ``fn``, or None."""
    return _ALIASES_OF.get(id(fn))


def resolve(
    activation: str | Activation | None, *, owner: str | None = None, arg: str = "activation"
) -> Activation | None:
    """A name or function (or None) to a function (or None). Errors name ``owner`` (the layer) and
    ``arg`` when given."""
    if activation is None:
        return None
    where = f"{owner} ({arg}): " if owner else ""
    if isinstance(activation, str):
        try:
            return get(activation)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
    if not callable(activation):
        raise TypeError(f"{where}An activation must be a name or a callable; got {activation!r}.")
    return activation
