"""sl-core's example layers for the conformance kit (``sl_example_layers``).

Every registered core layer appears at least once, in small configurations that
exercise its options; the contract suite (``tests/test_examples.py``,
``python -m sl check core``) runs ``verify_contract`` and the config round trip on
each. Names are unique (they label test ids).
"""

from __future__ import annotations

from typing import Any

import torch

from sl import combinators as c
from sl import layers as L
from sl.registry import LayerExample
from sl.types import Sequence

__all__ = ["example_layers"]

# Layers that change the layer-wise length by design (as in the reference).
_NO_LENGTH = {"test_output_length": False}


def _stateful(width: int) -> L.Dense | c.Serial:
    """A small stateful child with parameters, built from core layers, for the combinators."""
    return c.Serial(L.Dense(width, width), L.AddTimingSignal())


def _double(v: torch.Tensor) -> torch.Tensor:
    return v * 2


def _sequence_constants(*channels: int, name: str = "c") -> Any:
    def make(batch: int, time: int) -> dict[str, Sequence]:
        gen = torch.Generator().manual_seed(3)
        values = torch.randn((batch, time, *channels), generator=gen)
        lengths = torch.randint(time // 2, time + 1, (batch,), generator=gen)
        return {name: Sequence.from_lengths(values, lengths, is_masked=True)}

    return make


def _tensor_constants(*channels: int, name: str = "c") -> Any:
    def make(batch: int, time: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(4)
        return {name: torch.randn((batch, *channels), generator=gen)}

    return make


def _rope_positions(batch: int, time: int) -> dict[str, Sequence]:
    gen = torch.Generator().manual_seed(7)
    return {"positions": Sequence.from_values(torch.randint(0, 100, (batch, time), generator=gen, dtype=torch.int32))}


def _combinators() -> list[LayerExample]:
    return [
        LayerExample(c.Serial(), (3,), name="Serial(empty)"),
        LayerExample(c.Serial(_stateful(3), L.Scale(0.5), L.Dense(3, 2)), (3,), random_mask=True, name="Serial"),
        LayerExample(c.SerialModules([_stateful(3), L.Scale(2.0)]), (3,), name="SerialModules"),
        LayerExample(c.Parallel(_stateful(3), L.Scale(2.0), combination="stack"), (3,), name="Parallel(stack)"),
        LayerExample(c.Parallel(_stateful(3), L.Dense(3, 2), combination="concat"), (3,), name="Parallel(concat)"),
        LayerExample(c.Parallel(_stateful(3), L.Scale(-1.0), combination="mean"), (3,), name="Parallel(mean)"),
        # The documented recipe for "current plus previous frame": a causal tap beside the input.
        LayerExample(
            c.Parallel(L.Identity(), L.Delay(1, keep_mask=True), combination="concat"),
            (3,),
            random_mask=True,
            name="Parallel(current + previous frame)",
        ),
        LayerExample(c.ParallelChannels(_stateful(2), 2, combination="concat"), (4,), name="ParallelChannels"),
        LayerExample(c.Residual([_stateful(3), L.Scale(0.5)]), (3,), name="Residual"),
        LayerExample(c.Residual(_stateful(3), shortcut_layers=[L.Scale(3.0)]), (3,), name="Residual(shortcut)"),
        LayerExample(
            c.Residual(c.Serial(L.Dense(3, 3), L.Delay(2, False)), shortcut_layers=L.Delay(2, False)),
            (3,),
            random_mask=True,
            name="Residual(latency in body, delayed shortcut)",
        ),
        LayerExample(c.Repeat(_stateful(3), 3), (3,), name="Repeat"),
        LayerExample(c.Bidirectional(_stateful(3), L.Dense(3, 2), combination="concat"), (3,), name="Bidirectional"),
        LayerExample(c.Blockwise(_stateful(3), 4), (3,), time=13, name="Blockwise"),
        LayerExample(c.CheckpointGradient(_stateful(3)), (3,), training=True, name="CheckpointGradient"),
    ]


def _pointwise() -> list[LayerExample]:
    return [
        LayerExample(L.Abs(), (4,)),
        LayerExample(
            L.Abs(),
            (2, 3),
            dtype=torch.complex64,
            name="Abs(complex64)",
            onnx="complex tensors (ONNX has no complex dtype)",
        ),
        LayerExample(L.Add(0.5), (4,), random_mask=True),
        LayerExample(L.Add([[1.0], [2.0]]), (2, 3), name="Add(broadcast)"),
        LayerExample(L.Affine(), (4,)),
        LayerExample(L.Affine((3,), bias=False), (2, 3), name="Affine(shape=(3,), no bias)"),
        LayerExample(L.Elu(), (4,)),
        LayerExample(L.Exp(), (4,)),
        LayerExample(L.GatedLinearUnit(), (6,)),
        LayerExample(L.GatedTanhUnit(), (2, 4)),
        LayerExample(L.GatedUnit("silu", "gelu"), (4,), name="GatedUnit(silu, gelu)"),
        LayerExample(L.Gelu(), (4,)),
        LayerExample(L.Gelu(approximate=False), (4,), name="Gelu(exact)"),
        LayerExample(L.LeakyRelu(0.2), (4,)),
        # Log needs positive inputs; the kit feeds N(0, 1), so make them positive first.
        LayerExample(c.Serial(L.Softplus(), L.Log()), (4,), name="Log"),
        LayerExample(L.Maximum(0.1), (4,)),
        LayerExample(L.Minimum([0.0, 0.5, 1.0]), (2, 3)),
        LayerExample(L.Mod(1.5), (4,)),
        LayerExample(L.PRelu(), (4,)),
        LayerExample(L.Power(2.0), (4,)),
        LayerExample(c.Serial(L.Abs(), L.Power(0.5)), (4,), name="Power(0.5)"),
        LayerExample(L.Relu(), (4,), random_mask=True),
        LayerExample(L.Scale([1.0, -2.0, 0.5]), (2, 3)),
        LayerExample(L.Sigmoid(), (4,)),
        LayerExample(L.Snake(4), (4,)),
        LayerExample(L.Snake((2, 3), separate_beta=True), (2, 3), name="Snake(separate_beta)"),
        # A softmax's outputs sum to 1, so the harness's |y|-summed Jacobian probe sees no
        # dependence on the input: skip the receptive-field measurement (it is (0, 0)).
        LayerExample(L.Softmax(), (4,), contract={"test_receptive_field": False}),
        LayerExample(L.Softmax(axis=2), (2, 3), contract={"test_receptive_field": False}, name="Softmax(axis=2)"),
        LayerExample(L.Softplus(), (4,)),
        LayerExample(L.Swish(), (4,)),
        LayerExample(L.Tanh(), (4,)),
    ]


def _utility() -> list[LayerExample]:
    return [
        LayerExample(L.Identity(), (3,), random_mask=True),
        LayerExample(L.Cast(torch.float64), (3,), random_mask=True, name="Cast(float64)"),
        LayerExample(L.Cast(torch.int32), (2, 3), random_mask=True, name="Cast(int32)"),
        LayerExample(L.MaskInvalid(), (3,), random_mask=True),
        LayerExample(L.Emit(), (3,), random_mask=True),
        LayerExample(L.NamedEmit("features"), (3,), random_mask=True),
        LayerExample(L.Lambda("tanh", mask_required=False), (3,), random_mask=True, name="Lambda(tanh)"),
        LayerExample(L.Lambda(_double, mask_required=False), (2, 3), config_round_trip=False, name="Lambda(fn)"),
        LayerExample(L.Logging(prefix="example"), (3,), random_mask=True),
        LayerExample(L.ApplySharding((None, "data", "model")), (3,), random_mask=True),
        LayerExample(L.CheckpointName("features"), (3,), random_mask=True),
        LayerExample(L.OptimizationBarrier(), (3,), random_mask=True),
        # Autograd cannot measure the receptive field through detach().
        LayerExample(L.StopGradient(), (3,), random_mask=True, contract={"test_receptive_field": False}),
        LayerExample(L.GradientClipping(1.0), (3,), random_mask=True),
    ]


def _shape() -> list[LayerExample]:
    # The global layers change the time length (not by output_ratio) and padding the input changes
    # their global shape, so those two checks are off for them (as in the reference's tests).
    global_checks = {"test_padding_invariance": False, "test_output_length": False}
    return [
        LayerExample(L.Reshape((3, 2)), (2, 3), random_mask=True),
        LayerExample(L.Flatten(), (2, 3), random_mask=True),
        LayerExample(L.ExpandDims((0, -1)), (3,), random_mask=True),
        LayerExample(L.Squeeze(), (1, 3, 1), random_mask=True),
        LayerExample(L.Squeeze(-1), (2, 1), random_mask=True, name="Squeeze(-1)"),
        LayerExample(L.Slice(((None, None, -2), None, 1)), (5, 3), random_mask=True),
        LayerExample(L.Slice(("...", (1, None))), (2, 4), random_mask=True, name="Slice(ellipsis)"),
        LayerExample(L.Transpose(), (2, 3, 4), random_mask=True),
        LayerExample(L.SwapAxes(2, -1), (2, 3, 4), random_mask=True),
        LayerExample(L.MoveAxis(2, -1), (2, 3, 4), random_mask=True),
        LayerExample(L.EinopsRearrange("(c d) e -> d e c", {"c": 2}), (4, 3), random_mask=True),
        LayerExample(
            L.GlobalEinopsRearrange("(t a) c -> t (a c)", {"a": 2}), (3,), random_mask=True, contract=global_checks
        ),
        LayerExample(L.GlobalReshape((6, 2, 3)), (3,), time=12, random_mask=True, contract=global_checks),
        LayerExample(L.Max(), (4,), random_mask=True),
        LayerExample(L.Mean(axis=(2, -1), keepdims=True), (3, 4), random_mask=True),
        LayerExample(L.Min(axis=None), (3, 4), random_mask=True),
        LayerExample(L.Sum(axis=-2), (3, 4), random_mask=True),
        LayerExample(L.Argmax(), (5,), random_mask=True),
    ]


def _resampling_embedding_stochastic_dense() -> list[LayerExample]:
    return [
        LayerExample(L.Downsample1D(2), (3,), name="Downsample1D(2)"),
        LayerExample(L.Downsample1D(3), (2,), random_mask=True, name="Downsample1D(3)"),
        LayerExample(L.Upsample1D(3), (2,), random_mask=True, name="Upsample1D(3)"),
        LayerExample(L.Upsample2D((2, 3)), (2, 2), name="Upsample2D((2, 3))"),
        # Embedding: the batching check adds garbage rows of out-of-range ids marked valid,
        # which Embedding rejects by design; tests/test_embedding.py checks batching itself.
        LayerExample(
            L.Embedding(7, 4), (), dtype=torch.int64, int_high=7, contract={"test_batching": False}, name="Embedding"
        ),
        LayerExample(
            L.Embedding(5, 3),
            (2,),
            dtype=torch.int64,
            int_high=5,
            random_mask=True,
            contract={"test_batching": False},
            name="Embedding(rank 2 ids)",
        ),
        LayerExample(L.EmbeddingTranspose(L.Embedding(6, 4)), (4,), name="EmbeddingTranspose"),
        LayerExample(
            L.EmbeddingTranspose(L.Embedding(6, 4), bias=False),
            (2, 4),
            random_mask=True,
            name="EmbeddingTranspose(no bias)",
        ),
        LayerExample(L.OneHot(5), (), dtype=torch.int64, int_high=5, name="OneHot(5)"),
        LayerExample(
            L.OneHot(4, compute_dtype=torch.int32),
            (2,),
            dtype=torch.int64,
            int_high=6,
            random_mask=True,
            name="OneHot(4, int32)",
        ),
        LayerExample(L.Dropout(0.5), (3,), random_mask=True, name="Dropout(0.5)"),
        LayerExample(L.Dropout(0.2, broadcast_dims=(1,)), (2, 2), name="Dropout(0.2, broadcast time)"),
        LayerExample(L.AddNoise("normal", training_only=True, stddev=0.1), (3,), name="AddNoise(normal)"),
        # Deterministic noise (stddev 0) lets the contract run with noise applied.
        LayerExample(
            L.AddNoise("normal", training_only=False, mean=1.0, stddev=0.0),
            (3,),
            random_mask=True,
            name="AddNoise(mean 1)",
        ),
        LayerExample(
            L.AddNoise("uniform", training_only=True, minval=-1.0, maxval=1.0), (2,), name="AddNoise(uniform)"
        ),
        LayerExample(L.Dense(4, 3), (4,)),
        LayerExample(L.Dense(3, 5, bias=False), (2, 3), random_mask=True, name="Dense(no bias, rank 2)"),
        LayerExample(L.Dense(4, 2, activation="gelu"), (4,), name="Dense(gelu)"),
        LayerExample(L.DenseShaped((2, 3), (4,)), (2, 3)),
        LayerExample(L.DenseShaped((), (2, 2), bias=False), (), name="DenseShaped(scalar in)"),
        LayerExample(L.DenseShaped((3,), (), activation="tanh"), (3,), name="DenseShaped(scalar out)"),
        LayerExample(L.EinsumDense("...ab,bc->...ac", (2, 3), (None, 4), bias_axes="c"), (2, 3)),
        LayerExample(
            L.EinsumDense("...abc,bd->...bd", (2, 3, 2), (None, 4), bias_axes="d", activation="relu"),
            (2, 3, 2),
            name="EinsumDense(reduce, relu)",
        ),
    ]


def _latency_position_conditioning() -> list[LayerExample]:
    return [
        LayerExample(L.Delay(2), (3,), contract=_NO_LENGTH, name="Delay(2)"),
        LayerExample(L.Delay(3, delay_layer_output=False), (3,), name="Delay(3, delay_layer_output=False)"),
        LayerExample(L.Delay(2, keep_mask=True), (3,), random_mask=True, name="Delay(2, keep_mask)"),
        LayerExample(L.Lookahead(2), (3,), contract=_NO_LENGTH, name="Lookahead(2)"),
        LayerExample(L.Lookahead(3, preserve_length_in_layer=True), (2, 2), name="Lookahead(3, preserve_length)"),
        LayerExample(L.AddTimingSignal(trainable_scale=True), input_shape=(5,), random_mask=True),
        LayerExample(
            L.AddTimingSignal(axes=(-1,), only_advance_position_for_valid_timesteps=False),
            input_shape=(2, 6),
            name="AddTimingSignal(axes, physical positions)",
        ),
        LayerExample(L.ApplyRotaryPositionalEncoding(1.0e4), input_shape=(3, 4), random_mask=True),
        LayerExample(
            L.ApplyRotaryPositionalEncoding(
                1.0e4, axis=-2, only_advance_position_for_valid_timesteps=False, positions_name="positions"
            ),
            input_shape=(4, 3),
            constants=_rope_positions,
            contract={"stream_constants": True},
            name="ApplyRotaryPositionalEncoding(positions_name)",
        ),
        LayerExample(
            L.Conditioning("c", "linear", "add", conditioning_shape=(3,), input_shape=(4,)),
            input_shape=(4,),
            constants=_sequence_constants(3),
            contract={"pad_constants": True},
            name="Conditioning(linear, add, sequence)",
        ),
        LayerExample(
            L.Conditioning("c", "linear_affine", "affine", conditioning_shape=(3,), input_shape=(2, 4), streaming=True),
            input_shape=(2, 4),
            random_mask=True,
            constants=_sequence_constants(3),
            contract={"stream_constants": True},
            name="Conditioning(linear_affine, affine, streaming)",
        ),
        LayerExample(
            L.Conditioning("c", "identity", "concat"),
            input_shape=(4,),
            constants=_tensor_constants(2, 3),
            name="Conditioning(identity, concat, tensor)",
        ),
        # Codes out of range are errors, and the batching check adds out-of-range garbage rows.
        LayerExample(
            L.SequenceEmbedding(4, (3, 5, 2, 4, 6, 3, 5, 2, 4, 6, 3, 5, 2, 4, 6, 3), 16),
            input_shape=(2,),
            time=12,
            int_high=2,
            contract={"test_batching": False},
        ),
        LayerExample(L.SequenceDense(3, 4, 16, activation="tanh"), input_shape=(3,), time=12, random_mask=True),
        LayerExample(L.MaskedDense(3, 4, 16), input_shape=(3,), time=12),
        # num_steps shorter than the input: the steps past it are invalid, in layer and step alike.
        LayerExample(L.SequenceDense(3, 4, 8), input_shape=(3,), time=12, name="SequenceDense(past num_steps)"),
        LayerExample(L.MaskedDense(3, 2, 8), input_shape=(3,), time=12, name="MaskedDense(past num_steps)"),
    ]


def _time_indexed_after_latency() -> list[LayerExample]:
    """Layers that count time behind layers with step-wise latency (positions shift by it)."""
    return [
        LayerExample(
            c.Serial(L.Lookahead(2), L.SequenceDense(4, 4, num_steps=32)),
            (4,),
            random_mask=True,
            contract=_NO_LENGTH,
            name="Serial(Lookahead, SequenceDense)",
        ),
        LayerExample(
            c.Serial(
                L.Delay(2, delay_layer_output=False), L.AddTimingSignal(only_advance_position_for_valid_timesteps=False)
            ),
            (4,),
            random_mask=True,
            name="Serial(Delay, AddTimingSignal(physical))",
        ),
        LayerExample(
            c.Serial(L.Delay(2, delay_layer_output=False), L.SequenceDense(4, 3, num_steps=32)),
            (4,),
            random_mask=True,
            name="Serial(Delay, SequenceDense)",
        ),
        LayerExample(
            c.Serial(L.Delay(2, delay_layer_output=False), L.MaskedDense(4, 3, num_steps=16)),
            (4,),
            name="Serial(Delay, MaskedDense)",
        ),
        LayerExample(
            c.Serial(L.Delay(2, delay_layer_output=False), L.SequenceEmbedding(3, 4, num_steps=32)),
            (),
            dtype=torch.int64,
            int_high=4,
            contract={"test_batching": False},
            name="Serial(Delay, SequenceEmbedding)",
        ),
        LayerExample(
            c.Serial(
                L.Lookahead(1),
                L.Dense(4, 4),
                L.ApplyRotaryPositionalEncoding(100.0, only_advance_position_for_valid_timesteps=False),
            ),
            (4,),
            contract=_NO_LENGTH,
            name="Serial(Lookahead, RoPE(physical))",
        ),
        LayerExample(
            c.Serial(
                L.Delay(1, delay_layer_output=False),
                L.Conditioning("c", "identity", "add"),
            ),
            (3,),
            constants=_sequence_constants(3),
            contract={"pad_constants": True},
            name="Serial(Delay, Conditioning(sequence))",
        ),
        LayerExample(
            c.Serial(L.Lookahead(1), L.Lookahead(2)),
            (3,),
            random_mask=True,
            contract=_NO_LENGTH,
            name="Serial(Lookahead, Lookahead)",
        ),
    ]


def example_layers() -> list[LayerExample]:
    return [
        *_combinators(),
        *_pointwise(),
        *_utility(),
        *_shape(),
        *_resampling_embedding_stochastic_dense(),
        *_latency_position_conditioning(),
        *_time_indexed_after_latency(),
    ]
