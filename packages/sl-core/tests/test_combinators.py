"""Tests for sl.combinators: Serial, SerialModules, Parallel, ParallelChannels, Residual,
Repeat, Bidirectional, Blockwise, CheckpointGradient."""

from __future__ import annotations

import fractions
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support_layers import (
    CausalFIR,
    Decimate,
    MutateConstants,
    NonSteppable,
    ReverseFIR,
    ZeroStuff,
)

import sl
from sl.combinators import (
    Bidirectional,
    Blockwise,
    CheckpointGradient,
    Parallel,
    ParallelChannels,
    Repeat,
    Residual,
    Serial,
    SerialModules,
)
from sl.merging import CombinationMode
from sl.testing import measure_receptive_field, random_sequence, tolerances, verify_contract
from sl.types import Sequence

DTYPES = [torch.float32, torch.bfloat16]
MODES = list(CombinationMode)


def _contract(layer, channels, dtype, *, time=12, random_mask=False, **kwargs):
    layer = layer.to(dtype)
    x = random_sequence(2, time, *channels, dtype=dtype, random_mask=random_mask)
    return verify_contract(layer, x, **tolerances(dtype), **kwargs)


# name -> (factory, channel shape, verify_contract kwargs)
CASES = {
    "serial": (lambda: Serial(CausalFIR(3), Decimate(2), CausalFIR(2), sl.Upsample1D(2)), (3,), {}),
    "serial_lookahead": (lambda: Serial(ReverseFIR(3), CausalFIR(2), Decimate(2)), (2,), {}),
    "serial_modules": (lambda: SerialModules([CausalFIR(2), sl.Affine(bias=False)]), (3,), {}),
    "parallel_empty": (lambda: Parallel(), (2,), {}),
    **{
        f"parallel_{m.value}": (
            lambda m=m: Parallel(CausalFIR(3), sl.Affine(bias=False), CausalFIR(2), combination=m),
            (3,),
            {},
        )
        for m in MODES
    },
    "parallel_resampling": (
        lambda: Parallel(Serial(CausalFIR(2), Decimate(2)), Decimate(2), combination="add"),
        (2,),
        {},
    ),
    "parallel_lookahead": (lambda: Parallel(ReverseFIR(3), Serial(CausalFIR(2), ReverseFIR(3))), (2,), {}),
    "parallel_broadcast": (lambda: Parallel(sl.Dense(3, 1, bias=False), CausalFIR(2), combination="add"), (3,), {}),
    **{
        f"parallel_channels_{m.value}": (lambda m=m: ParallelChannels(CausalFIR(3), 2, combination=m), (4,), {})
        for m in MODES
    },
    "parallel_channels_resampling": (
        lambda: ParallelChannels(Serial(CausalFIR(2), Decimate(2)), 3, combination="concat"),
        (6,),
        {},
    ),
    "residual": (lambda: Residual([CausalFIR(3), sl.Affine(bias=False)]), (3,), {}),
    "residual_single": (lambda: Residual(CausalFIR(2)), (3,), {}),
    "residual_shortcut": (lambda: Residual([CausalFIR(2), Decimate(2)], shortcut_layers=[Decimate(2)]), (3,), {}),
    "residual_lookahead": (lambda: Residual(ReverseFIR(3), shortcut_layers=ReverseFIR(3)), (2,), {}),
    "residual_zero_stuff": (lambda: Residual(ZeroStuff(2), shortcut_layers=sl.Upsample1D(2)), (2,), {}),
    "repeat": (lambda: Repeat(CausalFIR(2), 3), (3,), {}),
    "repeat_latency": (lambda: Repeat(Serial(ReverseFIR(2), CausalFIR(2)), 2), (2,), {}),
    "repeat_blocks": (lambda: Repeat(Serial(Decimate(2), sl.Upsample1D(2)), 2), (2,), {}),
    **{
        f"bidirectional_{m.value}": (lambda m=m: Bidirectional(CausalFIR(3), CausalFIR(2), combination=m), (3,), {})
        for m in MODES
    },
    "blockwise": (lambda: Blockwise(CausalFIR(3), 4), (3,), {}),
    "blockwise_resampling": (lambda: Blockwise(Serial(CausalFIR(2), Decimate(2)), 4), (3,), {}),
    "blockwise_lookahead": (lambda: Blockwise(ReverseFIR(3), 2), (2,), {}),
    "blockwise_non_steppable": (lambda: Blockwise(NonSteppable(), 3), (2,), {}),
    "checkpoint": (lambda: CheckpointGradient(Serial(CausalFIR(3), Decimate(2))), (3,), {}),
    "checkpoint_training": (
        lambda: CheckpointGradient(Serial(CausalFIR(3), sl.Affine(bias=False))),
        (3,),
        {"training": True},
    ),
}


@pytest.mark.parametrize("random_mask", [False, True], ids=["lengths", "random_mask"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("name", list(CASES))
def test_contract(name, dtype, random_mask):
    factory, channels, kwargs = CASES[name]
    _contract(factory(), channels, dtype, random_mask=random_mask, **kwargs)


@pytest.mark.parametrize("time", [0, 1, 3])
def test_contract_short_sequences(time):
    layer = Serial(CausalFIR(2), Residual([ReverseFIR(3)], shortcut_layers=[ReverseFIR(3)]), Decimate(2))
    _contract(layer, (2,), torch.float32, time=time * 2)
    _contract(Blockwise(CausalFIR(3), 4), (2,), torch.float32, time=time)


# -- metadata -------------------------------------------------------------------------


def test_fig6_ratio_and_block_size():
    down_up = Serial(Decimate(2), sl.Upsample1D(2))
    assert down_up.output_ratio == 1 and down_up.block_size == 2
    assert down_up.get_output_shape((5,)) == (5,)
    up_down = Serial(sl.Upsample1D(2), Decimate(2))
    assert up_down.output_ratio == 1 and up_down.block_size == 1
    assert Serial(Decimate(2), Decimate(3)).block_size == 6
    assert Serial(Decimate(2), Decimate(3)).output_ratio == fractions.Fraction(1, 6)
    par = Parallel(Serial(Decimate(2), sl.Upsample1D(2)), Serial(Decimate(3), sl.Upsample1D(3)))
    assert par.block_size == 6 and par.output_ratio == 1
    assert Repeat(Serial(Decimate(2), sl.Upsample1D(2)), 3).block_size == 2
    res = Residual([Decimate(2), sl.Upsample1D(2)], shortcut_layers=[Decimate(3), sl.Upsample1D(3)])
    assert res.block_size == 6 and res.output_ratio == 1
    assert Blockwise(down_up, 6).block_size == 6 and Blockwise(down_up, 6).output_ratio == 1
    assert ParallelChannels(Decimate(2), 2).block_size == 2
    assert CheckpointGradient(Decimate(2)).output_ratio == fractions.Fraction(1, 2)
    x = random_sequence(2, 12, 3)
    _contract(down_up, (3,), torch.float32)
    assert down_up.layer(x).shape == x.shape


def test_latencies():
    s = Serial(ReverseFIR(3), CausalFIR(2))
    assert (s.input_latency, s.output_latency) == (2, 2)
    s = Serial(sl.Upsample1D(2), ReverseFIR(3))
    assert (s.input_latency, s.output_latency) == (1, 2)
    s = Serial(ReverseFIR(3), Decimate(2))
    assert (s.input_latency, s.output_latency) == (2, 1)
    p = Parallel(ReverseFIR(3), Serial(CausalFIR(2), ReverseFIR(3)))
    assert (p.input_latency, p.output_latency) == (2, 2)
    r = Residual(ReverseFIR(3), shortcut_layers=[ReverseFIR(3)])
    assert (r.input_latency, r.output_latency) == (2, 2)
    rep = Repeat(ReverseFIR(2), 3)
    assert (rep.input_latency, rep.output_latency) == (3, 3)
    for wrapper in (Blockwise(ReverseFIR(3), 2), CheckpointGradient(ReverseFIR(3)), ParallelChannels(ReverseFIR(3), 2)):
        assert (wrapper.input_latency, wrapper.output_latency) == (2, 2)
        assert wrapper.get_accumulated_output_latency(2) == 4
    bi = Bidirectional(ReverseFIR(3), CausalFIR(2))
    assert (bi.input_latency, bi.output_latency, bi.block_size, bi.supports_step) == (0, 0, 1, False)


def test_latency_divisibility_error_names_delay():
    layer = Serial(ReverseFIR(2), Decimate(2))  # latency 1 reaches a ratio-1/2 layer
    assert layer.input_latency == 1
    with pytest.raises(ValueError, match=r"Decimate.*not divisible.*sl\.Delay\(1, delay_layer_output=False\)"):
        _ = layer.output_latency
    with pytest.raises(ValueError, match=r"sl\.Delay\(1"):
        _ = Serial(CausalFIR(2), Serial(ReverseFIR(4), Decimate(2))).output_latency


def test_receptive_fields():
    # contract-notes 1.7, with test layers standing in for Conv1D: CausalFIR(5) ~ causal k=5,
    # ReverseFIR(5) ~ reverse_causal k=5, Serial(CausalFIR(3), ReverseFIR(3)) ~ same k=5.
    assert Serial(CausalFIR(5)).receptive_field == (-4, 0)
    assert Serial(ReverseFIR(5)).receptive_field == (0, 4)
    same = [CausalFIR(3), ReverseFIR(3)]
    assert Serial(*same).receptive_field == (-2, 2)
    four = Serial(*[Serial(CausalFIR(3), ReverseFIR(3)) for _ in range(4)])
    assert four.receptive_field == (-8, 8)
    stuffed = Serial(ZeroStuff(2))
    assert stuffed.receptive_field_per_step == {0: (0, 0), 1: None}
    assert stuffed.receptive_field == (0, 0)
    assert Serial(CausalFIR(3), ZeroStuff(2)).receptive_field_per_step == {0: (-2, 0), 1: None}
    assert Parallel(Serial(CausalFIR(3), ReverseFIR(2)), ReverseFIR(2)).receptive_field == (-2, 1)
    assert Residual(ZeroStuff(2), shortcut_layers=sl.Upsample1D(2)).receptive_field_per_step == {0: (0, 0), 1: (0, 0)}
    assert Residual(CausalFIR(4)).receptive_field == (-3, 0)
    assert Repeat(CausalFIR(3), 3).receptive_field == (-6, 0)
    assert Bidirectional(CausalFIR(3), CausalFIR(2)).receptive_field == (-2, 1)
    assert Serial(Decimate(2), CausalFIR(3)).receptive_field == (-4, 0)
    x = random_sequence(2, 24, 2)
    for layer in (four, Serial(Decimate(2), CausalFIR(3)), Serial(CausalFIR(3), ZeroStuff(2))):
        assert measure_receptive_field(layer, x) == layer.receptive_field


def test_output_shapes_and_dtypes():
    for mode, expected in zip(MODES, [(3, 4), (12,), (4,), (4,), (4,)]):
        assert ParallelChannels(sl.Dense(2, 4, bias=False), 3, combination=mode).get_output_shape((6,)) == expected
    assert Parallel(sl.Dense(3, 4, bias=False), sl.Dense(3, 1, bias=False), combination="stack").get_output_shape(
        (3,)
    ) == (2, 4)
    assert Parallel(sl.Dense(3, 4, bias=False), sl.Dense(3, 1, bias=False), combination="concat").get_output_shape(
        (3,)
    ) == (5,)
    assert Bidirectional(sl.Dense(3, 4, bias=False), sl.Dense(3, 4, bias=False), combination="concat").get_output_shape(
        (3,)
    ) == (8,)
    assert Parallel(CausalFIR(2), combination="mean").get_output_dtype(torch.int64) == torch.float32
    assert Residual(sl.Affine(bias=False)).get_output_dtype(torch.bfloat16) == torch.bfloat16
    assert Parallel().get_output_shape((7,)) == (7,)


def test_parallel_initial_state_with_different_child_shapes():
    layer = Parallel(Serial(sl.Dense(3, 1, bias=False), CausalFIR(3)), CausalFIR(2), combination="add")
    state = layer.get_initial_state(2, sl.ChannelSpec((3,), torch.float32))
    assert state[0][1].shape == (2, 2, 1) and state[1].shape == (2, 1, 3)
    _contract(layer, (3,), torch.float32)


def test_parallel_channels_matches_manual_groups():
    child = CausalFIR(3)
    layer = ParallelChannels(child, 2, combination="stack")
    x = random_sequence(2, 7, 4)
    y = layer.layer(x)
    torch.testing.assert_close(y.values[:, :, 0], child.layer(x.apply_values(lambda v: v[..., :2])).values)
    torch.testing.assert_close(y.values[:, :, 1], child.layer(x.apply_values(lambda v: v[..., 2:])).values)
    assert len(list(layer.parameters())) == 1  # shared parameters


def test_state_structures():
    spec = sl.ChannelSpec((3,), torch.float32)
    assert len(Serial(CausalFIR(2), sl.Affine(bias=False)).get_initial_state(2, spec)) == 2
    body, shortcut = Residual([CausalFIR(2), sl.Affine(bias=False)]).get_initial_state(2, spec)
    assert len(body) == 2 and shortcut == ()
    state = Repeat(CausalFIR(2), 3).get_initial_state(2, spec)
    assert isinstance(state, tuple) and len(state) == 3
    assert len(ParallelChannels(CausalFIR(2), 3).get_initial_state(2, spec)) == 3
    assert len(Bidirectional(CausalFIR(2), sl.Affine(bias=False)).get_initial_state(2, spec)) == 2


# -- emits ----------------------------------------------------------------------------


def _step_emits(layer, x):
    state = layer.get_initial_state(x.shape[0], x.channel_spec)
    _, _, emits = layer.step_with_emits(x, state)
    return emits


def test_emits_structure():
    x = random_sequence(2, 4, 3)
    serial = Serial(sl.NamedEmit("a"), CausalFIR(2), sl.NamedEmit("b"))
    for emits in (serial.layer_with_emits(x)[1], _step_emits(serial, x)):
        assert list(emits) == ["layers_0", "layers_1", "layers_2"]
        assert emits["layers_1"] == ()
        torch.testing.assert_close(emits["layers_0"]["a"].values, x.values)
    parallel = Parallel(Serial(CausalFIR(2), sl.NamedEmit("e1")), sl.NamedEmit("e2"), combination="add")
    for emits in (parallel.layer_with_emits(x)[1], _step_emits(parallel, x)):
        assert list(emits) == ["layers_0", "layers_1"]
        assert set(emits["layers_0"]["layers_1"]) == {"e1"} and set(emits["layers_1"]) == {"e2"}
    residual = Residual([sl.NamedEmit("body")])
    for emits in (residual.layer_with_emits(x)[1], _step_emits(residual, x)):
        assert isinstance(emits, tuple) and emits[1] == ()
        assert set(emits[0]["layers_0"]) == {"body"}
    residual = Residual([sl.NamedEmit("body")], shortcut_layers=[sl.NamedEmit("short")])
    assert set(residual.layer_with_emits(x)[1][1]["layers_0"]) == {"short"}
    repeat = Repeat(Serial(CausalFIR(2), sl.NamedEmit("tap")), 3)
    for emits in (repeat.layer_with_emits(x)[1], _step_emits(repeat, x)):
        assert isinstance(emits, tuple) and len(emits) == 3
        assert not torch.equal(emits[0]["layers_1"]["tap"].values, emits[1]["layers_1"]["tap"].values)
    pc = ParallelChannels(sl.NamedEmit("tap"), 3)
    assert len(pc.layer_with_emits(x)[1]) == 3 == len(_step_emits(pc, x))
    _, (ef, eb) = Bidirectional(sl.NamedEmit("f"), sl.NamedEmit("b")).layer_with_emits(x)
    assert set(ef) == {"f"} and torch.equal(eb["b"].values, x.values.flip(1))
    _, emits = (
        CheckpointGradient(sl.NamedEmit("tap")).train().layer_with_emits(x.apply_values(lambda v: v.requires_grad_()))
    )
    assert set(emits) == {"tap"}


# -- constants ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Serial(MutateConstants(), MutateConstants()),
        lambda: Parallel(MutateConstants(), MutateConstants(), combination="add"),
        lambda: Residual([MutateConstants()], shortcut_layers=[MutateConstants()]),
        lambda: Bidirectional(MutateConstants(), MutateConstants()),
        lambda: ParallelChannels(MutateConstants(), 3),
        lambda: Repeat(MutateConstants(), 2),
        lambda: Blockwise(Serial(MutateConstants(), MutateConstants()), 2),
        lambda: CheckpointGradient(Serial(MutateConstants(), MutateConstants())),
    ],
    ids=["serial", "parallel", "residual", "bidirectional", "parallel_channels", "repeat", "blockwise", "checkpoint"],
)
def test_constants_not_shared_between_children(build):
    layer = build()
    constants = {"k": "original"}
    x = random_sequence(2, 4, 3)
    layer.layer(x, constants=constants)
    if layer.supports_step:
        layer.step(x, layer.get_initial_state(2, x.channel_spec, constants=constants), constants=constants)
    assert constants == {"k": "original"}
    seen = [v for m in layer.modules() if isinstance(m, MutateConstants) for v in m.seen]
    assert seen and all(v == "original" for v in seen)


# -- Repeat, Blockwise, Bidirectional, CheckpointGradient specifics --------------------


def test_repeat_copies_are_independent():
    for child in (CausalFIR(3), sl.Dense(3, 3), Serial(CausalFIR(2), sl.Dense(3, 3))):
        layer = Repeat(child, 3)
        weights = [torch.cat([p.flatten() for p in c.parameters()]) for c in layer.layers]
        assert layer.layers[0] is child
        assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
        assert len(list(layer.parameters())) == 3 * len(list(child.parameters()))
    bf16 = Repeat(CausalFIR(3).to(torch.bfloat16), 2)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_repeat_equals_serial_of_its_copies():
    layer = Repeat(CausalFIR(3), 3)
    x = random_sequence(2, 9, 2)
    torch.testing.assert_close(layer.layer(x).values, Serial(*layer.layers).layer(x).values)


class _Counting(sl.PreservesType, sl.StatelessPointwise):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.5))
        self.calls = 0

    def layer(self, x, *, training=None, constants=None):
        self.calls += 1
        return x.apply_values(lambda v: torch.sin(v) * self.w)


def _grad(layer, x, training):
    xv = x.values.clone().requires_grad_()
    y = layer.layer(Sequence(xv, x.mask), training=training)
    y.mask_invalid().values.sum().backward()
    return xv.grad


@pytest.mark.parametrize("make", [lambda c: CheckpointGradient(c), lambda c: Repeat(c, 2, remat=True)])
def test_checkpointing_recomputes_with_same_gradients(make):
    torch.manual_seed(0)
    layer = make(_Counting())
    x = random_sequence(2, 5, 3)
    counters = [m for m in layer.modules() if isinstance(m, _Counting)]
    g_eval = _grad(layer, x, training=False)
    calls_eval = sum(c.calls for c in counters)
    g_train = _grad(layer, x, training=True)
    calls_train = sum(c.calls for c in counters) - calls_eval
    torch.testing.assert_close(g_eval, g_train)
    assert calls_train == 2 * calls_eval  # forward + recomputation in backward


def test_blockwise_matches_child_and_checks_block_size():
    child = Serial(CausalFIR(3), ReverseFIR(2))
    layer = Blockwise(child, 5)
    assert (layer.block_size, layer.input_latency, layer.receptive_field) == (5, 1, (-2, 1))
    x = random_sequence(3, 13, 2)
    torch.testing.assert_close(layer.layer(x).mask_invalid().values, child.layer(x).mask_invalid().values)
    assert torch.equal(layer.layer(x).mask, child.layer(x).mask)
    with pytest.raises(ValueError, match=r"Blockwise block_size=3 must be a multiple of the child's block_size=2"):
        Blockwise(Decimate(2), 3)
    with pytest.raises(ValueError, match="Blockwise expected block_size"):
        Blockwise(CausalFIR(2), 0)


def test_bidirectional_reverses_whole_padded_array():
    fwd, bwd = CausalFIR(2), CausalFIR(2)
    layer = Bidirectional(fwd, bwd, combination="stack")
    x = Sequence.from_lengths(torch.randn(1, 5, 1), [3]).mask_invalid()
    y = layer.layer(x)
    w = bwd.weight
    v = x.values[0, :, 0]
    # Backward output at the last valid step sees only itself: the padding after it is zero.
    torch.testing.assert_close(y.values[0, 2, 1, 0], w[0] * v[2] + w[1] * 0)
    torch.testing.assert_close(y.values[0, 1, 1, 0], w[0] * v[1] + w[1] * v[2])
    assert y.mask.tolist() == [[True, True, True, False, False]]
    expected = bwd.layer(x.reverse_time()).reverse_time()
    torch.testing.assert_close(y.values[:, :, 1], expected.values)


# -- registry and config ---------------------------------------------------------------


def test_registry_names():
    assert sl.registry.get("Sequential") is Serial is sl.Sequential is sl.Serial
    for cls in (
        SerialModules,
        Parallel,
        ParallelChannels,
        Residual,
        Repeat,
        Bidirectional,
        Blockwise,
        CheckpointGradient,
    ):
        assert sl.registry.get(cls.__name__) is cls
        assert getattr(sl, cls.__name__) is cls


def test_nested_config_round_trip():
    layer = Residual(
        [Parallel(CausalFIR(2), Repeat(CausalFIR(3), 2), combination=CombinationMode.MEAN), sl.Scale(0.5)],
        shortcut_layers=[Blockwise(CheckpointGradient(CausalFIR(2)), 2)],
    )
    config = json.loads(json.dumps(layer.get_config()))
    assert config["layers"][0]["combination"] == "mean"
    with pytest.raises(ValueError, match="allow_import=True"):  # CausalFIR is a test layer, not registered
        sl.from_config(config)
    rebuilt = sl.from_config(config, allow_import=True)
    assert rebuilt.get_config() == layer.get_config()
    rebuilt.load_state_dict(layer.state_dict())
    x = random_sequence(2, 8, 3)
    torch.testing.assert_close(rebuilt.layer(x).values, layer.layer(x).values)
    bi = Bidirectional(forward=CausalFIR(2), backward=sl.Affine(bias=False), combination=2)
    assert sl.from_config(bi.get_config(), allow_import=True).combination is CombinationMode.CONCAT


# -- compile ---------------------------------------------------------------------------


def test_compile_fullgraph():
    layer = Serial(CausalFIR(3), Residual([ReverseFIR(3)], shortcut_layers=[ReverseFIR(3)]), Decimate(2))
    verify_contract(layer, random_sequence(2, 8, 3), compile=True, rtol=1e-5, atol=1e-5)


# -- bad inputs ------------------------------------------------------------------------


def test_bad_children():
    with pytest.raises(TypeError, match="Serial expects a SequenceLayer as child 1"):
        Serial(CausalFIR(2), torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Parallel expects a SequenceLayer"):
        Parallel("dense")
    with pytest.raises(TypeError, match="Residual expects a SequenceLayer"):
        Residual([CausalFIR(2), 3])
    with pytest.raises(TypeError, match="Residual expects layers"):
        Residual(5)
    with pytest.raises(TypeError, match="SerialModules expects a list"):
        SerialModules(CausalFIR(2))
    for cls in (Repeat, Blockwise, ParallelChannels):
        with pytest.raises(TypeError, match=cls.__name__):
            cls(torch.nn.Identity(), 2)
    with pytest.raises(TypeError, match="CheckpointGradient"):
        CheckpointGradient(torch.nn.Identity())
    with pytest.raises(TypeError, match="Bidirectional"):
        Bidirectional(CausalFIR(2), None)


def test_parallel_mismatches():
    with pytest.raises(ValueError, match=r"Parallel children must have equal output_ratio.*1/2"):
        Parallel(Decimate(2), CausalFIR(2))
    with pytest.raises(ValueError, match=r"Parallel children must have equal latencies.*wrap branch 1 \(CausalFIR\)"):
        Parallel(ReverseFIR(3), CausalFIR(2))
    with pytest.raises(ValueError, match="CombinationMode expects"):
        Parallel(CausalFIR(2), combination="sum")
    with pytest.raises(ValueError, match="do not broadcast"):
        Parallel(sl.Dense(3, 4, bias=False), sl.Dense(3, 2, bias=False)).get_output_shape((3,))


def test_residual_mismatches():
    with pytest.raises(ValueError, match="Residual layers and shortcut_layers must have the same output_ratio"):
        Residual(Decimate(2))
    with pytest.raises(ValueError, match=r"same latency.*shortcut_layers=sl\.Delay\(2, delay_layer_output=False\)"):
        Residual(ReverseFIR(3))
    with pytest.raises(
        ValueError, match=r"wrap branch 0 \(layers\) as sl\.Serial\(sl\.Delay\(1, delay_layer_output=False\)"
    ):
        Residual([CausalFIR(2)], shortcut_layers=[ReverseFIR(2)])
    with pytest.raises(ValueError, match="Residual layers and shortcut_layers must produce the same output shape"):
        Residual(sl.Dense(3, 4, bias=False)).layer(random_sequence(2, 3, 3))


def test_repeat_bad_children():
    with pytest.raises(ValueError, match="Repeat requires a child with output_ratio 1"):
        Repeat(Decimate(2), 2)
    with pytest.raises(ValueError, match="Repeat expected num_repeats"):
        Repeat(CausalFIR(2), 0)
    layer = Repeat(sl.Dense(3, 4, bias=False), 2)
    with pytest.raises(ValueError, match=r"Repeat requires a child that preserves channel shape and dtype; Dense"):
        layer.layer(random_sequence(2, 3, 3))
    with pytest.raises(ValueError, match="Repeat requires a child that preserves"):
        layer.get_initial_state(2, sl.ChannelSpec((3,), torch.float32))


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="Bidirectional forward and backward layers must have equal output_ratio"):
        Bidirectional(Decimate(2), CausalFIR(2))
    bi = Bidirectional(CausalFIR(2), CausalFIR(2))
    x = random_sequence(2, 4, 3)
    with pytest.raises(ValueError, match="Bidirectional does not support step"):
        bi.step(x, bi.get_initial_state(2, x.channel_spec))
    with pytest.raises(ValueError, match=r"ParallelChannels expected the last channel dim \(3\) to be divisible"):
        ParallelChannels(CausalFIR(2), 2).layer(x)
    with pytest.raises(ValueError, match="ParallelChannels needs at least one channel axis"):
        ParallelChannels(CausalFIR(2), 2).get_output_shape(())
    with pytest.raises(ValueError, match="ParallelChannels expected num_groups"):
        ParallelChannels(CausalFIR(2), 0)


@pytest.mark.parametrize(
    "layer",
    [
        Serial(CausalFIR(2), CausalFIR(2)),
        Parallel(CausalFIR(2), CausalFIR(2)),
        Residual([CausalFIR(2)]),
        Repeat(CausalFIR(2), 2),
        ParallelChannels(CausalFIR(2), 3),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_wrong_state_structure(layer):
    x = random_sequence(2, 4, 3)
    good = layer.get_initial_state(2, x.channel_spec)
    name = type(layer).__name__
    with pytest.raises(sl.StateMismatchError, match=f"{name}.step: the state does not match"):
        layer.step(x, good[:-1])
    with pytest.raises(sl.StateMismatchError, match=f"{name}.step_with_emits: the state does not match"):
        layer.step_with_emits(x, [*good])


# -- property test ---------------------------------------------------------------------

_LEAVES = [
    lambda d: CausalFIR(d(st.integers(1, 3))),
    lambda d: sl.Scale(d(st.sampled_from([-1.5, 0.5, 2.0]))),
    lambda d: Decimate(2),
    lambda d: sl.Upsample1D(2),
    lambda d: ReverseFIR(d(st.integers(2, 3))),
]


def _draw_layer(draw, depth):
    kind = draw(st.sampled_from(["leaf", "serial", "parallel", "residual"] if depth else ["leaf"]))
    if kind == "leaf":
        return draw(st.sampled_from(_LEAVES))(draw)
    children = [_draw_layer(draw, depth - 1) for _ in range(draw(st.integers(1, 3)))]
    if kind == "serial":
        return Serial(*children)
    if kind == "parallel":
        return Parallel(*children, combination=draw(st.sampled_from(MODES)))
    return Residual(children[:-1] or children, shortcut_layers=None if len(children) == 1 else [children[-1]])


@st.composite
def _stacks(draw):
    try:
        layer = _draw_layer(draw, 2)
        _ = (layer.output_latency, layer.input_latency, layer.block_size, layer.receptive_field)
        layer.get_output_shape((2,))
    except ValueError:
        assume(False)
    ratio = layer.output_ratio
    assume(ratio >= fractions.Fraction(1, 4) and ratio <= 4)
    return layer


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(layer=_stacks(), random_mask=st.booleans(), blocks=st.integers(0, 3))
def test_random_stacks_obey_contract(layer, random_mask, blocks):
    # At least 8 steps, a whole number of blocks, and an integral output length.
    unit = math.lcm(layer.block_size, layer.output_ratio.denominator)
    time = unit * (math.ceil(8 / unit) + blocks)
    x = random_sequence(2, time, 2, random_mask=random_mask)
    verify_contract(layer, x, rtol=1e-5, atol=1e-5)


# -- latency hints work when followed ---------------------------------------------------------


def _check_streams(layer, channels=3):
    verify_contract(layer, random_sequence(2, 9, channels, random_mask=True), **tolerances(torch.float32))


def test_parallel_latency_hint_works_when_followed():
    with pytest.raises(ValueError, match=r"sl\.Serial\(sl\.Delay\(2, delay_layer_output=False\), branch\)"):
        Parallel(ReverseFIR(3), CausalFIR(2))
    _check_streams(Parallel(ReverseFIR(3), Serial(sl.Delay(2, delay_layer_output=False), CausalFIR(2))))


def test_residual_latency_hints_work_when_followed():
    with pytest.raises(ValueError, match=r"shortcut_layers=sl\.Delay\(2, delay_layer_output=False\)"):
        Residual(ReverseFIR(3))
    _check_streams(Residual(ReverseFIR(3), shortcut_layers=sl.Delay(2, delay_layer_output=False)))
    with pytest.raises(ValueError, match=r"sl\.Serial\(sl\.Delay\(1, delay_layer_output=False\), branch\)"):
        Residual([CausalFIR(2)], shortcut_layers=[ReverseFIR(2)])
    _check_streams(Residual([sl.Delay(1, delay_layer_output=False), CausalFIR(2)], shortcut_layers=[ReverseFIR(2)]))


def test_latency_hint_says_when_no_delay_can_help():
    # A layer-wise delay changes the length: no step-wise Delay lines that up, and the
    # message points at the causal tap instead of a hint that cannot work.
    with pytest.raises(ValueError, match=r"No Delay can line these branches up.*keep_mask=True"):
        Parallel(sl.Identity(), sl.Delay(1), combination="concat")


def test_current_plus_previous_frame_recipe():
    """The documented recipe: a causal tap beside the current frame (sl.Delay(1, keep_mask=True))."""
    layer = Parallel(sl.Identity(), sl.Delay(1, keep_mask=True), combination="concat")
    x = random_sequence(2, 6, 3, random_mask=True)
    y = verify_contract(layer, x, **tolerances(torch.float32))
    xm = x.mask_invalid().values
    previous = torch.cat([torch.zeros_like(xm[:, :1]), xm[:, :-1]], 1)
    assert torch.equal(y.mask, x.mask)
    torch.testing.assert_close(
        y.mask_invalid().values, torch.where(x.expanded_mask(), torch.cat([xm, previous], -1), 0.0)
    )
    assert layer.input_latency == layer.output_latency == 0
