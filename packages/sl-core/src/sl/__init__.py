"""sl: streaming sequence layers for PyTorch.

Every layer runs layer-wise (whole sequence) and step-wise (block by block with
explicit state), and the two agree exactly. sl-core's types, combinators and layers
import statically (``from sl import Dense``); plugin layers resolve through the
registry (``sl.STFT``, ``sl.dsp.STFT``, ``sl.registry.get("dsp:STFT")``), loaded at the
first such lookup, so ``import sl`` loads no plugin.
"""

from __future__ import annotations

from typing import Any

from sl import activations, composition_rules, deploy, lazy, merging, padding, registry, replay, toolkit
from sl.combinators import (
    Bidirectional,
    Blockwise,
    CheckpointGradient,
    CombinationMode,
    Parallel,
    ParallelChannels,
    Repeat,
    Residual,
    Sequential,
    Serial,
    SerialModules,
    WrapperMixin,
)
from sl.config import from_config
from sl.deploy import StreamingModule, compile_step, export_onnx, export_step
from sl.errors import SpecMismatchError, StateMismatchError
from sl.layer import (
    Emitting,
    PreservesShape,
    PreservesType,
    SequenceLayer,
    Stateless,
    StatelessEmitting,
    StatelessPointwise,
    StatelessPointwiseFunctor,
    get_constant,
)
from sl.layers import (
    Abs,
    Add,
    AddNoise,
    AddTimingSignal,
    Affine,
    ApplyRotaryPositionalEncoding,
    ApplySharding,
    Argmax,
    Cast,
    CheckpointName,
    Conditioning,
    Delay,
    Dense,
    DenseShaped,
    Downsample1D,
    Dropout,
    EinopsRearrange,
    EinsumDense,
    Elu,
    Embedding,
    EmbeddingTranspose,
    Emit,
    Exp,
    ExpandDims,
    Flatten,
    GatedLinearUnit,
    GatedTanhUnit,
    GatedUnit,
    Gelu,
    GlobalEinopsRearrange,
    GlobalReshape,
    GradientClipping,
    Identity,
    Lambda,
    LeakyRelu,
    Log,
    Logging,
    Lookahead,
    MaskedDense,
    MaskInvalid,
    Max,
    Maximum,
    Mean,
    Min,
    Minimum,
    Mod,
    MoveAxis,
    NamedEmit,
    OneHot,
    OptimizationBarrier,
    Power,
    PRelu,
    Relu,
    Reshape,
    Scale,
    SequenceDense,
    SequenceEmbedding,
    Sigmoid,
    Slice,
    Snake,
    Softmax,
    Softplus,
    Squeeze,
    StopGradient,
    Sum,
    SwapAxes,
    Swish,
    Tanh,
    Transpose,
    Upsample1D,
    Upsample2D,
)
from sl.registry import LayerExample, hookimpl
from sl.replay import replay_step
from sl.stepping import Streamer, step_by_step
from sl.testing.sequences import random_sequence
from sl.types import (
    ChannelSpec,
    Constants,
    Emits,
    MaskedSequence,
    PaddingMode,
    ReceptiveField,
    Sequence,
    State,
    sequence_mask,
)

# The short names users type (the registry knows them too).
ReLU = Relu
GELU = Gelu
SiLU = Swish
ELU = Elu
PReLU = PRelu
LeakyReLU = LeakyRelu
GLU = GatedLinearUnit
RoPE = ApplyRotaryPositionalEncoding
RotaryPositionalEncoding = ApplyRotaryPositionalEncoding
Detach = StopGradient
ArgMax = Argmax
MoveDim = MoveAxis
SwapDims = SwapAxes

__version__ = "0.1.0"

__all__ = [
    "Abs",
    "activations",
    "Add",
    "AddNoise",
    "AddTimingSignal",
    "Affine",
    "ApplyRotaryPositionalEncoding",
    "ApplySharding",
    "ArgMax",
    "Argmax",
    "Bidirectional",
    "Blockwise",
    "Cast",
    "ChannelSpec",
    "CheckpointGradient",
    "CheckpointName",
    "CombinationMode",
    "composition_rules",
    "Conditioning",
    "Constants",
    "Delay",
    "Dense",
    "DenseShaped",
    "Detach",
    "Downsample1D",
    "Dropout",
    "EinopsRearrange",
    "EinsumDense",
    "ELU",
    "Elu",
    "Embedding",
    "EmbeddingTranspose",
    "Emit",
    "Emits",
    "Emitting",
    "Exp",
    "ExpandDims",
    "Flatten",
    "from_config",
    "GatedLinearUnit",
    "GatedTanhUnit",
    "GatedUnit",
    "GELU",
    "Gelu",
    "get_constant",
    "GlobalEinopsRearrange",
    "GlobalReshape",
    "GLU",
    "GradientClipping",
    "hookimpl",
    "Identity",
    "Lambda",
    "LayerExample",
    "LeakyReLU",
    "LeakyRelu",
    "Log",
    "Logging",
    "Lookahead",
    "MaskedDense",
    "MaskedSequence",
    "MaskInvalid",
    "Max",
    "Maximum",
    "Mean",
    "compile_step",
    "deploy",
    "export_onnx",
    "export_step",
    "lazy",
    "merging",
    "Min",
    "Minimum",
    "Mod",
    "MoveAxis",
    "MoveDim",
    "NamedEmit",
    "OneHot",
    "OptimizationBarrier",
    "padding",
    "PaddingMode",
    "Parallel",
    "ParallelChannels",
    "Power",
    "PReLU",
    "PRelu",
    "PreservesShape",
    "PreservesType",
    "random_sequence",
    "ReceptiveField",
    "registry",
    "replay",
    "replay_step",
    "ReLU",
    "Relu",
    "Repeat",
    "Reshape",
    "Residual",
    "RoPE",
    "RotaryPositionalEncoding",
    "Scale",
    "Sequence",
    "sequence_mask",
    "SequenceDense",
    "SequenceEmbedding",
    "SequenceLayer",
    "Sequential",
    "Serial",
    "SerialModules",
    "Sigmoid",
    "SiLU",
    "Slice",
    "Snake",
    "Softmax",
    "Softplus",
    "SpecMismatchError",
    "Squeeze",
    "State",
    "Stateless",
    "StatelessEmitting",
    "StatelessPointwise",
    "StatelessPointwiseFunctor",
    "StateMismatchError",
    "step_by_step",
    "StopGradient",
    "Streamer",
    "StreamingModule",
    "Sum",
    "SwapAxes",
    "SwapDims",
    "Swish",
    "Tanh",
    "toolkit",
    "Transpose",
    "Upsample1D",
    "Upsample2D",
    "WrapperMixin",
]

_SUBMODULES = {
    "testing",
    "layers",
    "interop",
    "combinators",
    "config",
    "types",
    "stepping",
    "examples",
    "plugin",
    "cli",
}


def __getattr__(name: str) -> Any:
    """``sl.NAME`` (a plugin's layer) and ``sl.PLUGIN`` (a plugin namespace), through the registry."""
    if name.startswith("_"):
        raise AttributeError(f"module 'sl' has no attribute {name!r}")
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"sl.{name}")
    ns = registry.namespace(name)
    if ns is not None:
        return ns
    try:
        return registry.get(name)
    except KeyError as e:
        raise AttributeError(f"module 'sl' has no attribute {name!r}: {e.args[0]}") from None


def __dir__() -> list[str]:
    names = set(__all__)
    names.update(n.split(":", 1)[1] for n in registry.all_layers())
    names.update(p.name for p in registry.plugins() if p.ok)
    return sorted(n for n in names if not n.startswith("_"))
