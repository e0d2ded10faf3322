"""Parity cases for sl-core (combinators and sl.layers.*) against sequence_layers.jax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from common import Config, LayerCase, ours, ref

# sl-core layers with no reference counterpart (documented, not compared).
NO_REFERENCE: dict[str, str] = {
    "StopGradient": "beyond the reference (jax.lax.stop_gradient as a layer); identity forward",
}

GLOBAL_EINOPS_RF = (
    "receptive_field_per_step: the reference overrides only `receptive_field` = (-inf, inf) and inherits "
    "Stateless's per-step {0: (0, 0)}; sl declares (-inf, inf) in both (as the reference's GlobalReshape does); "
    "outputs agree"
)

REPEAT_LATENCY = (
    "reference bug: its Repeat accumulates the child's latency with Python side effects inside nn.scan, whose "
    "body is traced twice whatever num_repeats is, so it reports 2 x the child's latency (checked for "
    "num_repeats 1, 2, 3, 5 with Delay and DepthwiseConv1D children); sl reports num_repeats x the child's "
    "latency, which is what the repeated layer has. Outputs agree (found by fuzzing)"
)

LOOKAHEAD_STEP = (
    "step mode: the reference drops the first `length` *valid* input steps (its countdown only advances on "
    "valid steps), sl drops the first `length` *physical* steps, matching layer mode (`x[:, length:]`); "
    "they agree whenever the leading steps are valid (length masks)"
)


def _jax(name: str) -> Any:
    """A deferred jax.nn function (the reference takes activation callables)."""

    def build() -> Any:
        import jax

        return getattr(jax.nn, name) if hasattr(jax.nn, name) else getattr(jax.numpy, name)

    build.__name__ = "build"
    return build


def _positive(values: np.ndarray) -> np.ndarray:
    return np.abs(values) + 0.1


def _pointwise(
    name: str,
    *configs: tuple[str, dict[str, Any]],
    shape: tuple[int, ...] = (5,),
    shape2d: tuple[int, ...] = (2, 3),
    **kw: Any,
) -> LayerCase:
    if not configs:
        configs = (("default", {}),)
    out = []
    for label, args in configs:
        out.append(Config(label, ref(name, **args), ours(name, **args), shape, **kw))
        out.append(
            Config(label + ",lengths,2d", ref(name, **args), ours(name, **args), shape2d, random_mask=False, **kw)
        )
    return LayerCase(name, out, group="pointwise")


def _dense_cases() -> list[LayerCase]:
    return [
        LayerCase(
            "Dense",
            [
                Config("3->5", ref("Dense", features=5), ours("Dense", 3, 5), (3,)),
                Config("3->4,no bias", ref("Dense", features=4, use_bias=False), ours("Dense", 3, 4, bias=False), (3,)),
                Config(
                    "4->2,tanh,[2,4] input",
                    ref("Dense", features=2, activation=_jax("tanh")),
                    ours("Dense", 4, 2, activation="tanh"),
                    (2, 4),
                ),
            ],
            group="dense",
        ),
        LayerCase(
            "DenseShaped",
            [
                Config("[3]->[2,4]", ref("DenseShaped", output_shape=(2, 4)), ours("DenseShaped", (3,), (2, 4)), (3,)),
                Config("[2,3]->[5]", ref("DenseShaped", output_shape=(5,)), ours("DenseShaped", (2, 3), (5,)), (2, 3)),
                Config(
                    "[2,3]->[], no bias",
                    ref("DenseShaped", output_shape=(), use_bias=False),
                    ours("DenseShaped", (2, 3), (), bias=False),
                    (2, 3),
                ),
            ],
            group="dense",
        ),
        LayerCase(
            "EinsumDense",
            [
                Config(
                    "...a,ab->...b",
                    ref("EinsumDense", equation="...a,ab->...b", output_shape=(4,), bias_axes="b"),
                    ours("EinsumDense", "...a,ab->...b", (3,), (4,), bias_axes="b"),
                    (3,),
                ),
                Config(
                    "...ab,bc->...ac",
                    ref("EinsumDense", equation="...ab,bc->...ac", output_shape=(2, 5), bias_axes=""),
                    ours("EinsumDense", "...ab,bc->...ac", (2, 3), (2, 5), bias_axes=""),
                    (2, 3),
                ),
            ],
            group="dense",
        ),
    ]


def _combinator_cases() -> list[LayerCase]:
    return [
        LayerCase(
            "Serial",
            [
                Config("empty", ref("Serial", layers=()), ours("Serial"), (3,)),
                Config(
                    "Dense,Relu,Dense",
                    ref("Serial", layers=(ref("Dense", features=4), ref("Relu"), ref("Dense", features=2))),
                    ours("Serial", ours("Dense", 3, 4), ours("Relu"), ours("Dense", 4, 2)),
                    (3,),
                ),
                Config(
                    "nested Serial,Delay, 2 blocks/step",
                    ref(
                        "Serial",
                        layers=(
                            ref("Serial", layers=(ref("Dense", features=4),)),
                            ref("Delay", length=2),
                            ref("Dense", features=2),
                        ),
                    ),
                    ours("Serial", ours("Serial", ours("Dense", 3, 4)), ours("Delay", 2), ours("Dense", 4, 2)),
                    (3,),
                    blocks_per_step=2,
                ),
                Config(
                    "Downsample,Dense,Upsample",
                    ref(
                        "Serial",
                        layers=(ref("Downsample1D", rate=2), ref("Dense", features=3), ref("Upsample1D", rate=3)),
                    ),
                    ours("Serial", ours("Downsample1D", 2), ours("Dense", 3, 3), ours("Upsample1D", 3)),
                    (3,),
                ),
                Config(
                    "Upsample2,Upsample2,Dense",
                    ref(
                        "Serial",
                        layers=(ref("Upsample1D", rate=2), ref("Upsample1D", rate=2), ref("Dense", features=2)),
                    ),
                    ours("Serial", ours("Upsample1D", 2), ours("Upsample1D", 2), ours("Dense", 3, 2)),
                    (3,),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "SerialModules",
            [
                Config(
                    "Dense,Relu,Dense (pre-built modules)",
                    _serial_modules(ref("Dense", features=4), ref("Relu"), ref("Dense", features=2)),
                    ours("SerialModules", [ours("Dense", 3, 4), ours("Relu"), ours("Dense", 4, 2)]),
                    (3,),
                )
            ],
            group="combinators",
        ),
        LayerCase(
            "Parallel",
            [
                Config(
                    f"{mode}",
                    ref("Parallel", layers=(ref("Dense", features=4), ref("Tanh")), combination=_comb(mode)),
                    ours("Parallel", ours("Dense", 4, 4), ours("Tanh"), combination=mode.lower()),
                    (4,),
                )
                for mode in ("STACK", "CONCAT", "ADD", "MEAN", "PRODUCT")
            ]
            + [
                Config(
                    "Downsample2/Downsample2+Dense concat",
                    ref(
                        "Parallel",
                        layers=(
                            ref("Downsample1D", rate=2),
                            ref("Serial", layers=(ref("Downsample1D", rate=2), ref("Dense", features=2))),
                        ),
                        combination=_comb("CONCAT"),
                    ),
                    ours(
                        "Parallel",
                        ours("Downsample1D", 2),
                        ours("Serial", ours("Downsample1D", 2), ours("Dense", 3, 2)),
                        combination="concat",
                    ),
                    (3,),
                    random_mask=False,
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "Residual",
            [
                Config(
                    "Dense,Relu",
                    ref("Residual", layers=(ref("Dense", features=3), ref("Relu"))),
                    ours("Residual", [ours("Dense", 3, 3), ours("Relu")]),
                    (3,),
                ),
                Config(
                    "Down2,Dense,Up2 body, Down2,Up2 shortcut",
                    ref(
                        "Residual",
                        layers=(ref("Downsample1D", rate=2), ref("Dense", features=3), ref("Upsample1D", rate=2)),
                        shortcut_layers=(ref("Downsample1D", rate=2), ref("Upsample1D", rate=2)),
                    ),
                    ours(
                        "Residual",
                        [ours("Downsample1D", 2), ours("Dense", 3, 3), ours("Upsample1D", 2)],
                        shortcut_layers=[ours("Downsample1D", 2), ours("Upsample1D", 2)],
                    ),
                    (3,),
                ),
                Config(
                    "shortcut Dense",
                    ref("Residual", layers=(ref("Dense", features=2),), shortcut_layers=(ref("Dense", features=2),)),
                    ours("Residual", [ours("Dense", 3, 2)], shortcut_layers=[ours("Dense", 3, 2)]),
                    (3,),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "Repeat",
            [
                Config(
                    "Dense x3",
                    ref("Repeat", layer=ref("Dense", features=3), num_repeats=3),
                    ours("Repeat", ours("Dense", 3, 3), num_repeats=3),
                    (3,),
                ),
                Config(
                    "Serial(Dense,Tanh,Delay) x2",
                    ref(
                        "Repeat",
                        layer=ref(
                            "Serial",
                            layers=(
                                ref("Dense", features=3),
                                ref("Tanh"),
                                ref("Delay", length=1, delay_layer_output=False),
                            ),
                        ),
                        num_repeats=2,
                    ),
                    ours(
                        "Repeat",
                        ours("Serial", ours("Dense", 3, 3), ours("Tanh"), ours("Delay", 1, delay_layer_output=False)),
                        num_repeats=2,
                    ),
                    (3,),
                ),
                Config(
                    "DepthwiseConv1D(k4 reverse_causal) x3",
                    ref(
                        "Repeat",
                        layer=ref("DepthwiseConv1D", kernel_size=4, padding="reverse_causal"),
                        num_repeats=3,
                    ),
                    ours("Repeat", ours("DepthwiseConv1D", 3, 4, padding="reverse_causal"), num_repeats=3),
                    (3,),
                    known_difference=REPEAT_LATENCY,
                    known_scope=("input_latency", "output_latency"),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "Blockwise",
            [
                Config(
                    "Dense, block 4",
                    ref("Blockwise", child_layer=ref("Dense", features=2), block_size=4),
                    ours("Blockwise", ours("Dense", 3, 2), block_size=4),
                    (3,),
                ),
                Config(
                    "Serial(Downsample2,Dense), block 4",
                    ref(
                        "Blockwise",
                        child_layer=ref("Serial", layers=(ref("Downsample1D", rate=2), ref("Dense", features=2))),
                        block_size=4,
                    ),
                    ours("Blockwise", ours("Serial", ours("Downsample1D", 2), ours("Dense", 3, 2)), block_size=4),
                    (3,),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "ParallelChannels",
            [
                Config(
                    "Dense, 2 groups, concat",
                    ref(
                        "ParallelChannels",
                        child_layer=ref("Dense", features=3),
                        num_groups=2,
                        combination=_comb("CONCAT"),
                    ),
                    ours("ParallelChannels", ours("Dense", 2, 3), num_groups=2, combination="concat"),
                    (4,),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "Bidirectional",
            [
                Config(
                    "Dense/Dense concat",
                    ref(
                        "Bidirectional",
                        forward=ref("Dense", features=2),
                        backward=ref("Dense", features=2),
                        combination=_comb("CONCAT"),
                    ),
                    ours("Bidirectional", ours("Dense", 3, 2), ours("Dense", 3, 2), combination="concat"),
                    (3,),
                ),
            ],
            group="combinators",
        ),
        LayerCase(
            "CheckpointGradient",
            [
                Config(
                    "Dense",
                    ref("CheckpointGradient", layer=ref("Dense", features=2)),
                    ours("CheckpointGradient", ours("Dense", 3, 2)),
                    (3,),
                ),
            ],
            group="combinators",
        ),
    ]


def _serial_modules(*children: Callable[[], Any]) -> Callable[[], Any]:
    """The reference's SerialModules takes pre-built modules, not configs."""

    class _Config:
        def make(self) -> Any:
            import sequence_layers.jax as slj

            return slj.SerialModules(layers=tuple(child().make() for child in children))

    def build() -> Any:
        return _Config()

    return build


def _comb(mode: str) -> Any:
    def build() -> Any:
        from sequence_layers.jax import utils

        return getattr(utils.CombinationMode, mode)

    build.__name__ = "build"
    return build


def _pointwise_cases() -> list[LayerCase]:
    return [
        _pointwise("Relu"),
        _pointwise("Gelu", ("approximate", {"approximate": True}), ("exact", {"approximate": False})),
        _pointwise("Elu", ("alpha=1", {}), ("alpha=0.5", {"alpha": 0.5})),
        _pointwise("LeakyRelu", ("0.01", {}), ("0.3", {"negative_slope": 0.3})),
        _pointwise("Sigmoid"),
        _pointwise("Tanh"),
        _pointwise("Swish"),
        _pointwise("Softplus"),
        _pointwise("Exp"),
        LayerCase(
            "Log",
            [Config("positive input", ref("Log"), ours("Log"), (4,), random_mask=False, transform=_positive)],
            group="pointwise",
            note="input |x|+0.1",
        ),
        _pointwise("Abs"),
        _pointwise("Power", ("2", {"power": 2.0}), ("3", {"power": 3.0})),
        _pointwise("Scale", ("0.5", {"scale": 0.5}), ("-2", {"scale": -2.0})),
        _pointwise("Add", ("1.5", {"shift": 1.5})),
        _pointwise("Maximum", ("0.2", {"maximum": 0.2})),
        _pointwise("Minimum", ("0.2", {"minimum": 0.2})),
        _pointwise("Mod", ("0.7", {"divisor": 0.7})),
        _pointwise("Softmax", ("axis -1", {"axis": -1})),
        _pointwise("GatedLinearUnit", shape=(6,), shape2d=(2, 4)),
        _pointwise("GatedTanhUnit", shape=(6,), shape2d=(2, 4)),
        LayerCase(
            "GatedUnit",
            [
                Config(
                    "tanh/sigmoid",
                    ref("GatedUnit", feature_activation=_jax("tanh"), gate_activation=_jax("sigmoid")),
                    ours("GatedUnit", feature_activation="tanh", gate_activation="sigmoid"),
                    (6,),
                )
            ],
            group="pointwise",
        ),
        LayerCase(
            "Affine",
            [
                Config("scale+bias [5]", ref("Affine", shape=(5,)), ours("Affine", (5,)), (5,)),
                Config(
                    "bias only [2,3]",
                    ref("Affine", shape=(2, 3), use_scale=False),
                    ours("Affine", (2, 3), use_scale=False),
                    (2, 3),
                ),
            ],
            group="pointwise",
        ),
        LayerCase("PRelu", [Config("default", ref("PRelu"), ours("PRelu"), (5,))], group="pointwise"),
        LayerCase(
            "Snake",
            [
                Config("shared beta", ref("Snake", separate_beta=False), ours("Snake", 5, separate_beta=False), (5,)),
                Config("separate beta", ref("Snake", separate_beta=True), ours("Snake", 5, separate_beta=True), (5,)),
            ],
            group="pointwise",
        ),
        _pointwise("Identity"),
        _pointwise("MaskInvalid"),
        _pointwise("Logging"),
    ]


def _shape_cases() -> list[LayerCase]:
    return [
        LayerCase("Flatten", [Config("[2,3]", ref("Flatten"), ours("Flatten"), (2, 3))], group="shape"),
        LayerCase(
            "Reshape",
            [Config("[6]->[3,2]", ref("Reshape", output_shape=(3, 2)), ours("Reshape", (3, 2)), (6,))],
            group="shape",
        ),
        LayerCase(
            "ExpandDims", [Config("axis -1", ref("ExpandDims", axis=-1), ours("ExpandDims", -1), (3,))], group="shape"
        ),
        LayerCase(
            "Squeeze",
            [
                Config("axis -1", ref("Squeeze", axis=-1), ours("Squeeze", -1), (3, 1)),
                Config("all unit axes", ref("Squeeze"), ours("Squeeze"), (1, 3, 1)),
            ],
            group="shape",
        ),
        LayerCase(
            "Transpose",
            [Config("[2,3,4]", ref("Transpose", axes=(3, 2, 4)), ours("Transpose", (3, 2, 4)), (2, 3, 4))],
            group="shape",
        ),
        LayerCase(
            "SwapAxes",
            [Config("2<->3", ref("SwapAxes", axis1=2, axis2=3), ours("SwapAxes", 2, 3), (2, 3))],
            group="shape",
        ),
        LayerCase(
            "MoveAxis",
            [Config("2->4", ref("MoveAxis", source=2, destination=4), ours("MoveAxis", 2, 4), (2, 3, 4))],
            group="shape",
        ),
        LayerCase(
            "EinopsRearrange",
            [
                Config(
                    "a b -> b a",
                    ref("EinopsRearrange", pattern="a b -> b a"),
                    ours("EinopsRearrange", "a b -> b a"),
                    (2, 3),
                )
            ],
            group="shape",
        ),
        *[
            LayerCase(
                n,
                [
                    Config("axis -1", ref(n, axis=-1), ours(n, axis=-1), (2, 3)),
                    Config("axis 2 keepdims", ref(n, axis=2, keepdims=True), ours(n, axis=2, keepdims=True), (2, 3)),
                ],
                group="shape",
            )
            for n in ("Max", "Min", "Mean", "Sum")
        ],
    ]


def _other_cases() -> list[LayerCase]:
    return [
        LayerCase(
            "Downsample1D",
            [Config(f"rate {r}", ref("Downsample1D", rate=r), ours("Downsample1D", r), (3,)) for r in (2, 3)],
            group="resampling",
        ),
        LayerCase(
            "Upsample1D",
            [Config(f"rate {r}", ref("Upsample1D", rate=r), ours("Upsample1D", r), (3,)) for r in (2, 3)],
            group="resampling",
        ),
        LayerCase(
            "Upsample2D",
            [Config("rate (2,3)", ref("Upsample2D", rate=(2, 3)), ours("Upsample2D", (2, 3)), (3, 2))],
            group="resampling",
        ),
        LayerCase(
            "OneHot",
            [Config("depth 5", ref("OneHot", depth=5), ours("OneHot", 5), (), dtype="int32", int_high=5)],
            group="embedding",
        ),
        LayerCase(
            "Embedding",
            [
                Config(
                    "7x4",
                    ref("Embedding", dimension=4, num_embeddings=7),
                    ours("Embedding", num_embeddings=7, dimension=4),
                    (),
                    dtype="int32",
                    int_high=7,
                ),
                Config(
                    "7x4 [2] input",
                    ref("Embedding", dimension=4, num_embeddings=7),
                    ours("Embedding", num_embeddings=7, dimension=4),
                    (2,),
                    dtype="int32",
                    int_high=7,
                ),
            ],
            group="embedding",
        ),
        LayerCase(
            "EmbeddingTranspose",
            [
                Config(
                    f"3x5, bias={b}",
                    ref("EmbeddingTranspose", embedding=_ref_embedding(5, 3), use_bias=b),
                    ours("EmbeddingTranspose", ours("Embedding", num_embeddings=3, dimension=5), bias=b),
                    (5,),
                )
                for b in (True, False)
            ],
            group="embedding",
            note="reference given an unbound Embedding (adopted as child scope `embedding`)",
        ),
        LayerCase(
            "Dropout",
            [Config("rate 0.5 (eval)", ref("Dropout", rate=0.5), ours("Dropout", 0.5), (4,))],
            group="stochastic",
        ),
        LayerCase(
            "Delay",
            [
                Config(
                    f"length {n}, delay_layer_output={d}",
                    ref("Delay", length=n, delay_layer_output=d),
                    ours("Delay", n, delay_layer_output=d),
                    (3,),
                )
                for n in (1, 3)
                for d in (True, False)
            ],
            group="latency",
        ),
        LayerCase(
            "Lookahead",
            [
                Config(
                    f"length {n}, preserve={p}, {'random mask' if rm else 'lengths'}",
                    ref("Lookahead", length=n, preserve_length_in_layer=p),
                    ours("Lookahead", n, preserve_length_in_layer=p),
                    (3,),
                    random_mask=rm,
                    known_difference=LOOKAHEAD_STEP if rm else None,
                    known_scope=("step",),
                )
                for n in (1, 3)
                for p in (False, True)
                for rm in (False, True)
            ],
            group="latency",
        ),
        LayerCase(
            "AddTimingSignal",
            [
                Config("default", ref("AddTimingSignal"), ours("AddTimingSignal"), (6,)),
                Config(
                    "all steps, trainable",
                    ref("AddTimingSignal", trainable_scale=True, only_advance_position_for_valid_timesteps=False),
                    ours("AddTimingSignal", trainable_scale=True, only_advance_position_for_valid_timesteps=False),
                    (6,),
                ),
                Config(
                    "[2,4] axes -1",
                    ref("AddTimingSignal", axes=-1, max_timescale=100.0),
                    ours("AddTimingSignal", axes=-1, max_timescale=100.0),
                    (2, 4),
                ),
            ],
            group="position",
        ),
        LayerCase(
            "ApplyRotaryPositionalEncoding",
            [
                Config(
                    "default",
                    ref("ApplyRotaryPositionalEncoding", max_wavelength=1e4),
                    ours("ApplyRotaryPositionalEncoding", 1e4),
                    (2, 6),
                ),
                Config(
                    "all steps, axis -2",
                    ref(
                        "ApplyRotaryPositionalEncoding",
                        max_wavelength=100.0,
                        axis=-2,
                        only_advance_position_for_valid_timesteps=False,
                    ),
                    ours(
                        "ApplyRotaryPositionalEncoding", 100.0, axis=-2, only_advance_position_for_valid_timesteps=False
                    ),
                    (4, 3),
                ),
            ],
            group="position",
        ),
        LayerCase(
            "SequenceDense",
            [
                Config(
                    "3->4, 13 steps",
                    ref("SequenceDense", features=4, num_steps=13),
                    ours("SequenceDense", 3, 4, num_steps=13),
                    (3,),
                ),
            ],
            group="time_varying",
        ),
        LayerCase(
            "MaskedDense",
            [
                Config(
                    "3->4, 13 steps",
                    ref("MaskedDense", features=4, num_steps=13),
                    ours("MaskedDense", 3, 4, num_steps=13),
                    (3,),
                ),
            ],
            group="time_varying",
        ),
        LayerCase(
            "SequenceEmbedding",
            [
                Config(
                    "5 per step, 13 steps",
                    ref("SequenceEmbedding", dimension=4, num_embeddings_per_step=5, num_steps=13),
                    ours("SequenceEmbedding", dimension=4, num_embeddings_per_step=5, num_steps=13),
                    (),
                    dtype="int32",
                    int_high=5,
                ),
            ],
            group="time_varying",
        ),
    ]


def _cond_constants(shape: tuple[int, ...], sequence: bool) -> Any:
    def make(rng: np.random.Generator, batch: int, time: int) -> dict[str, Any]:
        if not sequence:
            return {"cond": rng.standard_normal((batch, *shape)).astype(np.float32)}
        values = rng.standard_normal((batch, time, *shape)).astype(np.float32)
        mask = rng.uniform(size=(batch, time)) > 0.2
        values = np.where(mask.reshape(mask.shape + (1,) * len(shape)), values, 0).astype(np.float32)
        return {"cond": ("sequence", values, mask)}

    return make


def _cond_enum(kind: str, name: str) -> Any:
    def build() -> Any:
        import sequence_layers.jax as slj

        return getattr(getattr(slj.Conditioning, kind), name)

    build.__name__ = "build"
    return build


def _conditioning_cases() -> list[LayerCase]:
    configs = []
    # (projection, combination, input shape, conditioning shape, projection_channel_shape)
    combos = [
        ("IDENTITY", "ADD", (4,), (4,), None),
        ("IDENTITY", "CONCAT", (3,), (2,), None),
        ("IDENTITY", "MUL", (2, 4), (4,), None),
        ("LINEAR", "ADD", (4,), (3,), None),
        ("LINEAR", "CONCAT", (4,), (3,), (5,)),
        ("LINEAR", "CONCAT_BEFORE", (4,), (3,), (2,)),
        ("LINEAR", "AFFINE_SHIFT", (4,), (3,), None),
        ("LINEAR", "AFFINE_SCALE", (4,), (3,), None),
        ("LINEAR_AFFINE", "AFFINE", (2, 3), (3,), None),
    ]
    for proj, comb, x_shape, c_shape, pcs in combos:
        for sequence, streaming in ((True, False), (True, True), (False, False)):
            label = f"{proj}/{comb} x{list(x_shape)} c{list(c_shape)}" + (
                " (sequence, streaming)" if streaming else " (sequence)" if sequence else " (array)"
            )
            if (proj, comb) not in (("IDENTITY", "ADD"), ("LINEAR", "ADD"), ("LINEAR_AFFINE", "AFFINE")) and not (
                sequence and not streaming
            ):
                continue  # the other combinations: one constant kind is enough
            kw: dict[str, Any] = {}
            if pcs is not None:
                kw["projection_channel_shape"] = pcs
            configs.append(
                Config(
                    label,
                    ref(
                        "Conditioning",
                        conditioning_name="cond",
                        projection=_cond_enum("Projection", proj),
                        combination=_cond_enum("Combination", comb),
                        streaming=streaming,
                        **kw,
                    ),
                    ours(
                        "Conditioning",
                        "cond",
                        proj.lower(),
                        comb.lower(),
                        conditioning_shape=c_shape,
                        input_shape=x_shape,
                        streaming=streaming,
                        **kw,
                    ),
                    x_shape,
                    constants=_cond_constants(c_shape, sequence),
                    stream_constants=streaming,
                )
            )
    return [LayerCase("Conditioning", configs, group="conditioning")]


def _utility_cases() -> list[LayerCase]:
    def f16() -> Any:
        import jax.numpy as jnp

        return jnp.float16

    f16.__name__ = "build"
    simple = [
        ("Emit", {}, (3,)),
        ("NamedEmit", {"emit_name": "foo"}, (3,)),
        ("CheckpointName", {"checkpoint_name": "foo"}, (3,)),
        ("OptimizationBarrier", {}, (3,)),
        ("GradientClipping", {"clip_value": 0.5}, (3,)),
        ("Argmax", {}, (2, 5)),
    ]
    out = [
        LayerCase(n, [Config("default", ref(n, **kw), ours(n, **kw), shape)], group="utility")
        for n, kw, shape in simple
    ]
    out += [
        LayerCase(
            "ApplySharding",
            [Config("no sharding (identity)", ref("ApplySharding"), ours("ApplySharding"), (3,))],
            group="utility",
        ),
        LayerCase(
            "Lambda",
            [
                Config("tanh", ref("Lambda", fn=_jax("tanh")), ours("Lambda", "tanh"), (3,)),
                Config(
                    "softplus, mask_required=True",
                    ref("Lambda", fn=_jax("softplus"), mask_required=True),
                    ours("Lambda", "softplus", mask_required=True),
                    (2, 3),
                ),
            ],
            group="utility",
        ),
    ]
    out += [
        LayerCase(
            "Cast",
            [Config("float16", ref("Cast", dtype=f16), ours("Cast", "float16"), (3,), rtol=1e-3, atol=1e-3)],
            group="utility",
            note="float16 output: tolerance of its precision",
        ),
        LayerCase(
            "Slice",
            [
                Config(
                    "[1:, None, ::2]",
                    ref("Slice", slices=((1, None, None), None, (None, None, 2))),
                    ours("Slice", (slice(1, None), None, slice(None, None, 2))),
                    (3, 5),
                ),
                Config("[2, :]", ref("Slice", slices=(2, (None, None, None))), ours("Slice", (2, slice(None))), (3, 5)),
            ],
            group="shape",
        ),
        LayerCase(
            "GlobalReshape",
            [
                Config(
                    "[12,2,3]->[24,3]",
                    ref("GlobalReshape", output_shape=(24, 3)),
                    ours("GlobalReshape", (24, 3)),
                    (2, 3),
                    random_mask=False,
                    time=12,
                ),
                Config(
                    "[12,4]->[6,8]",
                    ref("GlobalReshape", output_shape=(6, 8)),
                    ours("GlobalReshape", (6, 8)),
                    (4,),
                    random_mask=False,
                    time=12,
                ),
            ],
            group="shape",
        ),
        LayerCase(
            "GlobalEinopsRearrange",
            [
                Config(
                    "(t k) c -> t (k c)",
                    ref("GlobalEinopsRearrange", pattern="(t k) c -> t (k c)", axes_lengths={"k": 2}),
                    ours("GlobalEinopsRearrange", "(t k) c -> t (k c)", {"k": 2}),
                    (3,),
                    known_difference=GLOBAL_EINOPS_RF,
                    known_scope=("receptive_field_per_step",),
                    random_mask=False,
                    time=12,
                ),
                Config(
                    "t c d -> (t c) d",
                    ref("GlobalEinopsRearrange", pattern="t c d -> (t c) d"),
                    ours("GlobalEinopsRearrange", "t c d -> (t c) d"),
                    (2, 3),
                    known_difference=GLOBAL_EINOPS_RF,
                    known_scope=("receptive_field_per_step",),
                    random_mask=False,
                    time=12,
                ),
            ],
            group="shape",
        ),
        LayerCase(
            "AddNoise",
            [
                Config(
                    "normal, training_only (eval: identity)",
                    ref("AddNoise", sampler=_noise("Normal", mean=0.0, stddev=1.0), training_only=True),
                    ours("AddNoise", "normal", True, mean=0.0, stddev=1.0),
                    (3,),
                )
            ],
            group="stochastic",
        ),
    ]
    return out


def _ref_embedding(dimension: int, num_embeddings: int) -> Any:
    def build() -> Any:
        import sequence_layers.jax as slj

        return slj.Embedding.Config(dimension=dimension, num_embeddings=num_embeddings, name="embedding").make()

    build.__name__ = "build"
    return build


def _noise(kind: str, **kw: Any) -> Any:
    def build() -> Any:
        import sequence_layers.jax as slj

        return getattr(slj.AddNoise, kind)(**kw)

    build.__name__ = "build"
    return build


def cases() -> list[LayerCase]:
    return (
        _combinator_cases()
        + _pointwise_cases()
        + _dense_cases()
        + _shape_cases()
        + _utility_cases()
        + _other_cases()
        + _conditioning_cases()
    )
