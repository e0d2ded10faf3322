"""Input sizes inferred at the first call (sl.lazy): every convolution's ``in_channels`` and every
normalization's size. Built by any entry point, recorded in the config, read from a state dict
(ours or torch.nn's) loaded before any call, equal to the eager layer with the same seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import sl
from sl.testing import random_sequence, verify_contract
from sl_conv import (
    BatchNormalization,
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    DepthwiseConv1D,
    DepthwiseConv2D,
    GroupNormalization,
    LayerNormalization,
    RMSNormalization,
)

# (id, lazy factory, eager factory, input channel shape, size argument, inferred value)
CASES: list[tuple[str, Callable[[], Any], Callable[[], Any], tuple[int, ...], str, Any]] = [
    (
        "Conv1D",
        lambda: Conv1D(out_channels=4, kernel_size=3, padding="causal"),
        lambda: Conv1D(3, 4, 3, padding="causal"),
        (3,),
        "in_channels",
        3,
    ),
    (
        "Conv1D(groups, spectral)",
        lambda: Conv1D(
            out_channels=6, kernel_size=3, stride=2, padding="semicausal", groups=2, kernel_constraint="spectral"
        ),
        lambda: Conv1D(4, 6, 3, stride=2, padding="semicausal", groups=2, kernel_constraint="spectral"),
        (4,),
        "in_channels",
        4,
    ),
    (
        "DepthwiseConv1D",
        lambda: DepthwiseConv1D(kernel_size=3, padding="causal", depth_multiplier=2, use_weight_norm=True),
        lambda: DepthwiseConv1D(3, 3, padding="causal", depth_multiplier=2, use_weight_norm=True),
        (3,),
        "in_channels",
        3,
    ),
    (
        "Conv2D",
        lambda: Conv2D(out_channels=4, kernel_size=(3, 2), time_padding="reverse_causal", spatial_padding=(1, 0)),
        lambda: Conv2D(2, 4, (3, 2), time_padding="reverse_causal", spatial_padding=(1, 0)),
        (5, 2),
        "in_channels",
        2,
    ),
    (
        "DepthwiseConv2D",
        lambda: DepthwiseConv2D(kernel_size=2, time_padding="causal", kernel_constraint="l2"),
        lambda: DepthwiseConv2D(3, 2, time_padding="causal", kernel_constraint="l2"),
        (4, 3),
        "in_channels",
        3,
    ),
    (
        "Conv3D",
        lambda: Conv3D(out_channels=2, kernel_size=(2, 2, 1), time_padding="causal"),
        lambda: Conv3D(3, 2, (2, 2, 1), time_padding="causal"),
        (3, 2, 3),
        "in_channels",
        3,
    ),
    (
        "Conv1DTranspose",
        lambda: Conv1DTranspose(out_channels=4, kernel_size=4, stride=2, padding="causal", groups=2),
        lambda: Conv1DTranspose(2, 4, 4, stride=2, padding="causal", groups=2),
        (2,),
        "in_channels",
        2,
    ),
    (
        "Conv2DTranspose",
        lambda: Conv2DTranspose(out_channels=3, kernel_size=(3, 2), stride=2, time_padding="causal"),
        lambda: Conv2DTranspose(2, 3, (3, 2), stride=2, time_padding="causal"),
        (3, 2),
        "in_channels",
        2,
    ),
    (
        "Conv3DTranspose",
        lambda: Conv3DTranspose(out_channels=2, kernel_size=2, stride=(1, 2, 1), time_padding="causal"),
        lambda: Conv3DTranspose(2, 2, 2, stride=(1, 2, 1), time_padding="causal"),
        (2, 2, 2),
        "in_channels",
        2,
    ),
    ("LayerNorm", lambda: LayerNormalization(), lambda: LayerNormalization(5), (5,), "normalized_shape", 5),
    (
        "LayerNorm(2 axes)",
        lambda: LayerNormalization(axis=(2, 3), bias=False),
        lambda: LayerNormalization((3, 2), axis=(2, 3), bias=False),
        (3, 2),
        "normalized_shape",
        (3, 2),
    ),
    (
        "RMSNorm(axis -2)",
        lambda: RMSNormalization(axis=-2),
        lambda: RMSNormalization(3, axis=-2),
        (3, 2),
        "normalized_shape",
        3,
    ),
    ("BatchNorm", lambda: BatchNormalization(), lambda: BatchNormalization(5), (5,), "num_features", 5),
    (
        "GroupNorm(cumulative)",
        lambda: GroupNormalization(2, cumulative=True),
        lambda: GroupNormalization(2, 6, cumulative=True),
        (6,),
        "num_channels",
        6,
    ),
    (
        "GroupNorm(axis 2)",
        lambda: GroupNormalization(3, axis=2, cumulative=True),
        lambda: GroupNormalization(3, 6, axis=2, cumulative=True),
        (6, 2),
        "num_channels",
        6,
    ),
]
IDS = [c[0] for c in CASES]


def _randomize(layer: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen).to(p.dtype))
        for name, b in layer.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))


def _entry_points(spec: sl.ChannelSpec) -> list[Callable[[Any], Any]]:
    x = random_sequence(2, 4, *spec.shape)

    def step(m: Any) -> Any:
        block = x[:, : m.block_size]
        return m.step(block, m.get_initial_state(2, spec, training=False), training=False)

    return [
        lambda m: m.get_output_spec(spec),
        lambda m: m.get_initial_state(2, spec, training=False),
        lambda m: m.layer(x, training=False),
        step,
    ]


@pytest.mark.parametrize("name, lazy, eager, shape, arg, size", CASES, ids=IDS)
def test_any_entry_point_builds_the_layer(name, lazy, eager, shape, arg, size):
    spec = sl.ChannelSpec(shape, torch.float32)
    for entry in _entry_points(spec):
        layer = lazy().eval()
        assert getattr(layer, arg) is None and layer.get_config()[arg] is None
        entry(layer)
        assert not sl.lazy.has_uninitialized_parameters(layer)
        reference = eager()
        assert getattr(layer, arg) in (size, (size,)) and layer.get_config() == reference.get_config()
        assert {k: v.shape for k, v in layer.state_dict().items()} == {
            k: v.shape for k, v in reference.state_dict().items()
        }


@pytest.mark.parametrize("name, lazy, eager, shape, arg, size", CASES, ids=IDS)
def test_lazy_equals_eager_and_round_trips(name, lazy, eager, shape, arg, size):
    # Same seed, same initial parameters: the lazy layer runs the eager one's initialisers at its first call.
    torch.manual_seed(0)
    reference = eager().eval()
    torch.manual_seed(0)
    layer = lazy().eval()
    layer.get_output_spec(sl.ChannelSpec(shape, torch.float32))
    for (k, a), b in zip(layer.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name}: {k}")
    _randomize(layer)
    x = random_sequence(2, 8, *shape, random_mask=True, generator=torch.Generator().manual_seed(3))
    expected = layer.layer(x, training=False)
    # The config records the inferred size: it rebuilds an eager layer.
    config = json.loads(json.dumps(layer.get_config()))
    rebuilt = sl.from_config(config)
    assert getattr(rebuilt, arg) is not None
    rebuilt.load_state_dict(layer.state_dict())
    # A lazy layer takes its size from a state dict loaded before any call.
    fresh = lazy()
    fresh.load_state_dict(layer.state_dict())
    assert fresh.get_config() == layer.get_config()
    for other in (rebuilt, fresh):
        got = other.eval().layer(x, training=False)
        torch.testing.assert_close(got.values, expected.values)
        assert torch.equal(got.mask, expected.mask)


@pytest.mark.parametrize("name, lazy, eager, shape, arg, size", CASES, ids=IDS)
def test_lazy_contract(name, lazy, eager, shape, arg, size):
    layer = lazy().eval()
    x = random_sequence(2, 8, *shape, random_mask=True, generator=torch.Generator().manual_seed(4))
    verify_contract(layer, x, training=False, test_gradients=False, test_receptive_field=False)


def test_the_issue_spellings():
    x = random_sequence(2, 9, 128)
    y = sl.Conv1D(out_channels=64, kernel_size=3, padding="causal").layer(x)
    assert y.channel_shape == (64,)
    assert sl.Conv1D(in_channels=128, out_channels=64, kernel_size=3, padding="causal").layer(x).channel_shape == (64,)
    conv = sl.Conv1D(128, 256, kernel_size=3, padding="same")
    assert conv.weight.shape == (256, 128, 3) and conv.layer(x).channel_shape == (256,)
    ln = sl.LayerNorm(256)
    assert ln.weight.shape == (256,) and ln.normalized_shape == (256,)
    stack = sl.Serial(sl.Conv1D(out_channels=16, kernel_size=3, padding="causal"), sl.ReLU(), sl.LayerNorm())
    assert stack.layer(x).channel_shape == (16,)
    assert stack[2].get_config()["normalized_shape"] == 16 and stack[0].get_config()["in_channels"] == 128


def test_lazy_stack_in_a_serial_loads_an_eager_checkpoint_and_streams():
    def model(lazy: bool) -> Any:
        c = None if lazy else 3
        return sl.Serial(
            Conv1D(c, 8, 3, padding="causal"),
            LayerNormalization(None if lazy else 8),
            DepthwiseConv1D(None if lazy else 8, 3, stride=2, padding="causal"),
            BatchNormalization(None if lazy else 8),
            GroupNormalization(4, None if lazy else 8, cumulative=True),
            Conv1DTranspose(None if lazy else 8, 3, 4, stride=2, padding="causal"),
        ).eval()

    eager = model(False)
    _randomize(eager)
    lazy = model(True)
    lazy.load_state_dict(eager.state_dict())
    assert lazy.get_config() == eager.get_config()
    x = random_sequence(2, 10, 3, random_mask=True, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(lazy.layer(x).values, eager.layer(x).values)
    built = model(True)
    y = verify_contract(built, x, training=False, test_gradients=False)
    assert y.channel_shape == (3,) and built[2].out_channels == 8 and built[2].groups == 8


@pytest.mark.parametrize(
    "torch_layer, lazy, in_channels",
    [
        (lambda: torch.nn.Conv1d(3, 4, 3), lambda: Conv1D(out_channels=4, kernel_size=3), 3),
        (lambda: torch.nn.Conv1d(4, 6, 3, groups=2), lambda: Conv1D(out_channels=6, kernel_size=3, groups=2), 4),
        (lambda: torch.nn.Conv1d(3, 6, 3, groups=3), lambda: DepthwiseConv1D(kernel_size=3, depth_multiplier=2), 3),
        (lambda: torch.nn.Conv2d(2, 4, (3, 2)), lambda: Conv2D(out_channels=4, kernel_size=(3, 2)), 2),
        (
            lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
            lambda: Conv1DTranspose(out_channels=6, kernel_size=3, stride=2, groups=2),
            4,
        ),
        (lambda: torch.nn.LayerNorm(5), lambda: LayerNormalization(), (5,)),
        (lambda: torch.nn.RMSNorm(5), lambda: RMSNormalization(), (5,)),
        (lambda: torch.nn.BatchNorm1d(5), lambda: BatchNormalization(), 5),
        (lambda: torch.nn.GroupNorm(2, 6), lambda: GroupNormalization(2), 6),
    ],
)
def test_lazy_layers_load_torch_checkpoints(torch_layer, lazy, in_channels):
    layer = lazy()
    layer.load_state_dict(torch_layer().state_dict())
    assert getattr(layer, layer.lazy_input_arg) == in_channels
    assert not sl.lazy.has_uninitialized_parameters(layer)


def test_parameters_follow_to_before_the_first_call():
    for layer in (
        Conv1D(out_channels=4, kernel_size=3, use_weight_norm=True),
        DepthwiseConv1D(kernel_size=3, kernel_constraint="spectral"),
        LayerNormalization(),
        BatchNormalization(),
        GroupNormalization(2),
    ):
        layer = layer.to(torch.float64)
        y = layer.layer(random_sequence(2, 5, 4, dtype=torch.float64), training=False)
        assert y.dtype == torch.float64
        assert all(t.dtype == torch.float64 for t in layer.state_dict().values() if t.is_floating_point()), layer
    bn = BatchNormalization(dtype=torch.bfloat16)
    bn.get_output_spec(sl.ChannelSpec((3,), torch.bfloat16))
    assert bn.weight.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.float32  # statistics in >= fp32


def test_errors_name_the_layer():
    with pytest.raises(TypeError, match=r"Conv1D needs out_channels and kernel_size: sl\.Conv1D\(out_channels=64"):
        Conv1D(3)
    with pytest.raises(TypeError, match=r"Conv2DTranspose needs out_channels and kernel_size"):
        Conv2DTranspose(out_channels=3)
    with pytest.raises(TypeError, match=r"DepthwiseConv1D needs kernel_size: sl\.DepthwiseConv1D\(kernel_size=3\)"):
        DepthwiseConv1D()
    with pytest.raises(ValueError, match=r"Conv1D: groups=2 must divide in_channels; got 3 input channels"):
        Conv1D(out_channels=4, kernel_size=3, groups=2).get_output_spec(sl.ChannelSpec((3,), torch.float32))
    with pytest.raises(ValueError, match=r"Conv1D: groups=3 must divide out_channels=4"):
        Conv1D(out_channels=4, kernel_size=3, groups=3)
    with pytest.raises(
        ValueError, match=r"Conv2D expected an input of rank 4 \(\[batch, time, height, in_channels\]\)"
    ):
        Conv2D(out_channels=4, kernel_size=3).layer(random_sequence(2, 5, 3))
    with pytest.raises(ValueError, match=r"GroupNormalization: num_channels=5 must be divisible by num_groups=2"):
        GroupNormalization(2).layer(random_sequence(2, 5, 5))
    with pytest.raises(ValueError, match=r"LayerNormalization: axis 3 is out of range"):
        LayerNormalization(axis=3).layer(random_sequence(2, 5, 5))
    # A failed first call leaves the layer unbuilt; the next good call builds it.
    conv = Conv2D(out_channels=4, kernel_size=3)
    with pytest.raises(ValueError):
        conv.layer(random_sequence(2, 5, 3))
    assert conv.in_channels is None
    conv.layer(random_sequence(2, 5, 4, 3))
    assert conv.in_channels == 3
    # After the first call the size is fixed.
    with pytest.raises(ValueError, match=r"Conv2D expected 3 input channels \(last axis\); got channel shape \(4, 5\)"):
        conv.layer(random_sequence(2, 5, 4, 5))
    ln = LayerNormalization()
    ln.layer(random_sequence(2, 5, 5))
    with pytest.raises(ValueError, match=r"LayerNormalization expected sizes \(5,\) on channel axes \(2,\)"):
        ln.layer(random_sequence(2, 5, 6))


def test_compiling_an_unbuilt_layer_says_to_run_one_call():
    layer = Conv1D(out_channels=4, kernel_size=3, padding="causal")
    x = random_sequence(2, 4, 3)

    def run(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return layer.layer(sl.Sequence(v, m), training=False).values

    with pytest.raises(Exception, match=r"infers its in_channels at the first call"):
        torch.compile(run, fullgraph=True, backend="eager")(x.values, x.mask)
    layer.get_output_spec(x.channel_spec)
    compiled = torch.compile(run, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x.values, x.mask), run(x.values, x.mask))


def _flax_tree(shapes: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        k: _flax_tree(v, seed + i + 1) if isinstance(v, dict) else rng.normal(size=v).astype(np.float32)
        for i, (k, v) in enumerate(shapes.items())
    }


@pytest.mark.parametrize(
    "lazy, eager, variables",
    [
        (
            lambda: Conv1D(out_channels=6, kernel_size=3, groups=2),
            lambda: Conv1D(4, 6, 3, groups=2),
            {"params": {"kernel": (3, 2, 6), "bias": (6,)}},
        ),
        (
            lambda: DepthwiseConv1D(kernel_size=3, depth_multiplier=2, bias=False),
            lambda: DepthwiseConv1D(3, 3, depth_multiplier=2, bias=False),
            {"params": {"kernel": (3, 1, 6)}},
        ),
        (
            lambda: Conv2D(out_channels=4, kernel_size=(3, 2), use_weight_norm=True),
            lambda: Conv2D(2, 4, (3, 2), use_weight_norm=True),
            {"params": {"kernel": (3, 2, 2, 4), "bias": (4,), "scale": (4,)}},
        ),
        (
            lambda: Conv1DTranspose(out_channels=6, kernel_size=4, stride=2, groups=2),
            lambda: Conv1DTranspose(4, 6, 4, stride=2, groups=2),
            {"params": {"kernel": (4, 2, 6), "bias": (6,)}},
        ),
        (
            lambda: LayerNormalization(axis=(2, 3)),
            lambda: LayerNormalization((3, 2), axis=(2, 3)),
            {"params": {"scale": (3, 2), "bias": (3, 2)}},
        ),
        (lambda: RMSNormalization(), lambda: RMSNormalization(5), {"params": {"scale": (5,)}}),
        (lambda: GroupNormalization(2), lambda: GroupNormalization(2, 6), {"params": {"scale": (6,), "bias": (6,)}}),
        (
            lambda: BatchNormalization(),
            lambda: BatchNormalization(5),
            {
                "params": {"BatchNorm_0": {"scale": (5,), "bias": (5,)}},
                "batch_stats": {"BatchNorm_0": {"mean": (5,), "var": (5,)}},
            },
        ),
        (
            # The reference's use_scale=False, use_bias=False: its variables hold batch_stats only.
            lambda: BatchNormalization(affine=False),
            lambda: BatchNormalization(5, affine=False),
            {"batch_stats": {"BatchNorm_0": {"mean": (5,), "var": (5,)}}},
        ),
    ],
)
def test_lazy_layers_are_built_by_load_flax_params(lazy, eager, variables):
    from sl.interop import load_flax_params

    tree = _flax_tree(variables)
    if "batch_stats" in tree:
        tree["batch_stats"]["BatchNorm_0"]["var"] = np.abs(tree["batch_stats"]["BatchNorm_0"]["var"])
    reference = load_flax_params(eager(), tree)
    layer = load_flax_params(lazy(), tree)
    assert layer.get_config() == reference.get_config()
    for (k, a), b in zip(layer.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
