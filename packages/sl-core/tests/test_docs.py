"""The code in the README and the user guide runs as written (sl-core only)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.skipif(not README.exists(), reason="README.md is outside this installed tree")
def test_readme_usage_example_runs():
    usage = README.read_text().split("## Use", 1)[1]
    namespace: dict[str, object] = {}
    exec(compile(_python_blocks(usage)[0], str(README), "exec"), namespace)
    assert namespace["same_model"].get_config() == namespace["config"]


@pytest.mark.skipif(not GUIDE.exists(), reason="docs/guide.md is outside this installed tree")
def test_guide_worked_example_runs():
    example = GUIDE.read_text().split("## A worked example", 1)[1]
    exec(compile(_python_blocks(example)[0], str(GUIDE), "exec"), {})
