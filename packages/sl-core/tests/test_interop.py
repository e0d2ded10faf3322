"""sl.interop.load_flax_params with hand-made numpy trees (no JAX needed)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from support_layers import Decimate

import sl
from sl.interop import ConversionError, ConverterRegistry, default_converters, load_flax_params
from sl.interop.converters import dense_kernel_to_weight, same_names
from sl.types import Constants, Sequence


class ToyDense(sl.PreservesType, sl.Stateless):
    """A third-party layer with torch-layout parameters (weight [out, in], bias [out])."""

    def __init__(self, in_features: int, features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(features, in_features))
        self.bias = torch.nn.Parameter(torch.zeros(features)) if bias else None
        self.features = features

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (*input_shape[:-1], self.features)

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return x.apply_values(lambda v: torch.nn.functional.linear(v, self.weight, self.bias))


class ToyNorm(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    """Learned scale plus a running mean kept in the reference's ``batch_stats`` collection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return x.apply_values(lambda v: (v - self.mean) * self.scale)


class ToyUnconvertible(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
        return x


def _convert_toy_dense(module: torch.nn.Module, variables: sl.interop.Variables) -> None:
    variables.assign(module.weight, "kernel", transform=dense_kernel_to_weight, target_name="weight")
    variables.assign(module.bias, "bias")


def _convert_toy_norm(module: torch.nn.Module, variables: sl.interop.Variables) -> None:
    variables.assign(module.scale, "scale")
    variables.assign(module.mean, "mean", collection="batch_stats")


class ThirdPartyPlugin:
    """Registered with sl.registry.add_plugin: converters arrive through the hook."""

    @sl.hookimpl
    def sl_register_converters(self, converters: ConverterRegistry) -> None:
        converters.register(ToyDense, _convert_toy_dense)
        converters.register(ToyNorm)(_convert_toy_norm)


@pytest.fixture(autouse=True, scope="module")
def _plugin() -> Iterator[None]:
    if "interop_test_plugin" not in sl.registry.plugin_names():
        sl.registry.add_plugin(ThirdPartyPlugin(), name="interop_test_plugin")
    yield
    sl.registry.reset()  # other test modules see the registry without this plugin


class Box:
    """Stands in for flax.linen.Partitioned (``.value`` + ``.unbox()``)."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value
        self.names = ("embed", "mlp")

    def unbox(self) -> np.ndarray:
        return self.value


def _rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape).astype(np.float32)


def test_third_party_converter_is_found_through_the_hook() -> None:
    converters = default_converters()
    assert converters.lookup(ToyDense) is _convert_toy_dense
    assert ToyNorm in converters
    assert sl.Serial in converters


def test_single_layer_transposes_kernel_and_unboxes() -> None:
    kernel, bias = _rand(3, 4), _rand(4)
    layer = load_flax_params(ToyDense(3, 4), {"params": {"kernel": Box(kernel), "bias": bias}})
    np.testing.assert_array_equal(layer.weight.detach().numpy(), kernel.T)
    np.testing.assert_array_equal(layer.bias.detach().numpy(), bias)
    # The bare params tree (no collection level) is accepted too.
    layer2 = load_flax_params(ToyDense(3, 4), {"kernel": kernel, "bias": bias})
    torch.testing.assert_close(layer2.weight, layer.weight)


def test_serial_of_dense_matches_numpy() -> None:
    k0, b0, k1, b1 = _rand(3, 5), _rand(5), _rand(5, 2), _rand(2)
    model = sl.Serial(ToyDense(3, 5), Decimate(1), ToyDense(5, 2))
    params = {"params": {"layers_0": {"kernel": k0, "bias": b0}, "layers_2": {"kernel": Box(k1), "bias": b1}}}
    load_flax_params(model, params)
    x = _rand(2, 6, 3)
    y = model.layer(Sequence.from_values(torch.from_numpy(x)))
    expected = (x @ k0 + b0) @ k1 + b1
    np.testing.assert_allclose(y.values.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_serial_of_sl_dense() -> None:
    try:
        dense = sl.registry.get("Dense")
    except KeyError:
        pytest.skip("sl.Dense is not registered yet")
    model = sl.Serial(dense(3, 4), dense(4, 2))
    k0, b0, k1, b1 = _rand(3, 4), _rand(4), _rand(4, 2), _rand(2)
    load_flax_params(
        model, {"params": {"layers_0": {"kernel": k0, "bias": b0}, "layers_1": {"kernel": k1, "bias": b1}}}
    )
    x = _rand(2, 5, 3)
    y = model.layer(Sequence.from_values(torch.from_numpy(x)))
    np.testing.assert_allclose(y.values.detach().numpy(), (x @ k0 + b0) @ k1 + b1, rtol=1e-5, atol=1e-5)


def test_missing_parameter_names_full_path() -> None:
    model = sl.Serial(ToyDense(3, 4), ToyDense(4, 2))
    params = {"params": {"layers_0": {"kernel": _rand(3, 4), "bias": _rand(4)}, "layers_1": {"kernel": _rand(4, 2)}}}
    with pytest.raises(ConversionError, match=r"missing: params/layers_1/bias") as info:
        load_flax_params(model, params)
    assert "ToyDense at layers.1" in str(info.value)


def test_missing_child_scope() -> None:
    model = sl.Serial(ToyDense(3, 4), ToyDense(4, 2))
    with pytest.raises(ConversionError, match=r"missing: params/layers_1/kernel"):
        load_flax_params(model, {"params": {"layers_0": {"kernel": _rand(3, 4), "bias": _rand(4)}}})


def test_extra_parameter_names_full_path() -> None:
    model = sl.Serial(ToyDense(3, 4), Decimate(1))
    params = {
        "params": {
            "layers_0": {"kernel": _rand(3, 4), "bias": _rand(4), "gamma": _rand(4)},
            "layers_1": {"kernel": _rand(4, 4)},  # a parameterless layer must get nothing
            "layers_7": {"bias": _rand(1)},
        }
    }
    with pytest.raises(ConversionError) as info:
        load_flax_params(model, params)
    msg = str(info.value)
    assert "extra: params/layers_0/gamma" in msg
    assert "extra: params/layers_1/kernel" in msg
    assert "extra: params/layers_7/bias" in msg
    assert len(info.value.problems) == 3


def test_extra_when_sl_layer_has_no_bias() -> None:
    with pytest.raises(ConversionError, match=r"extra: params/bias has no counterpart in ToyDense"):
        load_flax_params(ToyDense(3, 4, bias=False), {"params": {"kernel": _rand(3, 4), "bias": _rand(4)}})


def test_mis_shaped_parameter_names_path_and_shapes() -> None:
    model = sl.Serial(ToyDense(3, 4))
    with pytest.raises(
        ConversionError, match=r"mis-shaped: params/layers_0/kernel has shape \(5, 3\) .*expects \(4, 3\)"
    ):
        load_flax_params(model, {"params": {"layers_0": {"kernel": _rand(3, 5), "bias": _rand(4)}}})


def test_subtree_where_array_expected() -> None:
    with pytest.raises(ConversionError, match=r"mis-shaped: params/kernel is a sub-tree"):
        load_flax_params(ToyDense(3, 4), {"params": {"kernel": {"x": _rand(3, 4)}, "bias": _rand(4)}})


def test_other_collections_load_into_buffers() -> None:
    scale, mean = _rand(3), _rand(3)
    model = load_flax_params(
        sl.Serial(ToyNorm(3)), {"params": {"layers_0": {"scale": scale}}, "batch_stats": {"layers_0": {"mean": mean}}}
    )
    np.testing.assert_array_equal(model[0].mean.numpy(), mean)
    np.testing.assert_array_equal(model[0].scale.detach().numpy(), scale)
    with pytest.raises(ConversionError, match=r"missing: batch_stats/layers_0/mean"):
        load_flax_params(sl.Serial(ToyNorm(3)), {"params": {"layers_0": {"scale": scale}}})
    with pytest.raises(ConversionError, match=r"extra: batch_stats/layers_0/var"):
        load_flax_params(
            sl.Serial(ToyNorm(3)),
            {"params": {"layers_0": {"scale": scale}}, "batch_stats": {"layers_0": {"mean": mean, "var": mean}}},
        )


def test_variables_without_params_collection() -> None:
    """A model whose reference variables hold only running statistics (no ``params``)."""

    class ToyStats(sl.PreservesType, sl.PreservesShape, sl.Stateless):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(channels))

        def layer(self, x: Sequence, *, training: bool | None = None, constants: Constants | None = None) -> Sequence:
            return x.apply_values(lambda v: v - self.mean)

    reg = ConverterRegistry()
    reg.register(ToyStats, lambda m, v: v.assign(m.mean, "mean", collection="batch_stats"))
    mean = _rand(3)
    layer = load_flax_params(ToyStats(3), {"batch_stats": {"mean": mean}}, converters=reg)
    np.testing.assert_array_equal(layer.mean.numpy(), mean)


def test_layer_without_converter_is_an_error() -> None:
    with pytest.raises(ConversionError, match=r"no converter: ToyUnconvertible at layers.0"):
        load_flax_params(sl.Serial(ToyUnconvertible()), {"params": {"layers_0": {"w": _rand(2)}}})


def test_explicit_registry_and_mro_lookup() -> None:
    class SubDense(ToyDense):
        pass

    reg = ConverterRegistry()
    reg.register(ToyDense, _convert_toy_dense)
    assert reg.lookup(SubDense) is _convert_toy_dense
    layer = load_flax_params(SubDense(2, 2), {"kernel": _rand(2, 2), "bias": _rand(2)}, converters=reg)
    np.testing.assert_array_equal(layer.weight.detach().numpy(), _rand(2, 2).T)
    with pytest.raises(TypeError, match="expects a class"):
        reg.register("ToyDense", _convert_toy_dense)  # type: ignore[arg-type]


def test_same_names_helper_and_non_strict() -> None:
    reg = ConverterRegistry()
    reg.register(ToyNorm, same_names("scale"))
    reg.register(sl.Serial, default_converters().lookup(sl.Serial))
    model = sl.Serial(ToyNorm(3))
    # mean (a buffer) isn't converted by same_names("scale"): fine; extra values are errors only when strict.
    params = {"params": {"layers_0": {"scale": _rand(3), "junk": _rand(1)}}}
    with pytest.raises(ConversionError, match="extra: params/layers_0/junk"):
        load_flax_params(model, params, converters=reg)
    load_flax_params(model, params, converters=reg, strict=False)
    np.testing.assert_array_equal(model[0].scale.detach().numpy(), _rand(3))


def test_bad_variables_type() -> None:
    with pytest.raises(TypeError, match="expects a mapping"):
        load_flax_params(ToyDense(2, 2), [1, 2])  # type: ignore[arg-type]


def test_repeat_slices_stacked_variables() -> None:
    kernel, bias = _rand(3, 2, 2), _rand(3, 2)
    model = load_flax_params(
        sl.Repeat(ToyDense(2, 2), 3), {"params": {"child_layer": {"kernel": kernel, "bias": bias}}}
    )
    for i, child in enumerate(model.layers):
        np.testing.assert_array_equal(child.weight.detach().numpy(), kernel[i].T)
        np.testing.assert_array_equal(child.bias.detach().numpy(), bias[i])
    with pytest.raises(ConversionError, match=r"mis-shaped: params/child_layer/kernel .*leading axis of 3"):
        load_flax_params(
            sl.Repeat(ToyDense(2, 2), 3), {"params": {"child_layer": {"kernel": kernel[:2], "bias": bias}}}
        )


def test_nested_repeats_slice_each_stacked_axis() -> None:
    """The reference stacks a Repeat inside a Repeat on two leading axes, outer first (found by
    fuzzing: the inner Repeat read the outer axis as its own)."""
    kernel, bias = _rand(2, 3, 2, 2), _rand(2, 3, 2)
    variables = {"params": {"child_layer": {"layers_0": {"child_layer": {"kernel": kernel, "bias": bias}}}}}
    model = load_flax_params(sl.Repeat(sl.Serial(sl.Repeat(ToyDense(2, 2), 3)), 2), variables)
    for i, outer in enumerate(model.layers):
        for j, child in enumerate(outer.layers[0].layers):
            np.testing.assert_array_equal(child.weight.detach().numpy(), kernel[i, j].T)
            np.testing.assert_array_equal(child.bias.detach().numpy(), bias[i, j])
    variables["params"]["child_layer"]["layers_0"]["child_layer"]["kernel"] = kernel[:, :2]
    with pytest.raises(ConversionError, match=r"nested Repeats of 2 x 3 expect leading axes \(2, 3\)"):
        load_flax_params(sl.Repeat(sl.Serial(sl.Repeat(ToyDense(2, 2), 3)), 2), variables)


def test_wrappers_and_named_children() -> None:
    k, b = _rand(2, 2), _rand(2)
    # Blockwise shares its scope with the child in the reference.
    model = load_flax_params(sl.Blockwise(ToyDense(2, 2), 2), {"params": {"kernel": k, "bias": b}})
    np.testing.assert_array_equal(model.child_layer.weight.detach().numpy(), k.T)
    model = load_flax_params(
        sl.CheckpointGradient(ToyDense(2, 2)), {"params": {"child_layer": {"kernel": k, "bias": b}}}
    )
    np.testing.assert_array_equal(model.child_layer.weight.detach().numpy(), k.T)
    k2 = _rand(2, 3)[:, :2].copy()
    bi = load_flax_params(
        sl.Bidirectional(ToyDense(2, 2), ToyDense(2, 2)),
        {"params": {"forward": {"kernel": k, "bias": b}, "backward": {"kernel": k2, "bias": b}}},
    )
    np.testing.assert_array_equal(bi.forward_layer.weight.detach().numpy(), k.T)
    np.testing.assert_array_equal(bi.backward_layer.weight.detach().numpy(), k2.T)
    res = load_flax_params(
        sl.Residual([ToyDense(2, 2)], shortcut_layers=[ToyDense(2, 2)]),
        {"params": {"layers_0": {"kernel": k, "bias": b}, "shortcut_layer": {"layers_0": {"kernel": k2, "bias": b}}}},
    )
    np.testing.assert_array_equal(res.shortcut[0].weight.detach().numpy(), k2.T)
    par = load_flax_params(
        sl.Parallel(ToyDense(2, 2), ToyDense(2, 2), combination="add"),
        {"params": {"layers_0": {"kernel": k, "bias": b}, "layers_1": {"kernel": k2, "bias": b}}},
    )
    np.testing.assert_array_equal(par.layers[1].weight.detach().numpy(), k2.T)


def _layer_or_skip(name: str) -> type:
    try:
        return sl.registry.get(name)
    except KeyError:
        pytest.skip(f"sl.{name} is not registered yet")


def test_core_layouts_against_numpy() -> None:
    x = _rand(2, 4, 2, 3)
    seq = Sequence.from_values(torch.from_numpy(x))
    # DenseShaped: kernel [*in, *out].
    kernel, bias = _rand(2, 3, 5), _rand(5)
    layer = load_flax_params(_layer_or_skip("DenseShaped")((2, 3), (5,)), {"kernel": kernel, "bias": bias})
    expected = np.einsum("btij,ijo->bto", x, kernel) + bias
    np.testing.assert_allclose(layer.layer(seq).values.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # EinsumDense keeps the equation's kernel layout.
    kernel = _rand(3, 4)
    layer = load_flax_params(_layer_or_skip("EinsumDense")("...ab,bc->...ac", (2, 3), (2, 4)), {"kernel": kernel})
    np.testing.assert_allclose(layer.layer(seq).values.detach().numpy(), x @ kernel, rtol=1e-5, atol=1e-5)
    # Embedding: table [num, dim] under the reference name "embedding".
    table = _rand(6, 3)
    emb = load_flax_params(_layer_or_skip("Embedding")(6, 3), {"embedding": table})
    ids = torch.tensor([[0, 5, 2]])
    np.testing.assert_array_equal(emb.layer(Sequence.from_values(ids)).values.detach().numpy(), table[[[0, 5, 2]]])
