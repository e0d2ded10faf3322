"""sl.replay_step and Streamer(replay=True): a captured step replays exactly what the eager step does."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from support_layers import NonSteppable, stateful_stream_model

import sl
from sl.testing import assert_sequences_close, random_sequence


def _replays(step, layer, blocks, batch, spec):
    state = eager = layer.get_initial_state(batch, spec)
    for block in blocks:
        y, state = step(block, state)
        y_eager, eager = layer.step(block, eager)
        assert type(y) is type(y_eager)
        assert_sequences_close(y, y_eager, rtol=0, atol=0)
        for got, want in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(eager)):
            assert torch.equal(got, want)
    return state


@pytest.mark.parametrize(
    "make",
    [
        stateful_stream_model,
        lambda: sl.Serial(sl.Dense(4, 6), sl.Downsample1D(2), sl.Relu(), sl.Upsample1D(2)),
        lambda: sl.Residual(sl.Dense(4, 4), sl.Tanh()),
        lambda: sl.Identity(),
    ],
    ids=["dense_delay_timing_lookahead", "downsample_upsample", "residual", "identity"],
)
@pytest.mark.parametrize("masked", [False, True], ids=["sequence", "masked_sequence"])
def test_replay_step_matches_eager_step_for_step(make, masked):
    torch.manual_seed(0)
    layer = make().eval()
    x = random_sequence(2, 16, 4, random_mask=True)
    if masked:
        x = x.mask_invalid()
    block = layer.block_size
    step = sl.replay_step(layer)
    # Blocks of one and of two block lengths, then back: three input layouts, each captured once.
    cuts = [block] * 3 + [2 * block] * 2 + [block] * 3
    blocks, t = [], 0
    for n in cuts:
        blocks.append(x[:, t : t + n])
        t += n
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # every step is captured, none falls back
        _replays(step, layer, blocks, 2, x.channel_spec)


def test_replay_step_sees_parameters_updated_in_place():
    layer = sl.Dense(4, 3).eval()
    x = random_sequence(1, 4, 4)
    step = sl.replay_step(layer)
    state = layer.get_initial_state(1, x.channel_spec)
    y, state = step(x[:, :2], state)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an optimiser step or load_state_dict: the same tensor, new values
    y, state = step(x[:, 2:], state)
    assert_sequences_close(y, layer.step(x[:, 2:], state)[0], rtol=0, atol=0)


def test_replay_step_checks_input_and_foreign_state():
    layer = stateful_stream_model().eval()
    step = sl.replay_step(layer)
    x = random_sequence(2, 1, 4)
    with pytest.raises(TypeError, match=r"sl.replay_step\(Serial\) expects an sl.Sequence input; got Tensor"):
        step(x.values, layer.get_initial_state(2, x.channel_spec))
    with pytest.raises(sl.StateMismatchError, match=r"Serial\.step: the state does not match this input"):
        step(x, layer.get_initial_state(3, x.channel_spec))
    with pytest.raises(ValueError, match="does not support step"):
        sl.replay_step(NonSteppable())


class _GraphBreak(sl.PreservesType, sl.PreservesShape, sl.Stateless):
    """A step dynamo cannot capture as one graph (it asks for a graph break)."""

    def layer(self, x, *, training=None, constants=None):
        torch._dynamo.graph_break()
        return x.apply_values_masked(lambda v: v * 2)


def test_replay_step_runs_eagerly_what_cannot_be_captured_with_one_warning():
    layer = sl.Serial(sl.Dense(3, 3), _GraphBreak()).eval()
    x = random_sequence(2, 6, 3, random_mask=True)
    step = sl.replay_step(layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _replays(step, layer, [x[:, t : t + 1] for t in range(6)], 2, x.channel_spec)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "sl.replay_step(Serial): the step cannot be captured" in messages[0]


def test_replay_step_past_max_graphs_steps_eagerly_with_one_warning():
    layer = stateful_stream_model().eval()
    x = random_sequence(2, 21, 4, random_mask=True)
    step = sl.replay_step(layer, max_graphs=2)
    blocks, t = [], 0
    for n in (1, 2, 3, 4, 5, 6):  # a layout per length
        blocks.append(x[:, t : t + n])
        t += n
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _replays(step, layer, blocks, 2, x.channel_spec)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "2 input layouts are captured already" in messages[0]


class _CountingInPython(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    def layer(self, x, *, training=None, constants=None):
        return x

    def get_initial_state(self, batch_size, input_spec, *, training=None, constants=None):
        return (0,)

    def step(self, x, state, *, training=None, constants=None):
        return x, (state[0] + x.values.shape[1],)


def test_replay_step_refuses_python_values_in_the_state():
    layer = _CountingInPython().eval()
    x = random_sequence(1, 1, 2)
    with pytest.raises(TypeError, match=r"_CountingInPython's state holds a int at \[0\]"):
        sl.replay_step(layer)(x, layer.get_initial_state(1, x.channel_spec))


def test_replay_step_leaves_no_gradient_history():
    layer = sl.Dense(4, 4).eval()
    x = random_sequence(1, 3, 4)
    step = sl.replay_step(layer)
    state = layer.get_initial_state(1, x.channel_spec)
    for t in range(3):
        y, state = step(x[:, t : t + 1], state)
        assert not y.values.requires_grad


def test_streamer_replayed_equals_eager_in_random_chunks_and_refuses_training():
    rng = random.Random(0)
    layer = sl.Serial(sl.Dense(4, 4), sl.Downsample1D(2), sl.Delay(2, delay_layer_output=False), sl.Lookahead(1))
    layer = layer.eval()
    x = random_sequence(2, 40, 4, random_mask=True)
    eager, replayed = sl.Streamer(layer, 2, x.channel_spec), sl.Streamer(layer, 2, x.channel_spec, replay=True)
    cuts, t = [], 0
    while t < 40:
        cuts.append((t, min(40, t + rng.randint(1, 7))))
        t = cuts[-1][1]
    outs = []
    for streamer in (eager, replayed):
        for _ in range(2):  # a second stream after flush() reset the streamer
            parts = [streamer.push(x[:, a:b]) for a, b in cuts]
            outs.append(sl.Sequence.concatenate_sequences([*parts, streamer.flush()]))
    for out in outs[1:]:
        assert_sequences_close(out, outs[0], rtol=0, atol=0)
    assert_sequences_close(outs[0], layer.layer(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="replay=True replays the captured eval step"):
        sl.Streamer(layer, 2, x.channel_spec, replay=True, training=True)
    with pytest.raises(ValueError, match="pass compile=True or replay=True, not both"):
        sl.Streamer(layer, 2, x.channel_spec, replay=True, compile=True)


def test_replay_step_of_a_lazy_layer_sizes_it_eagerly_then_captures():
    layer = sl.Serial(sl.Dense(features=5), sl.Delay(1, delay_layer_output=False)).eval()  # input size: first call
    x = random_sequence(2, 6, 3, random_mask=True)
    step = sl.replay_step(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no capture may fail
        step(x[:, :2], layer.get_initial_state(2, x.channel_spec))
        assert not sl.lazy.has_uninitialized_parameters(layer)
        _replays(step, layer, [x[:, t : t + 2] for t in range(2, 6, 2)], 2, x.channel_spec)


def test_replay_step_restarts_from_a_fresh_state_after_the_returned_one_is_dropped():
    # A new state may be allocated where a dropped one lived (same id()): it must not be
    # mistaken for the state the last call returned.
    layer = stateful_stream_model().eval()
    x = random_sequence(2, 6, 4, random_mask=True)
    step = sl.replay_step(layer)
    for _ in range(3):
        state = layer.get_initial_state(2, x.channel_spec)
        y, state = step(x[:, :1], state)
        y, state = step(x[:, 1:2], state)
        del state
        fresh = layer.get_initial_state(2, x.channel_spec)
        y, _ = step(x[:, 2:3], fresh)
        assert_sequences_close(y, layer.step(x[:, 2:3], layer.get_initial_state(2, x.channel_spec))[0], rtol=0, atol=0)


def test_streamer_replayed_keeps_its_state_across_chunks_that_complete_no_block():
    # Chunks shorter than the block: most pushes step nothing. The state stays the object the
    # replayed step returned, so no step goes back through validation and new captures.
    layer = sl.Serial(sl.Dense(4, 4), sl.Downsample1D(4), sl.Delay(1, delay_layer_output=False)).eval()
    x = random_sequence(2, 24, 4, random_mask=True)
    eager, replayed = sl.Streamer(layer, 2, x.channel_spec), sl.Streamer(layer, 2, x.channel_spec, replay=True)
    outs = []
    for streamer in (eager, replayed):
        parts = []
        for t in range(24):
            before = streamer.state
            parts.append(streamer.push(x[:, t : t + 1]))
            if streamer is replayed and (t + 1) % 4:  # no whole block yet
                assert streamer.state is before
        outs.append(sl.Sequence.concatenate_sequences([*parts, streamer.flush()]))
    assert_sequences_close(outs[1], outs[0], rtol=0, atol=0)
