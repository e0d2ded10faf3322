"""docs/deploy.md: its code blocks run (in order, in one namespace) and its export notes stay current."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
from pathlib import Path

import pytest

from sl import registry

DOC = Path(__file__).resolve().parents[3] / "docs" / "deploy.md"
pytestmark = pytest.mark.skipif(not DOC.exists(), reason="docs/deploy.md is not in this checkout")


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def _skip_reason(block: str) -> str | None:
    if "onnxruntime" in block and importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    if "import onnx" in block or "export_onnx" in block:
        for module in ("onnx", "onnxscript"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
    if "aoti_compile_and_package" in block and not (shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler for AOTInductor"
    return None


def test_the_doc_has_runnable_blocks_and_no_placeholders():
    text = DOC.read_text()
    assert len(_blocks()) >= 6
    assert not re.search(r"^[A-Z_]{8,}$", text, flags=re.M), "an unfilled placeholder line in docs/deploy.md"


def test_code_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write step.pt2, step.onnx, ...
    namespace: dict[str, object] = {"__name__": "deploy_doc"}
    skipped = []
    for i, block in enumerate(_blocks()):
        reason = _skip_reason(block)
        if reason:
            skipped.append(f"block {i}: {reason}")
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)
    if skipped:
        pytest.skip("; ".join(skipped))


def test_onnx_exclusions_cover_every_registered_reason():
    """Each reason a registered example gives for not exporting to ONNX appears in the doc."""
    text = " ".join(DOC.read_text().split()).lower()
    for plugin in registry.plugins():
        for _, example in registry.examples(plugin.name):
            if example.onnx:
                assert example.label.lower() in text or type(example.layer).__name__.lower() in text, example.label
                assert "no complex dtype" in text if "complex" in example.onnx else example.onnx.lower() in text
