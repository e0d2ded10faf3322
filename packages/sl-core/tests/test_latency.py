"""Delay and Lookahead (reference dsp.py): contract, reference values, composition with resampling."""

from __future__ import annotations

import pytest
import torch

import sl
from sl.layers import latency
from sl.testing import random_sequence, tolerances, verify_contract
from sl.testing.sequences import assert_sequences_equal

DTYPES = [torch.float32, torch.bfloat16]


def _hand_made() -> sl.Sequence:
    # Row 0 has length 4 of 6, row 1 length 6.
    values = torch.arange(1, 13, dtype=torch.float32).reshape(2, 6, 1)
    return sl.Sequence.from_lengths(values, [4, 6]).mask_invalid()


def _stepwise(layer: sl.SequenceLayer, x: sl.Sequence) -> sl.Sequence:
    y, _ = sl.step_by_step(layer, x.pad_time(0, layer.input_latency, valid=False), align_latency=False)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [0, 1, 4])
@pytest.mark.parametrize("delay_layer_output", [True, False])
@pytest.mark.parametrize("random_mask", [False, True])
def test_delay_contract(dtype, length, delay_layer_output, random_mask):
    layer = latency.Delay(length, delay_layer_output=delay_layer_output).to(dtype)
    assert layer.input_latency == length
    assert layer.output_latency == (0 if delay_layer_output else length)
    assert layer.block_size == 1 and layer.output_ratio == 1
    x = random_sequence(2, 11, 3, 2, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, test_output_length=False, **tolerances(dtype))
    assert y.values.shape[1] == (11 + length if delay_layer_output else 11)
    assert list(layer.parameters()) == []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [0, 1, 4])
@pytest.mark.parametrize("preserve", [False, True])
@pytest.mark.parametrize("random_mask", [False, True])
def test_lookahead_contract(dtype, length, preserve, random_mask):
    layer = latency.Lookahead(length, preserve_length_in_layer=preserve).to(dtype)
    assert layer.input_latency == 0
    assert layer.output_latency == length
    x = random_sequence(2, 11, 3, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, test_output_length=preserve, **tolerances(dtype))
    assert y.values.shape[1] == (11 if preserve else 11 - length)


@pytest.mark.parametrize("layer", [latency.Delay(3), latency.Lookahead(3)])
def test_shorter_than_latency(layer):
    x = random_sequence(3, 2, 2, low_length=0)
    # The harness lengthens the receptive-field probe to 2x the field's span, not its offset.
    verify_contract(layer, x, test_output_length=False, test_receptive_field=False)


def test_delay_reference_values():
    x = _hand_made()
    y = latency.Delay(2).layer(x)
    assert y.values[:, :, 0].tolist() == [[0, 0, 1, 2, 3, 4, 0, 0], [0, 0, 7, 8, 9, 10, 11, 12]]
    assert y.mask.tolist() == [[False, False, True, True, True, True, False, False], [False, False] + [True] * 6]
    assert_sequences_equal(_stepwise(latency.Delay(2), x), y)
    # delay_layer_output=False: identity layer-wise, delayed step-wise.
    layer = latency.Delay(2, delay_layer_output=False)
    assert_sequences_equal(layer.layer(x), x)
    ys = _stepwise(layer, x)
    assert ys.mask_invalid().values[1, :, 0].tolist() == [0, 0, 7, 8, 9, 10, 11, 12]
    assert_sequences_equal(ys[:, 2:], x)


def test_delay_state_is_fixed_buffer():
    layer = latency.Delay(3)
    state = layer.get_initial_state(2, sl.ChannelSpec((4,), torch.float32))
    assert isinstance(state, sl.Sequence) and state.values.shape == (2, 3, 4) and not state.mask.any()
    x = random_sequence(2, 5, 4)
    _, state2 = layer.step(x, state)
    assert state2.values.shape == (2, 3, 4)
    assert torch.equal(state2.values, x.values[:, 2:]) and torch.equal(state2.mask, x.mask[:, 2:])


def test_lookahead_reference_values():
    x = _hand_made()
    y = latency.Lookahead(2).layer(x)
    assert y.values[:, :, 0].tolist() == [[3, 4, 0, 0], [9, 10, 11, 12]]
    assert y.mask.tolist() == [[True, True, False, False], [True] * 4]
    ys = _stepwise(latency.Lookahead(2), x)
    assert ys.mask.tolist() == [[False, False, True, True, False, False], [False, False] + [True] * 4]
    assert_sequences_equal(ys[:, 2:], y)
    yp = latency.Lookahead(2, preserve_length_in_layer=True).layer(x)
    assert yp.values.shape[1] == 6 and yp.mask.tolist() == [[True, True] + [False] * 4, [True] * 4 + [False] * 2]
    short = latency.Lookahead(4, preserve_length_in_layer=True).layer(x[:, :3])  # fewer steps than length
    assert short.values.shape[1] == 3 and not short.mask.any()  # (the reference returns 4 steps)


def test_lookahead_state_is_countdown():
    layer = latency.Lookahead(3)
    state = layer.get_initial_state(2, sl.ChannelSpec((1,), torch.float32))
    assert state.dtype == torch.int32 and state.tolist() == [3, 3]
    x = random_sequence(2, 2, 1, random_lengths=False)
    y, state = layer.step(x, state)
    assert not y.mask.any() and state.tolist() == [1, 1]
    y, state = layer.step(x, state)
    assert y.mask.tolist() == [[False, True], [False, True]] and state.tolist() == [0, 0]


def test_delay_then_lookahead_agrees_step_and_layer():
    # The reference's valid-step countdown breaks this composition (leading invalid steps).
    layer = sl.Serial(latency.Delay(2), latency.Lookahead(2))
    x = _hand_made()
    y = layer.layer(x)
    assert_sequences_equal(y, x)
    verify_contract(layer, random_sequence(2, 9, 3), test_output_length=False)


@pytest.mark.parametrize("layer", [latency.Delay(2), latency.Delay(2, delay_layer_output=False), latency.Lookahead(2)])
def test_step_compiles_fullgraph(layer):
    x = random_sequence(2, 7, 3, low_length=5)
    verify_contract(layer, x, test_output_length=False, compile=True, compile_backend="aot_eager")


@pytest.mark.parametrize("lookahead", [1, 3])
def test_lookahead_then_downsample_needs_delay(lookahead):
    from sl.layers.resampling import Downsample1D

    bad = sl.Serial(latency.Lookahead(lookahead), Downsample1D(2))
    with pytest.raises(ValueError, match=r"Delay\(1, delay_layer_output=False\)"):
        _ = bad.output_latency
    assert sl.composition_rules.get_required_stepwise_delay(lookahead, Downsample1D(2).output_ratio) == 1
    good = sl.Serial(latency.Lookahead(lookahead), latency.Delay(1, delay_layer_output=False), Downsample1D(2))
    assert good.output_latency == (lookahead + 1) // 2
    for random_mask in (False, True):
        x = random_sequence(2, 12, 3, random_mask=random_mask)
        verify_contract(good, x, test_output_length=False)
    # Even lookahead needs no Delay.
    assert sl.Serial(latency.Lookahead(2), Downsample1D(2)).output_latency == 1


@pytest.mark.parametrize("cls", [latency.Delay, latency.Lookahead])
def test_bad_length(cls):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(-1)
    with pytest.raises(TypeError, match=cls.__name__):
        cls(1.5)


def test_registry():
    assert sl.registry.get("Delay") is latency.Delay
    assert sl.registry.get("core:Lookahead") is latency.Lookahead
    assert sl.Delay is latency.Delay and sl.Lookahead is latency.Lookahead


def test_config_round_trip():
    layer = latency.Delay(3, delay_layer_output=False)
    rebuilt = sl.from_config(layer.get_config())
    assert isinstance(rebuilt, latency.Delay) and rebuilt.length == 3 and not rebuilt.delay_layer_output
