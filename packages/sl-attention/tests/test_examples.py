"""The shared suite over every example sl-attention registers (sl.testing.suite): the contract in
float32 and bfloat16 with contiguous and random masks, config round trips, compiled,
replayed and exported steps, and the plugin's installation."""

import pytest

from sl.testing import suite

PLUGIN = "attention"


@pytest.mark.parametrize("case", suite.contract_cases(PLUGIN))
def test_contract(case):
    suite.run_contract_case(case)


@pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
def test_step_compiles(example):
    suite.check_step_compiles(example)


@pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
def test_step_exports(example):
    suite.check_step_exports(example)


@pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
def test_step_replays(example):
    suite.check_step_replays(example)


def test_plugin_installed():
    suite.check_plugin_installed(PLUGIN, distribution="sl-attention", module="sl_attention")


@pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
def test_step_onnx(example, tmp_path):
    suite.check_step_onnx(example, tmp_path)
