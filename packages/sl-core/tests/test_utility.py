"""Tests for sl.layers.utility (the utility half of the reference's simple.py)."""

from __future__ import annotations

import logging

import pytest
import torch

import sl
from sl.layers import utility
from sl.layers.utility import (
    ApplySharding,
    Cast,
    CheckpointName,
    Emit,
    GradientClipping,
    Identity,
    Lambda,
    Logging,
    MaskInvalid,
    NamedEmit,
    OptimizationBarrier,
    StopGradient,
)
from sl.testing import assert_sequences_equal, random_sequence, tolerances, verify_contract

DTYPES = [torch.float32, torch.bfloat16]


def _double(v: torch.Tensor) -> torch.Tensor:
    return v * 2


# (layer factory, channel shape, extra verify_contract kwargs)
STEPPABLE = [
    (lambda: Identity(), (3,), {}),
    (lambda: Cast(torch.float64), (3,), {}),
    (lambda: Cast("float16"), (2, 3), {}),
    (lambda: Cast(torch.int32), (3,), {}),
    (lambda: MaskInvalid(), (3,), {}),
    (lambda: Emit(), (3,), {}),
    (lambda: NamedEmit("x"), (2, 3), {}),
    (lambda: Lambda(_double, mask_required=False), (3,), {}),
    (lambda: Lambda(lambda v: v.reshape(*v.shape, 1) + 1.0), (3,), {}),
    (lambda: Lambda(lambda s: s.apply_values(torch.sin), sequence_input=True), (3,), {}),
    (lambda: Logging("contract"), (3,), {}),
    (lambda: ApplySharding((None, "data")), (3,), {}),
    (lambda: CheckpointName("name"), (3,), {}),
    (lambda: OptimizationBarrier(apply_to_mask=True), (3,), {}),
    # autograd cannot see a receptive field through detach().
    (lambda: StopGradient(), (3,), {"test_receptive_field": False}),
    (lambda: GradientClipping(0.5), (2, 3), {}),
]


@pytest.mark.parametrize("random_mask", [True, False], ids=["random_mask", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(STEPPABLE)))
def test_contract(case: int, dtype: torch.dtype, random_mask: bool) -> None:
    factory, channels, kwargs = STEPPABLE[case]
    layer = factory().to(dtype)
    assert layer.supports_step and layer.block_size == 1 and layer.output_ratio == 1
    assert layer.receptive_field == (0, 0)
    assert layer.input_latency == 0 and layer.output_latency == 0
    # Batch 3: with every length 0 the harness cannot measure a receptive field (all-zero input).
    x = random_sequence(3, 7, *channels, dtype=dtype, random_mask=random_mask)
    verify_contract(layer, x, **tolerances(dtype), **kwargs)


def test_registry() -> None:
    for name in utility.__all__:
        assert sl.registry.get(name) is getattr(utility, name)
    assert sl.Detach is StopGradient
    assert sl.registry.get("core:Identity") is Identity
    assert sl.Cast is Cast


# -- masks and types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        Identity(),
        Cast(torch.float64),
        CheckpointName("n"),
        OptimizationBarrier(),
        StopGradient(),
        GradientClipping(1.0),
    ],
)
def test_identities_keep_masked_state(layer: sl.SequenceLayer) -> None:
    x = random_sequence(2, 5, 3, random_mask=True)
    assert isinstance(layer.layer(x), sl.MaskedSequence)
    unmasked = x.unmask()
    assert type(layer.layer(unmasked)) is sl.Sequence
    torch.testing.assert_close(layer.layer(x).values, x.values.to(layer.layer(x).dtype), rtol=0, atol=0)


def test_identity_returns_input() -> None:
    x = random_sequence(2, 3, 5, 9)
    assert Identity().layer(x) is x
    assert Identity().get_output_spec(x.channel_spec) == x.channel_spec


@pytest.mark.parametrize("target", [torch.float16, torch.int32, torch.bfloat16, torch.float64])
def test_cast(target: torch.dtype) -> None:
    x = random_sequence(2, 3, 5)
    layer = Cast(target)
    y = layer.layer(x)
    assert y.dtype == target == layer.get_output_dtype(torch.float32)
    assert isinstance(y, sl.MaskedSequence)
    torch.testing.assert_close(y.values, x.values.to(target), rtol=0, atol=0)


def test_cast_by_name_round_trips() -> None:
    layer = Cast("int64")
    assert layer.dtype == torch.int64
    assert sl.from_config(layer.get_config()).dtype == torch.int64
    assert sl.from_config(Cast(torch.bfloat16).get_config()).dtype == torch.bfloat16


def test_cast_bad_dtype() -> None:
    with pytest.raises(TypeError, match=r"Cast expected a torch.dtype.*unknown name 'float33'"):
        Cast("float33")
    with pytest.raises(TypeError, match=r"Cast expected a torch.dtype"):
        Cast(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Cast expected a torch.dtype"):
        Cast("Tensor")


def test_mask_invalid() -> None:
    x = random_sequence(2, 15, 5).mask_invalid(float("nan"))
    assert type(x) is sl.Sequence
    y = MaskInvalid().layer(x)
    assert isinstance(y, sl.MaskedSequence)
    assert_sequences_equal(y, x.mask_invalid())
    assert not bool(torch.isnan(y.values).any())


# -- emits ---------------------------------------------------------------------------------


def test_emit_layer_and_step() -> None:
    x = random_sequence(2, 6, 5, random_mask=True)
    layer = Emit()
    y, emits = layer.layer_with_emits(x)
    assert y is x and emits is x
    y_step, _, emits_step = sl.step_by_step(layer, x, with_emits=True)
    assert_sequences_equal(y_step, y)
    assert_sequences_equal(emits_step, emits)


def test_named_emit_layer_and_step() -> None:
    x = random_sequence(2, 6, 5, random_mask=True)
    layer = NamedEmit("test_emit")
    y, emits = layer.layer_with_emits(x)
    assert y is x
    assert isinstance(emits, dict) and set(emits) == {"test_emit"}
    assert_sequences_equal(emits["test_emit"], x)
    _, _, emits_step = sl.step_by_step(layer, x, with_emits=True, blocks_per_step=2)
    assert_sequences_equal(emits_step["test_emit"], x)


def test_emits_through_serial() -> None:
    x = random_sequence(2, 4, 3)
    layer = sl.Serial(Cast(torch.float64), NamedEmit("cast"), Emit())
    y, emits = layer.layer_with_emits(x)
    assert emits["layers_1"]["cast"].dtype == torch.float64
    _, _, emits_step = sl.step_by_step(layer, x, with_emits=True)
    assert_sequences_equal(emits_step["layers_1"]["cast"], emits["layers_1"]["cast"])
    assert_sequences_equal(emits_step["layers_2"], y)


def test_named_emit_bad_name() -> None:
    with pytest.raises(TypeError, match=r"NamedEmit expected a str emit_name"):
        NamedEmit(3)  # type: ignore[arg-type]


# -- Lambda --------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_required", [True, False])
def test_lambda_array_fn(mask_required: bool) -> None:
    def fn(v: torch.Tensor) -> torch.Tensor:
        if mask_required:
            v = v + 1.0  # changes the masked status
        return v.reshape(*v.shape, 1) > 0.5

    layer = Lambda(fn, mask_required=mask_required, expected_input_spec=sl.ChannelSpec((5,), torch.float32))
    x = random_sequence(2, 3, 5)
    assert layer.get_output_shape((5,)) == (5, 1)
    assert layer.get_output_dtype(torch.float32) == torch.bool
    y = verify_contract(layer, x, test_receptive_field=False)
    assert_sequences_equal(y, x.apply_values(fn).mask_invalid())
    assert isinstance(layer.layer(x), sl.MaskedSequence) is (not mask_required)


@pytest.mark.parametrize("mask_required", [True, False])
def test_lambda_sequence_fn(mask_required: bool) -> None:
    def fn(s: sl.Sequence) -> sl.Sequence:
        if mask_required:
            s = s.apply_values(lambda v: v + 1.0)
        return s.apply_values_masked(lambda v: v.reshape(*v.shape, 1) > 0.5)

    layer = Lambda(fn, sequence_input=True, expected_input_spec=((5,), torch.float32))
    x = random_sequence(2, 3, 5)
    assert layer.get_output_shape((5,)) == (5, 1)
    assert layer.get_output_dtype(torch.float32) == torch.bool
    y = verify_contract(layer, x, test_receptive_field=False)
    assert_sequences_equal(y, fn(x).mask_invalid())


def test_lambda_without_expected_input_spec() -> None:
    layer = Lambda(lambda v: v.to(torch.float64)[..., :2])
    x = random_sequence(2, 3, 5)
    assert layer.get_output_spec(x.channel_spec) == sl.ChannelSpec((2,), torch.float64)
    assert layer.layer(x).channel_spec == sl.ChannelSpec((2,), torch.float64)
    with pytest.raises(ValueError, match=r"Lambda.get_output_shape needs expected_input_spec"):
        layer.get_output_shape((5,))
    with pytest.raises(ValueError, match=r"Lambda.get_output_dtype needs expected_input_spec"):
        layer.get_output_dtype(torch.float32)


def test_lambda_probe_falls_back_to_cpu() -> None:
    def fn(v: torch.Tensor) -> torch.Tensor:
        if v.device.type == "meta":
            raise NotImplementedError("no meta kernel")
        return v + 1

    assert Lambda(fn).get_output_spec(sl.ChannelSpec((3,), torch.float32)) == sl.ChannelSpec((3,), torch.float32)


def test_lambda_invalid_fn() -> None:
    x = random_sequence(2, 3, 5)
    with pytest.raises(ValueError, match=r"Lambda fn .* must not change the batch or time axes"):
        Lambda(lambda v: v[:, :-1]).layer(x)
    with pytest.raises(ValueError, match=r"Lambda fn .* must not change the batch or time axes"):
        Lambda(lambda s: s[:, :-1], sequence_input=True).layer(x)
    with pytest.raises(TypeError, match=r"Lambda fn .* returned Tensor, expected an sl.Sequence"):
        Lambda(lambda s: s.values, sequence_input=True).layer(x)
    with pytest.raises(TypeError, match=r"Lambda expected a callable fn"):
        Lambda(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Unknown activation 'nope'"):
        Lambda("nope")
    with pytest.raises(TypeError, match=r"Lambda expected expected_input_spec"):
        Lambda(_double, expected_input_spec=(5, "float32"))  # type: ignore[arg-type]


def test_lambda_config() -> None:
    with pytest.raises(TypeError, match=r"Lambda cannot be written to a config: its fn .*_double"):
        Lambda(_double).get_config()
    layer = Lambda(torch.tanh, mask_required=False, expected_input_spec=sl.ChannelSpec((3,), torch.float32))
    config = layer.get_config()
    rebuilt = sl.from_config(config)
    assert isinstance(rebuilt, Lambda) and rebuilt.fn is torch.tanh
    assert rebuilt.expected_input_spec == sl.ChannelSpec((3,), torch.float32)
    assert rebuilt.get_config() == config
    by_name = Lambda("gelu")
    assert sl.from_config(by_name.get_config()).fn is by_name.fn


# -- Logging -------------------------------------------------------------------------------


def _last_message(caplog: pytest.LogCaptureFixture) -> str:
    records = [r for r in caplog.records if r.name == "sl.layers.utility"]
    assert records, "nothing was logged"
    return records[-1].getMessage()


def test_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sl.layers.utility")
    x = sl.Sequence.from_values(torch.tensor([[1.414, 2, 3, 4]]))
    state = ()  # Logging is stateless: step checks it gets the state get_initial_state gives
    constants = {"foo": torch.tensor([[1, 2, 3.14, 4]])}

    Logging(prefix="test string").layer(x, constants=constants)
    assert "test string" in _last_message(caplog)

    specs = Logging(dump_tensors=False)
    assert specs.layer(x, constants=constants) is x
    msg = _last_message(caplog)
    assert "1.414" not in msg and "3.14" not in msg and "(1, 4)" in msg and "float32" in msg
    assert specs.get_initial_state(1, x.channel_spec, constants=constants) == ()
    msg = _last_message(caplog)
    assert "3.14" not in msg and "(1, 4)" in msg and "float32" in msg and "batch_size=1" in msg
    y, s = specs.step(x, state, constants=constants)
    assert y is x and s is state
    msg = _last_message(caplog)
    assert "1.414" not in msg and "(1, 4)" in msg and "float32" in msg and "state=()" in msg

    dumps = Logging(dump_tensors=True)
    dumps.layer(x, constants=constants)
    msg = _last_message(caplog)
    assert "1.414" in msg and "3.14" in msg
    dumps.get_initial_state(1, x.channel_spec, constants=constants)
    assert "3.14" in _last_message(caplog)
    dumps.step(x, state, constants=constants)
    msg = _last_message(caplog)
    assert "1.414" in msg and "3.14" in msg


def test_logging_custom_format_and_disabled(caplog: pytest.LogCaptureFixture) -> None:
    x = random_sequence(1, 2, 3)
    caplog.set_level(logging.WARNING, logger="sl.layers.utility")
    Logging().layer(x)
    assert not [r for r in caplog.records if r.name == "sl.layers.utility"]
    caplog.set_level(logging.INFO, logger="sl.layers.utility")
    Logging("p", layer_format_str="{prefix}|{training}|{x}").layer(x, training=True)
    assert _last_message(caplog).startswith("p|True|MaskedSequence(shape=(1, 2, 3)")
    layer = Logging("p", layer_format_str="{prefix}!")
    assert sl.from_config(layer.get_config()).layer_format_str == "{prefix}!"


# -- ApplySharding -------------------------------------------------------------------------


def test_apply_sharding_plain_tensors_is_identity() -> None:
    x = random_sequence(2, 3, 5)
    layer = ApplySharding((None, "data", "model"))
    assert layer.mask_sharding == (None, "data")
    assert layer.layer(x) is x


def test_apply_sharding_bad_spec() -> None:
    with pytest.raises(TypeError, match=r"ApplySharding expected values_sharding"):
        ApplySharding("data")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ApplySharding mask_sharding entries"):
        ApplySharding(mask_sharding=(None, 3))  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_apply_sharding_redistributes_dtensors() -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data", "model"))
        x = random_sequence(2, 3, 5)
        values = distribute_tensor(x.values, mesh, [Replicate(), Replicate()])
        mask = distribute_tensor(x.mask, mesh, [Replicate(), Replicate()])
        xd = sl.MaskedSequence(values, mask)

        y = ApplySharding((None, "data", "model")).layer(xd)
        assert isinstance(y, sl.MaskedSequence)
        assert tuple(y.values.placements) == (Shard(1), Shard(2))
        assert tuple(y.mask.placements) == (Shard(1), Replicate())
        torch.testing.assert_close(y.values.full_tensor(), x.values)

        y = ApplySharding((("data", "model"),), mask_sharding=("model",)).layer(xd)
        assert tuple(y.values.placements) == (Shard(0), Shard(0))
        assert tuple(y.mask.placements) == (Replicate(), Shard(0))

        with pytest.raises(ValueError, match=r"ApplySharding sharding .* names mesh axis 'seq'"):
            ApplySharding((None, "seq")).layer(xd)
        with pytest.raises(ValueError, match=r"ApplySharding sharding .* uses mesh axis 'data' twice"):
            ApplySharding(("data", "data")).layer(xd)
        with pytest.raises(ValueError, match=r"in mesh order"):
            ApplySharding((("model", "data"),)).layer(xd)
        with pytest.raises(ValueError, match=r"has 4 entries for a rank-3 tensor"):
            ApplySharding((None, None, None, "data")).layer(xd)
    finally:
        dist.destroy_process_group()


# -- checkpointing / barrier / gradients ------------------------------------------------------


def test_checkpoint_name_and_barrier_config() -> None:
    layer = CheckpointName("attention_out")
    assert layer.checkpoint_name == "attention_out"
    assert sl.from_config(layer.get_config()).checkpoint_name == "attention_out"
    assert sl.from_config(OptimizationBarrier(apply_to_mask=True).get_config()).apply_to_mask is True
    with pytest.raises(TypeError, match=r"CheckpointName expected a str"):
        CheckpointName(None)  # type: ignore[arg-type]


def test_stop_gradient() -> None:
    x = random_sequence(2, 3, 5)
    values = x.values.clone().requires_grad_(True)
    y = StopGradient().layer(sl.Sequence(values, x.mask))
    torch.testing.assert_close(y.values, x.values, rtol=0, atol=0)
    assert not y.values.requires_grad
    # Downstream parameters still get gradients; upstream ones do not.
    upstream = torch.nn.Parameter(torch.ones(()))
    downstream = torch.nn.Parameter(torch.ones(()))
    out = StopGradient().layer(sl.Sequence(values * upstream, x.mask)).values * downstream
    out.sum().backward()
    assert upstream.grad is None and downstream.grad is not None


@pytest.mark.parametrize("incoming,expected", [(1e13, 1e12), (-1e13, -1e12), (2016.0913, 2016.0913)])
def test_gradient_clipping_backward(incoming: float, expected: float) -> None:
    x = random_sequence(2, 13, 5)
    values = x.values.clone().requires_grad_(True)
    y = GradientClipping(clip_value=1e12).layer(sl.Sequence(values, x.mask))
    torch.testing.assert_close(y.values, x.values, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(y.values, values, torch.full_like(y.values, incoming))
    torch.testing.assert_close(grad, torch.full_like(grad, expected))


def test_gradient_clipping_bad_clip_value() -> None:
    for bad in (0.0, -1.0, "1", True):
        with pytest.raises(ValueError, match=r"GradientClipping expected a positive clip_value"):
            GradientClipping(bad)  # type: ignore[arg-type]


def test_step_compiles_fullgraph() -> None:
    layer = sl.Serial(GradientClipping(0.1), StopGradient(), Cast(torch.float64), MaskInvalid(), NamedEmit("n"))
    verify_contract(layer, random_sequence(2, 5, 3), compile=True, compile_backend="eager", test_receptive_field=False)
