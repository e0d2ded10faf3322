"""sl-conv installs and loads as a plugin beside sl-core alone."""

import subprocess
import sys

import sl


def test_plugin_is_discovered_and_loads():
    info = {p.name: p for p in sl.registry.plugins()}
    assert "conv" in info, sorted(info)
    assert info["conv"].ok, info["conv"].error
    assert info["conv"].distribution == "sl-conv"


def test_plugin_namespace_resolves():
    assert repr(sl.conv) == "<sl plugin namespace 'conv'>"


def test_conformance_kit_passes():
    proc = subprocess.run([sys.executable, "-m", "sl", "check", "conv"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
