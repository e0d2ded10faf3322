"""sl.step_by_step: blocks, padding of the tail, initial state, constants, emits."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support_layers import CausalFIR, Decimate, ReverseFIR

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
    # A stream continued across calls: raw step outputs (no latency flush in between).
    full, _ = sl.step_by_step(layer, x, align_latency=False)
    first, state = sl.step_by_step(layer, x[:, :6], align_latency=False)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)  # Sequences in state are safe to load
    second, _ = sl.step_by_step(layer, x[:, 6:], initial_state=restored, align_latency=False)
    assert_sequences_close(full, first.concatenate(second), rtol=0, atol=0)


# -- latency handled for the user: step_by_step and Streamer equal layer() ------------------------

LATENCY_STACKS = {
    "lookahead": lambda: sl.Serial(sl.Dense(4, 4), sl.Lookahead(2, preserve_length_in_layer=True)),
    "reverse_fir": lambda: sl.Serial(ReverseFIR(3), CausalFIR(2)),
    "delay_step_only": lambda: sl.Serial(sl.Delay(3, delay_layer_output=False), sl.Dense(4, 2)),
    "decimate_after_delay": lambda: sl.Serial(sl.Delay(1, delay_layer_output=False), ReverseFIR(2), Decimate(2)),
}


@pytest.mark.parametrize("name", sorted(LATENCY_STACKS))
def test_step_by_step_equals_layer_without_manual_padding(name):
    layer = LATENCY_STACKS[name]()
    assert layer.input_latency or layer.output_latency
    x = random_sequence(2, 11, 4, random_mask=True)
    y = layer.layer(x)
    for blocks in (1, 2):
        y_step, _ = sl.step_by_step(layer, x, blocks_per_step=blocks)
        assert_sequences_close(y, y_step, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LATENCY_STACKS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_streamer_equals_layer_for_any_chunking(name, data):
    layer = LATENCY_STACKS[name]()
    x = random_sequence(2, 13, 4, random_mask=True)
    streamer = sl.Streamer(layer, 2, x.channel_spec)
    outputs, start = [], 0
    values, mask = torch.empty(2, 5, 4), torch.empty(2, 5, dtype=torch.bool)  # one buffer, refilled
    for size in data.draw(st.lists(st.integers(0, 5), max_size=8)):  # 0-length chunks included
        size = min(size, 13 - start)
        values[:, :size], mask[:, :size] = x.values[:, start : start + size], x.mask[:, start : start + size]
        outputs.append(streamer.push(sl.Sequence(values[:, :size], mask[:, :size])))
        values.fill_(float("nan"))
        mask.logical_not_()
        start += size
    outputs.append(streamer.push(x[:, start:]))
    outputs.append(streamer.flush())
    y_stream = sl.Sequence.concatenate_sequences(outputs)
    assert_sequences_close(layer.layer(x), y_stream, rtol=1e-5, atol=1e-5)


def test_streamer_resets_after_flush_and_checks_chunks():
    layer = sl.Serial(ReverseFIR(3))
    x = random_sequence(1, 6, 4)
    streamer = sl.Streamer(layer, 1, x.channel_spec)
    a = sl.Sequence.concatenate_sequences([streamer.push(x), streamer.flush()])
    b = sl.Sequence.concatenate_sequences([streamer.push(x), streamer.flush()])
    assert_sequences_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"Streamer for Serial expects chunks of batch 1 and channel spec \(4,\)"):
        streamer.push(random_sequence(2, 3, 4))
    with pytest.raises(ValueError, match="expects chunks"):
        streamer.push(random_sequence(1, 3, 5))
    with pytest.raises(ValueError, match="does not support step"):
        sl.Streamer(sl.Bidirectional(sl.Identity(), sl.Identity()), 1, x.channel_spec)


def test_streaming_runs_without_grad_unless_asked():
    layer = sl.Serial(CausalFIR(3), sl.Dense(4, 4))
    x = random_sequence(2, 6, 4)
    y, state = sl.step_by_step(layer, x)
    assert not y.values.requires_grad
    assert not any(t.requires_grad for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, torch.Tensor))
    y, _ = sl.step_by_step(layer, x, grad=True)
    assert y.values.requires_grad
    streamer = sl.Streamer(layer, 2, x.channel_spec)
    for _ in range(3):  # a live stream holds no graph, so memory does not grow with its length
        assert not streamer.push(x).values.requires_grad
        assert not any(
            t.requires_grad for t in torch.utils._pytree.tree_leaves(streamer.state) if isinstance(t, torch.Tensor)
        )
    assert sl.Streamer(layer, 2, x.channel_spec, grad=True).push(x).values.requires_grad


def test_stream_only_some_constants():
    # A whole-sequence conditioning ("c") beside a time-synchronous one ("s"): only "s" is cut.
    layer = sl.Serial(sl.Conditioning("c", "identity", "add"), sl.Conditioning("s", "identity", "add", streaming=True))
    x = random_sequence(2, 6, 3)
    constants = {"c": random_sequence(2, 6, 3), "s": random_sequence(2, 6, 3)}
    y = layer.layer(x, constants=constants)
    y_step, _ = sl.step_by_step(layer, x, constants=constants, stream_constants=["s"])
    assert_sequences_close(y, y_step, rtol=1e-6, atol=1e-6)
    sl.testing.verify_contract(layer, x, constants=constants, stream_constants=["s"], pad_constants=True)
    with pytest.raises(ValueError, match=r"stream_constants names constants that were not given: \['t'\]"):
        sl.step_by_step(layer, x, constants=constants, stream_constants=["t"])


@pytest.mark.parametrize("mode", [{}, {"replay": True}, {"compile": True}], ids=["eager", "replay", "compile"])
def test_streamer_takes_chunks_from_one_reused_buffer(mode):
    """A live loop refills one buffer for every chunk (an audio callback's array): what the
    streamer buffers of a partial block must be its own copy, not a view of that buffer."""
    layer = sl.Serial(CausalFIR(3), Decimate(4), CausalFIR(2)).eval()
    x = random_sequence(2, 42, 3, random_mask=True)
    expected = layer.layer(x)
    streamer = sl.Streamer(layer, 2, x.channel_spec, **mode)
    buffer = sl.Sequence(torch.empty(2, 7, 3), torch.zeros(2, 7, dtype=torch.bool))
    outputs = []
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # compile mode: a graph per chunk offset
        for start in range(0, 42, 7):
            buffer.values.copy_(x.values[:, start : start + 7])
            buffer.mask.copy_(x.mask[:, start : start + 7])
            outputs.append(streamer.push(buffer))
        outputs.append(streamer.flush())
    assert_sequences_close(expected, sl.Sequence.concatenate_sequences(outputs), rtol=1e-5, atol=1e-5)
