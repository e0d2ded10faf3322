"""The plugin registry: lazy, ordered, isolated loading; lookup; CLI; config round trips."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from support_layers import CausalFIR, Decimate

import sl
import sl.registry as registry
from sl import cli
from sl.testing import check_example

_ENV_KEYS = ("SL_STRICT_PLUGINS", "SL_PLUGINS", "SL_DISABLE_PLUGIN_AUTOLOAD")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    registry.reset()
    yield
    registry.reset()


class Widget(CausalFIR):
    pass


class OtherWidget(Decimate):
    pass


class Gadget(CausalFIR):
    pass


def make_plugin(*, add=(), examples=(), fail_in_hook: BaseException | None = None, fail_examples=None):
    """An in-process plugin object; ``add`` holds ``(cls, name, aliases)`` triples."""

    class Plugin:
        @registry.hookimpl
        def sl_register_layers(self, registry):
            for cls, name, aliases in add:
                registry.add(cls, name=name, aliases=aliases)
            if fail_in_hook is not None:
                raise fail_in_hook

        @registry.hookimpl
        def sl_example_layers(self):
            if fail_examples is not None:
                raise fail_examples
            return list(examples)

    return Plugin()


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    full.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, timeout=300, check=False)


# -- lazy loading ------------------------------------------------------------------------------


def test_import_sl_loads_no_plugin():
    code = (
        "import sys, sl\n"
        "assert not sl.registry._state.discovered\n"
        "assert 'sl.plugin' not in sys.modules, sorted(sys.modules)\n"
        "assert not [m for m in sys.modules if m.startswith('sl_')], sorted(sys.modules)\n"
        "from sl import Dense, Serial\n"  # static names: no registry involved
        "assert Serial is sl.combinators.Serial and not sl.registry._state.discovered\n"
        "sl.registry.get('Serial')\n"
        "assert sl.registry._state.discovered and 'sl.plugin' in sys.modules\n"
        "print('ok')\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_loading_happens_once():
    registry.get("Serial")
    pm = registry._state.pm
    registry.get("Serial")
    registry.plugins()
    assert registry._state.pm is pm


# -- order, allow-list, disable, isolation with fake entry points ----------------------------------


def _fake_entry_points(monkeypatch, plugins: dict[str, object]) -> None:
    """Installs modules ``_slfake_<name>`` and entry points for them, in scrambled order."""
    eps = []
    for name, obj in plugins.items():
        module_name = f"_slfake_{name}"
        if obj is not None:
            monkeypatch.setitem(sys.modules, module_name, obj)
        eps.append(importlib.metadata.EntryPoint(name, module_name, registry.ENTRY_POINT_GROUP))
    eps.append(importlib.metadata.EntryPoint("core", "sl.plugin", registry.ENTRY_POINT_GROUP))
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == registry.ENTRY_POINT_GROUP:
            return list(reversed(eps))
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def _module(name: str, plugin: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.sl_register_layers = plugin.sl_register_layers  # type: ignore[attr-defined]
    mod.sl_example_layers = plugin.sl_example_layers  # type: ignore[attr-defined]
    return mod


def test_order_is_first_party_then_sorted(monkeypatch):
    names = ["zeta", "alpha", "conv", "dsp", "mid"]
    _fake_entry_points(monkeypatch, {n: _module(n, make_plugin()) for n in names})
    assert [p.name for p in registry.plugins()] == ["core", "dsp", "conv", "alpha", "mid", "zeta"]


def test_import_failure_is_isolated(monkeypatch):
    # A module name that is not in sys.modules and cannot be imported.
    _fake_entry_points(
        monkeypatch,
        {"good": _module("good", make_plugin(add=[(Widget, None, ())])), "bad": None},
    )
    monkeypatch.setitem(sys.modules, "_slfake_bad", None)  # import raises ImportError
    with pytest.warns(RuntimeWarning, match="'bad' failed to load"):
        infos = {p.name: p for p in registry.plugins()}
    assert "ModuleNotFoundError" in infos["bad"].error
    assert infos["good"].ok and infos["good"].layers == ["Widget"]
    assert registry.get("Widget") is Widget
    assert "bad" not in registry.plugin_names()
    with pytest.raises(KeyError, match="failed to load"):
        registry.get("bad:Thing")
    with pytest.raises(KeyError, match="Plugins that failed to load: bad"):
        registry.get("Nonexistent")


def test_strict_env_raises_on_import_failure(monkeypatch):
    _fake_entry_points(monkeypatch, {"bad": None})
    monkeypatch.setitem(sys.modules, "_slfake_bad", None)
    monkeypatch.setenv("SL_STRICT_PLUGINS", "1")
    with pytest.raises(registry.PluginError, match="'bad' failed to load"):
        registry.get("Serial")
    with pytest.raises(registry.PluginError):  # not cached half-loaded
        registry.get("Serial")
    monkeypatch.setenv("SL_STRICT_PLUGINS", "0")
    with pytest.warns(RuntimeWarning):
        assert registry.get("Serial") is sl.combinators.Serial


def test_disable_autoload_and_allow_list(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        {
            "a": _module("a", make_plugin(add=[(Widget, None, ())])),
            "b": _module("b", make_plugin(add=[(Gadget, None, ())])),
            "c": _module("c", make_plugin(add=[(OtherWidget, None, ())])),
        },
    )
    monkeypatch.setenv("SL_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert registry.plugin_names() == ["core"]
    assert registry.get("Serial") is sl.combinators.Serial
    registry.reset()
    monkeypatch.delenv("SL_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("SL_PLUGINS", " c, a ")
    assert registry.plugin_names() == ["core", "a", "c"]
    with pytest.raises(KeyError):
        registry.get("Gadget")
    registry.reset()
    monkeypatch.delenv("SL_PLUGINS")
    assert registry.plugin_names() == ["core", "a", "b", "c"]


# -- isolation of hook failures ------------------------------------------------------------------


def test_failing_hook_leaves_no_half_registered_layers():
    with pytest.warns(RuntimeWarning, match="'half' failed to load"):
        info = registry.add_plugin(make_plugin(add=[(Widget, None, ("W",))], fail_in_hook=RuntimeError("boom")), "half")
    assert not info.ok and "RuntimeError: boom" in info.error and info.layers == []
    for name in ("Widget", "W", "half:Widget"):
        with pytest.raises(KeyError):
            registry.get(name)
    assert registry.name_of(Widget).endswith("test_registry:Widget")  # an import path
    registry.add_plugin(make_plugin(add=[(Gadget, None, ())]), "ok")
    assert registry.get("Gadget") is Gadget
    assert registry.examples("half") == []


def test_strict_env_raises_on_hook_failure(monkeypatch):
    registry.plugins()
    monkeypatch.setenv("SL_STRICT_PLUGINS", "1")
    with pytest.raises(registry.PluginError, match="boom"):
        registry.add_plugin(make_plugin(add=[(Widget, None, ())], fail_in_hook=ValueError("boom")), "strict")
    assert "strict" not in {p.name for p in registry.plugins()}
    with pytest.raises(KeyError):
        registry.get("Widget")


@pytest.mark.parametrize(
    "add, match",
    [
        ([(int, None, ())], "not a SequenceLayer subclass"),
        ([(Widget, "not a name", ())], "not a Python identifier"),
        ([(Widget, "X", ()), (Gadget, "X", ())], "registers 'X' twice"),
    ],
)
def test_bad_registrations_are_plugin_failures(add, match):
    with pytest.warns(RuntimeWarning, match=match):
        info = registry.add_plugin(make_plugin(add=add), "bad")
    assert match in info.error
    assert registry.plugin_layers("bad") == {}


def test_add_outside_hook_and_duplicate_plugin():
    with pytest.raises(RuntimeError, match="sl_register_layers"):
        registry.LayerRegistry().add(Widget)
    with pytest.raises(ValueError, match="already loaded"):
        registry.add_plugin(make_plugin(), "core")


def test_hookimpl_validation_error_is_isolated():
    class BadSignature:
        @registry.hookimpl
        def sl_register_layers(self, wrong_argument):
            pass

    with pytest.warns(RuntimeWarning, match="'badsig' failed to load"):
        info = registry.add_plugin(BadSignature(), "badsig")
    assert not info.ok
    assert registry.get("Serial") is sl.combinators.Serial


# -- lookup ----------------------------------------------------------------------------------------


def test_qualified_bare_alias_and_ambiguity():
    registry.add_plugin(make_plugin(add=[(Widget, None, ("Thing",)), (Gadget, None, ())]), "p1")
    registry.add_plugin(make_plugin(add=[(OtherWidget, "Widget", ())]), "p2")
    assert registry.get("p1:Widget") is Widget
    assert registry.get("p2:Widget") is OtherWidget
    assert registry.get("Thing") is Widget and registry.get("p1:Thing") is Widget
    assert registry.get("Gadget") is Gadget
    with pytest.raises(KeyError, match=r"'Widget' is ambiguous.*p1:Widget, p2:Widget"):
        registry.get("Widget")
    with pytest.raises(KeyError, match="No layer 'p1:Nope'"):
        registry.get("p1:Nope")
    with pytest.raises(KeyError, match="Did you mean Gadget"):
        registry.get("Gadgte")
    # Config names: bare when unique, qualified when ambiguous.
    assert registry.name_of(Gadget) == "Gadget"
    assert registry.name_of(Widget) == "p1:Widget"
    assert registry.name_of(OtherWidget) == "p2:Widget"
    assert registry.all_layers()["p1:Thing"] is Widget
    assert registry.plugin_layers("p2") == {"Widget": OtherWidget}
    assert registry.primary_names()[Widget] == "p1:Widget"


def test_module_getattr_and_dir():
    registry.add_plugin(make_plugin(add=[(Widget, None, ()), (Gadget, None, ())]), "p1")
    registry.add_plugin(make_plugin(add=[(OtherWidget, "Widget", ())]), "p2")
    assert sl.Gadget is Gadget
    assert sl.p1.Widget is Widget and sl.p2.Widget is OtherWidget
    assert sl.core.Serial is sl.combinators.Serial and sl.Sequential is sl.combinators.Serial
    with pytest.raises(AttributeError, match="ambiguous"):
        sl.Widget  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchLayer'"):
        sl.NoSuchLayer  # noqa: B018
    with pytest.raises(AttributeError):
        sl.p1.NoSuchLayer  # noqa: B018
    names = dir(sl)
    assert {"Gadget", "Widget", "Serial", "p1", "p2", "core", "Sequence", "registry"} <= set(names)
    assert set(dir(sl.p1)) == {"Widget", "Gadget"}
    assert "p1" in repr(sl.p1)
    assert not hasattr(sl, "__wrapped__")


def test_unregistered_layer_config_uses_import_path():
    cfg = Widget(2).get_config()
    assert cfg["type"] == f"{__name__}:Widget" or cfg["type"].endswith("test_registry:Widget")
    with pytest.raises(ValueError, match="allow_import=True"):
        sl.from_config(cfg)
    assert type(sl.from_config(cfg, allow_import=True)) is Widget


def test_examples_filter_and_failed_example_hook():
    ex = sl.LayerExample(Widget(2), (3,))
    registry.add_plugin(make_plugin(add=[(Widget, None, ())], examples=[ex]), "p1")
    registry.add_plugin(make_plugin(fail_examples=RuntimeError("no examples")), "p2")
    assert registry.examples("p1") == [("p1", ex)]
    from sl.testing import check_plugin

    (result,) = check_plugin("p2")
    assert not result.ok and "no examples" in result.error


def test_examples_are_built_on_a_seeded_rng_whatever_ran_before():
    """An example's parameters must not depend on the global RNG at collection time (which
    depends on the test modules collected before it), and building them leaves it untouched."""

    def built(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(seed)
        params = [
            p.detach().clone()
            for _, ex in registry.examples("core")
            for p in ex.layer.parameters()
            if not isinstance(p, torch.nn.parameter.UninitializedParameter)  # lazy: built at the first call
        ]
        return params, torch.rand(3)

    first, after_first = built(1)
    second, after_second = built(2)
    assert first and len(first) == len(second)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    torch.manual_seed(2)
    assert torch.equal(after_second, torch.rand(3)), "building the examples consumed the caller's RNG"
    assert not torch.equal(after_first, after_second)


def test_every_registered_layer_resolves():
    for qualified, cls in registry.all_layers().items():
        assert registry.get(qualified) is cls
        assert issubclass(cls, sl.SequenceLayer)


# -- CLI -------------------------------------------------------------------------------------------


def _good_and_bad_plugin():
    class Broken(CausalFIR):
        def step(self, x, state, *, training=None, constants=None):
            y, state = super().step(x, state, training=training, constants=constants)
            return y.apply_values(torch.mul, 2.0), state

    examples = [
        sl.LayerExample(Widget(3), (2,), name="good"),
        sl.LayerExample(Broken(3), (2,), name="bad", config_round_trip=False),
    ]
    return make_plugin(add=[(Widget, None, ())], examples=examples)


def test_cli_plugins(capsys):
    registry.add_plugin(make_plugin(add=[(Widget, None, ())]), "mine")
    with pytest.warns(RuntimeWarning):
        registry.add_plugin(make_plugin(fail_in_hook=RuntimeError("kaputt")), "kaputt")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["plugin", "distribution", "version", "status"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert "sl-core" in rows["core"] and " ok (" in rows["core"]
    assert "ok (1 layers, 1 names)" in rows["mine"]
    assert "error: RuntimeError: kaputt" in rows["kaputt"]


def test_cli_layers(capsys):
    examples = [sl.LayerExample(Decimate(2), (1,)), sl.LayerExample(OtherWidget(3), (1,))]
    registry.add_plugin(make_plugin(add=[(Widget, None, ("Wid",)), (OtherWidget, None, ())], examples=examples), "mine")
    assert cli.main(["layers", "--plugin", "mine"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["layer", "plugin", "steppable"]
    rows = {line.split()[0]: line.split() for line in out[2:-1]}
    assert rows["Widget"][1:] == ["mine", "-", "-", "-", "-"]  # no example instance
    assert rows["OtherWidget"][1:] == ["mine", "yes", "3", "1/3", "0/0"]
    assert rows["Wid"][1:4] == ["(alias", "of", "Widget)"]
    assert cli.main(["layers", "--plugin", "nope"]) == 2


def test_cli_layers_varies(capsys):
    examples = [sl.LayerExample(OtherWidget(2), (1,)), sl.LayerExample(OtherWidget(3), (1,))]
    registry.add_plugin(make_plugin(add=[(OtherWidget, None, ())], examples=examples), "mine")
    assert cli.main(["layers"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("OtherWidget"))
    assert row.split()[1:] == ["mine", "yes", "varies", "varies", "0/0"]
    assert "Serial" in out


def test_cli_check(capsys):
    registry.add_plugin(_good_and_bad_plugin(), "mixed")
    assert cli.main(["check", "mixed"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "PASSED mixed:good"
    assert out[1].startswith("FAILED mixed:bad: ") and "[step]" in out[1]
    assert out[-1] == "1 passed, 1 failed"


def test_cli_check_is_strict(capsys):
    # No examples at all is a failure, not a silent pass.
    registry.add_plugin(make_plugin(add=[(Widget, None, ())]), "empty")
    assert cli.main(["check", "empty"]) == 1
    assert "FAILED empty:sl_example_layers: the plugin provides no example layers" in capsys.readouterr().out
    # Duplicate example names are a failure.
    dupes = [sl.LayerExample(Widget(2), (3,), name="same"), sl.LayerExample(Widget(3), (3,), name="same")]
    registry.add_plugin(make_plugin(add=[(Gadget, None, ())], examples=dupes), "dupes")
    assert cli.main(["check", "dupes"]) == 1
    assert "2 examples share the name 'same'" in capsys.readouterr().out
    # Examples declared with contiguous masks also run with random non-contiguous masks.
    assert cli.main(["check", "dupes", "--lenient"]) == 0
    capsys.readouterr()


def test_cli_check_compile(capsys):
    registry.add_plugin(make_plugin(add=[(Widget, None, ())], examples=[sl.LayerExample(Widget(2), (3,))]), "c")
    assert cli.main(["check", "c", "--compile"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 passed, 0 failed"


def test_strict_kit_runs_random_masks():
    class PrefixOnly(CausalFIR):
        """Correct only when every mask is a prefix: it ignores the mask and masks the output."""

        def layer(self, x, *, training, constants=None):
            t = x.values.shape[1]
            padded = x.unmask().pad_time(self.taps - 1, 0, valid=False).values  # not masked first
            return sl.Sequence(self._fir(padded, t), x.mask).mask_invalid()

    from sl.testing import check_plugin

    registry.add_plugin(make_plugin(add=[(PrefixOnly, None, ())], examples=[sl.LayerExample(PrefixOnly(2), (3,))]), "p")
    assert [r.ok for r in check_plugin("p", strict=False)] == [True]  # contiguous masks hide the bug
    (result,) = [r for r in check_plugin("p") if r.label == "PrefixOnly"]
    assert not result.ok


def test_cli_check_unknown_and_failed_plugin(capsys):
    assert cli.main(["check", "nope"]) == 2
    assert "no sl plugin named 'nope'" in capsys.readouterr().err
    with pytest.warns(RuntimeWarning):
        registry.add_plugin(make_plugin(fail_in_hook=RuntimeError("kaputt")), "kaputt")
    assert cli.main(["check", "kaputt"]) == 2
    assert "kaputt" in capsys.readouterr().err


def test_python_m_sl():
    r = _run("-m", "sl", "layers", SL_DISABLE_PLUGIN_AUTOLOAD="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[:2] == ["layer", "plugin"]
    assert any(line.split()[:2] == ["Serial", "core"] for line in r.stdout.splitlines())
    r = _run("-m", "sl", "plugins", SL_DISABLE_PLUGIN_AUTOLOAD="1")
    assert r.returncode == 0 and r.stdout.splitlines()[2].split()[0] == "core"
    r = _run("-m", "sl")
    assert r.returncode == 2 and "usage" in r.stderr


def test_console_script_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["sl"]
    module, attr = target.split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is cli.main


def test_check_example_on_support_layers():
    check_example(sl.LayerExample(CausalFIR(3), (2,), config_round_trip=False))


def test_core_plugin_loads_cleanly(monkeypatch):
    monkeypatch.setenv("SL_DISABLE_PLUGIN_AUTOLOAD", "1")  # only sl-core itself
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        core = registry.plugins()[0]
    assert core.name == "core" and core.ok, core.error
    assert {"Serial", "Sequential"} <= set(core.layers)
