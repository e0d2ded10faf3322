"""Interoperability with the JAX reference (sequence-layers): checkpoint import.

``sl.interop.load_flax_params(model, variables)`` copies a reference variable tree into an
sl model of the same structure. Converters are looked up per layer class in a
:class:`ConverterRegistry` that plugins fill through the ``sl_register_converters`` hook.
"""

from __future__ import annotations

from sl.interop.flax import (
    ConversionError,
    Converter,
    ConverterRegistry,
    Variables,
    default_converters,
    load_flax_params,
    to_numpy,
)

__all__ = [
    "ConversionError",
    "Converter",
    "ConverterRegistry",
    "Variables",
    "default_converters",
    "load_flax_params",
    "to_numpy",
]
