"""Registers sl-dsp's layers with the sl registry (entry point ``sl.plugins: dsp``).

The convention every package follows: this module holds the explicit list of the package's
layers and aliases, ``examples.py`` its example instances. sl-dsp's layers have no
parameters, so there are no checkpoint converters. ``Delay`` and ``Lookahead`` are sl-core's
(registered there) and only re-exported by ``sl_dsp``.
"""

from __future__ import annotations

from collections.abc import Iterable

import sl_dsp as d
from sl.registry import LayerExample, LayerRegistry, hookimpl

# (layer, aliases): the registry name is the class name.
LAYERS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (d.Frame, ()),
    (d.OverlapAdd, ()),
    (d.FFT, ()),
    (d.IFFT, ()),
    (d.RFFT, ()),
    (d.IRFFT, ()),
    (d.STFT, ()),
    (d.InverseSTFT, ("ISTFT",)),
    (d.LinearToMelSpectrogram, ()),
    (d.Window, ()),
)


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    from sl_dsp.examples import example_layers

    return example_layers()
