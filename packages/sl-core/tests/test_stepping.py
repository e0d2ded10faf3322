"""sl.step_by_step: blocks, padding of the tail, initial state, constants, emits."""

import pytest
import torch
from support_layers import CausalFIR, Decimate

import sl
from sl.testing import assert_sequences_close, random_sequence


class AddConstant(sl.PreservesShape, sl.PreservesType, sl.Stateless):
    """Adds constants['bias'] (a Sequence streamed in lockstep, or a [B, C] tensor)."""

    def layer(self, x, *, training=None, constants=None):
        c = sl.get_constant(self, constants, "bias")
        if isinstance(c, sl.Sequence):
            return sl.Sequence(x.values + c.values, x.mask & c.mask)
        return sl.Sequence(x.values + c[:, None], x.mask)


class TapEmit(sl.PreservesShape, sl.PreservesType, sl.StatelessEmitting):
    def layer_with_emits(self, x, *, training=None, constants=None):
        return x, {"tap": x, "scale": torch.ones(x.values.shape[:2])}


def test_matches_layer_and_pads_tail():
    layer = sl.Serial(CausalFIR(3), Decimate(2))
    x = random_sequence(2, 7, 3, random_lengths=False)
    y, _state = sl.step_by_step(layer, x)
    assert y.values.shape[1] == 4  # 7 steps padded to 8, halved
    assert_sequences_close(layer.layer(x), y, rtol=1e-6, atol=1e-6)
    y2, _ = sl.step_by_step(layer, x, blocks_per_step=3)
    assert_sequences_close(y, y2, rtol=1e-6, atol=1e-6)


def test_initial_state_is_resumable():
    layer = CausalFIR(3)
    x = random_sequence(2, 10, 2, random_lengths=False)
    full, _ = sl.step_by_step(layer, x)
    first, state = sl.step_by_step(layer, x[:, :4])
    second, _ = sl.step_by_step(layer, x[:, 4:], initial_state=state)
    assert_sequences_close(full, first.concatenate(second), rtol=1e-6, atol=1e-6)


def test_streamed_and_broadcast_constants():
    layer = AddConstant()
    x = random_sequence(2, 6, 3)
    bias_seq = random_sequence(2, 6, 3, random_lengths=False)
    y, _ = sl.step_by_step(layer, x, constants={"bias": bias_seq}, stream_constants=True)
    assert_sequences_close(layer.layer(x, constants={"bias": bias_seq}), y)
    bias = torch.randn(2, 3)
    y, _ = sl.step_by_step(layer, x, constants={"bias": bias})
    assert_sequences_close(layer.layer(x, constants={"bias": bias}), y)


def test_missing_constant_names_layer():
    with pytest.raises(ValueError, match=r"AddConstant requires the constant 'bias'"):
        sl.step_by_step(AddConstant(), random_sequence(1, 2, 3))


def test_emits_are_concatenated_over_time():
    x = random_sequence(2, 5, 3)
    _y, _, emits = sl.step_by_step(TapEmit(), x, with_emits=True)
    assert_sequences_close(emits["tap"], x)
    assert emits["scale"].shape == (2, 5)
    _, layer_emits = TapEmit().layer_with_emits(x)
    assert_sequences_close(layer_emits["tap"], emits["tap"])


def test_empty_input_gives_empty_output_with_spec():
    layer = sl.Serial(CausalFIR(2), Decimate(2))
    x = random_sequence(3, 0, 4)
    y, _state = sl.step_by_step(layer, x)
    assert y.shape == (3, 0, 4) and y.mask.shape == (3, 0)


class NotSteppable(sl.PreservesShape, sl.PreservesType, sl.Stateless):
    @property
    def supports_step(self):
        return False

    def layer(self, x, *, training=None, constants=None):
        return x


def test_errors():
    with pytest.raises(ValueError, match="NotSteppable does not support step"):
        sl.step_by_step(NotSteppable(), random_sequence(1, 2, 1))
    with pytest.raises(ValueError, match="NotSteppable does not support step"):
        NotSteppable().step(random_sequence(1, 2, 1), ())
    with pytest.raises(ValueError, match="blocks_per_step"):
        sl.step_by_step(CausalFIR(2), random_sequence(1, 2, 1), blocks_per_step=0)
    with pytest.raises(ValueError, match=r"Decimate.step received 3 timesteps.*block_size=2"):
        Decimate(2).step(random_sequence(1, 3, 1), ())
    with pytest.raises(TypeError, match=r"CausalFIR\.layer expects an sl\.Sequence"):
        CausalFIR(2).layer(torch.zeros(1, 2, 1))


def test_state_checkpoint_mid_stream_resumes_identically():
    import io

    layer = sl.Serial(CausalFIR(3), sl.Delay(2), sl.AddTimingSignal(), Decimate(2))
    x = random_sequence(2, 12, 4)
    full, _ = sl.step_by_step(layer, x)
    first, state = sl.step_by_step(layer, x[:, :6])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)  # Sequences in state are safe to load
    second, _ = sl.step_by_step(layer, x[:, 6:], initial_state=restored)
    assert_sequences_close(full, first.concatenate(second), rtol=0, atol=0)
