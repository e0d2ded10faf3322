"""Error types raised by the contract checks, so callers match on types, not message text."""

from __future__ import annotations

__all__ = ["SpecMismatchError", "StateMismatchError"]


class SpecMismatchError(ValueError):
    """A layer produced an output whose channel shape or length differs from what it declares
    (``get_output_spec``, ``output_ratio``). This is a bug in the layer, not in its input."""


class StateMismatchError(ValueError):
    """``step`` was given a state whose structure, shapes or dtypes differ from what
    ``get_initial_state`` returns for that input (a state of another layer, batch or dtype)."""
