"""Tests for sl.layers.pointwise (the reference's simple.py activations and elementwise maths)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sl
from sl.layers import pointwise as pw
from sl.testing import random_sequence, tolerances, verify_contract
from sl.types import MaskedSequence, Sequence

# name -> (factory, channel shape, needs positive input)
LAYERS: dict[str, tuple[Callable[[], sl.SequenceLayer], tuple[int, ...], bool]] = {
    "Abs": (pw.Abs, (4,), False),
    "Add": (lambda: pw.Add([0.5, -1.0, 2.0]), (2, 3), False),
    "Affine": (lambda: pw.Affine((3,)), (2, 3), False),
    "Affine(no bias)": (lambda: pw.Affine((2, 1), bias=False), (2, 3), False),
    "Affine(no scale)": (lambda: pw.Affine(use_scale=False), (4,), False),
    "Elu": (lambda: pw.Elu(0.7), (4,), False),
    "Exp": (pw.Exp, (4,), False),
    "GatedLinearUnit": (pw.GatedLinearUnit, (6,), False),
    "GatedTanhUnit": (pw.GatedTanhUnit, (2, 4), False),
    "GatedUnit(bilinear)": (pw.GatedUnit, (4,), False),
    "GatedUnit(swish, tanh)": (lambda: pw.GatedUnit(F.silu, "tanh"), (4,), False),
    "Gelu": (pw.Gelu, (4,), False),
    "Gelu(exact)": (lambda: pw.Gelu(approximate=False), (4,), False),
    "LeakyRelu": (pw.LeakyRelu, (4,), False),
    "Log": (pw.Log, (4,), True),
    "Maximum": (lambda: pw.Maximum(0.2), (4,), False),
    "Minimum": (lambda: pw.Minimum([[0.0], [0.5]]), (2, 3), False),
    "Mod": (lambda: pw.Mod([1.0, 2.0, -1.5]), (3,), False),
    "PRelu": (lambda: pw.PRelu(0.25), (4,), False),
    "Power(2)": (lambda: pw.Power(2.0), (4,), False),
    "Power(0.5)": (lambda: pw.Power(0.5), (4,), True),
    "Relu": (pw.Relu, (4,), False),
    "Scale": (lambda: pw.Scale(torch.tensor([2.0, -0.5, 3.0])), (2, 3), False),
    "Sigmoid": (pw.Sigmoid, (4,), False),
    "Snake": (lambda: pw.Snake(4), (4,), False),
    "Snake(separate_beta)": (lambda: pw.Snake((2, 3), separate_beta=True), (2, 3), False),
    "Softmax": (pw.Softmax, (4,), False),
    "Softmax(axis=2)": (lambda: pw.Softmax(axis=2), (2, 3), False),
    "Softplus": (pw.Softplus, (4,), False),
    "Swish": (pw.Swish, (4,), False),
    "Tanh": (pw.Tanh, (4,), False),
}


def _input(
    shape: tuple[int, ...], positive: bool, dtype: torch.dtype, random_mask: bool, time: int = 7, seed: int = 0
) -> Sequence:
    gen = torch.Generator().manual_seed(seed)
    x = random_sequence(2, time, *shape, dtype=torch.float32, random_mask=random_mask, generator=gen)
    if positive:
        x = x.apply_values(lambda v: v.abs() + 0.1)
    return x.to(dtype)


def _contract_kwargs(name: str) -> dict[str, object]:
    # Softmax outputs sum to one: the harness's summed-|y| Jacobian probe cannot see the (0, 0) field.
    return {"test_receptive_field": False} if name.startswith("Softmax") else {}


@pytest.mark.parametrize("random_mask", [False, True], ids=["lengths", "random_mask"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_contract_float32(name: str, random_mask: bool) -> None:
    factory, shape, positive = LAYERS[name]
    layer = factory()
    x = _input(shape, positive, torch.float32, random_mask)
    verify_contract(layer, x, **tolerances(torch.float32), **_contract_kwargs(name))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_contract_bfloat16(name: str) -> None:
    factory, shape, positive = LAYERS[name]
    layer = factory().to(torch.bfloat16)
    x = _input(shape, positive, torch.bfloat16, random_mask=True, seed=1)
    y = verify_contract(layer, x, **tolerances(torch.bfloat16), **_contract_kwargs(name))
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("time", [0, 1])
def test_contract_empty_and_single_step(time: int) -> None:
    for name in ("Relu", "Softmax", "GatedLinearUnit", "Snake", "Add"):
        factory, shape, positive = LAYERS[name]
        x = _input(shape, positive, torch.float32, random_mask=False, time=time)
        verify_contract(factory(), x, **tolerances(torch.float32), **_contract_kwargs(name))


def test_mixed_precision_params_and_inputs() -> None:
    # bfloat16 parameters with float32 input and vice versa keep the input dtype.
    x = _input((4,), False, torch.float32, random_mask=True)
    for layer in (pw.PRelu().to(torch.bfloat16), pw.Snake(4).to(torch.bfloat16), pw.Affine().to(torch.bfloat16)):
        y = verify_contract(layer, x, **tolerances(torch.bfloat16))
        assert y.dtype == torch.float32
    xb = x.to(torch.bfloat16)
    for layer in (pw.PRelu(), pw.Snake(4), pw.Affine()):
        assert verify_contract(layer, xb, **tolerances(torch.bfloat16)).dtype == torch.bfloat16


# -- registry ------------------------------------------------------------------------------

ALIASES = {
    "ReLU": pw.Relu,
    "GELU": pw.Gelu,
    "SiLU": pw.Swish,
    "ELU": pw.Elu,
    "PReLU": pw.PRelu,
    "LeakyReLU": pw.LeakyRelu,
    "GLU": pw.GatedLinearUnit,
}


@pytest.mark.parametrize("name", pw.__all__)
def test_registry_names(name: str) -> None:
    cls = getattr(pw, name)
    assert sl.registry.get(name) is cls
    assert getattr(sl, name) is cls
    assert sl.registry.name_of(cls) == name


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_registry_aliases(alias: str) -> None:
    assert sl.registry.get(alias) is ALIASES[alias]
    assert getattr(sl, alias) is ALIASES[alias]
    # Configs use the primary name.
    assert ALIASES[alias].__name__ == sl.registry.name_of(ALIASES[alias])


def test_config_round_trip_of_constants() -> None:
    for layer in (
        pw.Add(np.arange(3, dtype=np.float32)),
        pw.Scale(torch.tensor([[1.0], [2.0]])),
        pw.Mod(3),
        pw.Maximum((0.0, 1.0)),
        pw.Minimum([[1, 2, 3]]),
    ):
        config = json.loads(json.dumps(layer.get_config()))
        rebuilt = sl.from_config(config)
        assert type(rebuilt) is type(layer)
        assert torch.equal(rebuilt.constant, layer.constant)
        assert rebuilt.get_config() == layer.get_config()


def test_config_round_trip_of_activations() -> None:
    layer = pw.GatedUnit(F.silu, "tanh")
    rebuilt = sl.from_config(json.loads(json.dumps(layer.get_config())))
    x = _input((4,), False, torch.float32, random_mask=True)
    assert torch.equal(rebuilt.layer(x).values, layer.layer(x).values)
    assert sl.GLU().get_config() == {"type": "GatedLinearUnit"}


def test_constant_is_a_non_persistent_buffer() -> None:
    layer = pw.Add([1.0, 2.0])
    assert "constant" in dict(layer.named_buffers())
    assert layer.state_dict() == {}


# -- masked state --------------------------------------------------------------------------

KEEPS_MASKED = {
    "Abs": True,
    "Add": False,
    "Affine": False,
    "Affine(no bias)": True,
    "Affine(no scale)": False,
    "Elu": True,
    "Exp": False,
    "GatedLinearUnit": True,
    "GatedTanhUnit": True,
    "GatedUnit(bilinear)": True,
    "GatedUnit(swish, tanh)": True,
    "Gelu": True,
    "Gelu(exact)": True,
    "LeakyRelu": True,
    "Log": False,
    "Maximum": False,
    "Minimum": False,
    "Mod": True,
    "PRelu": True,
    "Power(2)": True,
    "Power(0.5)": True,
    "Relu": True,
    "Scale": True,
    "Sigmoid": False,
    "Snake": True,
    "Snake(separate_beta)": True,
    "Softmax": False,
    "Softmax(axis=2)": False,
    "Softplus": False,
    "Swish": True,
    "Tanh": True,
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_masked_state(name: str) -> None:
    factory, shape, _ = LAYERS[name]
    layer = factory()
    x = random_sequence(2, 6, *shape, random_mask=True)
    assert isinstance(x, MaskedSequence)
    y = layer.layer(x)
    assert isinstance(y, MaskedSequence) is KEEPS_MASKED[name]
    if isinstance(y, MaskedSequence):
        invalid = ~y.expanded_mask().expand(y.values.shape)
        assert bool((y.values[invalid] == 0).all())
    # An unmasked Sequence input never comes out as a MaskedSequence.
    assert type(layer.layer(x.unmask())) is Sequence


def test_gated_unit_with_nonzero_feature_activation_is_unmasked() -> None:
    x = random_sequence(2, 6, 4, random_mask=True)
    assert type(pw.GatedUnit("sigmoid", None).layer(x)) is Sequence
    assert type(pw.GatedUnit(None, "exp").layer(x)) is MaskedSequence


def test_power_nonpositive_is_unmasked() -> None:
    x = random_sequence(2, 6, 4, random_mask=True)
    assert type(pw.Power(0.0).layer(x)) is Sequence
    assert type(pw.Power(-1.0).layer(x)) is Sequence


# -- numerics ------------------------------------------------------------------------------

NUMERICS: list[tuple[sl.SequenceLayer, Callable[[torch.Tensor], torch.Tensor], bool]] = [
    (pw.Abs(), torch.abs, False),
    (pw.Elu(), F.elu, False),
    (pw.Elu(0.5), lambda v: F.elu(v, 0.5), False),
    (pw.Exp(), torch.exp, False),
    (pw.Gelu(), lambda v: F.gelu(v, approximate="tanh"), False),
    (pw.Gelu(False), F.gelu, False),
    (pw.LeakyRelu(), lambda v: F.leaky_relu(v, 0.01), False),
    (pw.LeakyRelu(0.3), lambda v: torch.where(v >= 0, v, 0.3 * v), False),
    (pw.Log(), torch.log, True),
    (pw.Power(2.0), torch.square, False),
    (pw.Power(0.5), torch.sqrt, True),
    (pw.Power(3), lambda v: v * v * v, False),
    (pw.Relu(), F.relu, False),
    (pw.Sigmoid(), torch.sigmoid, False),
    (pw.Softmax(), lambda v: torch.softmax(v, -1), False),
    (pw.Softplus(), lambda v: torch.logaddexp(v, torch.zeros(())), False),
    (pw.Swish(), lambda v: v * torch.sigmoid(v), False),
    (pw.Tanh(), torch.tanh, False),
    (pw.PRelu(), lambda v: F.leaky_relu(v, 0.01), False),
    (pw.Add(2.5), lambda v: v + 2.5, False),
    (pw.Scale([1.0, 2.0, 3.0, 4.0]), lambda v: v * torch.arange(1.0, 5.0), False),
    (pw.Maximum(0.1), lambda v: v.clamp(min=0.1), False),
    (pw.Minimum(-0.1), lambda v: v.clamp(max=-0.1), False),
    (pw.Mod(0.7), lambda v: v - 0.7 * torch.floor(v / 0.7), False),
    (pw.Mod(-0.7), lambda v: v + 0.7 * torch.floor(v / -0.7), False),
    (pw.Affine(), lambda v: v, False),
    (pw.GatedLinearUnit(), lambda v: F.glu(v, -1), False),
    (pw.GatedTanhUnit(), lambda v: torch.tanh(v[..., :2]) * torch.sigmoid(v[..., 2:]), False),
    (pw.Snake(4), lambda v: v + torch.sin(v) ** 2, False),
]


@pytest.mark.parametrize("case", range(len(NUMERICS)), ids=lambda i: type(NUMERICS[i][0]).__name__ + str(i))
def test_numerics_against_torch(case: int) -> None:
    layer, ref, positive = NUMERICS[case]
    x = _input((4,), positive, torch.float32, random_mask=False, seed=case).mask_invalid()
    y = layer.layer(x).mask_invalid()
    expected = Sequence(ref(x.values), x.mask).mask_invalid()
    torch.testing.assert_close(y.values, expected.values, rtol=1e-6, atol=1e-6)
    assert torch.equal(y.mask, x.mask)


def test_numerics_reference_values() -> None:
    # Values from the JAX reference (sequence-layers 0.2): gelu defaults to the tanh form.
    v = torch.tensor([[[-2.0, -0.5, 0.0, 0.5, 2.0]]])
    x = Sequence.from_values(v)
    gelu = pw.Gelu().layer(x).values
    torch.testing.assert_close(gelu, F.gelu(v, approximate="tanh"))
    assert not torch.allclose(gelu, F.gelu(v))
    torch.testing.assert_close(pw.Mod(1.5).layer(x).values, torch.tensor([[[1.0, 1.0, 0.0, 0.5, 0.5]]]))


def test_abs_complex() -> None:
    x = random_sequence(2, 5, 3, dtype=torch.complex64, random_mask=True)
    layer = pw.Abs()
    assert layer.get_output_dtype(torch.complex64) == torch.float32
    assert layer.get_output_dtype(torch.complex128) == torch.float64
    assert layer.get_output_dtype(torch.bfloat16) == torch.bfloat16
    y = verify_contract(layer, x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.values, x.values.abs())
    assert isinstance(layer.layer(x), MaskedSequence)


def test_integer_inputs() -> None:
    x = random_sequence(2, 5, 3, dtype=torch.int64, low=-10, high=10)
    assert torch.equal(pw.Mod(3).layer(x).values, torch.remainder(x.values, 3))
    assert pw.Mod(3).layer(x).dtype == torch.int64
    assert torch.equal(pw.Add(2).layer(x).values, x.values + 2)
    assert torch.equal(pw.Abs().layer(x).values, x.values.abs())
    assert pw.Power(2).get_output_dtype(torch.int64) == torch.int64
    assert pw.Power(0.5).get_output_dtype(torch.int64) == torch.float32
    verify_contract(pw.Power(2), x)


def test_broadcast_constant_output_shape() -> None:
    # Reference semantics: the output is broadcast_shapes(channel shape, constant shape).
    x = random_sequence(2, 3, 5, 1)
    for cls in (pw.Add, pw.Scale, pw.Maximum, pw.Minimum, pw.Mod):
        layer = cls(np.ones((5, 9)))
        assert layer.get_output_shape((5, 1)) == (5, 9)
        assert layer.layer(x).channel_shape == (5, 9)
        assert cls(2.0).get_output_shape((5, 1)) == (5, 1)
        assert cls([1.0]).get_output_shape((5, 3)) == (5, 3)


def test_parameters() -> None:
    affine = pw.Affine((4, 3), dtype=torch.float64)
    assert {k: (tuple(v.shape), v.dtype) for k, v in affine.named_parameters()} == {
        "scale": ((4, 3), torch.float64),
        "bias": ((4, 3), torch.float64),
    }
    assert torch.equal(affine.scale, torch.ones(4, 3, dtype=torch.float64))
    assert torch.equal(affine.bias, torch.zeros(4, 3, dtype=torch.float64))
    assert [n for n, _ in pw.Affine(bias=False).named_parameters()] == ["scale"]
    assert [n for n, _ in pw.Affine(use_scale=False).named_parameters()] == ["bias"]
    prelu = pw.PRelu(0.2, device="cpu")
    assert prelu.negative_slope.shape == () and float(prelu.negative_slope) == pytest.approx(0.2)
    snake = pw.Snake((2, 3), separate_beta=True, dtype=torch.bfloat16)
    assert {k: (tuple(v.shape), v.dtype) for k, v in snake.named_parameters()} == {
        "alpha_log": ((2, 3), torch.bfloat16),
        "beta_log": ((2, 3), torch.bfloat16),
    }
    assert [n for n, _ in pw.Snake(3).named_parameters()] == ["alpha_log"]


def test_affine_complex() -> None:
    layer = pw.Affine(dtype=torch.complex64)
    with torch.no_grad():
        layer.scale.fill_(0.1 + 0.2j)
        layer.bias.fill_(0.5 - 0.1j)
    x = random_sequence(2, 6, 4, 3, dtype=torch.complex64, random_mask=True)
    y = layer.layer(x).mask_invalid()
    expected = Sequence(x.values * (0.1 + 0.2j) + (0.5 - 0.1j), x.mask).mask_invalid()
    torch.testing.assert_close(y.values, expected.values)


def test_learnable_parameters_train() -> None:
    x = random_sequence(2, 6, 4, random_mask=True)
    for layer in (pw.PRelu(), pw.Snake(4, separate_beta=True), pw.Affine((4,))):
        y = layer.layer(x).mask_invalid()
        y.values.square().sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_metadata() -> None:
    for name, (factory, shape, _) in LAYERS.items():
        layer = factory()
        assert layer.block_size == 1, name
        assert layer.output_ratio == 1, name
        assert layer.input_latency == 0 and layer.output_latency == 0, name
        assert layer.receptive_field == (0, 0), name
        assert layer.supports_step, name
        assert layer.get_initial_state(2, sl.ChannelSpec(shape, torch.float32)) == ()


# -- bad input -----------------------------------------------------------------------------


def test_glu_odd_channels() -> None:
    x = random_sequence(2, 3, 5)
    for cls in (pw.GatedLinearUnit, pw.GatedTanhUnit, pw.GatedUnit):
        with pytest.raises(ValueError, match=f"{cls.__name__}.*even.*got \\(5,\\)"):
            cls().layer(x)
        with pytest.raises(ValueError, match=cls.__name__):
            cls().get_output_shape(())


@pytest.mark.parametrize(("shape", "axis"), [((4,), -2), ((4,), -3), ((4,), 0), ((4,), 1), ((4,), 3), ((), -1)])
def test_softmax_bad_axis(shape: tuple[int, ...], axis: int) -> None:
    layer = pw.Softmax(axis=axis)
    with pytest.raises(ValueError, match="Softmax axis"):
        layer.get_output_shape(shape)
    with pytest.raises(ValueError, match="Softmax axis"):
        layer.layer(random_sequence(2, 3, *shape))


def test_softmax_axis_type() -> None:
    with pytest.raises(TypeError, match="Softmax"):
        pw.Softmax(axis=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [pw.Add, pw.Scale, pw.Maximum, pw.Minimum, pw.Mod])
def test_constant_not_broadcastable(cls: type) -> None:
    x = random_sequence(2, 3, 5, 9)
    layer = cls(np.ones((5,)))
    with pytest.raises(ValueError, match=f"{cls.__name__}.*does not broadcast.*\\(5, 9\\)"):
        layer.get_output_shape((5, 9))
    with pytest.raises(ValueError, match=cls.__name__):
        layer.layer(x)
    too_many = cls(np.ones((5, 5, 5)))
    with pytest.raises(ValueError, match=f"{cls.__name__}.*more dimensions"):
        too_many.layer(random_sequence(2, 3, 5, 1))


@pytest.mark.parametrize("cls", [pw.Add, pw.Scale, pw.Maximum, pw.Minimum, pw.Mod])
def test_constant_bad_type(cls: type) -> None:
    with pytest.raises(TypeError, match=cls.__name__):
        cls("abc")
    with pytest.raises(TypeError, match=cls.__name__):
        cls(True)


def test_affine_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"Affine.*more dimensions"):
        pw.Affine((3, 5, 1)).layer(random_sequence(2, 3, 5, 1))
    with pytest.raises(ValueError, match=r"Affine.*does not broadcast"):
        pw.Affine((5, 5)).layer(random_sequence(2, 3, 5, 9))
    with pytest.raises(TypeError, match="Affine"):
        pw.Affine("x")  # type: ignore[arg-type]


def test_snake_wrong_channel_shape() -> None:
    with pytest.raises(ValueError, match=r"Snake expected input channel shape \(4,\); got \(5,\)"):
        pw.Snake(4).layer(random_sequence(2, 3, 5))


def test_unknown_activation() -> None:
    with pytest.raises(ValueError, match="Unknown activation"):
        pw.GatedUnit("nope", None)


@pytest.mark.parametrize(
    "name", ["Add", "Affine", "GatedLinearUnit", "Mod", "PRelu", "Power(2)", "Snake(separate_beta)", "Softmax(axis=2)"]
)
def test_step_compiles(name: str) -> None:
    # fullgraph capture of step (the eager backend keeps this fast; it checks for graph breaks).
    torch._dynamo.reset()
    factory, shape, positive = LAYERS[name]
    x = _input(shape, positive, torch.float32, random_mask=True)
    verify_contract(factory(), x, compile=True, compile_backend="eager", test_receptive_field=False)
