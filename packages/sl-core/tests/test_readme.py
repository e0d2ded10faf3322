"""The README's usage example runs as written (sl-core only)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="README.md is outside this installed tree")
def test_readme_usage_example_runs():
    text = README.read_text()
    usage = text.split("## Use", 1)[1]
    block = re.search(r"```python\n(.*?)```", usage, re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    assert namespace["same_model"].get_config() == namespace["config"]
