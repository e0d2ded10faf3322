"""Composition algebra (sl.composition) against the reference's own cases (utils_test.py)."""

import fractions
import math
from types import SimpleNamespace

import pytest
import torch

import sl
from sl import composition_rules as c
from sl.testing import ContractViolation, random_sequence, verify_contract

F = fractions.Fraction


def mock(rf, ratio=F(1), block=1, in_lat=0, out_lat=None):
    layer = SimpleNamespace(receptive_field_per_step=rf, output_ratio=ratio, block_size=block, input_latency=in_lat)
    layer.output_latency = int(in_lat * ratio) if out_lat is None else out_lat

    def acc_in(lat, layer=layer):
        return math.ceil(lat / layer.output_ratio) + layer.input_latency

    def acc_out(lat, layer=layer):
        if -lat % (1 / layer.output_ratio):
            raise ValueError("not divisible: insert a Delay")
        return int(lat * layer.output_ratio) + layer.output_latency

    layer.get_accumulated_input_latency = acc_in
    layer.get_accumulated_output_latency = acc_out
    return layer


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (None, None, None),
        (None, (0, 1), (0, 1)),
        ((0, 1), None, (0, 1)),
        ((0, 2), (1, 3), (0, 3)),
        ((0, 1), (1, 3), (0, 3)),
        ((0, 3), (1, 2), (0, 3)),
        ((-2, 0), (-1, 1), (-2, 1)),
    ],
)
def test_receptive_field_union(a, b, expected):
    assert c.receptive_field_union(a, b) == expected


@pytest.mark.parametrize(
    "rf_next, prev, expected",
    [
        ({0: (0, 0)}, mock({0: (-1, 0)}), {0: (-1, 0)}),
        ({0: (-1, 1)}, mock({0: (0, 0)}), {0: (-1, 1)}),
        ({0: (-1, 0)}, mock({0: (0, 1)}, F(1, 2)), {0: (-2, 1)}),
        ({0: (-2, 0)}, mock({0: (0, 1)}, F(1, 2)), {0: (-4, 1)}),
        ({0: None}, mock({0: (0, 1)}, F(1, 2)), {0: None}),
        ({0: (0, 0)}, mock({0: None}), {0: None}),
    ],
)
def test_propagate_receptive_field_to_prev_layer(rf_next, prev, expected):
    got = c.propagate_receptive_field_to_prev_layer(rf_next, prev.receptive_field_per_step, prev.output_ratio)
    assert got == expected


@pytest.mark.parametrize(
    "layers, expected",
    [
        ([], {0: (0, 0)}),
        ([mock({0: (-1, 0)})], {0: (-1, 0)}),
        ([mock({0: (0, 0)}), mock({0: (-1, 0)})], {0: (-1, 0)}),
        ([mock({0: (0, 1)}, F(1, 2)), mock({0: (-2, 0)})], {0: (-4, 1)}),
        ([mock({0: (0, 0), 1: (0, 0)}), mock({0: (-1, 0)})], {0: (-1, 0), 1: (-1, 0)}),
    ],
)
def test_receptive_field_per_step_of_serial_layers(layers, expected):
    assert c.receptive_field_per_step_of_serial_layers(layers) == expected


def test_aggregate_tiles_shorter_periods():
    # The reference merges dict keys without tiling; a layer with one phase has the same
    # receptive field at every phase, so sl tiles it (a strict superset of the reference).
    got = c.aggregate_receptive_field_per_steps([{0: (-5, 0)}, {0: (0, 0), 1: (0, 1)}])
    assert got == {0: (-5, 0), 1: (-5, 1)}
    assert c.aggregate_receptive_field_per_steps([{0: (0, 0), 1: None}, {0: None, 1: (0, 1)}]) == {
        0: (0, 0),
        1: (0, 1),
    }


def test_reduce_handles_none_and_infinity():
    assert c.reduce_receptive_field_per_step({0: None, 1: None}) is None
    assert c.reduce_receptive_field_per_step({0: (-math.inf, 0), 1: (-1, 2)}) == (-math.inf, 2)


def test_receptive_field_at_uses_step_relative_offsets():
    rf = {0: (0, 0), 1: (-1, 0)}
    assert c.receptive_field_at(rf, F(2), 0) == (0, 0)
    assert c.receptive_field_at(rf, F(2), 3) == (0, 1)
    assert c.receptive_field_at(rf, F(1, 2), 3) == (5, 6)


@pytest.mark.parametrize("bad", [(1, 0), (math.inf, math.inf), [0, 1], (0,)])
def test_invalid_receptive_fields_are_rejected(bad):
    with pytest.raises(ValueError):
        c.validate_receptive_field(bad)


def test_per_step_keys_must_be_contiguous():
    with pytest.raises(ValueError, match=r"0\.\.n-1"):
        c.validate_receptive_field_per_step({1: (0, 0)})


def test_serial_block_size_lcm_rule():
    down2 = mock({0: (0, 1)}, F(1, 2), block=2)
    up2 = mock({0: (0, 0), 1: (-1, 0)}, F(2), block=1)
    assert c.serial_block_size([down2, up2]) == 2
    assert c.serial_output_ratio([down2, up2]) == 1
    assert c.serial_block_size([up2, down2]) == 1
    down3 = mock({0: (0, 2)}, F(1, 3), block=3)
    assert c.serial_block_size([down2, down3]) == 6
    assert c.serial_block_size([]) == 1


def test_serial_latency_accumulates_and_requires_delay():
    lookahead = mock({0: (0, 1)}, in_lat=1)
    down2 = mock({0: (0, 1)}, F(1, 2), block=2)
    assert c.serial_input_latency([lookahead, down2]) == 1
    with pytest.raises(ValueError, match="Delay"):
        c.serial_output_latency([lookahead, down2])
    delay1 = mock({0: (0, 0)}, in_lat=0, out_lat=1)
    assert c.serial_output_latency([lookahead, delay1, down2]) == 1
    assert c.get_required_stepwise_delay(1, F(1, 2)) == 1
    assert c.get_required_stepwise_delay(3, F(1, 4)) == 1
    assert c.get_required_stepwise_delay(4, F(1, 4)) == 0


def test_stacked_upsamplers_keep_every_phase():
    # Upsample(2) twice has period 4 in output steps; the reference's lcm of dict lengths
    # (2) would drop phase 3, where a one-step lookahead reaches the next input.
    up2 = mock({0: (0, 0), 1: (0, 0)}, F(2))
    lookahead = mock({0: (0, 1)})
    assert c.receptive_field_per_step_of_serial_layers([up2, up2, lookahead]) == {
        0: (0, 0),
        1: (0, 0),
        2: (0, 0),
        3: (0, 1),
    }


# -- layers that count time, behind layers with step-wise latency --------------------------------

TIME_INDEXED_STACKS = {
    "Lookahead+SequenceDense": lambda: sl.Serial(sl.Lookahead(2), sl.SequenceDense(4, 4, num_steps=32)),
    "Delay+AddTimingSignal": lambda: sl.Serial(
        sl.Delay(2, delay_layer_output=False), sl.AddTimingSignal(only_advance_position_for_valid_timesteps=False)
    ),
    "Delay+SequenceDense": lambda: sl.Serial(sl.Delay(2, delay_layer_output=False), sl.SequenceDense(4, 4, 32)),
    "Delay+MaskedDense": lambda: sl.Serial(sl.Delay(2, delay_layer_output=False), sl.MaskedDense(4, 4, 16)),
    "Lookahead+RoPE": lambda: sl.Serial(
        sl.Lookahead(3), sl.ApplyRotaryPositionalEncoding(50.0, only_advance_position_for_valid_timesteps=False)
    ),
    "nested": lambda: sl.Serial(
        sl.Delay(1, delay_layer_output=False),
        sl.Residual(
            sl.Serial(sl.Lookahead(1, preserve_length_in_layer=True), sl.SequenceDense(4, 4, 32)),
            shortcut_layers=sl.Serial(sl.Lookahead(1, preserve_length_in_layer=True)),
        ),
        sl.Parallel(sl.AddTimingSignal(only_advance_position_for_valid_timesteps=False), sl.Identity()),
    ),
}


def _contract(layer):
    x = random_sequence(2, 10, 4, random_mask=True)
    return verify_contract(layer, x, rtol=1e-5, atol=1e-5, test_output_length=False)


@pytest.mark.parametrize("name", sorted(TIME_INDEXED_STACKS))
def test_time_indexed_layers_count_positions_through_latency(name):
    _contract(TIME_INDEXED_STACKS[name]())


@pytest.mark.parametrize("name", sorted(TIME_INDEXED_STACKS))
def test_time_indexed_stacks_break_without_the_shift(name, monkeypatch):
    # The negative control: without shift_initial_state, step disagrees with layer (the bug).
    monkeypatch.setattr(sl.SequenceLayer, "shift_initial_state", lambda self, state, latency: state)
    for cls in (
        sl.Lookahead,
        sl.AddTimingSignal,
        sl.ApplyRotaryPositionalEncoding,
        sl.SequenceDense,
        sl.MaskedDense,
        sl.Serial,
        sl.Residual,
        sl.Parallel,
    ):
        monkeypatch.setattr(cls, "shift_initial_state", lambda self, state, latency: state)
    with pytest.raises(ContractViolation, match=r"\[(step|latency)\]"):
        _contract(TIME_INDEXED_STACKS[name]())


def test_nested_serial_starts_from_the_latency_in_front_of_it():
    """A chain aligned only given its incoming latency (a Delay that makes 1 + 1 divisible by the
    stride) works nested as it does flattened: its states start from the latency in front of it."""
    inner = sl.Serial(sl.Delay(1, delay_layer_output=False), sl.Downsample1D(2))
    with pytest.raises(ValueError, match="not divisible"):
        inner.get_initial_state(2, sl.ChannelSpec((3,), torch.float32))  # alone, from latency 0
    nested = sl.Serial(sl.Delay(1, delay_layer_output=False), inner)
    flat = sl.Serial(sl.Delay(1, delay_layer_output=False), *inner)
    assert nested.output_latency == flat.output_latency
    x = random_sequence(2, 12, 3, random_mask=True)
    y = verify_contract(nested, x)
    sl.testing.assert_sequences_close(y, verify_contract(flat, x))
