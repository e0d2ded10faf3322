"""Tests for sl.layers.shape (the channel-shape half of the reference's simple.py)."""

from __future__ import annotations

import math

import einops
import numpy as np
import pytest
import torch

import sl
from sl.layers import shape as shape_layers
from sl.layers.shape import (
    Argmax,
    EinopsRearrange,
    ExpandDims,
    Flatten,
    GlobalEinopsRearrange,
    GlobalReshape,
    Max,
    Mean,
    Min,
    MoveAxis,
    Reshape,
    Slice,
    Squeeze,
    Sum,
    SwapAxes,
    Transpose,
)
from sl.testing import assert_sequences_equal, random_sequence, tolerances, verify_contract

DTYPES = [torch.float32, torch.bfloat16]

# (layer factory, channel shape): every steppable layer, in a few configurations.
STEPPABLE = [
    (lambda: Reshape((1, 5, 1)), (5,)),
    (lambda: Reshape((3, 3, 5)), (5, 9)),
    (lambda: Reshape(()), (1,)),
    (lambda: Reshape((1,)), ()),
    (lambda: Flatten(), (2, 3, 2)),
    (lambda: Flatten(), ()),
    (lambda: ExpandDims(0), (3,)),
    (lambda: ExpandDims((0, -2)), (2, 3)),
    (lambda: Squeeze(), (1, 2, 1)),
    (lambda: Squeeze((2, -1)), (1, 2, 1)),
    (lambda: Slice(((None, -1, None),)), (5,)),
    (lambda: Slice(((None, None, -1), 0, None, (1, 3, 1))), (3, 2, 4)),
    (lambda: Slice(("...", (None, None, -2))), (2, 5)),
    (lambda: Transpose((3, 2)), (4, 5)),
    (lambda: Transpose(), (1, 2, 3)),
    (lambda: SwapAxes(-1, -3), (4, 5, 6)),
    (lambda: MoveAxis((2, 4), (3, 2)), (4, 5, 6)),
    (lambda: EinopsRearrange("(c d) e -> d e c", {"c": 2}), (6, 5)),
    (lambda: Max(), (5,)),
    (lambda: Min(axis=(2, -1), keepdims=True), (3, 4)),
    (lambda: Mean(axis=None), (3, 4)),
    (lambda: Sum(axis=-2), (3, 4)),
    (lambda: Argmax(), (3, 4)),
]


@pytest.mark.parametrize("random_mask", [True, False], ids=["random_mask", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(STEPPABLE)))
def test_contract(case: int, dtype: torch.dtype, random_mask: bool) -> None:
    factory, channels = STEPPABLE[case]
    layer = factory().to(dtype)
    assert layer.supports_step and layer.block_size == 1 and layer.output_ratio == 1
    assert layer.receptive_field == (0, 0)
    # Batch 3: with every length 0 the harness cannot measure a receptive field (all-zero input).
    x = random_sequence(3, 7, *channels, dtype=dtype, random_mask=random_mask)
    verify_contract(layer, x, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "layer,channels,time",
    [
        (GlobalReshape((6, 2, 3)), (3, 2), 6),
        (GlobalReshape((6,)), (), 6),
        (GlobalReshape((3, 2, 6)), (3, 2), 6),
        (GlobalReshape((12, 3)), (3, 2), 6),
        (GlobalEinopsRearrange("(t a) c -> (a t) c", {"a": 2}), (3,), 6),
        (GlobalEinopsRearrange("(t a) c -> t (a c)", {"a": 2}, ceil_mode=True), (3,), 6),
        (GlobalEinopsRearrange("t c d -> (t c) d"), (2, 3), 6),
    ],
)
def test_global_layers_non_step_contract(layer: sl.SequenceLayer, channels: tuple[int, ...], time: int, dtype) -> None:
    layer = layer.to(dtype)
    assert not layer.supports_step
    assert layer.receptive_field == (-math.inf, math.inf)
    x = random_sequence(3, time, *channels, dtype=dtype, random_mask=True)
    # Padding the input changes the global shape, so padding invariance cannot apply (as in the reference),
    # and the output time length is not input length * output_ratio.
    verify_contract(layer, x, test_padding_invariance=False, test_output_length=False, **tolerances(dtype))


def test_registry() -> None:
    for name in shape_layers.__all__:
        assert sl.registry.get(name) is getattr(shape_layers, name)
    assert sl.ArgMax is Argmax
    assert sl.registry.get("MoveDim") is MoveAxis
    assert sl.SwapDims is SwapAxes
    assert sl.registry.get("core:Flatten") is Flatten


# -- behaviour against numpy / the reference tests ------------------------------------------------


def _np(x: sl.Sequence) -> np.ndarray:
    return x.values.float().numpy()


@pytest.mark.parametrize("channels,output_shape", [((5,), (1, 5, 1)), ((5, 9), (3, 3, 5)), ((1,), ()), ((), (1,))])
def test_reshape_values(channels, output_shape) -> None:
    x = random_sequence(2, 3, *channels)
    layer = Reshape(output_shape)
    assert layer.get_output_shape(channels) == output_shape
    y = layer.layer(x)
    assert isinstance(y, sl.MaskedSequence)
    np.testing.assert_array_equal(_np(y), _np(x).reshape((2, 3, *output_shape)))


def test_reshape_errors() -> None:
    with pytest.raises(ValueError, match=r"Reshape output_shape=.*must have as many elements"):
        Reshape((4,)).get_output_shape((5,))
    with pytest.raises(ValueError, match=r"Reshape"):
        Reshape((4,)).layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match=r"Reshape output_shape must be non-negative"):
        Reshape((-1,))
    with pytest.raises(TypeError, match=r"Reshape expected output_shape"):
        Reshape("ab")  # type: ignore[arg-type]


def test_flatten_values() -> None:
    x = random_sequence(2, 3, 5, 9, 2)
    y = Flatten().layer(x)
    assert Flatten().get_output_shape((5, 9, 2)) == (90,)
    np.testing.assert_array_equal(_np(y), _np(x).reshape(2, 3, 90))


@pytest.mark.parametrize(
    "axis,channels,expected", [(0, (4, 5), (1, 4, 5)), (-1, (4, 5), (4, 5, 1)), ((0, -2), (4, 5), (1, 1, 4, 5))]
)
def test_expand_dims(axis, channels, expected) -> None:
    # Positions follow the reference code (the reference docstring's (0, -2) example disagrees with it).
    assert ExpandDims(axis).get_output_shape(channels) == expected
    y = ExpandDims(axis).layer(random_sequence(2, 3, *channels))
    assert y.channel_shape == expected


def test_expand_dims_error() -> None:
    with pytest.raises(ValueError, match=r"ExpandDims axis=.*positions in the channel shape"):
        ExpandDims(3).get_output_shape((4,))
    with pytest.raises(ValueError, match=r"ExpandDims"):
        ExpandDims(-4).layer(random_sequence(2, 3, 4))


@pytest.mark.parametrize(
    "channels,axis,expected",
    [
        ((1, 1, 1), 2, (1, 1)),
        ((1, 2, 1), -1, (1, 2)),
        ((1, 1, 1), (2,), (1, 1)),
        ((1, 2, 1), (-1,), (1, 2)),
        ((1, 2, 1), (2, -1), (2,)),
        ((1, 2, 1), None, (2,)),
        ((3,), None, (3,)),
        ((), None, ()),
    ],
)
def test_squeeze(channels, axis, expected) -> None:
    x = random_sequence(2, 3, *channels)
    layer = Squeeze(axis)
    assert layer.get_output_shape(channels) == expected
    y = layer.layer(x)
    assert isinstance(y, sl.MaskedSequence)
    axes = tuple(i + 2 for i, d in enumerate(channels) if d == 1) if axis is None else axis
    np.testing.assert_array_equal(_np(y), np.squeeze(_np(x), axis=axes))


def test_squeeze_errors() -> None:
    with pytest.raises(ValueError, match=r"Squeeze axis 3 has size 2"):
        Squeeze(3).get_output_shape((1, 2))
    with pytest.raises(ValueError, match=r"Squeeze axis -2 refers to the time axis"):
        Squeeze(-2).layer(random_sequence(2, 1, 1))
    with pytest.raises(ValueError, match=r"Squeeze axis -3 refers to the batch axis"):
        Squeeze(-3).layer(random_sequence(1, 1, 1))
    with pytest.raises(ValueError, match=r"Squeeze axis=.*batch"):
        Squeeze(0)
    with pytest.raises(ValueError, match=r"Squeeze axis=.*batch"):
        Squeeze((2, 1))
    with pytest.raises(ValueError, match=r"Squeeze axis 5 is out of range"):
        Squeeze(5).get_output_shape((1,))


# -- Slice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slices,index",
    [
        (((None, -1, None),), (slice(None, -1),)),
        (((None, None, None), None, (None, None, None)), (slice(None), None, slice(None))),
        ((None, 0, None, (1, 3, 1)), (None, 0, None, slice(1, 3, 1))),
        ((None, 0, 0, None), (None, 0, 0, None)),
        (((None, None, -1), (3, 0, -2)), (slice(None, None, -1), slice(3, 0, -2))),
        (((10, -10, -3), -1), (slice(10, -10, -3), -1)),
        ((slice(1, None), Ellipsis), (slice(1, None), Ellipsis)),
        (("...", 2), (Ellipsis, 2)),
        (((2, 2),), (slice(2, 2),)),
    ],
)
def test_slice_matches_numpy(slices, index) -> None:
    channels = (3, 4) if len([s for s in slices if s is not None and s not in (Ellipsis, "...")]) == 2 else (4,)
    if any(s is Ellipsis or s == "..." for s in slices):
        channels = (4, 3)
    x = random_sequence(2, 3, *channels)
    layer = Slice(slices)
    expected = _np(x)[(slice(None), slice(None), *index)]
    assert layer.get_output_shape(channels) == expected.shape[2:]
    y = layer.layer(x)
    assert isinstance(y, sl.MaskedSequence)
    np.testing.assert_array_equal(_np(y), expected)


def test_slice_config_is_json_friendly() -> None:
    layer = Slice([slice(1, None, 2), Ellipsis, None, [0, 2]])
    assert layer.slices == ((1, None, 2), "...", None, (0, 2, None))
    config = layer.get_config()
    rebuilt = sl.from_config(config)
    assert rebuilt.get_config() == config
    x = random_sequence(2, 3, 5, 2, 3)
    assert_sequences_equal(layer.layer(x), rebuilt.layer(x))


def test_slice_errors() -> None:
    x = random_sequence(2, 10, 3)
    with pytest.raises(ValueError, match=r"Slice slices=.*index 2 channel axes.*has 1"):
        Slice(((None, None, None), (None, None, None))).layer(x)
    with pytest.raises(ValueError, match=r"Slice slices=.*index 2 channel axes"):
        Slice(((None, None, None), None, (None, None, None))).layer(x)
    with pytest.raises(ValueError, match=r"Slice index 3 is out of range for channel axis 0 of size 3"):
        Slice((3,)).get_output_shape((3,))
    with pytest.raises(ValueError, match=r"Slice index -4 is out of range"):
        Slice((-4,)).layer(x)
    with pytest.raises(ValueError, match=r"Slice slice .* has step 0"):
        Slice(((0, 2, 0),))
    with pytest.raises(ValueError, match=r"Slice slices may contain at most one"):
        Slice(("...", "..."))
    with pytest.raises(TypeError, match=r"Slice slices entries"):
        Slice((1.5,))
    with pytest.raises(ValueError, match=r"Slice slices=.*index 3 channel axes.*only 1"):
        Slice(("...", 0, 0, 0)).get_output_shape((3,))


# -- permutations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels,axes,expected",
    [
        ((4, 5), (2, 3), (4, 5)),
        ((4, 5, 6), (4, 2, 3), (6, 4, 5)),
        ((1, 2, 3), None, (3, 2, 1)),
        ((), (), ()),
        ((), None, ()),
        ((4, 5, 6), (-1, 2, -2), (6, 4, 5)),
    ],
)
def test_transpose(channels, axes, expected) -> None:
    x = random_sequence(2, 3, *channels)
    layer = Transpose(axes)
    assert layer.get_output_shape(channels) == expected
    y = layer.layer(x)
    full = (0, 1) + (tuple(range(2, x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes))
    np.testing.assert_array_equal(_np(y), np.transpose(_np(x), full))


@pytest.mark.parametrize("channels,axes", [((), (2,)), ((4, 5, 6), (2, 2, 3)), ((4, 5), (5, 4))])
def test_transpose_wrong_axes(channels, axes) -> None:
    with pytest.raises(ValueError, match=r"Transpose axes=.*must be a permutation"):
        Transpose(axes).get_output_shape(channels)
    with pytest.raises(ValueError, match=r"Transpose"):
        Transpose(axes).layer(random_sequence(2, 3, *channels))


def test_transpose_rejects_batch_time() -> None:
    with pytest.raises(ValueError, match=r"Transpose axes=.*batch"):
        Transpose((1, 2))


@pytest.mark.parametrize(
    "channels,a1,a2,expected",
    [((4, 5), 2, 3, (5, 4)), ((4, 5, 6), 4, 2, (6, 5, 4)), ((4,), 2, 2, (4,)), ((4, 5, 6), -1, -3, (6, 5, 4))],
)
def test_swap_axes(channels, a1, a2, expected) -> None:
    x = random_sequence(2, 3, *channels)
    layer = SwapAxes(a1, a2)
    assert layer.get_output_shape(channels) == expected
    np.testing.assert_array_equal(_np(layer.layer(x)), np.swapaxes(_np(x), a1, a2))


@pytest.mark.parametrize("a1,a2", [(0, 3), (2, 1), (0, 2), (3, 1)])
def test_swap_axes_rejects_batch_time(a1, a2) -> None:
    with pytest.raises(ValueError, match=r"SwapAxes axes=.*batch"):
        SwapAxes(a1, a2)


@pytest.mark.parametrize("channels,a1,a2", [((), 2, 3), ((4, 5, 6), -4, 2), ((4, 5, 6), 3, -5)])
def test_swap_axes_wrong_axes(channels, a1, a2) -> None:
    with pytest.raises(ValueError, match=r"SwapAxes axis"):
        SwapAxes(a1, a2).get_output_shape(channels)
    with pytest.raises(ValueError, match=r"SwapAxes axis"):
        SwapAxes(a1, a2).layer(random_sequence(2, 3, *channels))


@pytest.mark.parametrize(
    "channels,source,destination,expected",
    [
        ((4, 5), 2, -1, (5, 4)),
        ((4, 5, 6), -1, 2, (6, 4, 5)),
        ((4,), 2, 2, (4,)),
        ((4, 5, 6), -2, 2, (5, 4, 6)),
        ((4, 5, 6), (2, 3), (3, 4), (6, 4, 5)),
        ((4, 5, 6), (3, 2), (3, 4), (6, 5, 4)),
        ((4, 5, 6), (2, 4), (3, 2), (6, 4, 5)),
    ],
)
def test_move_axis(channels, source, destination, expected) -> None:
    x = random_sequence(2, 3, *channels)
    layer = MoveAxis(source, destination)
    assert layer.get_output_shape(channels) == expected
    np.testing.assert_array_equal(_np(layer.layer(x)), np.moveaxis(_np(x), source, destination))


@pytest.mark.parametrize("source,destination", [(0, 3), (2, 1), ((2,), (3, 4)), (2, (3, 4))])
def test_move_axis_construction_errors(source, destination) -> None:
    with pytest.raises(ValueError, match=r"MoveAxis"):
        MoveAxis(source, destination)


@pytest.mark.parametrize(
    "channels,source,destination",
    [((4,), -3, 2), ((4,), 2, -2), ((4, 5, 6), (-4, 2), (2, 3)), ((4, 5, 6), (3, 2), (2, -5))],
)
def test_move_axis_wrong_axes(channels, source, destination) -> None:
    with pytest.raises(ValueError, match=r"MoveAxis axis .* refers to the (batch|time) axis"):
        MoveAxis(source, destination).get_output_shape(channels)
    with pytest.raises(ValueError, match=r"MoveAxis"):
        MoveAxis(source, destination).layer(random_sequence(2, 3, *channels))


# -- einops ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels,pattern,axes_lengths,expected",
    [
        ((4, 5), "c d -> (c d)", None, (20,)),
        ((20,), "(c d) -> c d", {"c": 4}, (4, 5)),
        ((4, 5), "(c d) e ->  c d e", {"c": 2}, (2, 2, 5)),
        ((6, 5), "(c d) e ->  d e c", {"c": 2}, (3, 5, 2)),
    ],
)
def test_einops_rearrange(channels, pattern, axes_lengths, expected) -> None:
    x = random_sequence(2, 3, *channels)
    layer = EinopsRearrange(pattern, axes_lengths)
    assert layer.get_output_shape(channels) == expected
    y = layer.layer(x)
    assert type(y) is sl.Sequence  # the reference returns an unmasked Sequence
    before, after = pattern.split("->")
    ref = einops.rearrange(x.values, f"b t {before} -> b t {after}", **(axes_lengths or {}))
    torch.testing.assert_close(y.values, ref, rtol=0, atol=0)


@pytest.mark.parametrize("pattern", ["(c d) time ->  c d time", "(c d) batch ->  c d batch", "(c d) batch - c d batch"])
def test_einops_rearrange_bad_pattern(pattern) -> None:
    with pytest.raises(ValueError, match=r"EinopsRearrange"):
        EinopsRearrange(pattern, {"c": 2})


def test_einops_rearrange_shape_error() -> None:
    layer = EinopsRearrange("(c d) -> c d", {"c": 4})
    with pytest.raises(ValueError, match=r"EinopsRearrange could not apply"):
        layer.get_output_shape((6,))
    with pytest.raises(ValueError, match=r"EinopsRearrange could not apply"):
        layer.layer(random_sequence(2, 3, 6))
    with pytest.raises(TypeError, match=r"EinopsRearrange expected axes_lengths"):
        EinopsRearrange("c -> c", {"c": "4"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "shape,pattern,axes_lengths,expected",
    [((2, 3, 4, 5), "t c d -> (t c) d", None, (2, 12, 5)), ((2, 12, 5), "(t c) d -> t (c d)", {"c": 4}, (2, 3, 20))],
)
def test_global_einops_rearrange(shape, pattern, axes_lengths, expected) -> None:
    values = torch.randn(shape)
    x = sl.Sequence.from_values(values)
    layer = GlobalEinopsRearrange(pattern, axes_lengths)
    y = layer.layer(x)
    before, after = pattern.split("->")
    ref = einops.rearrange(values, f"batch {before} -> batch {after}", **(axes_lengths or {}))
    assert y.values.shape == expected
    torch.testing.assert_close(y.values, ref, rtol=0, atol=0)
    assert bool(y.mask.all())
    assert layer.get_output_shape(shape[2:]) == expected[2:]


@pytest.mark.parametrize(
    "shape,lengths,pattern,axes_lengths,ceil_mode,expected_lengths",
    [
        ((2, 6), [5, 6], "(t1 t2) -> t1 t2", {"t2": 3}, True, [2, 2]),
        ((2, 6), [5, 6], "(t1 t2) -> t1 t2", {"t2": 3}, False, [1, 2]),
        ((1, 4, 2), [3], "(a b) c -> a (b c)", {"b": 2}, False, [1]),
        ((1, 4, 2), [3], "(a b) c -> a (b c)", {"b": 2}, True, [2]),
    ],
)
def test_global_einops_rearrange_ceil_mode(shape, lengths, pattern, axes_lengths, ceil_mode, expected_lengths) -> None:
    values = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    x = sl.Sequence.from_lengths(values, lengths)
    y = GlobalEinopsRearrange(pattern, axes_lengths, ceil_mode=ceil_mode).layer(x)
    assert y.lengths().tolist() == expected_lengths
    # Invalid inputs are zeroed before they are moved.
    assert not bool(torch.isin(y.values, values[x.mask.logical_not()][values[x.mask.logical_not()] != 0]).any())


def test_global_einops_rearrange_errors() -> None:
    with pytest.raises(ValueError, match=r"GlobalEinopsRearrange pattern .* reserved"):
        GlobalEinopsRearrange("(c d) batch ->  c d batch", {"c": 2})
    with pytest.raises(ValueError, match=r"GlobalEinopsRearrange expected an einops pattern"):
        GlobalEinopsRearrange("(c d) batch - c d batch", {"c": 2})
    layer = GlobalEinopsRearrange("(t a) c -> t (a c)", {"a": 2})
    with pytest.raises(ValueError, match=r"GlobalEinopsRearrange could not apply"):
        layer.layer(random_sequence(2, 5, 3))
    with pytest.raises(ValueError, match=r"does not support step"):
        sl.step_by_step(layer, random_sequence(2, 4, 3))


@pytest.mark.parametrize(
    "shape,output_shape",
    [
        ((2, 3), (3,)),
        ((2, 3, 1), (3, 1)),
        ((2, 3, 5, 9), (3, 5, 9)),
        ((2, 3, 5, 7), (7, 5, 3)),
        ((2, 3, 35), (7, 5, 3)),
        ((2, 3, 5, 7), (7, 15)),
        ((2, 7, 5, 3), (3, 5, 7)),
        ((2, 7, 15), (3, 5, 7)),
        ((2, 7, 5, 3), (3, 35)),
    ],
)
def test_global_reshape(shape, output_shape) -> None:
    x = random_sequence(*shape, random_mask=True)
    layer = GlobalReshape(output_shape)
    assert layer.get_output_shape(shape[2:]) == output_shape[1:]
    y = layer.layer(x)
    assert type(y) is sl.Sequence
    np.testing.assert_array_equal(_np(y), _np(x).reshape((shape[0], *output_shape)))
    # An output step is valid iff every element reshaped into it came from a valid step.
    full_mask = np.broadcast_to(x.expanded_mask().numpy(), shape).reshape((shape[0], *output_shape))
    expected_mask = full_mask.reshape(shape[0], output_shape[0], -1).all(-1)
    np.testing.assert_array_equal(y.mask.numpy(), expected_mask)


def test_global_reshape_errors() -> None:
    with pytest.raises(ValueError, match=r"GlobalReshape output_shape=.*must have as many elements"):
        GlobalReshape([4]).layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match=r"GlobalReshape output_shape must include the time axis"):
        GlobalReshape(())
    with pytest.raises(ValueError, match=r"GlobalReshape output_shape must be non-negative"):
        GlobalReshape((-1, 3))


# -- reductions ----------------------------------------------------------------------------

REDUCTIONS = [(Mean, np.mean), (Min, np.min), (Max, np.max), (Sum, np.sum)]
REDUCE_CASES = [
    ((5,), False, None),
    ((5,), False, 2),
    ((5,), False, -1),
    ((5,), False, [2]),
    ((5, 9), False, None),
    ((5, 9), False, 3),
    ((5, 9), False, -2),
    ((5, 9), False, [2, -1]),
    ((5, 9), False, [-2, -1]),
    ((5, 9), False, [3, 2]),
    ((5, 9), True, None),
    ((5, 9), True, 3),
    ((5, 9), True, [3, 2]),
    ((), False, None),
]


@pytest.mark.parametrize("channels,keepdims,axis", REDUCE_CASES)
@pytest.mark.parametrize("cls,op", REDUCTIONS, ids=[c.__name__ for c, _ in REDUCTIONS])
def test_reduce(cls, op, channels, keepdims, axis) -> None:
    x = random_sequence(2, 3, *channels)
    layer = cls(axis=axis, keepdims=keepdims)
    y = layer.layer(x)
    assert isinstance(y, sl.MaskedSequence)
    np_axis = tuple(range(2, x.ndim)) if axis is None else (tuple(axis) if isinstance(axis, list) else axis)
    expected = op(_np(x), axis=np_axis, keepdims=keepdims)
    assert y.channel_shape == expected.shape[2:] == layer.get_output_shape(channels)
    np.testing.assert_allclose(_np(y), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -2, -3])
@pytest.mark.parametrize("cls", [Mean, Min, Max, Sum])
def test_reduce_batch_or_time_is_an_error(cls, axis) -> None:
    with pytest.raises(
        ValueError, match=f"{cls.__name__} axis {axis} (refers to the (batch|time) axis|is out of range)"
    ):
        cls(axis=axis).layer(random_sequence(2, 3, 5))


def test_reduce_other_errors() -> None:
    with pytest.raises(ValueError, match=r"Sum axis=.*same axis twice"):
        Sum(axis=(2, -1)).get_output_shape((4,))
    with pytest.raises(TypeError, match=r"Mean expects a floating"):
        Mean().layer(random_sequence(2, 3, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"Max expected axis"):
        Max(axis="2")  # type: ignore[arg-type]


def test_sum_keeps_integer_dtype() -> None:
    x = random_sequence(2, 3, 4, dtype=torch.int32)
    y = Sum().layer(x)
    assert y.dtype == torch.int32
    torch.testing.assert_close(y.values, x.values.sum(-1, dtype=torch.int32))


# -- Argmax --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.bfloat16])
def test_argmax(dtype) -> None:
    values = torch.tensor([[[0.1, 0.2, 0.3]], [[0.3, 0.2, 0.1]]]) * 10
    x = sl.Sequence.from_values(values.to(dtype))
    layer = Argmax()
    y = layer.layer(x)
    assert y.dtype == torch.int32 and layer.get_output_dtype(dtype) == torch.int32
    assert y.values.tolist() == [[2], [0]]
    assert layer.get_output_shape((3,)) == ()
    verify_contract(layer, x)


def test_argmax_needs_a_channel_axis() -> None:
    with pytest.raises(ValueError, match=r"Argmax needs at least one channel axis"):
        Argmax().layer(random_sequence(2, 3))


def test_step_compiles_fullgraph() -> None:
    layer = sl.Serial(Slice(((None, None, -1), 0)), EinopsRearrange("c -> c ()"), Sum(axis=-1), Squeeze())
    verify_contract(layer, random_sequence(2, 5, 4, 2), compile=True, compile_backend="eager")
