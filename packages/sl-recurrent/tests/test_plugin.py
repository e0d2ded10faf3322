"""sl-recurrent installs and loads as a plugin beside sl-core alone."""

import subprocess
import sys

import sl


def test_plugin_is_discovered_and_loads():
    info = {p.name: p for p in sl.registry.plugins()}
    assert "recurrent" in info, sorted(info)
    assert info["recurrent"].ok, info["recurrent"].error
    assert info["recurrent"].distribution == "sl-recurrent"


def test_plugin_namespace_resolves():
    assert repr(sl.recurrent) == "<sl plugin namespace 'recurrent'>"


def test_conformance_kit_passes():
    proc = subprocess.run([sys.executable, "-m", "sl", "check", "recurrent"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
