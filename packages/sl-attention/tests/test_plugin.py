"""sl-attention installs and loads as a plugin beside sl-core alone."""

import subprocess
import sys

import sl


def test_plugin_is_discovered_and_loads():
    info = {p.name: p for p in sl.registry.plugins()}
    assert "attention" in info, sorted(info)
    assert info["attention"].ok, info["attention"].error
    assert info["attention"].distribution == "sl-attention"


def test_plugin_namespace_resolves():
    assert repr(sl.attention) == "<sl plugin namespace 'attention'>"


def test_conformance_kit_passes():
    proc = subprocess.run([sys.executable, "-m", "sl", "check", "attention"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
