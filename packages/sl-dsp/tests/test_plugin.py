"""sl-dsp installs and loads as a plugin beside sl-core alone."""

import subprocess
import sys

import sl


def test_plugin_is_discovered_and_loads():
    info = {p.name: p for p in sl.registry.plugins()}
    assert "dsp" in info, sorted(info)
    assert info["dsp"].ok, info["dsp"].error
    assert info["dsp"].distribution == "sl-dsp"


def test_plugin_namespace_resolves():
    assert repr(sl.dsp) == "<sl plugin namespace 'dsp'>"


def test_conformance_kit_passes():
    proc = subprocess.run([sys.executable, "-m", "sl", "check", "dsp"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
