"""Tests for sl.layers.dense (Dense, DenseShaped, EinsumDense)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import sl
from sl.layers import dense as dn
from sl.testing import random_sequence, tolerances, verify_contract
from sl.types import MaskedSequence, Sequence

# name -> (factory, channel shape)
LAYERS: dict[str, tuple[Callable[..., sl.SequenceLayer], tuple[int, ...]]] = {
    "Dense": (lambda **kw: dn.Dense(4, 3, **kw), (4,)),
    "Dense(rank 2, no bias)": (lambda **kw: dn.Dense(3, 5, bias=False, **kw), (2, 3)),
    "Dense(relu)": (lambda **kw: dn.Dense(4, 2, activation="relu", **kw), (4,)),
    "Dense(silu fn)": (lambda **kw: dn.Dense(4, 2, activation=F.silu, **kw), (4,)),
    "DenseShaped": (lambda **kw: dn.DenseShaped((2, 3), (4, 2), **kw), (2, 3)),
    "DenseShaped(scalar in)": (lambda **kw: dn.DenseShaped((), (3,), bias=False, **kw), ()),
    "DenseShaped(scalar out)": (lambda **kw: dn.DenseShaped(3, (), activation="tanh", **kw), (3,)),
    "EinsumDense": (lambda **kw: dn.EinsumDense("...ab,bc->...ac", (2, 3), (None, 4), bias_axes="c", **kw), (2, 3)),
    "EinsumDense(reduce)": (
        lambda **kw: dn.EinsumDense("...abc,bd->...bd", (2, 3, 2), (None, 4), bias_axes="d", **kw),
        (2, 3, 2),
    ),
    "EinsumDense(no bias)": (lambda **kw: dn.EinsumDense("...a,ab->...b", 3, [5], **kw), (3,)),
    "EinsumDense(2d bias)": (
        lambda **kw: dn.EinsumDense("...ab,bc->...ac", (2, 3), (2, 4), bias_axes="ac", **kw),
        (2, 3),
    ),
}


def _randomise(layer: torch.nn.Module) -> torch.nn.Module:
    # Non-zero biases so bias handling is actually exercised.
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape).to(p.dtype))
    return layer


@pytest.mark.parametrize("random_mask", [False, True], ids=["lengths", "random_mask"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_contract_float32(name: str, random_mask: bool) -> None:
    factory, shape = LAYERS[name]
    layer = _randomise(factory())
    x = random_sequence(2, 7, *shape, random_mask=random_mask)
    verify_contract(layer, x, **tolerances(torch.float32))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_contract_bfloat16(name: str) -> None:
    factory, shape = LAYERS[name]
    layer = _randomise(factory(dtype=torch.bfloat16))
    x = random_sequence(2, 7, *shape, random_mask=True, dtype=torch.bfloat16)
    y = verify_contract(layer, x, **tolerances(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    # .to(bfloat16) gives the same thing.
    layer32 = factory().to(torch.bfloat16)
    assert layer32.weight.dtype == torch.bfloat16
    verify_contract(layer32, x, **tolerances(torch.bfloat16))


@pytest.mark.parametrize("time", [0, 1])
def test_contract_short(time: int) -> None:
    for factory, shape in LAYERS.values():
        verify_contract(_randomise(factory()), random_sequence(2, time, *shape), **tolerances(torch.float32))


def test_dtype_promotion() -> None:
    layer = dn.Dense(4, 3)
    assert layer.get_output_dtype(torch.float32) == torch.float32
    assert layer.get_output_dtype(torch.bfloat16) == torch.float32  # promoted with float32 params
    assert layer.get_output_dtype(torch.float64) == torch.float64
    assert layer.get_output_dtype(torch.int64) == torch.float32
    assert dn.Dense(4, 3, dtype=torch.bfloat16).get_output_dtype(torch.int32) == torch.bfloat16  # as jnp.result_type
    assert dn.Dense(4, 3, dtype=torch.bfloat16).get_output_dtype(torch.bfloat16) == torch.bfloat16
    assert dn.Dense(4, 3, compute_dtype=torch.bfloat16).get_output_dtype(torch.float32) == torch.bfloat16
    x = random_sequence(2, 5, 4, dtype=torch.bfloat16, random_mask=True)
    y = verify_contract(layer, x, **tolerances(torch.bfloat16))
    assert y.dtype == torch.float32
    y = verify_contract(dn.Dense(4, 3, compute_dtype=torch.bfloat16), x.to(torch.float32), **tolerances(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    xi = random_sequence(2, 5, 4, dtype=torch.int64, random_mask=True)
    assert verify_contract(layer, xi).dtype == torch.float32


@pytest.mark.parametrize("name", dn.__all__)
def test_registry(name: str) -> None:
    cls = getattr(dn, name)
    assert sl.registry.get(name) is cls
    assert getattr(sl, name) is cls


def test_config_round_trip() -> None:
    for layer in (
        dn.Dense(4, 3, bias=False, activation="gelu", compute_dtype=torch.bfloat16),
        dn.Dense(4, 3, activation=F.silu),
        dn.DenseShaped((2, 3), [4]),
        dn.EinsumDense("...ab,bc->...ac", (2, 3), (None, 4), bias_axes="c", activation=torch.tanh),
    ):
        config = json.loads(json.dumps(layer.get_config()))
        rebuilt = sl.from_config(config)
        assert type(rebuilt) is type(layer)
        assert rebuilt.get_config() == layer.get_config()
        rebuilt.load_state_dict(layer.state_dict())
        x = random_sequence(2, 5, *layer.input_shape if hasattr(layer, "input_shape") else (4,), random_mask=True)
        torch.testing.assert_close(rebuilt.layer(x).values, layer.layer(x).values)


# -- parameters, layouts, initialisers --------------------------------------------------------


def _param_shapes(layer: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in layer.named_parameters()}


def test_parameter_layouts() -> None:
    assert _param_shapes(dn.Dense(4, 3)) == {"weight": (3, 4), "bias": (3,)}
    assert _param_shapes(dn.Dense(4, 3, bias=False)) == {"weight": (3, 4)}
    assert _param_shapes(dn.DenseShaped((2, 3), (4, 5))) == {"weight": (4, 5, 2, 3), "bias": (4, 5)}
    assert _param_shapes(dn.DenseShaped((), (4,))) == {"weight": (4, 1), "bias": (4,)}
    assert _param_shapes(dn.DenseShaped((3,), ())) == {"weight": (1, 3), "bias": (1,)}
    assert _param_shapes(dn.EinsumDense("...abc,bd->...bd", (2, 3, 4), (None, 5), bias_axes="d")) == {
        "weight": (3, 5),
        "bias": (5,),
    }
    assert _param_shapes(dn.EinsumDense("...ab,bc->...ac", (2, 3), (2, 4), bias_axes="a")) == {
        "weight": (3, 4),
        "bias": (2, 1),
    }
    assert _param_shapes(dn.EinsumDense("...ab,bc->...ac", (2, 3), (2, 4))) == {"weight": (3, 4)}
    layer = dn.Dense(4, 3, device="cpu", dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.bias.dtype == torch.float64


def _check_lecun(weight: torch.Tensor, fan_in: int) -> None:
    std = math.sqrt(1 / fan_in)
    w = weight.detach().float()
    assert float(w.abs().max()) <= 2 * std / 0.87962566103423978 * 1.01  # (bfloat16 rounding)
    assert float(w.std()) == pytest.approx(std, rel=0.1)
    assert abs(float(w.mean())) < 0.1 * std


def test_default_initialisers() -> None:
    torch.manual_seed(0)
    layer = dn.Dense(256, 128)
    _check_lecun(layer.weight, 256)
    assert torch.equal(layer.bias, torch.zeros(128))
    # DenseShaped: flax computes fan_in on the [*in, *out] kernel as size / last axis.
    shaped = dn.DenseShaped((16, 8), (32, 4))
    _check_lecun(shaped.weight, 16 * 8 * 32)
    assert torch.equal(shaped.bias, torch.zeros(32, 4))
    einsum = dn.EinsumDense("...ab,bc->...ac", (2, 128), (None, 64), bias_axes="c")
    _check_lecun(einsum.weight, 128)
    assert torch.equal(einsum.bias, torch.zeros(64))
    # bfloat16 parameters initialise too.
    _check_lecun(dn.Dense(256, 128, dtype=torch.bfloat16).weight, 256)


# -- numerics -----------------------------------------------------------------------------------


def test_dense_matches_linear() -> None:
    layer = _randomise(dn.Dense(4, 3, activation="tanh"))
    x = random_sequence(2, 6, 5, 4, random_mask=True)
    expected = torch.tanh(x.values @ layer.weight.T + layer.bias)
    torch.testing.assert_close(layer.layer(x).mask_invalid().values, Sequence(expected, x.mask).mask_invalid().values)


def test_dense_shaped_matches_einsum() -> None:
    layer = _randomise(dn.DenseShaped((2, 3), (4, 5)))
    x = random_sequence(2, 6, 2, 3)
    expected = torch.einsum("btij,klij->btkl", x.values, layer.weight) + layer.bias
    torch.testing.assert_close(layer.layer(x).values, expected)
    scalar = _randomise(dn.DenseShaped((), ()))
    xs = random_sequence(2, 6)
    torch.testing.assert_close(scalar.layer(xs).values, xs.values * scalar.weight[0, 0] + scalar.bias[0])


def test_einsum_dense_numerics() -> None:
    layer = _randomise(dn.EinsumDense("...abc,bd->...bd", (2, 3, 2), (None, 4), bias_axes="d"))
    x = random_sequence(2, 6, 2, 3, 2)
    expected = torch.einsum("tnabc,bd->tnbd", x.values, layer.weight) + layer.bias
    torch.testing.assert_close(layer.layer(x).values, expected)
    layer2 = _randomise(dn.EinsumDense("...ab,bc->...ac", (2, 3), (2, 4), bias_axes="a"))
    x2 = random_sequence(2, 6, 2, 3)
    expected2 = torch.einsum("tnab,bc->tnac", x2.values, layer2.weight) + layer2.bias
    torch.testing.assert_close(layer2.layer(x2).values, expected2)
    assert layer2.get_output_shape((2, 3)) == (2, 4)


def test_masked_state() -> None:
    x = random_sequence(2, 6, 4, random_mask=True)
    assert isinstance(x, MaskedSequence)
    assert type(dn.Dense(4, 3, bias=False).layer(x)) is MaskedSequence
    assert type(dn.Dense(4, 3).layer(x)) is Sequence
    assert type(dn.Dense(4, 3, bias=False, activation="relu").layer(x)) is Sequence
    assert type(dn.Dense(4, 3, bias=False).layer(x.unmask())) is Sequence
    assert type(dn.DenseShaped(4, (2, 2), bias=False).layer(x)) is MaskedSequence
    assert type(dn.DenseShaped(4, (2, 2)).layer(x)) is Sequence
    assert type(dn.EinsumDense("...a,ab->...b", 4, [3]).layer(x)) is MaskedSequence
    assert type(dn.EinsumDense("...a,ab->...b", 4, [3], bias_axes="b").layer(x)) is Sequence
    y = dn.Dense(4, 3, bias=False).layer(x)
    assert bool((y.values[~y.mask] == 0).all())


def test_metadata() -> None:
    for factory, shape in LAYERS.values():
        layer = factory()
        assert layer.block_size == 1 and layer.output_ratio == 1
        assert layer.input_latency == 0 and layer.output_latency == 0
        assert layer.receptive_field == (0, 0)
        assert layer.get_initial_state(2, sl.ChannelSpec(shape, torch.float32)) == ()


def test_gradients_reach_parameters() -> None:
    layer = dn.EinsumDense("...ab,bc->...ac", (2, 3), (None, 4), bias_axes="c")
    y = layer.layer(random_sequence(2, 5, 2, 3, random_mask=True)).mask_invalid()
    y.values.sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


# -- bad input ----------------------------------------------------------------------------------


def test_dense_wrong_channel_shape() -> None:
    layer = dn.Dense(8, 3)
    with pytest.raises(ValueError, match=r"Dense expected input channel shape \(\.\.\., 8\); got \(5,\)"):
        layer.layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match=r"Dense expected .*got \(\)"):
        layer.layer(random_sequence(2, 3))
    with pytest.raises(ValueError, match="Dense"):
        layer.step(random_sequence(2, 1, 5), ())


def test_dense_shaped_wrong_channel_shape() -> None:
    with pytest.raises(ValueError, match=r"DenseShaped expected input channel shape \(2, 3\); got \(3, 2\)"):
        dn.DenseShaped((2, 3), (4,)).layer(random_sequence(2, 3, 3, 2))


def test_einsum_dense_wrong_channel_shape() -> None:
    layer = dn.EinsumDense("...ab,bc->...ac", (2, 3), (None, 4))
    with pytest.raises(ValueError, match=r"EinsumDense expected input channel shape \(2, 3\); got \(2, 4\)"):
        layer.layer(random_sequence(2, 3, 2, 4))


@pytest.mark.parametrize(
    ("equation", "input_shape", "output_shape", "bias_axes", "match"),
    [
        ("ab,bc", (2, 3), (2, 4), "", "must look like"),
        ("ab,bc->ac", (2, 3), (2, 4), "", "leading ellipses"),
        ("...ab->...ab", (2, 3), (2, 3), "", "exactly two operands"),
        ("...ab,bc,cd->...ad", (2, 3), (2, 4), "", "exactly two operands"),
        ("...aa,ab->...ab", (2, 2), (2, 4), "", "repeats"),
        ("...ab,bc->...cc", (2, 3), (4, 4), "", "repeats"),
        ("...a1,bc->...ac", (2, 3), (2, 4), "", "letters only"),
        ("...ab,bc->...ac", (2, 3, 4), (2, 4), "", "rank"),
        ("...ab,bc->...ac", (2, 3), (4,), "", "rank"),
        ("...ab,bc->...ac", (2, 3), (3, 4), "", "dimension 'a' size 3"),
        ("...ab,bc->...ac", (2, 3), (2, None), "", "cannot infer"),
        ("...ab,bd->...ac", (2, 3), (2, 4), "", "neither the input nor the kernel"),
        ("...ab,be->...ac", (2, 3), (2, 4), "", "neither"),
        ("...ab,bc->...ac", (2, 3), (2, 4), "z", "bias_axes"),
    ],
)
def test_einsum_dense_bad_equation(
    equation: str, input_shape: tuple[int, ...], output_shape: tuple[int | None, ...], bias_axes: str, match: str
) -> None:
    with pytest.raises(ValueError, match=f"EinsumDense.*{match}"):
        dn.EinsumDense(equation, input_shape, output_shape, bias_axes=bias_axes)


def test_bad_constructor_args() -> None:
    with pytest.raises(ValueError, match="Dense"):
        dn.Dense(0, 3)
    with pytest.raises(TypeError, match="Dense"):
        dn.Dense("4", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DenseShaped"):
        dn.DenseShaped("ab", (3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Dense \(activation\): Unknown activation 'nope'"):
        dn.Dense(4, 3, activation="nope")
    with pytest.raises(TypeError, match=r"Dense \(activation\): An activation must be a name or a callable"):
        dn.Dense(4, 3, activation=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Dense expects compute_dtype to be a floating or complex dtype"):
        dn.Dense(4, 3, compute_dtype=torch.int32)
    for layer in (dn.Dense, dn.DenseShaped):
        with pytest.raises(TypeError, match=rf"{layer.__name__} expects compute_dtype to be None or a torch.dtype"):
            layer(4, 3, compute_dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Embedding expects compute_dtype to be None or a torch.dtype"):
        sl.Embedding(4, 3, compute_dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"GatedUnit \(gate_activation\): Unknown activation 'nope'"):
        sl.GatedUnit(gate_activation="nope")


@pytest.mark.parametrize("name", ["Dense(relu)", "DenseShaped(scalar in)", "EinsumDense(reduce)"])
def test_step_compiles(name: str) -> None:
    # fullgraph capture of step (the eager backend keeps this fast; it checks for graph breaks).
    torch._dynamo.reset()
    factory, shape = LAYERS[name]
    verify_contract(factory(), random_sequence(2, 6, *shape, random_mask=True), compile=True, compile_backend="eager")


# -- input size inferred at the first call ---------------------------------------------------------


def test_dense_infers_its_input_size_at_the_first_call():
    layer = sl.Dense(features=4)
    assert layer.in_features is None and sl.lazy.has_uninitialized_parameters(layer)
    x = random_sequence(2, 5, 3)
    y = verify_contract(layer, x, **tolerances(torch.float32))
    assert y.channel_shape == (4,) and layer.weight.shape == (4, 3) and layer.in_features == 3
    assert not sl.lazy.has_uninitialized_parameters(layer)
    assert layer.get_config()["in_features"] == 3
    rebuilt = sl.from_config(json.loads(json.dumps(layer.get_config())))
    assert rebuilt.weight.shape == (4, 3)
    with pytest.raises(ValueError, match=r"Dense expected input channel shape \(\.\.\., 3\); got \(5,\)"):
        layer.layer(random_sequence(2, 5, 5))


def test_lazy_dense_is_built_by_any_entry_point_and_loads_a_state_dict():
    spec = sl.ChannelSpec((6,), torch.float32)
    for build in (
        lambda m: m.get_output_spec(spec),
        lambda m: m.get_initial_state(2, spec),
        lambda m: m.step(random_sequence(2, 1, 6), m.get_initial_state(2, spec)),
    ):
        model = sl.Serial(sl.Dense(features=5), sl.Relu(), sl.Dense(features=2))
        build(model)
        assert [model[0].in_features, model[2].in_features] == [6, 5]
    eager = sl.Serial(sl.Dense(6, 5), sl.Dense(5, 2))
    lazy = sl.Serial(sl.Dense(features=5), sl.Dense(features=2))
    lazy.load_state_dict(eager.state_dict())  # the sizes come from the checkpoint
    x = random_sequence(2, 4, 6)
    torch.testing.assert_close(lazy.layer(x).values, eager.layer(x).values)
    assert lazy.get_config() == eager.get_config()


def test_dense_needs_features():
    with pytest.raises(TypeError, match=r"Dense needs features, the output size: sl.Dense\(features=256\)"):
        sl.Dense(4)
