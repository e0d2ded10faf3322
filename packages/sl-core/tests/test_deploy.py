"""sl.deploy: compiled steps, the flat-state streaming module, torch.export and ONNX."""

from __future__ import annotations

import warnings

import pytest
import torch
from support_layers import NonSteppable, stateful_stream_model

import sl
from sl.testing import assert_sequences_close, random_sequence


def test_compile_step_matches_eager():
    layer = stateful_stream_model().eval()
    x = random_sequence(2, 12, 4, random_mask=True)
    step = sl.compile_step(layer, backend="eager")
    state = eager = layer.get_initial_state(2, x.channel_spec)
    for t in range(12):
        y, state = step(x[:, t : t + 1], state)
        y_eager, eager = layer.step(x[:, t : t + 1], eager)
        assert_sequences_close(y, y_eager, rtol=0, atol=0)


def test_streaming_module_names_and_sizes_its_state():
    module = sl.StreamingModule(stateful_stream_model(), 2, ((4,), torch.float32))
    assert module.state_names == ["state_1_values", "state_1_mask", "state_2", "state_3"]
    # Delay(2): values [2, 2, 4] float32 + mask [2, 2] bool; timing counter [2, 1] int32; countdown [2] int32.
    assert module.state_bytes(per_stream=False) == 2 * 2 * 4 * 4 + 2 * 2 + 2 * 4 + 2 * 4
    assert module.state_bytes() == module.state_bytes(per_stream=False) // 2
    state = module.unflatten_state(module.initial_state())
    assert isinstance(state[1], sl.Sequence)
    assert [t.shape for t in module.flatten_state(state)] == [t.shape for t in module.initial_state()]
    with pytest.raises(ValueError, match="expected 4 state tensors"):
        module.unflatten_state(module.initial_state()[:2])


def test_exported_stream_equals_eager():
    layer = stateful_stream_model().eval()
    program, module = sl.export_step(layer, 2, ((4,), torch.float32), block=3)
    x = random_sequence(2, 30, 4, random_mask=True)
    run = program.module()
    flat, state = module.initial_state(), layer.get_initial_state(2, x.channel_spec)
    with torch.no_grad():
        for t in range(0, 30, 3):
            values, mask, *flat = run(x.values[:, t : t + 3], x.mask[:, t : t + 3], *flat)
            y, state = layer.step(x[:, t : t + 3], state)
            assert torch.equal(mask, y.mask)
            torch.testing.assert_close(values, y.values, rtol=1e-6, atol=1e-6)


def test_exporting_what_cannot_stream_is_a_clear_error():
    with pytest.raises(ValueError, match=r"sl.export_step: NonSteppable does not support step\(\)"):
        sl.export_step(NonSteppable(), 1, ((3,), torch.float32))
    with pytest.raises(ValueError, match="StreamingModule: Bidirectional does not support step"):
        sl.StreamingModule(sl.Bidirectional(sl.Identity(), sl.Identity()), 1, ((3,), torch.float32))
    with pytest.raises(ValueError, match=r"block must be a positive multiple of Downsample1D.block_size=2; got 3"):
        sl.export_step(sl.Downsample1D(2), 1, ((3,), torch.float32), block=3)
    with pytest.raises(ValueError, match=r"sl\.compile_step: Bidirectional does not support step"):
        sl.compile_step(sl.Bidirectional(sl.Identity(), sl.Identity()))


def test_onnx_round_trip(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = stateful_stream_model().eval()
    path = tmp_path / "model.onnx"
    module = sl.export_onnx(layer, 2, ((4,), torch.float32), str(path))
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["values", "mask", *module.state_names]
    assert [o.name for o in session.get_outputs()][:2] == ["values_out", "mask_out"]


# -- compile_step(frozen=True): tensor guards only, sl's own checks -----------------------------


def test_frozen_compile_step_matches_eager():
    layer = stateful_stream_model().eval()
    x = random_sequence(2, 12, 4, random_mask=True)
    step = sl.compile_step(layer, backend="eager", frozen=True)
    state = eager = layer.get_initial_state(2, x.channel_spec)
    for t in range(0, 12, 2):
        y, state = step(x[:, t : t + 2], state)
        y_eager, eager = layer.step(x[:, t : t + 2], eager)
        assert_sequences_close(y, y_eager, rtol=0, atol=0)


def test_frozen_compile_step_masks_any_input_type():
    # Traced first with a MaskedSequence (MaskInvalid is a no-op on one), then fed a plain Sequence
    # with junk where it is invalid: the graph must still zero it (sl feeds every input as a plain
    # Sequence; dropping the type guards would otherwise reuse the no-op graph).
    layer = sl.Serial(sl.MaskInvalid()).eval()
    step = sl.compile_step(layer, backend="eager", frozen=True)
    state = layer.get_initial_state(1, ((3,), torch.float32))
    masked = sl.Sequence.from_values(torch.ones(1, 4, 3))
    y, state = step(masked, state)
    junk = sl.Sequence(torch.full((1, 4, 3), 7.0), torch.tensor([[True, False, True, False]]))
    y, state = step(junk, state)
    assert torch.equal(y.values[0, :, 0], torch.tensor([7.0, 0.0, 7.0, 0.0]))


def test_frozen_compile_steps_of_two_layers_stay_apart():
    # Same shapes, same code, different configuration: without the layer guards, the second
    # compile_step must not reuse the first one's graph. (Dynamo's caches start empty: past its
    # recompile limit, left by earlier tests, it would run the step eagerly and hide a collision.)
    torch._dynamo.reset()
    x = sl.Sequence.from_values(torch.randn(1, 2, 3, 4))  # every step valid: the softmax axes differ there
    a, b = sl.Serial(sl.Softmax(axis=-1)).eval(), sl.Serial(sl.Softmax(axis=-2)).eval()
    step_a = sl.compile_step(a, backend="eager", frozen=True)
    step_b = sl.compile_step(b, backend="eager", frozen=True)
    state = a.get_initial_state(1, x.channel_spec)
    assert_sequences_close(step_a(x, state)[0], a.step(x, state)[0], rtol=0, atol=0)
    assert_sequences_close(step_b(x, state)[0], b.step(x, state)[0], rtol=0, atol=0)


def test_frozen_compile_step_checks_input_and_state():
    layer = stateful_stream_model().eval()
    step = sl.compile_step(layer, backend="eager", frozen=True)
    x = random_sequence(2, 1, 4)
    with pytest.raises(TypeError, match=r"sl.compile_step\(Serial\) expects an sl.Sequence input; got Tensor"):
        step(x.values, layer.get_initial_state(2, x.channel_spec))
    with pytest.raises(sl.StateMismatchError, match=r"Serial\.step: the state does not match this input"):
        step(x, layer.get_initial_state(3, x.channel_spec))
    with pytest.raises(sl.StateMismatchError, match="its structure is"):
        step(x, ())


def test_streamer_compiled_equals_eager_and_refuses_training():
    layer = sl.Serial(sl.Dense(4, 4), sl.Delay(2, delay_layer_output=False), sl.Lookahead(1)).eval()
    x = random_sequence(2, 12, 4, random_mask=True)
    eager, compiled = sl.Streamer(layer, 2, x.channel_spec), sl.Streamer(layer, 2, x.channel_spec, compile=True)
    outs = []
    for streamer in (eager, compiled):
        parts = [streamer.push(x[:, t : t + 3]) for t in range(0, 12, 3)]
        outs.append(sl.Sequence.concatenate_sequences([*parts, streamer.flush()]))
    assert_sequences_close(outs[0], outs[1], rtol=0, atol=0)
    assert_sequences_close(outs[1], layer.layer(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="compile=True runs the compiled eval step"):
        sl.Streamer(layer, 2, x.channel_spec, compile=True, training=True)
    with pytest.raises(ValueError, match="compile=True runs the compiled eval step"):
        sl.Streamer(layer, 2, x.channel_spec, compile=True, grad=True)


class _CountingInPython(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    """Adds how many steps came before, counted in a Python int: fine eagerly, not frozen."""

    def layer(self, x, *, training=None, constants=None):
        return x.apply_values(lambda v: v + torch.arange(v.shape[1], dtype=v.dtype)[None, :, None])

    def get_initial_state(self, batch_size, input_spec, *, training=None, constants=None):
        return (0,)

    def step(self, x, state, *, training=None, constants=None):
        t = x.values.shape[1]
        offset = torch.arange(state[0], state[0] + t, dtype=x.values.dtype)[None, :, None]
        return x.apply_values(lambda v: v + offset), (state[0] + t,)


def test_frozen_compile_step_refuses_python_values_in_the_state():
    layer = _CountingInPython().eval()
    x = random_sequence(1, 1, 2)
    step = sl.compile_step(layer, backend="eager", frozen=True)
    with pytest.raises(TypeError, match=r"_CountingInPython's state holds a int at \[0\]; a frozen graph"):
        step(x, layer.get_initial_state(1, x.channel_spec))
    with pytest.raises(
        TypeError, match=r"StreamingModule: _CountingInPython's state has a non-tensor leaf at \[0\] \(int\)"
    ):
        sl.StreamingModule(layer, 1, x.channel_spec)
    plain = sl.compile_step(layer, backend="eager")  # guarded: the int is checked on every call
    state = layer.get_initial_state(1, x.channel_spec)
    for t in range(3):
        y, state = plain(x, state)
        torch.testing.assert_close(y.values, x.values + t)


def test_streamer_compiled_past_the_recompile_limit_steps_eagerly_with_a_warning():
    # Chunks of many lengths give a block length each (block_size 1); torch.compile(fullgraph=True)
    # raises past its recompile limit, and the Streamer promises to step eagerly instead.
    torch._dynamo.reset()
    layer = sl.Serial(sl.Dense(4, 4), sl.Delay(2, delay_layer_output=False)).eval()
    x = random_sequence(2, 21, 4, random_mask=True)
    eager = sl.Streamer(layer, 2, x.channel_spec)
    with torch._dynamo.config.patch(recompile_limit=2):
        compiled = sl.Streamer(layer, 2, x.channel_spec, compile=True)
        outs = []
        for streamer in (eager, compiled):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                parts, t = [], 0
                for n in (1, 2, 3, 4, 5, 6):
                    parts.append(streamer.push(x[:, t : t + n]))
                    t += n
                outs.append(sl.Sequence.concatenate_sequences([*parts, streamer.flush()]))
            limit = [w for w in caught if "recompile limit" in str(w.message)]
            assert len(limit) == (1 if streamer is compiled else 0)
    assert "sl.compile_step(Serial)" in str(limit[0].message)
    assert_sequences_close(outs[0], outs[1], rtol=0, atol=0)


def test_streamer_compiled_hands_the_graph_contiguous_blocks():
    # Blocks cut from a chunk are views with the chunk's strides; the graph gets them contiguous,
    # so chunks of one length that is not a multiple of the block compile few graphs.
    layer = sl.Serial(sl.Dense(4, 4), sl.Downsample1D(2)).eval()
    seen = []
    streamer = sl.Streamer(layer, 2, ((4,), torch.float32), compile=True)

    def spy(x, state):
        seen.append((x.values.is_contiguous(), x.mask.is_contiguous()))
        return layer.step(x, state, training=False)

    streamer._step = spy
    x = random_sequence(2, 15, 4)
    for t in range(0, 15, 3):
        streamer.push(x[:, t : t + 3])
    assert seen and all(v and m for v, m in seen)
