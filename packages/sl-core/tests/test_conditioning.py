"""Conditioning (reference: sequence_layers/jax/conditioning.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sl
from sl.layers.conditioning import Combination, Conditioning, Projection, batched_time_slice
from sl.testing import random_sequence, tolerances, verify_contract

IDENTITY, LINEAR, LINEAR_AFFINE = Projection.IDENTITY, Projection.LINEAR, Projection.LINEAR_AFFINE
ADD, CONCAT, CONCAT_BEFORE, MUL = Combination.ADD, Combination.CONCAT, Combination.CONCAT_BEFORE, Combination.MUL
AFFINE, AFFINE_SHIFT, AFFINE_SCALE = Combination.AFFINE, Combination.AFFINE_SHIFT, Combination.AFFINE_SCALE

# (x channel shape, c channel shape, expected output shape) per (projection, combination), from
# the reference's conditioning_test.py.
_IDENTITY_ADD = [
    ((), (), ()),
    ((), (5,), (5,)),
    ((), (2, 5), (2, 5)),
    ((2,), (), (2,)),
    ((2, 5), (), (2, 5)),
    ((5,), (5,), (5,)),
    ((5,), (2, 5), (2, 5)),
    ((2, 5), (5,), (2, 5)),
    ((3, 1, 5), (2, 5), (3, 2, 5)),
    ((2, 5), (3, 1, 5), (3, 2, 5)),
]
_IDENTITY_CONCAT = [
    ((), (), (2,)),
    ((), (5,), (6,)),
    ((), (2, 5), (2, 6)),
    ((2,), (), (3,)),
    ((2, 5), (), (2, 6)),
    ((5,), (7,), (12,)),
    ((5,), (2, 7), (2, 12)),
    ((2, 5), (7,), (2, 12)),
    ((3, 1, 5), (2, 7), (3, 2, 12)),
    ((2, 5), (3, 1, 7), (3, 2, 12)),
]
_LINEAR_SAME = [
    ((), (), ()),
    ((), (5,), ()),
    ((), (2, 5), ()),
    ((2,), (), (2,)),
    ((2, 5), (), (2, 5)),
    ((5,), (7,), (5,)),
    ((7,), (2, 5), (7,)),
    ((2, 5), (7,), (2, 5)),
    ((3, 1, 5), (2, 7), (3, 1, 5)),
    ((2, 7), (3, 1, 5), (2, 7)),
]
_LINEAR_CONCAT = [
    ((), (), (2,)),
    ((), (5,), (2,)),
    ((), (2, 5), (2,)),
    ((2,), (), (4,)),
    ((2, 5), (), (2, 10)),
    ((5,), (7,), (10,)),
    ((7,), (2, 5), (14,)),
    ((2, 5), (7,), (2, 10)),
    ((3, 1, 5), (2, 7), (3, 1, 10)),
    ((2, 7), (3, 1, 5), (2, 14)),
]
CASES = (
    [(IDENTITY, ADD, *c) for c in _IDENTITY_ADD]
    + [(IDENTITY, comb, *c) for comb in (CONCAT, CONCAT_BEFORE) for c in _IDENTITY_CONCAT]
    + [(p, comb, *c) for p, comb in ((LINEAR, ADD), (LINEAR, MUL), (LINEAR_AFFINE, AFFINE)) for c in _LINEAR_SAME]
    + [(LINEAR, comb, *c) for comb in (AFFINE_SHIFT, AFFINE_SCALE) for c in _LINEAR_SAME]
    + [(LINEAR, comb, *c) for comb in (CONCAT, CONCAT_BEFORE) for c in _LINEAR_CONCAT]
)


def _case_id(case):
    p, comb, xs, cs, _ = case
    return f"{p.name}-{comb.name}-x{list(xs)}-c{list(cs)}"


def _make(projection, combination, x_shape, c_shape, **kwargs):
    layer = Conditioning("test", projection, combination, conditioning_shape=c_shape, input_shape=x_shape, **kwargs)
    if layer.dense is not None:
        with torch.no_grad():
            layer.dense.bias.normal_()
    return layer


def _c_sequence(batch, time, c_shape, dtype=torch.float32):
    return random_sequence(batch, time, *c_shape, dtype=dtype, low_length=time // 2)


# -- contract over the reference's shape table ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_conditioning_sequence(case):
    projection, combination, x_shape, c_shape, expected = case
    layer = _make(projection, combination, x_shape, c_shape)
    x = random_sequence(2, 9, *x_shape, low_length=4)
    constants = {"test": _c_sequence(2, 9, c_shape)}
    assert layer.get_output_shape(x_shape, constants=constants) == expected
    assert layer.get_output_shape(x_shape) == expected  # declared conditioning_shape suffices
    assert isinstance(layer.get_initial_state(2, x.channel_spec, constants=constants), torch.Tensor)
    verify_contract(layer, x, constants=constants, pad_constants=True)
    if projection is IDENTITY:
        assert list(layer.parameters()) == []
    else:
        out = x_shape if projection is LINEAR else (2, *x_shape)
        assert layer.dense.weight.shape == (*(out or (1,)), *(c_shape or (1,)))
        assert layer.dense.bias.shape == (out or (1,))


@pytest.mark.parametrize("case", CASES[::3], ids=_case_id)
def test_conditioning_tensor(case):
    projection, combination, x_shape, c_shape, expected = case
    layer = _make(projection, combination, x_shape, c_shape)
    x = random_sequence(2, 9, *x_shape, low_length=4)
    constants = {"test": torch.randn(2, *c_shape)}
    assert layer.get_initial_state(2, x.channel_spec, constants=constants) == ()
    y = verify_contract(layer, x, constants=constants)
    assert y.channel_shape == expected


STREAMING_CASES = [
    (IDENTITY, CONCAT, (2, 5), (), (2, 6)),
    (IDENTITY, CONCAT_BEFORE, (2, 5), (), (2, 6)),
    (IDENTITY, ADD, (5,), (2, 5), (2, 5)),
    (IDENTITY, MUL, (5,), (5,), (5,)),
    (LINEAR, ADD, (5,), (7,), (5,)),
    (LINEAR_AFFINE, AFFINE, (5,), (7,), (5,)),
    (LINEAR, AFFINE_SCALE, (5,), (7,), (5,)),
    (LINEAR, AFFINE_SHIFT, (5,), (7,), (5,)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", STREAMING_CASES, ids=_case_id)
def test_conditioning_streaming(case, dtype):
    projection, combination, x_shape, c_shape, expected = case
    layer = _make(projection, combination, x_shape, c_shape, streaming=True).to(dtype)
    x = random_sequence(2, 11, *x_shape, dtype=dtype, random_mask=True)
    constants = {"test": _c_sequence(2, 11, c_shape, dtype)}
    assert layer.get_initial_state(2, x.channel_spec, constants=constants) == ()
    y = verify_contract(layer, x, constants=constants, stream_constants=True, **tolerances(dtype))
    assert y.channel_shape == expected and y.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", STREAMING_CASES, ids=_case_id)
@pytest.mark.parametrize("kind", ["sequence", "tensor"])
def test_conditioning_dtypes_and_lengths(case, dtype, kind):
    projection, combination, x_shape, c_shape, _ = case
    layer = _make(projection, combination, x_shape, c_shape).to(dtype)
    for time in (0, 1, 5):
        x = random_sequence(3, time, *x_shape, dtype=dtype, random_mask=True)
        c = _c_sequence(3, time, c_shape, dtype) if kind == "sequence" else torch.randn(3, *c_shape).to(dtype)
        # The receptive-field probe lengthens x but not a time-synchronous conditioning.
        verify_contract(
            layer,
            x,
            constants={"test": c},
            pad_constants=True,
            test_receptive_field=kind == "tensor" or time >= 2,
            **tolerances(dtype),
        )


def test_conditioning_float32_conditioning_bf16_input():
    layer = _make(LINEAR, ADD, (4,), (3,))
    x = random_sequence(2, 6, 4, dtype=torch.bfloat16)
    c = _c_sequence(2, 6, (3,))
    y = verify_contract(layer, x, constants={"test": c}, pad_constants=True, **tolerances(torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_conditioning_compiles():
    layer = _make(LINEAR, AFFINE_SCALE, (4,), (3,))
    # Some valid steps: the receptive-field probe differentiates |y|, which is flat at x = 0.
    x = random_sequence(2, 6, 4, low_length=3)
    verify_contract(
        layer, x, constants={"test": _c_sequence(2, 6, (3,))}, pad_constants=True, compile=True, compile_backend="eager"
    )


# -- numerics ----------------------------------------------------------------------------------


def _np_project(layer: Conditioning, c: np.ndarray) -> np.ndarray:
    if layer.dense is None:
        return c
    d = layer.dense
    w = d.weight.detach().numpy().reshape(math.prod(d.output_shape or (1,)), -1)
    b = d.bias.detach().numpy().reshape(-1)
    flat = c.reshape(*c.shape[:2], -1)
    return (flat @ w.T + b).reshape(*c.shape[:2], *d.output_shape)


def _np_expand(v: np.ndarray, rank: int) -> np.ndarray:
    return v.reshape(v.shape[:2] + (1,) * (rank - (v.ndim - 2)) + v.shape[2:])


def _np_combine(layer: Conditioning, x: np.ndarray, c: np.ndarray) -> np.ndarray:
    comb = layer.combination
    if comb is AFFINE:
        scale, shift = c[:, :, 0], c[:, :, 1]
        rank = max(x.ndim, scale.ndim) - 2
        return _np_expand(x, rank) * (_np_expand(scale, rank) + 1.0) + _np_expand(shift, rank)
    rank = max(x.ndim, c.ndim) - 2
    x, c = _np_expand(x, rank), _np_expand(c, rank)
    if comb in (ADD, AFFINE_SHIFT):
        return x + c
    if comb is MUL:
        return x * c
    if comb is AFFINE_SCALE:
        return x * (c + 1.0)
    if rank == 0:
        x, c = x[..., None], c[..., None]
    outer = np.broadcast_shapes(x.shape[:-1], c.shape[:-1])
    x = np.broadcast_to(x, outer + x.shape[-1:])
    c = np.broadcast_to(c, outer + c.shape[-1:])
    return np.concatenate([x, c] if comb is CONCAT else [c, x], -1)


@pytest.mark.parametrize("case", CASES[1::4], ids=_case_id)
@pytest.mark.parametrize("kind", ["sequence", "tensor"])
def test_conditioning_numerics(case, kind):
    projection, combination, x_shape, c_shape, _ = case
    layer = _make(projection, combination, x_shape, c_shape)
    x = random_sequence(2, 5, *x_shape, random_mask=True)
    if kind == "sequence":
        c = random_sequence(2, 5, *c_shape, random_mask=True)
        cv, cmask = c.values.numpy(), c.mask
    else:
        c = torch.randn(2, *c_shape)
        cv, cmask = c.numpy()[:, None], torch.ones(2, 1, dtype=torch.bool)
    y = layer.layer(x, constants={"test": c})
    expected = _np_combine(layer, x.values.numpy(), _np_project(layer, cv))
    np.testing.assert_allclose(
        y.values.detach().numpy(), np.broadcast_to(expected, y.values.shape), rtol=1e-5, atol=1e-5
    )
    assert torch.equal(y.mask, x.mask & cmask)


def test_conditioning_reference_add_example():
    """The reference's test_condition_sequence_add_combination."""
    x = sl.Sequence(
        torch.tensor([[[1.0, 2, 3], [4, 5, 6], [0, 0, 0]], [[0, 0, 0], [2, 4, 6], [3, 5, 7]]]),
        torch.tensor([[True, True, False], [False, True, True]]),
    )
    c = sl.Sequence(
        torch.tensor(
            [
                [[[0.0, 0, 0], [0, 0, 0]], [[-1, -2, -3], [-5, -6, -7]], [[0, 0, 0], [0, 0, 0]]],
                [[[-4, -3, -2], [-8, -7, -6]], [[0, 0, 0], [0, 0, 0]], [[-2, -4, -6], [-1, -3, -5]]],
            ]
        ),
        torch.tensor([[False, True, False], [True, False, True]]),
    )
    y = Conditioning("test", "identity", "add").layer(x, constants={"test": c}).mask_invalid()
    expected = torch.zeros(2, 3, 2, 3)
    expected[0, 1] = torch.tensor([[3.0, 3, 3], [-1, -1, -1]])
    expected[1, 2] = torch.tensor([[1.0, 1, 1], [2, 2, 2]])
    torch.testing.assert_close(y.values, expected)
    assert y.mask.tolist() == [[False, True, False], [False, False, True]]


def test_conditioning_projection_channel_shape():
    layer = Conditioning("c", LINEAR, CONCAT, conditioning_shape=(7,), projection_channel_shape=(3,))
    x = random_sequence(2, 8, 5)
    y = verify_contract(layer, x, constants={"c": _c_sequence(2, 8, (7,))}, pad_constants=True)
    assert y.channel_shape == (8,)
    assert layer.dense.weight.shape == (3, 7)


def test_conditioning_affine_scale_offset():
    layer = Conditioning("c", LINEAR, AFFINE_SCALE, conditioning_shape=(2,), input_shape=(3,), affine_scale_offset=0.0)
    with torch.no_grad():
        layer.dense.weight.zero_()
        layer.dense.bias.zero_()
    y = layer.layer(random_sequence(2, 4, 3), constants={"c": torch.randn(2, 2)})
    assert (y.values == 0).all()


def test_batched_time_slice():
    x = sl.Sequence(torch.arange(10.0).reshape(2, 5), torch.tensor([[True] * 5, [True, True, False, True, True]]))
    y = batched_time_slice(x, torch.tensor([1, 3]), 3)
    assert y.values.tolist() == [[1, 2, 3], [8, 9, 9]]
    assert y.mask.tolist() == [[True, True, True], [True, True, False]]
    empty = batched_time_slice(x[:, :0], torch.tensor([0, 0]), 2)
    assert empty.values.shape == (2, 2) and not empty.mask.any()


def test_conditioning_non_streaming_state_advances():
    layer = Conditioning("c", "identity", "add")
    c = random_sequence(2, 6, 3)
    x = random_sequence(2, 2, 3)
    state = layer.get_initial_state(2, x.channel_spec, constants={"c": c})
    assert state.shape == (2,) and state.dtype == torch.int32
    y, state = layer.step(x, state, constants={"c": c})
    y, state = layer.step(x, state, constants={"c": c})
    assert state.tolist() == [4, 4]
    torch.testing.assert_close(y.values, x.values + c.values[:, 2:4])


# -- bad inputs ----------------------------------------------------------------------------------


def test_conditioning_bad_modes():
    with pytest.raises(ValueError, match=r"Conditioning: the AFFINE combination requires the LINEAR_AFFINE"):
        Conditioning("c", "linear", "affine", conditioning_shape=(2,), input_shape=(3,))
    with pytest.raises(ValueError, match=r"Conditioning: the AFFINE_SHIFT combination requires the LINEAR"):
        Conditioning("c", "identity", "affine_shift")
    with pytest.raises(ValueError, match=r"Conditioning: the AFFINE_SCALE combination requires the LINEAR"):
        Conditioning("c", "linear_affine", "affine_scale", conditioning_shape=(2,), input_shape=(3,))
    with pytest.raises(ValueError, match=r"Conditioning: the LINEAR_AFFINE projection requires the AFFINE"):
        Conditioning("c", "linear_affine", "add", conditioning_shape=(2,), input_shape=(3,))
    with pytest.raises(ValueError, match=r"Conditioning expects projection to be one of"):
        Conditioning("c", "cubic", "add")
    with pytest.raises(ValueError, match=r"Conditioning expects combination to be one of"):
        Conditioning("c", "identity", "subtract")
    with pytest.raises(ValueError, match=r"Conditioning with projection LINEAR needs conditioning_shape"):
        Conditioning("c", "linear", "add", input_shape=(3,))
    with pytest.raises(ValueError, match=r"Conditioning with projection LINEAR needs input_shape"):
        Conditioning("c", "linear", "add", conditioning_shape=(3,))


@pytest.mark.parametrize(
    "x_shape,c_shape,combination",
    [((5,), (6,), "add"), ((3, 4, 5), (2, 5), "add"), ((2, 5), (3, 7), "concat"), ((2, 5), (3, 7), "concat_before")],
)
def test_conditioning_invalid_shapes(x_shape, c_shape, combination):
    layer = Conditioning("test", "identity", combination)
    x = random_sequence(2, 6, *x_shape)
    constants = {"test": _c_sequence(2, 6, c_shape)}
    state = layer.get_initial_state(2, x.channel_spec, constants=constants)
    with pytest.raises(ValueError, match=r"Conditioning: channel shapes .* do not broadcast"):
        layer.get_output_shape(x_shape, constants=constants)
    with pytest.raises(ValueError, match=r"Conditioning"):
        layer.layer(x, constants=constants)
    with pytest.raises(ValueError, match=r"Conditioning"):
        layer.step(x, state, constants=constants)


def test_conditioning_bad_constants():
    layer = Conditioning("c", "linear", "add", conditioning_shape=(3,), input_shape=(4,))
    x = random_sequence(2, 5, 4)
    with pytest.raises(ValueError, match=r"Conditioning requires the constant 'c'"):
        layer.layer(x)
    with pytest.raises(ValueError, match=r"Conditioning requires the constant 'c'"):
        layer.layer(x, constants={"other": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"Conditioning requires the constant 'c'"):
        layer.get_initial_state(2, x.channel_spec)
    with pytest.raises(ValueError, match=r"Conditioning expected constant 'c' with channel shape \(3,\); got \(5,\)"):
        layer.layer(x, constants={"c": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match=r"Conditioning expected constant 'c' to be a tensor or a Sequence"):
        layer.layer(x, constants={"c": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"Conditioning expected input channel shape \(4,\); got \(6,\)"):
        layer.layer(random_sequence(2, 5, 6), constants={"c": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"Conditioning: the conditioning 'c' has \[batch, time\] = \[2, 3\]"):
        layer.layer(x, constants={"c": random_sequence(2, 3, 3)})
    with pytest.raises(ValueError, match=r"Conditioning: the conditioning 'c' has \[batch, time\] = \[3, 1\]"):
        layer.layer(x, constants={"c": torch.zeros(3, 3)})


# -- registry / examples ----------------------------------------------------------------------


def test_registry_and_enums():
    assert sl.registry.get("Conditioning") is Conditioning
    assert sl.Conditioning is Conditioning
    assert Conditioning.Projection is Projection and Conditioning.Combination is Combination
    layer = Conditioning("c", Conditioning.Projection.IDENTITY, "CONCAT_BEFORE")
    assert layer.combination is CONCAT_BEFORE
    assert layer.get_config()["projection"] == "identity"
    assert sl.from_config(layer.get_config()).combination is CONCAT_BEFORE
