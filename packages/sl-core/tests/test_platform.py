"""The platform plugin layers build on: one check per public call, state validation, spec
arguments, static names, clear errors for misuse (issue: sl-core as a platform)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import sl
import sl.layer as layer_module
from sl.testing import random_sequence


def test_checks_run_once_per_public_call(monkeypatch):
    calls = {"declared": 0, "state": 0}
    declared, check_state = layer_module._declared, layer_module._check_state

    def counting_declared(*args, **kwargs):
        calls["declared"] += 1
        return declared(*args, **kwargs)

    def counting_state(*args, **kwargs):
        calls["state"] += 1
        return check_state(*args, **kwargs)

    monkeypatch.setattr(layer_module, "_declared", counting_declared)
    monkeypatch.setattr(layer_module, "_check_state", counting_state)
    model = sl.Serial(sl.Dense(4, 4), sl.Dense(4, 4), sl.Dense(4, 4))
    x = random_sequence(2, 1, 4)
    state = model.get_initial_state(2, x.channel_spec)
    _, state = model.step(x, state)
    assert calls == {"declared": 1, "state": 1}  # once for the Serial, not once per Dense as before
    model.layer(x)
    assert calls["declared"] == 2
    # The declared shapes are computed once per input spec, then only compared.
    shapes = []
    monkeypatch.setattr(sl.Dense, "get_output_shape", lambda self, s, constants=None: shapes.append(s) or (*s[:-1], 4))
    for _ in range(3):
        _y, state = model.step(x, state)
    assert shapes == []
    # A nested layer called on its own is checked as usual.
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"Dense expected input channel shape \(\.\.\., 4\); got \(3,\)"):
        model[0].layer(random_sequence(2, 1, 3))


def test_check_caches_follow_edits():
    model = sl.Serial(sl.Dense(4, 4))
    x = random_sequence(2, 3, 4)
    assert model.layer(x).channel_shape == (4,)
    model.layers.append(sl.Dense(4, 2))  # an in-place edit of a child container
    model.invalidate_caches()
    assert model.layer(x).channel_shape == (2,)
    model.layers = torch.nn.ModuleList([sl.Dense(4, 3)])  # assignment forgets by itself
    assert model.layer(x).channel_shape == (3,)


def test_implementations_receive_a_bool_training():
    seen = []

    class Probe(sl.StatelessPointwise):
        def layer(self, x, *, training, constants=None):
            seen.append(training)
            return x

        def get_output_dtype(self, input_dtype, *, constants=None):
            return input_dtype

    probe = Probe()
    model = sl.Serial(probe)
    x = random_sequence(1, 2, 3)
    model.eval().layer(x)
    model.train().layer(x)
    model.step(x, model.get_initial_state(1, x.channel_spec))
    assert seen == [False, True, True]


@pytest.mark.parametrize(
    "make_state, match",
    [
        (
            lambda: sl.Delay(5).get_initial_state(2, sl.ChannelSpec((3,), torch.float32)),
            r"shape \[2, 5, 3\].*\[2, 2, 3\]",
        ),
        (
            lambda: sl.Delay(2).get_initial_state(3, sl.ChannelSpec((3,), torch.float32)),
            r"shape \[3, 2, 3\].*\[2, 2, 3\]",
        ),
        (lambda: sl.Delay(2).get_initial_state(2, sl.ChannelSpec((3,), torch.float64)), "dtype torch.float64"),
        (lambda: (), r"its structure is \(\), but get_initial_state gives Sequence"),
        (lambda: torch.zeros(2, 2, 3), "its structure is Tensor"),
    ],
    ids=["other length", "other batch", "other dtype", "empty", "tensor"],
)
def test_a_wrong_state_names_the_layer(make_state, match):
    layer = sl.Delay(2)
    x = random_sequence(2, 4, 3)
    with pytest.raises(sl.StateMismatchError, match=r"Delay\.step: the state does not match.*" + match):
        layer.step(x, make_state())


def test_state_checks_follow_a_stream_and_its_batch():
    layer = sl.Serial(sl.Delay(2), sl.Dense(3, 3))
    x2, x3 = random_sequence(2, 4, 3), random_sequence(3, 4, 3)
    state = layer.get_initial_state(2, x2.channel_spec)
    for _ in range(3):
        _, state = layer.step(x2, state)  # the state a step returned is accepted as is
    with pytest.raises(sl.StateMismatchError, match=r"batch_size=3.*\[2, 2, 3\].*\[3, 2, 3\]"):
        layer.step(x3, state)
    # Moving the layer drops its cached expectations, so states built after .to() are accepted.
    layer = layer.to(torch.float64)
    state = layer.get_initial_state(2, sl.ChannelSpec((3,), torch.float64))
    layer.step(x2.to(torch.float64), state)


class _Tail(sl.PreservesType, sl.PreservesShape, sl.SequenceLayer):
    """Keeps the last input step and returns it at the end of the stream (a layer with a flush)."""

    def get_initial_state(self, batch_size, input_spec, *, training, constants=None):  # type: ignore[no-untyped-def]
        return sl.Sequence(torch.zeros(batch_size, 1, *input_spec.shape), torch.zeros(batch_size, 1, dtype=torch.bool))

    def layer(self, x, *, training, constants=None):  # type: ignore[no-untyped-def]
        return x

    def step(self, x, state, *, training, constants=None):  # type: ignore[no-untyped-def]
        return x, x[:, -1:] if x.values.shape[1] else state

    def flush(self, state, *, training, constants=None):  # type: ignore[no-untyped-def]
        return state


def test_flush_checks_its_state_against_the_stream():
    """flush gets no input: the layer checks the state against the stream it last started or
    stepped, so another stream's state is an error, not a tail of the wrong size."""
    layer = sl.Serial(sl.Delay(2), _Tail())
    x = random_sequence(2, 4, 3)
    state = layer.get_initial_state(2, x.channel_spec)
    _, state = layer.step(x, state)
    assert layer.flush(state).values.shape == (2, 1, 3)
    other = sl.Serial(sl.Delay(2), _Tail()).get_initial_state(3, x.channel_spec)
    with pytest.raises(sl.StateMismatchError, match=r"Serial\.flush: .*last started or stepped \(batch_size=2"):
        layer.flush(other)
    with pytest.raises(sl.StateMismatchError, match=r"Serial\.flush: .*its structure is NoneType"):
        layer.flush(None)
    # a fresh layer's flush (nothing started here: a state saved elsewhere) is taken as it is
    assert sl.Serial(sl.Delay(2), _Tail()).flush(state).values.shape == (2, 1, 3)


def test_zero_length_steps_work():
    for layer in (
        sl.Lookahead(2),
        sl.Delay(2),
        sl.Serial(sl.Lookahead(1), sl.AddTimingSignal()),
        sl.MaskedDense(3, 2, 4),
    ):
        x = random_sequence(2, 0, 3)
        state = layer.get_initial_state(2, x.channel_spec)
        y, _new_state = layer.step(x, state)
        assert y.values.shape[:2] == (2, 0)


@pytest.mark.parametrize(
    "spec", [sl.ChannelSpec((3,), torch.float32), ((3,), torch.float32), [(3,), torch.float32], (3, torch.float32)]
)
def test_get_initial_state_accepts_specs(spec):
    state = sl.Delay(1).get_initial_state(2, spec)
    assert state.values.shape == (2, 1, 3)


@pytest.mark.parametrize("spec", [(3,), torch.float32, "float32", ((3,), "float32"), ((-1,), torch.float32)])
def test_get_initial_state_says_what_it_wants(spec):
    with pytest.raises(
        TypeError, match=r"Delay.get_initial_state expects input_spec as sl.ChannelSpec\(shape, dtype\)"
    ):
        sl.Delay(1).get_initial_state(2, spec)
    with pytest.raises(TypeError, match=r"not a Sequence: pass x\.channel_spec"):
        sl.Delay(1).get_initial_state(2, random_sequence(2, 3, 3))
    with pytest.raises(TypeError, match="non-negative int batch_size"):
        sl.Delay(1).get_initial_state(-1, sl.ChannelSpec((3,), torch.float32))


@pytest.mark.parametrize("layer", [sl.Softmax(), sl.Tanh(), sl.Exp(), sl.Gelu()], ids=lambda m: type(m).__name__)
def test_float_functions_on_integers_name_the_layer(layer):
    x = random_sequence(2, 3, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match=f"{type(layer).__name__} expects floating-point input; got torch.int64"):
        layer.layer(x)
    assert sl.Relu().layer(x).dtype == torch.int64  # max(x, 0) is fine on integers


def test_conditioning_stream_raises_when_its_conditioning_runs_out():
    layer = sl.Conditioning("c", "identity", "add")
    x = random_sequence(1, 6, 2, random_lengths=False)
    c = {"c": random_sequence(1, 4, 2, random_lengths=False)}
    with pytest.raises(ValueError, match="does not match the input"):
        layer.layer(x, constants=c)
    state = layer.get_initial_state(1, x.channel_spec, constants=c)
    _y, state = layer.step(x[:, :4], state, constants=c)
    with pytest.raises(
        ValueError, match=r"Conditioning: the conditioning 'c' has 4 steps, and the stream has run past"
    ):
        layer.step(x[:, 4:], state, constants=c)
    # Steps past the end that are invalid anyway (flush padding) are fine.
    invalid = x[:, 4:].pad_time(0, 0, valid=False)
    layer.step(sl.Sequence(invalid.values, torch.zeros_like(invalid.mask)), state, constants=c)


# -- static names -----------------------------------------------------------------------------------


def test_core_names_are_static_and_dir_has_no_private_names():
    from sl import Dense, Serial, Streamer, random_sequence  # noqa: F401 (importable statically)

    assert sl.Dense is sl.layers.Dense and sl.ReLU is sl.Relu and sl.Sequential is sl.Serial
    names = dir(sl)
    assert not [n for n in names if n.startswith("_") and not n.startswith("__")]
    assert {"Dense", "Serial", "Streamer", "toolkit", "ReLU"} <= set(names)


def test_import_sl_is_static_and_loads_no_plugin():
    code = (
        "import sys, sl\n"
        "from sl import Dense, Conditioning, Repeat\n"
        "assert not [m for m in sys.modules if m.startswith('sl_')], sorted(sys.modules)\n"
        "assert not sl.registry._state.discovered\n"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_layer_modules_do_not_import_the_registry():
    import pathlib

    root = pathlib.Path(sl.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in list((root / "layers").glob("*.py")) + list((root / "combinators").glob("*.py"))
        if "registry" in p.read_text()
    ]
    assert not offenders
