"""All first-party packages installed together (the ``combos`` nox session)."""

import subprocess
import sys

import pytest

import sl
from sl.registry import FIRST_PARTY


def test_every_first_party_plugin_loads_in_order():
    loaded = [p.name for p in sl.registry.plugins()]
    assert loaded[: len(FIRST_PARTY)] == list(FIRST_PARTY)
    failed = {p.name: p.error for p in sl.registry.plugins() if not p.ok}
    assert not failed


def test_no_bare_name_is_claimed_twice_by_first_party_plugins():
    owners: dict[str, list[str]] = {}
    for qualified in sl.registry.all_layers():
        plugin, name = qualified.split(":", 1)
        if plugin in FIRST_PARTY:
            owners.setdefault(name, []).append(plugin)
    clashes = {n: p for n, p in owners.items() if len(p) > 1}
    assert not clashes


@pytest.mark.parametrize("plugin", FIRST_PARTY)
def test_conformance_kit(plugin):
    proc = subprocess.run([sys.executable, "-m", "sl", "check", plugin], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
