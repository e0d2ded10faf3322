"""Self-tests of the contract harness: each deliberately broken layer is caught by exactly
the check meant for it, and correct layers pass (so no check is vacuous)."""

from __future__ import annotations

import math

import pytest
import torch
from support_layers import CausalFIR, Decimate

import sl
from sl.testing import (
    CHECKS,
    ContractViolation,
    assert_sequences_close,
    assert_sequences_equal,
    dtype_sweep,
    measure_receptive_field,
    random_sequence,
    sequences_close,
    tolerances,
    verify_contract,
)
from sl.types import ChannelSpec, Sequence

# -- correct layers ----------------------------------------------------------------------------


class DelayStep(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    """Identity layer-wise; step-wise it emits the previous step (latency 1), correctly declared."""

    def __init__(self, declared_latency: int = 1) -> None:
        super().__init__()
        self.declared_latency = declared_latency

    @property
    def input_latency(self) -> int:
        return self.declared_latency

    @property
    def receptive_field_per_step(self):
        return {0: (0, 0)}

    def layer(self, x, *, training=None, constants=None):
        return x.mask_invalid()

    def get_initial_state(self, batch_size, input_spec, *, training=None, constants=None):
        v = torch.zeros((batch_size, 1, *input_spec.shape), dtype=input_spec.dtype)
        return sl.MaskedSequence(v, torch.zeros((batch_size, 1), dtype=torch.bool))

    def step(self, x, state, *, training=None, constants=None):
        buf = state.concatenate(x.mask_invalid())
        n = x.values.shape[1]
        return buf[:, :n], buf[:, n:]


def _correct_layers():
    return [
        ("CausalFIR", lambda: CausalFIR(3), (3,)),
        ("Decimate", lambda: Decimate(2), (2,)),
        ("DelayStep", lambda: DelayStep(1), (2,)),
        ("Serial", lambda: sl.Serial(CausalFIR(2), Decimate(2), CausalFIR(3)), (2,)),
    ]


@pytest.mark.parametrize("cfg", dtype_sweep(), ids=lambda c: c.id)
@pytest.mark.parametrize("random_mask", [False, True], ids=["lengths", "random_mask"])
@pytest.mark.parametrize("name, make, channels", _correct_layers(), ids=[c[0] for c in _correct_layers()])
def test_correct_layers_pass(name, make, channels, random_mask, cfg):
    layer = make().to(cfg.param_dtype)
    x = random_sequence(3, 11, *channels, dtype=cfg.input_dtype, random_mask=random_mask)
    verify_contract(layer, x, **tolerances(cfg.param_dtype, cfg.input_dtype))


@pytest.mark.parametrize("time", [0, 1, 5])
def test_correct_layers_pass_short_inputs(time):
    for _, make, channels in _correct_layers():
        verify_contract(make(), random_sequence(2, time, *channels))


def test_correct_layer_compiles():
    verify_contract(CausalFIR(3), random_sequence(2, 6, 2), compile=True, compile_backend="eager")


def test_measure_receptive_field_of_correct_layers():
    x = random_sequence(1, 10, 2)
    assert measure_receptive_field(CausalFIR(4), x) == (-3, 0)
    assert measure_receptive_field(Decimate(2), x) == (0, 0)


# -- broken layers: one per check ----------------------------------------------------------------


class NanLeak(CausalFIR):
    """Mixes time without masking first: NaN in invalid steps reaches later valid outputs."""

    def layer(self, x, *, training=None, constants=None):
        padded = x.pad_time(self.taps - 1, 0, valid=False).values  # no mask_invalid()
        return Sequence(self._fir(padded, x.values.shape[1]), x.mask).mask_invalid()

    def step(self, x, state, *, training=None, constants=None):
        padded = torch.cat([state, x.values], 1)  # no mask_invalid()
        y = self._fir(padded, x.values.shape[1])
        return Sequence(y, x.mask).mask_invalid(), padded[:, padded.shape[1] - (self.taps - 1) :]


class StateDrift(CausalFIR):
    """Correct outputs, but the state buffer grows every step."""

    def step(self, x, state, *, training=None, constants=None):
        x = x.mask_invalid()
        padded = torch.cat([state[:, state.shape[1] - (self.taps - 1) :], x.values], 1)
        y = self._fir(padded, x.values.shape[1])
        return Sequence(y, x.mask).mask_invalid(), torch.cat([state, x.values], 1)


class PythonIntState(CausalFIR):
    """Correct outputs, but counts steps in a Python int."""

    def get_initial_state(self, batch_size, input_spec, *, training=None, constants=None):
        return (super().get_initial_state(batch_size, input_spec), 0)

    def step(self, x, state, *, training=None, constants=None):
        buf, count = state
        y, buf = super().step(x, buf, training=training, constants=constants)
        return y, (buf, count + 1)


class EmptyStepCounts(CausalFIR):
    """Correct outputs, but counts calls (not timesteps) in a tensor: a 0-length block moves it."""

    def get_initial_state(self, batch_size, input_spec, *, training=None, constants=None):
        return (super().get_initial_state(batch_size, input_spec), torch.zeros((), dtype=torch.int64))

    def step(self, x, state, *, training=None, constants=None):
        buf, calls = state
        y, buf = super().step(x, buf, training=training, constants=constants)
        return y, (buf, calls + 1)


class DelayKeepsView(DelayStep):
    """Correct outputs, but its state is a view of the input block, not a copy: a live loop that
    refills one buffer for every block changes what the next step emits."""

    def step(self, x, state, *, training=None, constants=None):
        n = x.values.shape[1]
        if n == 0:
            return x, state
        y = state.mask_invalid().concatenate(x[:, : n - 1].mask_invalid())
        return y, sl.MaskedSequence._trusted(x.values[:, n - 1 :], x.mask[:, n - 1 :])


class ReluInPlace(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    """Correct outputs (a ReLU), but computed in the caller's tensor."""

    def layer(self, x, *, training=None, constants=None):
        return Sequence(x.values.relu_(), x.mask).mask_invalid()


class WrongReceptiveField(CausalFIR):
    """Looks back taps - 1 steps but declares (0, 0)."""

    @property
    def receptive_field_per_step(self):
        return {0: (0, 0)}


class BatchNorm(sl.PreservesType, sl.StatelessPointwise):
    """Subtracts the mean over the batch at each time step: rows talk to each other."""

    def layer(self, x, *, training=None, constants=None):
        zero = torch.zeros((), dtype=x.dtype)
        v = torch.where(x.expanded_mask(), x.values, zero)
        count = x.mask.sum(0).clamp(min=1).to(x.dtype)
        mean = v.sum(0, keepdim=True) / count[None, :, None]
        return Sequence(v - mean, x.mask).mask_invalid()


class LyingDtype(sl.PreservesShape, sl.Stateless):
    def get_output_dtype(self, input_dtype, *, constants=None):
        return torch.float64

    def layer(self, x, *, training=None, constants=None):
        return x.mask_invalid()


class LyingShape(sl.PreservesType, sl.Stateless):
    def get_output_shape(self, input_shape, *, constants=None):
        return (*input_shape, 1)

    def layer(self, x, *, training=None, constants=None):
        return x.mask_invalid()


class StepDisagrees(CausalFIR):
    def step(self, x, state, *, training=None, constants=None):
        y, state = super().step(x, state, training=training, constants=constants)
        return y.apply_values_masked(torch.mul, 2.0), state


class StepDetaches(CausalFIR):
    def step(self, x, state, *, training=None, constants=None):
        y, state = super().step(x, state, training=training, constants=constants)
        return sl.MaskedSequence(y.values.detach(), y.mask), state


class ItemInStep(CausalFIR):
    def step(self, x, state, *, training=None, constants=None):
        y, state = super().step(x, state, training=training, constants=constants)
        if self.weight.sum().item() > 1e9:  # .item() feeding a Python branch
            return y.apply_values_masked(torch.mul, 2.0), state
        return y, state


class BranchInStep(CausalFIR):
    def step(self, x, state, *, training=None, constants=None):
        y, state = super().step(x, state, training=training, constants=constants)
        if bool(x.mask.any()):  # data-dependent Python branch
            return y, state
        return y, state


BROKEN = [
    # (check, factory, channels, verify_contract kwargs)
    ("padding", lambda: NanLeak(3), (2,), {}),
    ("latency", lambda: DelayStep(0), (2,), {}),
    ("latency", lambda: DelayStep(2), (2,), {}),
    ("state", lambda: StateDrift(3), (2,), {}),
    ("state", lambda: PythonIntState(3), (2,), {}),
    ("receptive_field", lambda: WrongReceptiveField(3), (2,), {}),
    ("batching", lambda: BatchNorm(), (2,), {}),
    ("spec", lambda: LyingDtype(), (2,), {}),
    ("spec", lambda: LyingShape(), (2,), {}),
    ("step", lambda: StepDisagrees(3), (2,), {}),
    ("empty_step", lambda: EmptyStepCounts(3), (2,), {}),
    ("aliasing", lambda: DelayKeepsView(1), (2,), {}),
    ("mutation", lambda: ReluInPlace(), (2,), {}),
    ("gradients", lambda: StepDetaches(3), (2,), {}),
    ("compile", lambda: ItemInStep(3), (2,), {"compile": True, "compile_backend": "eager"}),
    ("compile", lambda: BranchInStep(3), (2,), {"compile": True, "compile_backend": "eager"}),
]


@pytest.mark.parametrize(
    "check, make, channels, kwargs", BROKEN, ids=[f"{b[0]}-{type(b[1]()).__name__}" for b in BROKEN]
)
def test_broken_layer_is_caught_by_its_check(check, make, channels, kwargs):
    assert check in CHECKS
    layer = make()
    x = random_sequence(3, 10, *channels, random_mask=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ContractViolation) as excinfo:
        verify_contract(layer, x, **kwargs)
    assert excinfo.value.check == check, str(excinfo.value)
    assert type(layer).__name__ in str(excinfo.value)


def test_each_broken_layer_passes_with_its_check_disabled():
    """The other checks do not fire on the broken layers: each is broken in one way only."""
    off = {
        "padding": {"test_padding_invariance": False},
        "receptive_field": {"test_receptive_field": False},
        "batching": {"test_batching": False},
        "gradients": {"test_gradients": False},
        "compile": {"compile": False},
    }
    for check, make, channels, kwargs in BROKEN:
        if check not in off:
            continue
        x = random_sequence(3, 10, *channels, random_mask=True, generator=torch.Generator().manual_seed(0))
        verify_contract(make(), x, **{**kwargs, **off[check]})


def test_low_precision_gradients_compare_at_the_gradient_scale():
    """A bfloat16 weight sums its gradient in bfloat16: once per call in layer mode, once per step
    in step mode. With large gradients the two differ by a few ulps of the largest entry (here
    5.75 on entries of a few hundred), which is rounding, not a bug; a step that detaches is
    still caught in bfloat16."""
    torch.manual_seed(0)
    x = random_sequence(2, 96, 8, generator=torch.Generator().manual_seed(0))
    x = sl.Sequence(x.values * 20, x.mask).to(torch.bfloat16)
    low = {**tolerances(torch.bfloat16), "rtol": 0.05, "atol": 0.5, "test_receptive_field": False}
    verify_contract(sl.Dense(8, 8).to(torch.bfloat16), x, **low)
    small = random_sequence(3, 10, 2, random_mask=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ContractViolation) as excinfo:
        verify_contract(StepDetaches(3).to(torch.bfloat16), small.to(torch.bfloat16), **low)
    assert excinfo.value.check == "gradients"


def test_python_int_state_message():
    with pytest.raises(ContractViolation, match="Python int"):
        verify_contract(PythonIntState(2), random_sequence(2, 4, 1))


def test_relaxed_receptive_field():
    class Wider(CausalFIR):
        @property
        def receptive_field_per_step(self):
            return {0: (-(self.taps + 1), 0)}

    x = random_sequence(2, 8, 2)
    with pytest.raises(ContractViolation) as excinfo:
        verify_contract(Wider(3), x)
    assert excinfo.value.check == "receptive_field"
    verify_contract(Wider(3), x, receptive_field_relaxed=True)
    with pytest.raises(ContractViolation):
        verify_contract(WrongReceptiveField(3), x, receptive_field_relaxed=True)


def test_verify_contract_rejects_tensor_input():
    with pytest.raises(TypeError, match=r"sl\.Sequence"):
        verify_contract(CausalFIR(2), torch.zeros(2, 3, 1))  # type: ignore[arg-type]


# -- random_sequence ------------------------------------------------------------------------------


def test_random_sequence_shapes_dtypes_and_masking():
    for dtype in (torch.float32, torch.bfloat16, torch.complex64, torch.int32, torch.bool):
        x = random_sequence(4, 7, 2, 3, dtype=dtype)
        assert isinstance(x, sl.MaskedSequence)
        assert x.values.shape == (4, 7, 2, 3) and x.dtype == dtype and x.mask.dtype == torch.bool
        assert not x.values[~x.mask].any()
    x = random_sequence(2, 5, dtype=torch.int64, low=3, high=5)
    assert x.values.shape == (2, 5)
    valid = x.values[x.mask]
    assert bool(((valid >= 3) & (valid < 5)).all())


def test_random_sequence_lengths_include_zero_and_are_contiguous():
    g = torch.Generator().manual_seed(0)
    x = random_sequence(64, 6, 1, generator=g)
    lengths = x.lengths()
    assert int(lengths.min()) == 0 and int(lengths.max()) == 6
    assert torch.equal(x.mask, sl.sequence_mask(lengths, 6))
    y = random_sequence(16, 6, 1, low_length=4, high_length=5)
    assert bool(((y.lengths() >= 4) & (y.lengths() <= 5)).all())
    z = random_sequence(3, 6, 1, random_lengths=False)
    assert bool(z.mask.all())
    e = random_sequence(2, 0, 3)
    assert e.values.shape == (2, 0, 3) and e.mask.shape == (2, 0)


def test_random_sequence_random_mask_is_not_contiguous():
    x = random_sequence(32, 12, 1, random_mask=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(x.mask, sl.sequence_mask(x.lengths(), 12))
    assert 0.2 < float(x.mask.float().mean()) < 0.8


def test_random_sequence_is_reproducible_with_generator():
    a = random_sequence(2, 5, 3, random_mask=True, generator=torch.Generator().manual_seed(7))
    b = random_sequence(2, 5, 3, random_mask=True, generator=torch.Generator().manual_seed(7))
    assert_sequences_equal(a, b)


# -- assert_sequences_close ----------------------------------------------------------------------


def test_assert_sequences_close_mask_mismatch_fails():
    x = random_sequence(2, 5, 3, random_lengths=False)
    mask = x.mask.clone()
    mask[0, 2] = False
    with pytest.raises(AssertionError, match="masks differ"):
        assert_sequences_close(x, Sequence(x.values, mask))


def test_assert_sequences_close_ignores_invalid_values_and_trailing_padding():
    x = random_sequence(2, 5, 3, random_lengths=False)
    x = Sequence(x.values, sl.sequence_mask(torch.tensor([5, 3]), 5))
    garbage = torch.where(x.expanded_mask(), x.values, torch.tensor(float("nan")))
    padded = Sequence(garbage, x.mask).pad_time(0, 4, valid=False, pad_value=float("nan"))
    assert_sequences_close(x, padded)
    assert_sequences_close(padded, x)
    # Trailing *valid* steps are a real difference.
    with pytest.raises(AssertionError, match="masks differ"):
        assert_sequences_close(x, x.pad_time(0, 1, valid=True))


def test_assert_sequences_close_values_and_tolerances():
    x = random_sequence(2, 5, 3, random_lengths=False)
    y = x.apply_values(torch.add, 1e-3)
    with pytest.raises(AssertionError, match=r"max \|diff\|") as excinfo:
        assert_sequences_close(x, y, msg="context")
    assert str(excinfo.value).startswith("context: ")
    assert_sequences_close(x, y, rtol=0, atol=2e-3)
    nan = Sequence(torch.full_like(x.values, float("nan")), x.mask)
    with pytest.raises(AssertionError):
        assert_sequences_close(x, nan)
    with pytest.raises(AssertionError, match="channel shapes differ"):
        assert_sequences_close(x, random_sequence(2, 5, 4))
    with pytest.raises(AssertionError, match="batch sizes differ"):
        assert_sequences_close(x, random_sequence(3, 5, 3))
    ints = random_sequence(2, 5, dtype=torch.int32)
    assert sequences_close(ints, ints)[0]
    assert not sequences_close(ints, ints.apply_values(torch.add, 1))[0] or not bool(ints.mask.any())


def test_bf16_values_compare_in_float():
    x = random_sequence(2, 4, 3, dtype=torch.bfloat16, random_lengths=False)
    assert_sequences_close(x, x.to(torch.float32), **{k: tolerances(torch.bfloat16)[k] for k in ("rtol", "atol")})


def test_tolerances_and_dtype_sweep():
    assert tolerances(torch.float32)["rtol"] < tolerances(torch.bfloat16)["rtol"]
    assert tolerances(torch.float64)["atol"] < tolerances(torch.float32)["atol"]
    sweep = dtype_sweep()
    assert sweep[0].param_dtype == sweep[0].input_dtype == torch.float32
    assert {c.id for c in sweep} >= {"param-float32-input-float32", "param-bfloat16-input-bfloat16"}
    assert dtype_sweep(low_precision=False) == sweep[:1]


def test_channel_spec_of_random_sequence():
    assert random_sequence(1, 2, 5).channel_spec == ChannelSpec((5,), torch.float32)
    assert math.isfinite(float(random_sequence(1, 2, 5).values.sum()))
