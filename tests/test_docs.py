"""docs/coverage.md is generated from the live registry and must be current."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_coverage_table_is_current_and_core_is_complete():
    spec = importlib.util.spec_from_file_location("gen_coverage", ROOT / "tools" / "gen_coverage.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text, missing_core = gen.render()
    assert not missing_core, f"core layers missing from the registry: {missing_core}"
    on_disk = (ROOT / "docs" / "coverage.md").read_text()
    assert on_disk == text, "docs/coverage.md is stale: run `python tools/gen_coverage.py`"
