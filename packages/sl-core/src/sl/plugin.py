"""sl-core's own plugin: registers the core combinators and layers like any other plugin.

The convention every package follows: ``plugin.py`` holds the explicit list of the
package's layers and aliases, ``examples.py`` its example instances,
``converters.py`` (here ``sl.interop.converters``) its reference-checkpoint
converters. Layer modules never import the registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from sl import combinators as c
from sl import layers as L
from sl.registry import LayerExample, LayerRegistry, hookimpl

# (layer, aliases): the registry name is the class name.
LAYERS: tuple[tuple[type, tuple[str, ...]], ...] = (
    # combinators
    (c.Serial, ("Sequential",)),
    (c.SerialModules, ()),
    (c.Parallel, ()),
    (c.ParallelChannels, ()),
    (c.Residual, ()),
    (c.Repeat, ()),
    (c.Bidirectional, ()),
    (c.Blockwise, ()),
    (c.CheckpointGradient, ()),
    # pointwise
    (L.Abs, ()),
    (L.Add, ()),
    (L.Affine, ()),
    (L.Elu, ("ELU",)),
    (L.Exp, ()),
    (L.GatedLinearUnit, ("GLU",)),
    (L.GatedTanhUnit, ()),
    (L.GatedUnit, ()),
    (L.Gelu, ("GELU",)),
    (L.LeakyRelu, ("LeakyReLU",)),
    (L.Log, ()),
    (L.Maximum, ()),
    (L.Minimum, ()),
    (L.Mod, ()),
    (L.PRelu, ("PReLU",)),
    (L.Power, ()),
    (L.Relu, ("ReLU",)),
    (L.Scale, ()),
    (L.Sigmoid, ()),
    (L.Snake, ()),
    (L.Softmax, ()),
    (L.Softplus, ()),
    (L.Swish, ("SiLU",)),
    (L.Tanh, ()),
    # utility
    (L.ApplySharding, ()),
    (L.Cast, ()),
    (L.CheckpointName, ()),
    (L.Emit, ()),
    (L.GradientClipping, ()),
    (L.Identity, ()),
    (L.Lambda, ()),
    (L.Logging, ()),
    (L.MaskInvalid, ()),
    (L.NamedEmit, ()),
    (L.OptimizationBarrier, ()),
    (L.StopGradient, ("Detach",)),
    # shape
    (L.Argmax, ("ArgMax",)),
    (L.EinopsRearrange, ()),
    (L.ExpandDims, ()),
    (L.Flatten, ()),
    (L.GlobalEinopsRearrange, ()),
    (L.GlobalReshape, ()),
    (L.Max, ()),
    (L.Mean, ()),
    (L.Min, ()),
    (L.MoveAxis, ("MoveDim",)),
    (L.Reshape, ()),
    (L.Slice, ()),
    (L.Squeeze, ()),
    (L.Sum, ()),
    (L.SwapAxes, ("SwapDims",)),
    (L.Transpose, ()),
    # resampling, embeddings, stochastic, dense
    (L.Downsample1D, ()),
    (L.Upsample1D, ()),
    (L.Upsample2D, ()),
    (L.Embedding, ()),
    (L.EmbeddingTranspose, ()),
    (L.OneHot, ()),
    (L.AddNoise, ()),
    (L.Dropout, ()),
    (L.Dense, ()),
    (L.DenseShaped, ()),
    (L.EinsumDense, ()),
    # latency, position, conditioning, time-varying
    (L.Delay, ()),
    (L.Lookahead, ()),
    (L.AddTimingSignal, ()),
    (L.ApplyRotaryPositionalEncoding, ("RoPE", "RotaryPositionalEncoding")),
    (L.Conditioning, ()),
    (L.SequenceEmbedding, ()),
    (L.SequenceDense, ()),
    (L.MaskedDense, ()),
)


@hookimpl
def sl_register_layers(registry: LayerRegistry) -> None:
    for cls, aliases in LAYERS:
        registry.add(cls, aliases=aliases)


@hookimpl
def sl_example_layers() -> Iterable[LayerExample]:
    from sl.examples import example_layers

    return example_layers()


@hookimpl
def sl_register_converters(converters: object) -> None:
    from sl.interop.converters import register_core_converters

    register_core_converters(converters)  # type: ignore[arg-type]
