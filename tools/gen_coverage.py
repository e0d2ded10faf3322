"""Writes docs/coverage.md: every reference layer and where (whether) sl provides it.

Run with every first-party package installed: ``python tools/gen_coverage.py``.
``--check`` exits non-zero when the file on disk is out of date or a layer that the
table expects in an installed package is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sl

# Reference layer names per reference module (sequence_layers/jax, __all__), and the sl
# package that owns them (inventory.md section 3, with Delay/Lookahead moved to core).
REFERENCE: dict[str, tuple[str, list[str]]] = {
    "simple": (
        "core",
        [
            "Abs",
            "Add",
            "AddNoise",
            "Affine",
            "ApplySharding",
            "Argmax",
            "Cast",
            "CheckpointName",
            "Downsample1D",
            "Dropout",
            "EinopsRearrange",
            "Elu",
            "Embedding",
            "EmbeddingTranspose",
            "Emit",
            "Exp",
            "ExpandDims",
            "Flatten",
            "GatedLinearUnit",
            "GatedTanhUnit",
            "GatedUnit",
            "Gelu",
            "GlobalEinopsRearrange",
            "GlobalReshape",
            "GradientClipping",
            "Identity",
            "Lambda",
            "LeakyRelu",
            "Log",
            "Logging",
            "MaskInvalid",
            "Max",
            "Maximum",
            "Mean",
            "Min",
            "Minimum",
            "Mod",
            "MoveAxis",
            "NamedEmit",
            "OneHot",
            "OptimizationBarrier",
            "PRelu",
            "Power",
            "Relu",
            "Reshape",
            "Scale",
            "Sigmoid",
            "Slice",
            "Snake",
            "Softmax",
            "Softplus",
            "Squeeze",
            "StopGradient",
            "Sum",
            "SwapAxes",
            "Swish",
            "Tanh",
            "Transpose",
            "Upsample1D",
            "Upsample2D",
        ],
    ),
    "dense": ("core", ["Dense", "DenseShaped", "EinsumDense"]),
    "position": ("core", ["AddTimingSignal", "ApplyRotaryPositionalEncoding"]),
    "conditioning": ("core", ["Conditioning"]),
    "time_varying": ("core", ["MaskedDense", "SequenceDense", "SequenceEmbedding"]),
    "dsp (latency)": ("core", ["Delay", "Lookahead"]),
    "combinators": (
        "core",
        [
            "Bidirectional",
            "Blockwise",
            "CheckpointGradient",
            "Parallel",
            "ParallelChannels",
            "Repeat",
            "Residual",
            "Serial",
            "SerialModules",
        ],
    ),
    "dsp": (
        "dsp",
        [
            "FFT",
            "Frame",
            "IFFT",
            "IRFFT",
            "InverseSTFT",
            "LinearToMelSpectrogram",
            "OverlapAdd",
            "RFFT",
            "STFT",
            "Window",
        ],
    ),
    "convolution": ("conv", ["Conv1D", "Conv1DTranspose", "Conv2D", "Conv2DTranspose", "Conv3D", "DepthwiseConv1D"]),
    "pooling": (
        "conv",
        [
            "AveragePooling1D",
            "AveragePooling2D",
            "AveragePooling3D",
            "MaxPooling1D",
            "MaxPooling2D",
            "MaxPooling3D",
            "MinPooling1D",
            "MinPooling2D",
            "MinPooling3D",
        ],
    ),
    "normalization": (
        "conv",
        [
            "BatchNormalization",
            "GroupNormalization",
            "L2Normalize",
            "LayerNormalization",
            "RMSNormalization",
        ],
    ),
    "recurrent": ("recurrent", ["LSTM", "RGLRU"]),
    "attention": (
        "attention",
        [
            "BlockwiseDotProductSelfAttention",
            "DotProductAttention",
            "DotProductSelfAttention",
            "DotProductSelfAttentionV2",
            "GmmAttention",
            "LocalDotProductSelfAttention",
            "MultiSourceDotProductAttention",
            "StreamingDotProductAttention",
            "StreamingLocalDotProductAttention",
        ],
    ),
}


BASES = [
    "SequenceLayer",
    "Emitting",
    "Stateless",
    "StatelessEmitting",
    "StatelessPointwise",
    "StatelessPointwiseFunctor",
    "PreservesShape",
    "PreservesType",
    "WrapperMixin",
]


def _steppable(cls: type) -> str:
    prop = cls.__dict__.get("supports_step")
    for base in cls.__mro__:
        if "supports_step" in base.__dict__:
            prop = base.__dict__["supports_step"]
            break
    if isinstance(prop, property) and prop.fget is not None and prop.fget.__qualname__.startswith("SequenceLayer."):
        return "yes"
    return "config-dependent"


def render() -> tuple[str, list[str]]:
    layers = sl.registry.all_layers()
    plugins = {p.name: p for p in sl.registry.plugins()}
    aliases: dict[type, list[str]] = {}
    for qualified, cls in layers.items():
        aliases.setdefault(cls, []).append(qualified.split(":", 1)[1])
    lines = [
        "# Coverage of the reference layers",
        "",
        "Generated by `python tools/gen_coverage.py` from the live registry; do not edit by hand.",
        "One row per layer of google/sequence-layers (`sequence_layers/jax`), with the sl package",
        "that provides it, its registered names, and whether it is ported.",
        "",
    ]
    missing: list[str] = []
    total = ported = 0
    for module, (plugin, names) in REFERENCE.items():
        lines += [
            f"## {module} (sl-{plugin})",
            "",
            "| reference layer | sl names | step | status |",
            "|---|---|---|---|",
        ]
        for name in names:
            total += 1
            cls = layers.get(f"{plugin}:{name}")
            if cls is None:
                installed = plugin in plugins and plugins[plugin].ok
                status = "missing" if installed else "plugin not installed"
                if plugin == "core" or installed:
                    status = "not yet ported"
                    if plugin == "core":
                        missing.append(name)
                lines.append(f"| {name} | | | {status} |")
                continue
            ported += 1
            names_ = ", ".join(f"`{n}`" for n in sorted(aliases.get(cls, [name]), key=lambda n: (n != name, n)))
            lines.append(f"| {name} | {names_} | {_steppable(cls)} | ported |")
        lines.append("")
    in_reference = {(plugin, name) for plugin, names in REFERENCE.values() for name in names}
    primary = sl.registry.primary_names()
    extra: dict[str, list[str]] = {}
    for qualified in primary.values():
        plugin, name = qualified.split(":", 1)
        if (plugin, name) not in in_reference and plugin in sl.registry.FIRST_PARTY:
            extra.setdefault(plugin, []).append(name)
    lines += [
        "## Beyond the reference",
        "",
        "Registered first-party layers with no same-named layer in `sequence_layers/jax`",
        "(TF-only layers, torch-facing additions).",
        "",
        "| sl package | layers |",
        "|---|---|",
    ]
    for plugin in sl.registry.FIRST_PARTY:
        if extra.get(plugin):
            lines.append(f"| sl-{plugin} | {', '.join(f'`{n}`' for n in sorted(extra[plugin]))} |")
    lines.append("")
    lines += [
        "## Base classes and mixins (sl-core)",
        "",
        "Not layers themselves; what layer authors subclass.",
        "",
        "| reference | sl |",
        "|---|---|",
    ]
    for name in BASES:
        status = f"`sl.{name}`" if hasattr(sl, name) else "missing"
        if status == "missing":
            missing.append(name)
        lines.append(f"| {name} | {status} |")
    lines.append("")
    lines.insert(6, f"**{ported} of {total} reference layers ported.**\n")
    return "\n".join(lines), missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=str(Path(__file__).parent.parent / "docs" / "coverage.md"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text, missing = render()
    if args.check:
        if missing:
            print(f"core layers missing from the registry: {missing}")
            return 1
        return 0
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
