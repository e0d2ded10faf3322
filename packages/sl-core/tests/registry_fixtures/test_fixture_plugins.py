"""Registry behaviour with real installed plugins (tests/fixtures/sl-fixture-*).

Run by the nox session ``registry_fixtures`` after pip-installing the three fixture
packages; skipped everywhere else.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_FIXTURES = (
    "sl-fixture-broken",
    "sl-fixture-clash",
    "sl-fixture-exit",
    "sl-fixture-lookup",
    "sl-fixture-shadow",
    "sl-fixture-thirdparty",
    "sl-fixture-twin-a",
    "sl-fixture-twin-b",
)
pytestmark = pytest.mark.skipif(
    not all(_installed(d) for d in _FIXTURES),
    reason="registry fixture plugins are not installed (see the nox session registry_fixtures)",
)

_ENV_KEYS = ("SL_STRICT_PLUGINS", "SL_PLUGINS", "SL_DISABLE_PLUGIN_AUTOLOAD")


def run_sl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sl", *args], capture_output=True, text=True, env=full, timeout=300, check=False
    )


@pytest.fixture
def registry(monkeypatch):
    import sl.registry as registry

    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    registry.reset()
    yield registry
    registry.reset()


def test_cli_plugins_shows_broken_error_and_others_work():
    r = run_sl("plugins")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[2:]}
    assert "ImportError" in lines["broken"] and "broken on purpose" in lines["broken"]
    assert "sl-fixture-broken" in lines["broken"]
    for name in ("core", "clash", "thirdparty"):
        assert " ok " in lines[name] + " ", lines[name]
    assert "sl-fixture-thirdparty  0.0.1" in lines["thirdparty"]
    assert "RuntimeWarning" in r.stderr and "broken" in r.stderr


def test_cli_check_thirdparty_passes():
    r = run_sl("check", "thirdparty")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "3 passed, 0 failed"
    assert all(line.startswith("PASSED thirdparty:") for line in lines[:-1])


def test_cli_check_broken_plugin_exits_2():
    r = run_sl("check", "broken")
    assert r.returncode == 2
    assert "broken on purpose" in r.stderr


def test_cli_strict_makes_loading_fail():
    r = run_sl("plugins", SL_STRICT_PLUGINS="1")
    assert r.returncode == 2
    assert "broken" in r.stderr and "ImportError" in r.stderr


def test_cli_allow_list_and_disable():
    r = run_sl("plugins", SL_PLUGINS="thirdparty")
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[2:]]
    assert names == ["core", "thirdparty"]
    assert "RuntimeWarning" not in r.stderr
    r = run_sl("layers", SL_DISABLE_PLUGIN_AUTOLOAD="1")
    assert r.returncode == 0, r.stderr
    assert "thirdparty" not in r.stdout and "clash" not in r.stdout and "Serial" in r.stdout


def test_deterministic_order(registry):
    with pytest.warns(RuntimeWarning, match="broken"):
        names = [p.name for p in registry.plugins()]
    # sl-core, then any installed first-party plugin in its fixed order, then the rest by name.
    first = [n for n in registry.FIRST_PARTY if n in names]
    assert names[: len(first)] == first
    assert names[len(first) :] == ["broken", "clash", "exit", "lookup", "shadow", "thirdparty", "twin"]


def test_clash_is_ambiguous_but_qualified_names_work(registry):
    with pytest.warns(RuntimeWarning):
        registry.plugins()
    with pytest.raises(KeyError, match=r"ambiguous.*clash:Gain.*thirdparty:Gain"):
        registry.get("Gain")
    import sl_fixture_clash
    import sl_fixture_thirdparty

    import sl

    assert registry.get("clash:Gain") is sl_fixture_clash.Gain
    assert registry.get("thirdparty:Gain") is sl_fixture_thirdparty.Gain
    assert sl.thirdparty.Gain is sl_fixture_thirdparty.Gain
    assert sl.clash.Gain is sl_fixture_clash.Gain
    with pytest.raises(AttributeError, match="ambiguous"):
        sl.Gain  # noqa: B018
    # Unambiguous names of the third-party plugin resolve bare; aliases too.
    assert sl.LeakyIntegrator is sl_fixture_thirdparty.LeakyIntegrator
    assert registry.get("OnePole") is sl_fixture_thirdparty.LeakyIntegrator
    assert {"thirdparty", "clash", "LeakyIntegrator", "OnePole"} <= set(dir(sl))
    assert "broken" not in dir(sl)
    # Configs of an ambiguous name are qualified, and round-trip.
    cfg = sl_fixture_thirdparty.Gain(2).get_config()
    assert cfg["type"] == "thirdparty:Gain"
    assert type(sl.from_config(cfg)) is sl_fixture_thirdparty.Gain
    with pytest.raises(KeyError, match="failed to load"):
        registry.get("broken:Anything")


def test_strict_in_process(registry, monkeypatch):
    monkeypatch.setenv("SL_STRICT_PLUGINS", "1")
    with pytest.raises(registry.PluginError, match="broken"):
        registry.get("LeakyIntegrator")
    # The failed load is not cached as a half-loaded registry: it raises again.
    with pytest.raises(registry.PluginError):
        registry.plugins()


def test_allow_list_in_process(registry, monkeypatch):
    monkeypatch.setenv("SL_PLUGINS", "clash")
    names = [p.name for p in registry.plugins()]
    assert names == ["core", "clash"]
    import sl_fixture_clash

    assert registry.get("Gain") is sl_fixture_clash.Gain  # no clash without thirdparty
    with pytest.raises(KeyError):
        registry.get("LeakyIntegrator")


# -- a platform one plugin cannot break ----------------------------------------------------------


def run_python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=timeout, check=False
    )


def test_first_party_names_win_over_a_shadowing_plugin(registry):
    with pytest.warns(RuntimeWarning, match=r"'shadow' registers a layer named 'Dense'.*core:Dense.*'shadow:Dense'"):
        registry.plugins()
    import sl_fixture_shadow

    import sl

    assert registry.get("Dense") is sl.Dense
    assert sl.Dense(2, 3).get_config()["type"] == "Dense"
    assert type(sl.from_config({"type": "Dense", "in_features": 2, "features": 3})) is sl.Dense
    assert registry.get("shadow:Dense") is sl_fixture_shadow.Dense
    assert sl.shadow.Dense is sl_fixture_shadow.Dense


def test_two_distributions_claiming_one_entry_point_warn_and_are_deterministic():
    code = "import sl; print(sl.registry.get('twin:TwinA').__module__, [p.distribution for p in sl.registry.plugins() if p.name == 'twin'])"
    runs = [run_python(code) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "sl plugin name 'twin' is claimed by the distributions sl-fixture-twin-a, sl-fixture-twin-b" in r.stderr
    assert runs[0].stdout == runs[1].stdout == "sl_fixture_twin_a ['sl-fixture-twin-a']\n"


def test_lookup_while_importing_does_not_register_half_built():
    # The module looks a layer up before its hooks exist; it must end up fully registered.
    code = (
        "import sl_fixture_lookup, sl\n"
        "assert sl_fixture_lookup.CoreDense is sl.Dense\n"
        "assert sl.registry.get('lookup:Thing') is sl_fixture_lookup.Thing\n"
        "assert [e.label for _, e in sl.registry.examples('lookup')] == ['Thing']\n"
        "print('ok')"
    )
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_lookup_while_importing_in_another_thread_does_not_deadlock():
    code = (
        "import threading, time, sl\n"
        "errors = []\n"
        "def importer():\n"
        "    try:\n"
        "        import sl_fixture_lookup\n"
        "    except BaseException as e:\n"
        "        errors.append(e)\n"
        "b = threading.Thread(target=importer)\n"
        "b.start()\n"
        "time.sleep(0.3)\n"  # the importer now holds the module's import lock
        "thing = sl.registry.get('lookup:Thing')\n"
        "b.join(30)\n"
        "assert not b.is_alive() and not errors, errors\n"
        "import sl_fixture_lookup\n"
        "assert thing is sl_fixture_lookup.Thing\n"
        "print('ok')"
    )
    r = run_python(code, timeout=60, SL_FIXTURE_LOOKUP_SLEEP="1.0")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_sys_exit_in_a_plugin_is_isolated(registry):
    with pytest.warns(RuntimeWarning, match=r"'exit' failed to load and was skipped: SystemExit"):
        infos = {p.name: p for p in registry.plugins()}
    assert "sl_fixture_exit exits on import" in infos["exit"].error
    assert infos["thirdparty"].ok and registry.get("LeakyIntegrator") is not None
    r = run_sl("plugins")
    assert r.returncode == 0 and "SystemExit" in r.stdout


def test_a_failing_example_hook_does_not_hide_the_others(registry):
    with pytest.warns(RuntimeWarning, match="sl_example_layers failed"):
        labels = {(p, e.label) for p, e in registry.examples()}
    assert ("thirdparty", "Gain") in labels or any(p == "thirdparty" for p, _ in labels)
    assert any(p == "core" for p, _ in labels)
    from sl.testing import check_plugin

    (result,) = check_plugin("shadow")
    assert not result.ok and "broken on purpose" in result.error
    r = run_sl("check", "shadow")
    assert r.returncode == 1 and "FAILED shadow:sl_example_layers" in r.stdout
